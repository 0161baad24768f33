"""Evaluation in imagination: a policy's success rate inside the world model, and how well it ranks policies.

Each policy runs closed loop (deterministic ODE, re-planning every chunk) from the real first frames of the
held-out evaluation starts (the `eval` seed stream, the same starts `vlarft sim-eval` uses), inside the
imagined world of models/worlds.py; the reward model decides success. With `real=True` the same policy also
runs in the simulator from the same starts, so every episode has both outcomes, and several policies give
the Pearson and Spearman correlations between imagined and real success (overall and per task).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from models.hooks import Hooks
from sim.errors import InputError
from sim.perturb import parse_perturbations
from sim.stats import wilson_interval
from sim.tasks import get_task, resolve_tasks
from sim.vector import StartRequest


def eval_requests(tasks: str, perturbations: str, episodes: int, seed: int) -> list[StartRequest]:
    if episodes < 1:
        raise InputError(f"episodes must be positive, got {episodes}")
    out = []
    for task in resolve_tasks(tasks):
        for pert in parse_perturbations(perturbations):
            if pert.applies_to(get_task(task)):
                out += [StartRequest(task=task, perturbation=pert, seed=seed, index=i, stream="eval")
                        for i in range(episodes)]
    return out


def _overall(success: np.ndarray) -> dict[str, Any]:
    k, n = int(success.sum()), len(success)
    return {"success": k / n, "successes": k, "episodes": n, "ci95": list(wilson_interval(k, n))}


def _cells(requests: list[StartRequest], success: np.ndarray) -> dict[str, dict]:
    cells: dict[str, dict] = {}
    keys = [f"{r.task}/{r.perturbation.name}" for r in requests]
    for key in dict.fromkeys(keys):
        m = np.array([k == key for k in keys])
        k, n = int(success[m].sum()), int(m.sum())
        lo, hi = wilson_interval(k, n)
        cells[key] = {"successes": k, "episodes": n, "rate": k / n, "ci95": [lo, hi]}
    return cells


def _run(world, model, requests: list[StartRequest], max_steps: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    from models.rl import rollout

    success, steps = np.zeros(len(requests), bool), np.zeros(len(requests), int)
    for i in range(0, len(requests), batch):
        r = rollout(world, None, model, None, requests[i : i + batch], torch.Generator(), max_steps)
        success[i : i + batch], steps[i : i + batch] = r.success, r.steps
    return success, steps


def evaluate_in_imagination(policy: str, wm: str, reward_model: str, tasks: str = "cpu-quick",
                            perturbations: str = "none", episodes: int = 20, seed: int = 0, max_steps: int = 200,
                            real: bool = False, batch: int = 160, workers: int = 0,
                            hooks: Hooks | None = None) -> dict[str, Any]:
    """Imagined (and, with `real`, simulated) success of one policy on the held-out starts, per task and cell."""
    from models.policy_io import load_policy
    from models.worlds import SimWorld, WMWorld

    hooks = hooks or Hooks()
    requests = eval_requests(tasks, perturbations, episodes, seed)
    model = load_policy(policy)
    pc = model.config
    t0 = time.time()
    hooks.progress(0.0, f"{policy}: imagining {len(requests)} episodes")
    world = WMWorld(wm, reward_model, camera=pc.camera, image_size=pc.image_size, max_steps=max_steps)
    try:
        imagined, imagined_steps = _run(world, model, requests, max_steps, batch)
    finally:
        world.close()
    out: dict[str, Any] = {
        "policy": str(policy), "world_model": str(wm), "reward_model": str(reward_model), "seed": seed,
        "seed_stream": "eval", "max_steps": max_steps, "episodes": len(requests),
        "imagined": {**_overall(imagined), "cells": _cells(requests, imagined),
                     "mean_steps": float(imagined_steps.mean()), "seconds": round(time.time() - t0, 1)},
    }
    if real:
        hooks.progress(0.5, f"{policy}: the same {len(requests)} starts in the simulator")
        t1 = time.time()
        sim = SimWorld(camera=pc.camera, image_size=pc.image_size, max_steps=max_steps, workers=workers,
                       slots_hint=min(batch, len(requests)))
        try:
            actual, actual_steps = _run(sim, model, requests, max_steps, batch)
        finally:
            sim.close()
        out["real"] = {**_overall(actual), "cells": _cells(requests, actual),
                       "mean_steps": float(actual_steps.mean()), "seconds": round(time.time() - t1, 1),
                       "env_steps": int(actual_steps.sum())}
        out["agreement"] = {
            "both": int((imagined & actual).sum()), "neither": int((~imagined & ~actual).sum()),
            "imagined_only": int((imagined & ~actual).sum()), "real_only": int((~imagined & actual).sum()),
            "episode_accuracy": float((imagined == actual).mean()),
        }
    hooks.progress(1.0, "done")
    return out


def evaluate_policies_in_imagination(policies: list[str], wm: str, reward_model: str, real: bool = False,
                                     hooks: Hooks | None = None, **kwargs: Any) -> dict[str, Any]:
    """evaluate_in_imagination for each policy in turn (stopping early when asked); with `real` and three or more
    policies, also the imagined-vs-real correlations. `kwargs`: tasks, perturbations, episodes, seed, max_steps."""
    hooks = hooks or Hooks()
    reports: list[dict] = []
    n = len(policies)
    for k, policy in enumerate(policies):
        if hooks.should_stop():
            break
        sub = Hooks(progress=lambda f, m, k=k: hooks.progress((k + f) / n, f"policy {k + 1}/{n}: {m}"),
                    should_stop=hooks.should_stop)
        reports.append(evaluate_in_imagination(policy, wm, reward_model, real=real, hooks=sub, **kwargs))
    out: dict[str, Any] = {"policies": reports}
    if real and len(reports) >= 3:
        out["correlations"] = correlations(reports)
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):  # ties share their mean rank
        ranks[x == v] = ranks[x == v].mean()
    return ranks


def correlations(reports: list[dict]) -> dict[str, dict]:
    """Pearson and Spearman between imagined and real success across policies, overall and per task."""
    if any("real" not in r for r in reports):
        raise InputError("correlations need the real success of every policy (real=True)")

    def task_rate(rep: dict, source: str, task: str) -> float:
        cells = [c for k, c in rep[source]["cells"].items() if k.split("/")[0] == task]
        return sum(c["successes"] for c in cells) / sum(c["episodes"] for c in cells)

    tasks = sorted({k.split("/")[0] for k in reports[0]["imagined"]["cells"]})
    rows = {"all": (np.array([r["imagined"]["success"] for r in reports]),
                    np.array([r["real"]["success"] for r in reports]))}
    for t in tasks:
        rows[t] = (np.array([task_rate(r, "imagined", t) for r in reports]),
                   np.array([task_rate(r, "real", t) for r in reports]))
    return {k: {"policies": len(reports), "pearson": _pearson(x, y), "spearman": _pearson(_ranks(x), _ranks(y)),
                "mean_abs_gap": float(np.abs(x - y).mean())} for k, (x, y) in rows.items()}


def episode_pair(policy: str, wm: str, reward_model: str, request: StartRequest, max_steps: int = 200,
                 workers: int = 1) -> dict[str, Any]:
    """One start, the policy in imagination and in the simulator: the frames at every chunk boundary of each
    (uint8 [T, H, W, 3]), the outcomes, and the classifier's per-step success probabilities in imagination."""
    from models.policy_io import load_policy
    from models.rl import rollout
    from models.worlds import SimWorld, WMWorld

    model = load_policy(policy)
    pc = model.config
    out: dict[str, Any] = {"start": None}
    world = WMWorld(wm, reward_model, camera=pc.camera, image_size=pc.image_size, max_steps=max_steps)
    sim = SimWorld(camera=pc.camera, image_size=pc.image_size, max_steps=max_steps, workers=workers, slots_hint=1)
    try:
        for name, w in (("imagined", world), ("real", sim)):
            frames: list[np.ndarray] = []
            r = rollout(w, None, model, None, [request], torch.Generator(), max_steps, frames=frames)
            out[name] = {"frames": np.stack([f[0] for f in frames]), "success": bool(r.success[0]),
                         "steps": int(r.steps[0])}
            out["start"] = w.starts[0]
        out["imagined"]["probs"] = np.concatenate([p[0] for p in world.probs if not np.isnan(p[0]).all()])
    finally:
        world.close()
        sim.close()
    return out
