"""Does language steer the policy? Success per instruction set, and the mismatch (confusion) table.

    python -m bench.bench_language [--policy runs/cq/policy] [--episodes 20] [--parts sets,confusion,speed]
                                   [--speed-dataset FILE.h5]

1. Success on held-out evaluation starts (in-distribution) with the training instructions, the held-out
   paraphrases and the held-out questions (sim.instructions), per task.
2. The confusion table: on each task's scene, the policy is told every *other* task's training instruction;
   a cell is the success rate of the *scene's* task. A policy steered by language fails those cells
   (it tries the other skill); a policy that reads only the image succeeds as if told the right thing.
3. speed (needs --speed-dataset): training speed with one instruction per task ("single") against a phrasing drawn
   per window ("augmented"), the same steps in one process, interleaved, as a ratio.

Writes (updates) bench/out/language.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def _rate(report) -> dict:
    rows = report.summary["rows"]
    ok, n = sum(r["successes"] for r in rows), sum(r["episodes"] for r in rows)
    return {"successes": ok, "episodes": n, "rate": ok / max(n, 1)}


def _per_task(report) -> dict:
    return {r["task"]: r["success_rate"] for r in report.summary["rows"]}


def speed(dataset: str, steps: int) -> dict:
    """Seconds per step of both modes, alternating blocks of steps in this process."""
    import tempfile

    from models.policy.train import train_policy

    times: dict[str, float] = {"single": 0.0, "augmented": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(2):
            for mode in ("single", "augmented"):
                t = time.perf_counter()
                train_policy(dataset, f"{tmp}/{mode}{rep}", preset="cpu-quick", steps=steps, base_at=0,
                             instructions=mode, eval_every=10_000, save_every=10_000)
                times[mode] += time.perf_counter() - t
    return {"steps_each": 2 * steps, **{f"{k}_s": v for k, v in times.items()},
            "augmented_over_single": times["augmented"] / times["single"]}


def main(argv: list[str] | None = None) -> dict:
    from models.policy_io import eval_spec
    from sim.evaluate import EvalConfig, evaluate
    from sim.tasks import TASKS, resolve_tasks

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", type=Path, default=Path("runs/cq/policy"))
    ap.add_argument("--tasks", default="cpu-quick")
    ap.add_argument("--episodes", type=int, default=20, help="per task and condition")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exclude-dataset", action="append", default=[])
    ap.add_argument("--speed-dataset", default=None)
    ap.add_argument("--speed-steps", type=int, default=100)
    ap.add_argument("--parts", default="sets,confusion", help="any of sets, confusion, speed")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    if "speed" in parts and not args.speed_dataset:
        ap.error("--parts speed needs --speed-dataset")
    tasks = resolve_tasks(args.tasks)
    spec = eval_spec(args.policy)
    base = {"tasks": tasks, "episodes": args.episodes, "seed": args.seed,
            "exclude_datasets": tuple(args.exclude_dataset)}
    out = OUT / "language.json"
    result: dict = json.loads(out.read_text()) if out.exists() else {}
    result.update({"policy": str(args.policy), "episodes": args.episodes, "seed": args.seed})

    if "sets" in parts:
        result["sets"] = {}
        for name in ("train", "paraphrase", "question"):
            t = time.perf_counter()
            rep = evaluate(spec, EvalConfig(**base, instruction_set=name))
            result["sets"][name] = {**_rate(rep), "per_task": _per_task(rep), "seconds": time.perf_counter() - t}
            print(name, result["sets"][name], flush=True)

    table: dict[str, dict[str, float]] = {}
    for scene in tasks if "confusion" in parts else ():
        table[scene] = {}
        for told in tasks:
            if told == scene:
                continue
            rep = evaluate(spec, EvalConfig(**{**base, "tasks": (scene,)}, instruction=TASKS[told].instruction))
            table[scene][told] = _rate(rep)["rate"]
        print(scene, table[scene], flush=True)
    if table:
        result["confusion"] = table
    if "speed" in parts:
        result["speed"] = speed(args.speed_dataset, args.speed_steps)
        print(result["speed"], flush=True)
    OUT.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
