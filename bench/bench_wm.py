"""World-model throughput: batched rollout frames/s (with and without decoding) against MuJoCo
step+render frames/s, measured in the same process. Run under the shared CPU lock:

    flock /tmp/vlarft-cpu.lock .venv/bin/python -m bench.bench_wm --wm DIR --dataset HELDOUT.h5

Without --wm it times the cpu-quick pipeline's world model when there is one (runs/cpu-quick), else an
untrained model of the cpu-quick architecture (speed does not depend on the weights). A missing held-out
file is collected first (12 expert episodes per cpu-quick task, seed 100). Writes bench/out/wm.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

HELDOUT = "runs/heldout_s100.h5"
PIPELINE_WM = "runs/cpu-quick/world_model"


def main(argv: list[str] | None = None) -> dict:
    from models.world_model import WorldModel, load_world_model
    from models.world_model.config import make_config
    from models.world_model.data import load_store
    from models.world_model.evaluate import throughput

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wm", default=None, help="world-model checkpoint (default: untrained cpu-quick model)")
    ap.add_argument("--dataset", default=HELDOUT, help="episode file for contexts and actions")
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 64, 144])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/out/wm.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.wm is None and Path(PIPELINE_WM, "config.json").exists():
        args.wm = PIPELINE_WM
    if not Path(args.dataset).exists():
        from sim.collect import CollectConfig, collect

        collect(CollectConfig(tasks="cpu-quick", episodes=12, seed=100), args.dataset)
    store = load_store(args.dataset)
    if args.wm:
        wm = load_world_model(args.wm)
    else:
        wm = WorldModel(make_config("cpu-quick", image_size=store.image_size, camera=store.camera)).eval()
    rows = [throughput(wm, store, batch=b) for b in args.batch]
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "wm": args.wm, "dataset": args.dataset,
              "threads": args.threads, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for r in rows:
        print(f"B={r['batch']:4d}: {r['rollout_fps_decoded']:8.1f} frames/s decoded, {r['rollout_fps_latent']:8.1f} "
              f"latent, MuJoCo {r['mujoco_fps']:6.1f} -> {r['ratio_decoded_vs_mujoco']:.2f}x")
    return result


if __name__ == "__main__":
    main()
