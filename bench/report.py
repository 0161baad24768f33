"""Writing a benchmark's report: bench/out/<name>.json, replaced atomically (never a half-written file)."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(report: dict, path: Path) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(path)
    return report
