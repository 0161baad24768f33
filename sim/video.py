"""Browser-playable H.264 MP4s (yuv420p, faststart) from uint8 frames."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def upscale(frame: np.ndarray, factor: int) -> np.ndarray:
    return frame if factor == 1 else frame.repeat(factor, 0).repeat(factor, 1)


def _pad16(frame: np.ndarray) -> np.ndarray:
    """H.264 players want sizes divisible by 16: pad with white rather than let ffmpeg rescale."""
    h, w = frame.shape[:2]
    ph, pw = -h % 16, -w % 16
    if ph or pw:
        frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)), constant_values=255)
    return frame


def write_mp4(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int = 20, scale: int = 4) -> Path:
    """Write frames (H, W, 3) uint8 to an MP4 atomically; small frames are enlarged by `scale`."""
    import imageio.v2 as imageio

    if len(frames) == 0:
        raise ValueError("no frames to write")
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    writer = imageio.get_writer(
        tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8, pixelformat="yuv420p",
        macro_block_size=16, ffmpeg_log_level="error", output_params=["-movflags", "+faststart"],
    )
    try:
        for f in frames:
            writer.append_data(_pad16(upscale(np.asarray(f, dtype=np.uint8), scale)))
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, path)
    return path


def side_by_side(*sequences: Sequence[np.ndarray], gap: int = 2) -> list[np.ndarray]:
    """Place frame sequences next to each other; shorter ones hold their last frame."""
    n = max(len(s) for s in sequences)
    h = max(s[0].shape[0] for s in sequences)
    out = []
    for t in range(n):
        tiles = []
        for s in sequences:
            f = s[min(t, len(s) - 1)]
            if f.shape[0] != h:
                f = upscale(f, h // f.shape[0])
            tiles += [f, np.full((h, gap, 3), 255, np.uint8)]
        out.append(np.concatenate(tiles[:-1], axis=1))
    return out


def grid(rows: Sequence[Sequence[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Tile equally sized images into one picture (for docs and previews)."""
    lines = []
    for row in rows:
        tiles = []
        for img in row:
            tiles += [img, np.full((img.shape[0], gap, 3), 255, np.uint8)]
        lines += [np.concatenate(tiles[:-1], axis=1)]
        lines += [np.full((gap, lines[-1].shape[1], 3), 255, np.uint8)]
    return np.concatenate(lines[:-1], axis=0)
