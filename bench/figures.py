"""Figures for docs/: first frames per task and camera (python -m bench.figures)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sim.env import SimEnv
from sim.tasks import TASK_PRESETS, TASKS
from sim.video import grid, upscale


def first_frame(task: str, camera: str, size: int, seed: int = 0) -> np.ndarray:
    env = SimEnv(task, camera=camera, image_size=size)
    try:
        env.reset(env.sample_start(seed=seed, stream="demo"))
        return env.render()
    finally:
        env.close()


def labelled(img: np.ndarray, text: str) -> np.ndarray:
    pil = Image.new("RGB", (img.shape[1], img.shape[0] + 14), "white")
    pil.paste(Image.fromarray(img), (0, 14))
    ImageDraw.Draw(pil).text((2, 1), text, fill="black")
    return np.asarray(pil)


def camera_grid(out: Path, cameras=("workspace", "corner", "corner4", "corner2"), size: int = 64) -> None:
    rows = []
    for task in TASK_PRESETS["mt10"]:
        rows.append([labelled(upscale(first_frame(task, c, size), 2), f"{task[:-3]} / {c}") for c in cameras])
    Image.fromarray(grid(rows)).save(out)


def task_grid(out: Path, camera: str = "workspace", size: int = 64, per_row: int = 10) -> None:
    tiles = [labelled(upscale(first_frame(t, camera, size), 2), t[:-3][:20]) for t in sorted(TASKS)]
    rows = [tiles[i : i + per_row] for i in range(0, len(tiles), per_row)]
    Image.fromarray(grid(rows)).save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    camera_grid(out / "cameras.png")
    task_grid(out / "tasks.png")
    print(f"wrote {out / 'cameras.png'} and {out / 'tasks.png'}")


if __name__ == "__main__":
    main()
