"""RFT with each reward source from the same base policy, evaluated on the same seeds.

    python -m bench.bench_rft [--pipeline runs/cpu-quick] [--sources wm,action_l1,sim] [--steps 400]

Uses a `vlarft pipeline --preset cpu-quick` folder (its data, world model, base policy and, for the `wm`
row, its own RFT run), running or finishing that pipeline first when needed.
Writes bench/out/rft_sources.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from models.pipeline import PipelinePreset, _pct, start_policy


def evaluate_policy(path: Path, preset: PipelinePreset, root: Path, out: Path, reuse: Path | None = None) -> dict:
    """The policy's success on the pipeline's evaluation starts; `reuse`: the pipeline's own evaluation of it."""
    from models.policy_io import eval_spec
    from sim.evaluate import EvalConfig, evaluate
    from sim.perturb import parse_perturbations

    for done in (out, reuse):
        if done is not None and done.exists():
            return json.loads(done.read_text())
    cfg = EvalConfig(tasks=preset.tasks, perturbations=parse_perturbations(preset.perturbations),
                     episodes=preset.eval_episodes, seed=preset.seed, max_steps=preset.eval_max_steps,
                     exclude_datasets=tuple(str(x) for x in (root / "collect").glob("*.h5")))
    summary = evaluate(eval_spec(path), cfg).summary
    out.write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> dict:
    from models.rft import train_rft

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pipeline", type=Path, default=Path("runs/cpu-quick"))
    ap.add_argument("--sources", default="wm,action_l1,sim")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="default: PIPELINE/reward_sources")
    args = ap.parse_args(argv)
    root: Path = args.pipeline
    if not (root / "results.json").exists():
        from models.pipeline import run_pipeline

        run_pipeline("cpu-quick", str(root), resume=(root / "pipeline.json").exists())
    info = json.loads((root / "pipeline.json").read_text())
    preset = PipelinePreset(**info["config"])
    work = args.out or root / "reward_sources"
    work.mkdir(parents=True, exist_ok=True)
    base = start_policy(root, preset)
    rows = {"base": {"eval": evaluate_policy(base, preset, root, work / "base_eval.json",
                                             reuse=root / "evaluate" / "base.json"), "rft": None}}
    for source in args.sources.split(","):
        reuse = None
        if source == "wm" and args.steps in (None, preset.rft_steps):
            rft_dir = root / "rft"  # the pipeline's own run, and its own evaluation
            reuse = root / "evaluate" / "rft.json"
            stage = json.loads((rft_dir / "stage.json").read_text())["summary"]
        else:
            rft_dir = work / f"rft_{source}"
            t0 = time.time()
            stage = train_rft(str(base), str(root / "world_model"), str(root / "collect" / "clean.h5"), str(rft_dir),
                              steps=args.steps or preset.rft_steps, resume=(rft_dir / "train_state.pt").exists(),
                              preset=preset.rft_preset, reward_source=source, **preset.rft_options)
            stage["wall_this_call_s"] = time.time() - t0
        evaluation = evaluate_policy(rft_dir, preset, root, work / f"{source}_eval.json", reuse)
        rows[source] = {"rft": stage, "eval": evaluation}
    perts = [c["perturbation"] for c in rows["base"]["eval"]["conditions"]]
    lines = ["| policy | s/step | " + " | ".join(perts) + " |", "|---|---|" + "---|" * len(perts)]
    for name, r in rows.items():
        cond = {c["perturbation"]: c for c in r["eval"]["conditions"]}
        step = f"{r['rft']['seconds_per_step']:.2f}" if r["rft"] else "—"
        label = "base" if name == "base" else f"RFT, reward {name}"
        lines.append(f"| {label} | {step} | " + " | ".join(_pct(cond.get(p)) for p in perts) + " |")
    table = "\n".join(lines)
    result = {"pipeline": str(root), "rows": rows, "markdown": table}
    Path("bench/out").mkdir(parents=True, exist_ok=True)
    name = "_".join(args.sources.split(","))
    Path(f"bench/out/rft_sources_{name}.json").write_text(json.dumps(result, indent=1, default=str))
    print(table)
    return result


if __name__ == "__main__":
    main()
