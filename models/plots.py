"""Small PNG line charts drawn with Pillow (no plotting library needed on a worker)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

COLORS = ((26, 115, 232), (232, 113, 10), (24, 128, 56), (197, 34, 31), (147, 52, 230), (18, 181, 203))


def line_chart(series: dict[str, list[tuple[float, float]]], path: str | Path, title: str, ylabel: str = "",
               xlabel: str = "step", ylim: tuple[float, float] | None = None, size: tuple[int, int] = (720, 400)
               ) -> Path:
    """One line per series of (x, y) points; written atomically to `path`."""
    w, h = size
    left, right, top, bottom = 56, 170, 34, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    pts = [p for s in series.values() for p in s]
    xs = [p[0] for p in pts] or [0.0, 1.0]
    ys = [p[1] for p in pts] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = ylim or (min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1)

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (w - left - right),
                h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom))

    d.text((left, 10), title, fill="black")
    for i in range(6):  # grid and tick labels
        gy = y0 + (y1 - y0) * i / 5
        _, py = to_px(x0, gy)
        d.line([(left, py), (w - right, py)], fill=(230, 230, 230))
        d.text((6, py - 6), f"{gy:.2f}", fill=(90, 90, 90))
        gx = x0 + (x1 - x0) * i / 5
        px, _ = to_px(gx, y0)
        d.text((px - 8, h - bottom + 6), f"{gx:.0f}", fill=(90, 90, 90))
    d.rectangle([left, top, w - right, h - bottom], outline=(120, 120, 120))
    d.text((w - right - 40, h - 16), xlabel, fill="black")
    if ylabel:
        d.text((6, top - 16), ylabel, fill="black")
    for k, (name, s) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        line = [to_px(x, y) for x, y in s]
        if len(line) > 1:
            d.line(line, fill=color, width=3 if k == 0 else 2)
        for px, py in line:
            d.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
        d.line([(w - right + 10, top + 8 + 16 * k), (w - right + 30, top + 8 + 16 * k)], fill=color, width=3)
        d.text((w - right + 36, top + 2 + 16 * k), name, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)
    return path
