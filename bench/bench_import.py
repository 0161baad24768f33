"""LeRobot import speed for a 100-episode dataset, and the round-trip PSNR (export, then import again).

    python -m bench.bench_import [--episodes 100] [--steps 30] [--source-size 128]

The dataset is written with the lerobot-dataset package itself (H.264 videos, 7-D actions, 8-D state) from
synthetic frames: a moving blob over a gradient. Writes bench/out/import.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
OUT = Path(__file__).resolve().parent / "out"


def frame(t: int, ep: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = 0.5 + 0.25 * np.sin(0.3 * t + ep), 0.5 + 0.25 * np.cos(0.2 * t + 0.5 * ep)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.08**2))[..., None]
    img = np.stack([0.3 + 0.4 * yy, 0.2 + 0.5 * xx, 0.5 + 0.1 * np.sin(9 * xx)], -1) * (1 - blob)
    return (np.clip(img + blob * np.array([0.9, 0.2, 0.1]), 0, 1) * 255).astype(np.uint8)


def build(root: Path, episodes: int, steps: int, size: int) -> float:
    from sim.lerobot_pkg import lerobot

    t0 = time.perf_counter()
    feats = {"observation.images.front": {"dtype": "video", "shape": (size, size, 3),
                                          "names": ["height", "width", "channels"]},
             "observation.state": {"dtype": "float32", "shape": (8,), "names": None},
             "action": {"dtype": "float32", "shape": (7,), "names": None}}
    ds = lerobot().LeRobotDataset.create("local/bench", fps=10, features=feats, root=root, vcodec="h264")
    rng = np.random.default_rng(0)
    for e in range(episodes):
        for t in range(steps):
            ds.add_frame({"observation.images.front": frame(t, e, size),
                          "observation.state": rng.standard_normal(8).astype(np.float32),
                          "action": rng.standard_normal(7).astype(np.float32), "task": f"task {e % 5}"})
        ds.save_episode()
    ds.finalize()
    return time.perf_counter() - t0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def main(argv: list[str] | None = None) -> dict:
    import logging

    from datasets.utils.logging import disable_progress_bar

    from sim.episodes import EpisodeFile
    from sim.lerobot_io import export_lerobot, import_lerobot
    from sim.lerobot_pkg import lerobot

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--source-size", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    disable_progress_bar()
    lerobot()  # package import outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        build_s = build(tmp_path / "src", args.episodes, args.steps, args.source_size)
        rep = import_lerobot(tmp_path / "src", tmp_path / "a.h5", image_size=args.image_size)
        t0 = time.perf_counter()
        export_lerobot(tmp_path / "a.h5", tmp_path / "exported", fps=10)
        export_s = time.perf_counter() - t0
        import_lerobot(tmp_path / "exported", tmp_path / "b.h5", image_size=args.image_size)
        a, b = EpisodeFile(tmp_path / "a.h5"), EpisodeFile(tmp_path / "b.h5")
        values, exact = [], True
        for i in range(len(a)):
            x, y = a.load(i), b.load(i)
            values += [psnr(p, q) for p, q in zip(x.frames, y.frames, strict=True)]
            exact &= bool(np.array_equal(x.actions, y.actions) and np.array_equal(x.proprio, y.proprio)
                          and x.instruction == y.instruction)
    result = {
        "episodes": rep.episodes, "frames": rep.steps, "source_size": args.source_size, "image_size": args.image_size,
        "build_s": round(build_s, 2), "import_s": round(rep.seconds, 2),
        "import_frames_per_s": round(rep.steps / rep.seconds, 1), "export_s": round(export_s, 2),
        "export_frames_per_s": round(rep.steps / export_s, 1),
        "round_trip_psnr_mean_db": round(float(np.mean(values)), 2),
        "round_trip_psnr_min_db": round(float(np.min(values)), 2),
        "round_trip_actions_proprio_instructions_equal": exact,
        "cpus": os.cpu_count(), "machine": platform.node(),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "import.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
