"""World-model RL fidelity: does alignment help the world model imagine a policy, and does the reward model
see success where the simulator does?

    python -m bench.bench_wm_rl fidelity --base-wm W0 --aligned-wm W1 --reward-model R \\
        --set heldout=runs/cq/rollouts/heldout_base_det.h5,runs/cq/rollouts/heldout_base_noisy.h5 \\
        --set unseen=runs/cq/rollouts/heldout_full.h5
    python -m bench.bench_wm_rl pair --policy P --wm W1 --reward-model R --task drawer-open-v3 --index 3 \\
        --out docs/wm_rl_pair

fidelity, for each named set of held-out episodes (per-step success labels from the simulator):
  1. closed-loop imagination of each episode's own actions from its first frame (re-anchored every chunk, as
     the imagined world runs), before (base world model) and after alignment: PSNR of the whole frame and of
     the moving pixels (pixels that differ from the first frame in the real video) at h8 and h32;
  2. the reward model's episode-level precision / recall / F1 and hallucinated successes (detected in
     imagination, failed in the simulator), on the real frames' latents and on both imaginations.
  The alignment keeps the autoencoder, so one reward model reads both world models' latents.
pair: one start, the policy in imagination and in the simulator, side by side (MP4 + PNG strip), with the
  classifier's probabilities: what an exploited episode looks like.
throughput: steps per second of the same closed-loop episodes in the simulator and in imagination, one run
  (bench/out/wm_rl_throughput.json).

Writes bench/out/wm_rl_fidelity.json (fidelity).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def frame_quality(real_eps: list[dict], imagined: list[dict], horizons: tuple[int, ...] = (8, 32)) -> dict:
    """PSNR (whole, moving pixels) of imagined vs real frames at each horizon, over episodes long enough."""
    import torch

    from models.world_model.metrics import frame_psnr, moving_mask, moving_sums, psnr_from_mse

    out = {}
    for h in horizons:
        whole, sums, n = [], [0.0, 0.0], 0
        for ep, im in zip(real_eps, imagined, strict=True):
            if len(ep["frames"]) <= h:
                continue
            real = torch.from_numpy(ep["frames"][h]).permute(2, 0, 1)[None].float() / 255
            first = torch.from_numpy(ep["frames"][0]).permute(2, 0, 1)[None].float() / 255
            pred = torch.from_numpy(im["frames"][h - 1]).permute(2, 0, 1)[None].float() / 255  # after action h−1
            whole.append(float(frame_psnr(pred, real)[0]))
            s = moving_sums(pred, real, moving_mask(real, first))
            sums[0] += s[0]
            sums[1] += s[1]
            n += 1
        out[f"h{h}"] = {"episodes": n, "psnr": float(np.mean(whole)) if whole else None,
                        "psnr_moving": float(psnr_from_mse(sums[0] / sums[1])) if sums[1] else None}
    return out


def fidelity(args) -> dict:
    from models.reward_model import (
        encode_real,
        imagine_sequences,
        load_reward_model,
        make_sequences,
        read_episodes,
        score_sequences,
    )
    from models.world_model import load_world_model

    wms = {"base": load_world_model(args.base_wm), "aligned": load_world_model(args.aligned_wm)}
    rm = load_reward_model(args.reward_model, wms["aligned"])
    report: dict = {"base_wm": args.base_wm, "aligned_wm": args.aligned_wm, "reward_model": args.reward_model,
                    "threshold": rm.cfg.threshold, "confirm": rm.cfg.confirm, "min_steps": rm.cfg.min_steps, "sets": {}}
    for spec in args.set:
        name, _, files = spec.partition("=")
        eps = read_episodes(files)
        entry: dict = {"files": files, "episodes": len(eps),
                       "true_successes": int(sum(e["success"].any() for e in eps))}
        real = encode_real(wms["aligned"], eps)  # alignment keeps the autoencoder: one encoding serves both
        rows = np.arange(len(eps))
        for label, wm in wms.items():
            im = imagine_sequences(wm, eps, rm.cfg.chunk, decode_all=True)
            entry[f"frames_{label}"] = frame_quality(eps, im)
            seq = make_sequences(eps, real, im)
            entry[f"reward_imagined_{label}"] = score_sequences(rm, seq, rows, "imagined")
            if label == "aligned":
                entry["reward_real"] = score_sequences(rm, seq, rows, "real")
        report["sets"][name] = entry
        print(json.dumps({name: {k: v for k, v in entry.items() if k.startswith("frames")}}, default=float))
        for k in ("reward_real", "reward_imagined_base", "reward_imagined_aligned"):
            a = entry[k]["all"]
            print(f"{name:10s} {k:26s} P {a['precision']:.3f} R {a['recall']:.3f} F1 {a['f1']:.3f} "
                  f"hallucinated {a['hallucinated']}/{a['episodes'] - a['true_successes']}")
    OUT.mkdir(exist_ok=True)
    (OUT / "wm_rl_fidelity.json").write_text(json.dumps(report, indent=1, default=float))
    return report


def pair(args) -> dict:
    from models.wm_eval import episode_pair
    from sim.vector import StartRequest
    from sim.video import side_by_side, write_mp4

    req = StartRequest(task=args.task, seed=args.seed, index=args.index, stream="eval")
    r = episode_pair(args.policy, args.wm, args.reward_model, req, args.max_steps)
    im, real = r["imagined"]["frames"], r["real"]["frames"]
    n = max(len(im), len(real))
    frames = side_by_side([im[min(t, len(im) - 1)] for t in range(n)], [real[min(t, len(real) - 1)] for t in range(n)])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(out.with_suffix(".mp4"), frames, fps=4)
    from PIL import Image

    times = np.linspace(0, n - 1, min(8, n)).round().astype(int)  # top row imagined, bottom row real
    rows = [np.concatenate([seq[min(t, len(seq) - 1)] for t in times], axis=1) for seq in (im, real)]
    grid = np.concatenate([rows[0], np.full((2, rows[0].shape[1], 3), 255, np.uint8), rows[1]], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(out.with_suffix(".png"))
    summary = {"task": args.task, "index": args.index, "imagined_success": r["imagined"]["success"],
               "imagined_steps": r["imagined"]["steps"], "real_success": r["real"]["success"],
               "real_steps": r["real"]["steps"], "max_prob": float(np.max(r["imagined"]["probs"]))}
    print(json.dumps(summary))
    return summary


def throughput(args) -> dict:
    """Steps per second of the same closed-loop episodes (deterministic policy, same starts) in the simulator and
    in imagination, in one run."""
    import time

    import torch

    from models.policy_io import load_policy
    from models.rl import rollout
    from models.worlds import SimWorld, WMWorld
    from sim.tasks import resolve_tasks
    from sim.vector import StartRequest

    model = load_policy(args.policy)
    reqs = [StartRequest(task=t, seed=0, index=i, stream="rl") for t in resolve_tasks("cpu-quick")
            for i in range(args.episodes)]
    out = {}
    for name, make in (("sim", lambda: SimWorld(max_steps=150, slots_hint=len(reqs))),
                       ("wm", lambda: WMWorld(args.wm, args.reward_model, max_steps=150))):
        w = make()
        try:
            rollout(w, None, model, None, reqs[:8], torch.Generator(), 16)  # warm-up: processes, caches
            t0 = time.time()
            r = rollout(w, None, model, None, reqs, torch.Generator(), 150)
            dt = time.time() - t0
        finally:
            w.close()
        out[name] = {"episodes": len(reqs), "steps": int(r.steps.sum()), "seconds": round(dt, 1),
                     "steps_per_s": round(r.steps.sum() / dt, 1), "success": float(r.success.mean())}
        print(name, out[name])
    out["wm_over_sim"] = round(out["wm"]["steps_per_s"] / out["sim"]["steps_per_s"], 2)
    OUT.mkdir(exist_ok=True)
    (OUT / "wm_rl_throughput.json").write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fidelity")
    f.add_argument("--base-wm", required=True)
    f.add_argument("--aligned-wm", required=True)
    f.add_argument("--reward-model", required=True)
    f.add_argument("--set", action="append", required=True, help="name=file1,file2")
    p = sub.add_parser("pair")
    p.add_argument("--policy", required=True)
    p.add_argument("--wm", required=True)
    p.add_argument("--reward-model", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--out", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--policy", required=True)
    t.add_argument("--wm", required=True)
    t.add_argument("--reward-model", required=True)
    t.add_argument("--episodes", type=int, default=16, help="per task")
    if not argv and argv is not None:  # `make bench`: the measured setting of docs/results.md
        r = "runs/cq/rollouts"
        argv = ["fidelity", "--base-wm", "runs/cq/wm", "--aligned-wm", "runs/cq/wm_aligned", "--reward-model",
                "runs/cq/rm", "--set", f"heldout={r}/heldout_base_det.h5,{r}/heldout_base_noisy.h5",
                "--set", f"unseen={r}/heldout_full.h5"]
    args = ap.parse_args(argv)
    return {"fidelity": fidelity, "pair": pair, "throughput": throughput}[args.cmd](args)


if __name__ == "__main__":
    main()
