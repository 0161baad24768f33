"""Labels burnt into side-by-side episode videos: over each clip its policy's name and outcome (a drawn ✓ or
✗), under it the step counter; a clip that ended holds its last frame while the counter says where it stopped."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sim.video import side_by_side, upscale, write_mp4

SCALE = 4  # 64 px frames become 256 px tiles, large enough for text
BAR = 22  # label bar height in pixels (after scaling)
FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _font(size: int):
    from PIL import ImageFont

    for path in FONTS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _mark(draw, x: int, y: int, ok: bool) -> None:
    """A ✓ (green) or ✗ (red) drawn as strokes, so no font needs the glyphs."""
    s = BAR - 8
    if ok:
        draw.line([(x, y + s * 0.55), (x + s * 0.38, y + s), (x + s, y)], fill=(40, 200, 90), width=3)
    else:
        draw.line([(x, y), (x + s, y + s)], fill=(235, 70, 60), width=3)
        draw.line([(x, y + s), (x + s, y)], fill=(235, 70, 60), width=3)


def labelled_clip(frames: Sequence[np.ndarray], name: str, success: bool, total: int,
                  scale: int = SCALE) -> list[np.ndarray]:
    """`total` frames of one clip (held on its last frame) with a top bar (name, outcome) and a bottom bar
    (step k / n of this clip)."""
    from PIL import Image, ImageDraw

    font = _font(13)
    n = len(frames)
    out = []
    for t in range(total):
        tile = upscale(np.asarray(frames[min(t, n - 1)], dtype=np.uint8), scale)
        h, w = tile.shape[:2]
        canvas = np.full((h + 2 * BAR, w, 3), 24, np.uint8)
        canvas[BAR:BAR + h] = tile
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        _mark(draw, 6, 4, success)
        draw.text((BAR + 4, 3), f"{name[:28]}  {'success' if success else 'failure'}", fill=(255, 255, 255),
                  font=font)
        step = min(t + 1, n)
        draw.text((6, BAR + h + 3), f"step {step} / {n}" + ("  (ended)" if t >= n else ""), fill=(230, 230, 230),
                  font=font)
        out.append(np.asarray(img))
    return out


def write_labelled_side_by_side(path: str | Path, clips: dict[str, tuple[Sequence[np.ndarray], bool]]) -> Path:
    """Clips (label → (frames, success)) side by side, each labelled, as one MP4 at `path`."""
    total = max(len(f) for f, _ in clips.values())
    tiles = [labelled_clip(frames, label, ok, total) for label, (frames, ok) in clips.items()]
    frames = side_by_side(*tiles) if len(tiles) > 1 else tiles[0]
    return write_mp4(path, frames, scale=1)
