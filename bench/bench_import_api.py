"""The LeRobot import through the studio (upload → `import` run → registered dataset) against the same import
called directly, on one dataset, in one process run (so the ratio holds on a busy machine).

    python -m bench.bench_import_api [--episodes 20] [--steps 30] [--source-size 128]

The API runs in process (TestClient) over the embedded stack with one `vlarft worker`; the worker is started
and warmed by one import first, so the timed run does not pay for its start or its first import of the
LeRobot package. Writes bench/out/import_api.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench.bench_import import build

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parents[1]


def zip_folder(root: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, f"{root.name}/{f.relative_to(root).as_posix()}")
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--source-size", type=int, default=128)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from backend_helpers import stack_fixture

    from sim.lerobot_io import import_lerobot

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = tmp_path / "bench_ds"
        build(root, args.episodes, args.steps, args.source_size)
        archive = zip_folder(root, tmp_path / "bench_ds.zip")
        archive_bytes = archive.stat().st_size
        frames = args.episodes * args.steps

        t0 = time.perf_counter()
        import_lerobot(root, tmp_path / "direct.h5", image_size=64)
        direct = time.perf_counter() - t0

        for stack in stack_fixture("embedded"):
            stack.worker("sim")
            with stack.client() as api:
                api.wait(api.import_dataset(archive, name="warm-up").id, timeout=600)
                t0 = time.perf_counter()
                run = api.import_dataset(archive, name="timed")
                submitted = time.perf_counter() - t0
                run = api.wait(run.id, timeout=600, poll=0.1)
                total = time.perf_counter() - t0
                assert run.status == "succeeded", run.error
                ds = api.dataset(run.result["dataset_id"])
                assert ds.run_id == run.id and ds.steps == frames
    result = {
        "frames": frames, "episodes": args.episodes, "source_size": args.source_size, "image_size": 64,
        "archive_bytes": archive_bytes,
        "direct_s": direct, "api_submit_s": submitted, "api_total_s": total, "api_over_direct": total / direct,
        "direct_frames_per_s": frames / direct, "api_frames_per_s": frames / total,
        "machine": platform.node(),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "import_api.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
