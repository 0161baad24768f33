"""Run every benchmark module (bench/bench_*.py) in its own interpreter, one after another.

    python -m bench.run_all [--only api,sim] [--skip sim]

Each module's main() writes bench/out/<name>.json. Timings mean something only on a quiet machine:
on a shared one run this under `flock /tmp/vlarft-cpu.lock`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="Comma-separated benchmark names (default: all).")
    ap.add_argument("--skip", default="", help="Comma-separated benchmark names to leave out.")
    args = ap.parse_args(argv)
    names = discover()
    only = [n for n in args.only.split(",") if n]
    skip = {n for n in args.skip.split(",") if n}
    unknown = [n for n in [*only, *skip] if n not in names]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(names)}")
    chosen = [n for n in (only or names) if n not in skip]
    # main() with an empty argument list when it takes one, so its defaults apply
    call = ("import inspect, importlib; m = importlib.import_module('bench.bench_{0}'); "
            "m.main([]) if inspect.signature(m.main).parameters else m.main()")
    failed = []
    for name in chosen:
        print(f"== bench_{name}", flush=True)
        t = time.monotonic()
        code = subprocess.call([sys.executable, "-c", call.format(name)], cwd=HERE.parent)
        print(f"== bench_{name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - t:.0f} s",
              flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
