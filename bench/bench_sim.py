"""Simulator ground truth: step+render speed, collection time, expert success under the perturbation suite.

    python -m bench.bench_sim [--tasks mt10] [--episodes 20]

Writes bench/out/sim.json and prints markdown tables for docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from sim.collect import CollectConfig, collect
from sim.env import SimEnv
from sim.evaluate import EXPERT, EvalConfig, evaluate
from sim.experts import ExpertPolicy
from sim.parallel import available_cpus
from sim.perturb import perturbation_suite
from sim.tasks import resolve_tasks


def step_render_speed(task: str = "push-v3", steps: int = 300) -> dict:
    env = SimEnv(task)
    try:
        obs = env.reset(env.sample_start(seed=0))
        expert = ExpertPolicy(task)
        t = time.perf_counter()
        n = 0
        while n < steps:
            obs, _, success = env.step(expert(obs.env_obs))
            n += 1
            if success or env.done:
                obs = env.reset(env.sample_start(seed=n))
        dt = time.perf_counter() - t
    finally:
        env.close()
    return {"task": task, "ms_per_step_render": 1000 * dt / steps, "frames_per_s": steps / dt}


def collect_time(episodes: int = 25) -> dict:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        rep = collect(CollectConfig(tasks=resolve_tasks("cpu-quick"), episodes=episodes), f"{d}/d.h5")
        return {"tasks": "cpu-quick", "episodes_per_task": episodes, "seconds": time.perf_counter() - t,
                "steps": rep.summary.steps}


def expert_suite(tasks: str, episodes: int) -> dict:
    cfg = EvalConfig(tasks=resolve_tasks(tasks), perturbations=perturbation_suite(), episodes=episodes, max_steps=200)
    t = time.perf_counter()
    summary = evaluate(EXPERT, cfg).summary
    summary.pop("episodes")
    summary["seconds"] = time.perf_counter() - t
    return summary


def markdown(suite: dict) -> str:
    perts = [p.name for p in perturbation_suite()]
    cells = {(r["task"], r["perturbation"]): r for r in suite["rows"]}
    tasks = list(dict.fromkeys(r["task"] for r in suite["rows"]))
    lines = ["| task | " + " | ".join(perts) + " |", "|---|" + "---|" * len(perts)]
    for t in tasks:
        row = []
        for p in perts:
            r = cells.get((t, p))
            row.append("n/a" if r is None else f"{r['success_rate']:.0%} ({r['mean_steps']:.0f})")
        lines.append(f"| {t} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", default="mt10")
    ap.add_argument("--episodes", type=int, default=20)
    args = ap.parse_args(argv)
    out = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {available_cpus()} cores",
        "step_render": step_render_speed(), "collect": collect_time(),
        "expert_suite": expert_suite(args.tasks, args.episodes),
    }
    Path("bench/out").mkdir(parents=True, exist_ok=True)
    Path("bench/out/sim.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "expert_suite"}, indent=1))
    print(markdown(out["expert_suite"]))
    rates = [r["success_rate"] for r in out["expert_suite"]["rows"]]
    print(f"expert suite: {len(rates)} cells, mean {np.mean(rates):.1%}, {out['expert_suite']['seconds']:.0f} s")
    return out


if __name__ == "__main__":
    main()
