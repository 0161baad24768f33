"""Closed-loop RL's simulator throughput against plain `sim-eval`, and how exploration noise sets the GRPO signal.

    python -m bench.bench_rl [--policy runs/cpu-quick/policy/base] [--episodes 10] [--stds 0.1,0.2,0.3,0.5]

1. Throughput, same run, same policy, same number of episodes per task, both cores:
   - `sim-eval` (sim.evaluate: renders every step, one policy call per chunk per process);
   - the RL rollout (models.rl.rollout over sim.vector: renders only at chunk ends, one batched policy
     call per chunk for every live episode), deterministic ODE as in evaluation.
2. Exploration: for each noise mode and σ (normalised action units; sde uses the policy's own σ-net),
   B start states × G = 8 episodes from the training stream: the success rate of the stochastic policy
   beside the deterministic ODE's on the same starts, and the fraction of mixed groups (the groups that
   carry a GRPO signal).

Writes bench/out/rl.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def main(argv: list[str] | None = None) -> dict:
    import torch

    from models.policy_io import eval_spec, load_policy
    from models.rl import Actor, RLConfig, episode_rewards, group_advantages, rollout, start_requests
    from models.worlds import make_world
    from sim.evaluate import EvalConfig, evaluate
    from sim.perturb import Perturbation
    from sim.tasks import resolve_tasks
    from sim.vector import StartRequest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", type=Path, default=Path("runs/cpu-quick/policy/base"))
    ap.add_argument("--tasks", default="cpu-quick")
    ap.add_argument("--episodes", type=int, default=20, help="per task, for the throughput part")
    ap.add_argument("--max-steps", type=int, default=150)
    ap.add_argument("--stds", default="0.15,0.3,0.5")
    ap.add_argument("--modes", default="gauss,chunk,sde", help="noise modes to probe (sde: the σ-net as trained)")
    ap.add_argument("--starts", type=int, default=4, help="start states per task for the exploration part")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tasks = resolve_tasks(args.tasks)
    model, ref = load_policy(args.policy), load_policy(args.policy)

    t = time.perf_counter()
    rep = evaluate(eval_spec(args.policy), EvalConfig(tasks=tasks, episodes=args.episodes, max_steps=args.max_steps,
                                                      seed=7))
    eval_wall = time.perf_counter() - t
    eval_steps = sum(e["steps"] for e in rep.summary["episodes"])

    world = make_world("sim", max_steps=args.max_steps, slots_hint=64)
    try:
        warm = [StartRequest(task=tk, index=i, stream="eval", seed=7) for tk in tasks for i in range(args.episodes)]
        world.reset(warm)  # builds the environments once, as a training run does
        t = time.perf_counter()
        ro = rollout(world, None, model, None, warm, torch.Generator(), args.max_steps)
        rl_wall = time.perf_counter() - t
        throughput = {
            "sim_eval": {"episodes": len(rep.results), "env_steps": eval_steps, "seconds": eval_wall,
                         "steps_per_s": eval_steps / eval_wall, "success": float(rep.summary["conditions"][0]
                                                                                  ["success_rate"])},
            "rl_rollout": {"episodes": len(warm), "env_steps": ro.executed, "seconds": rl_wall,
                           "steps_per_s": ro.executed / rl_wall, "success": float(ro.success.mean())},
        }
        throughput["ratio"] = throughput["rl_rollout"]["steps_per_s"] / throughput["sim_eval"]["steps_per_s"]

        probe = []
        reqs = [r for r in start_requests(tasks, [Perturbation()], 0, args.starts * len(tasks), 0, "rl")
                for _ in range(8)]
        modes = args.modes.split(",")
        settings = [(m, float(x)) for m in modes if m != "sde" for x in args.stds.split(",")]
        settings += [("sde", float("nan"))] if "sde" in modes else []
        for mode, std in settings:
            cfg = RLConfig(tasks=args.tasks, noise=mode, init_std=0.3 if mode == "sde" else std,
                           std_min=0.02 if mode == "sde" else min(0.02, std))
            actor = Actor(model, cfg, torch.full((4,), math.log(cfg.init_std)))
            ro = rollout(world, actor, model, ref, reqs, torch.Generator().manual_seed(0), args.max_steps)
            _, mixed = group_advantages(episode_rewards(ro.success, ro.steps, cfg).view(-1, 8))
            per_task = {tk: float(ro.success[[i for i, r in enumerate(reqs) if r.task == tk]].mean()) for tk in tasks}
            probe.append({"noise": mode, "std": std, "success": float(ro.success.mean()), "groups": len(mixed),
                          "mixed_fraction": float(mixed.float().mean()), "per_task": per_task})
        det = rollout(world, None, model, None, reqs[::8], torch.Generator(), args.max_steps)
    finally:
        world.close()
    result = {"policy": str(args.policy), "tasks": list(tasks), "max_steps": args.max_steps, "throughput": throughput,
              "exploration": probe, "ode_success_same_starts": float(det.success.mean())}
    OUT.mkdir(exist_ok=True)
    (OUT / "rl.json").write_text(json.dumps(result, indent=1))
    tp = throughput
    print(f"sim-eval {tp['sim_eval']['steps_per_s']:.0f} steps/s, RL rollout {tp['rl_rollout']['steps_per_s']:.0f} "
          f"steps/s ({tp['ratio']:.2f}x)")
    print(f"ODE success on the probe's starts: {result['ode_success_same_starts']:.2f}")
    print("| noise | σ | success of the stochastic policy | mixed groups |\n|---|---|---|---|")
    for p in probe:
        std = "σ-net" if p["noise"] == "sde" else p["std"]
        print(f"| {p['noise']} | {std} | {p['success']:.2f} | {p['mixed_fraction']:.2f} of {p['groups']} |")
    return result


if __name__ == "__main__":
    main()
