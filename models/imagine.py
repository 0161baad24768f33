"""The playground: what the world model imagines a policy doing from a start, next to what really happens.

For each policy, from the same start state:
  - imagined: the policy acts on the world model's own predicted frames (and predicted proprio), one
    chunk at a time, re-planning after each chunk;
  - real: the same policy in the simulator, until success or `max_steps`.
The verified reward of an imagined rollout compares it with the world model's rollout under the
scripted expert's actions from the same start (the expert is the ground truth a dataset would hold),
over the imagined horizon: r = −mean_t MAE(ô^π_t, ô^expert_t).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.hooks import Hooks
from models.world_model.model import to_uint8
from sim.errors import InputError


def _chunk_policy(path: str):
    from models.policy_io import SimChunkPolicy
    from sim.evaluate import ExpertChunkPolicy

    return ExpertChunkPolicy() if path == "expert" else SimChunkPolicy(path)


def imagine_policy(wm, policy, first_frame: np.ndarray, proprio: np.ndarray, instruction: str, horizon: int,
                   reward_model=None, task: str | None = None):
    """Closed loop inside the world model, re-anchored every chunk as the imagined world of RL runs
    (models/worlds.py: WMWorld); returns (frames uint8 [T, H, W, 3], actions [T, 4], the step of the first
    detected success or 0 — always 0 without a reward model)."""
    context = int(policy.policy.config.context)
    frames = [first_frame] * context
    anchor = torch.from_numpy(first_frame).permute(2, 0, 1)[None].float().to(wm.device) / 255
    prop = torch.from_numpy(np.asarray(proprio, np.float32))[None]
    detector = reward_model.detector() if reward_model is not None else None
    task_index = reward_model.task_index([task]) if reward_model is not None else None
    run, success_at = np.zeros(1, int), 0
    out_frames, actions = [], []
    with torch.inference_mode():
        while len(actions) < horizon and not success_at:
            ctx = torch.from_numpy(np.stack(frames[-context:])).permute(0, 3, 1, 2)[None]
            chunk = policy.policy.act({"context": ctx, "proprio": prop, "instruction": [instruction]})
            chunk = chunk[:, : horizon - len(actions)]
            z, hands, decoded = wm.imagine_chunk(anchor, chunk.to(wm.device), decode_all=True)
            keep = chunk.shape[1]
            if detector is not None:
                probs = reward_model.probs(z, hands, task_index).numpy()
                hit, run = detector.update(run, np.array([len(actions)]), probs)
                if hit[0] >= 0:
                    keep, success_at = int(hit[0]) + 1, len(actions) + int(hit[0]) + 1
            pred = to_uint8(decoded[0, :keep])
            out_frames += list(pred)
            frames += list(pred)
            actions += list(chunk[0, :keep].cpu().numpy())
            anchor = decoded[:, -1]
            prop = hands[:, -1].cpu().float()
    return np.stack(out_frames), np.stack(actions), success_at


def imagine(
    world_model: str | None,
    task: str,
    instruction: str | None = None,
    seed: int = 0,
    out: str = ".",
    policies: dict[str, str] | None = None,
    policy: str | None = None,
    perturbation: str = "none",
    offsets: dict[str, list[float]] | None = None,
    index: int = 0,
    horizon: int = 48,
    max_steps: int = 200,
    hooks: Hooks | None = None,
    reward_model: str | None = None,
) -> dict[str, Any]:
    """Imagined and real rollouts of each policy from one start; writes MP4s into `out`. With a reward model
    (trained for this world model) the imagined episode ends at its first detected success and its cell
    reports success, next to the simulator's. `instruction_match`: per policy label (not the expert), whether
    the policy knows the instruction on this task's scene (models/policy/language.py)."""
    from models.policy.language import match_policy
    from models.policy.text import check_instruction
    from models.rewards import verified_reward
    from sim.env import SimEnv
    from sim.evaluate import ExpertChunkPolicy, run_episode
    from sim.perturb import parse_perturbation, with_offsets
    from sim.tasks import get_task
    from sim.video import grid, side_by_side, write_mp4

    hooks = hooks or Hooks()
    spec = get_task(task)
    text = check_instruction(instruction if instruction is not None else spec.instruction)
    policies = dict(policies or {})
    if policy is not None:
        policies.setdefault("policy", policy)
    if not policies:
        policies = {"expert": "expert"}
    if not 1 <= horizon <= 400:
        raise InputError(f"horizon must be between 1 and 400, got {horizon}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    wm = None
    camera, size = "workspace", 64
    if world_model:
        from models.world_model import load_world_model

        wm = load_world_model(world_model)
        camera, size = wm.camera or camera, wm.image_size
    rm = None
    if reward_model:
        if wm is None:
            raise InputError("a reward model needs the world model it reads (world_model)")
        from models.reward_model import load_reward_model

        rm = load_reward_model(reward_model, wm)
    built = {label: _chunk_policy(path) for label, path in policies.items()}
    # does each policy know this instruction on this scene? (the expert ignores language)
    matches = {}
    for label, path in policies.items():
        if path != "expert":
            hooks.progress(0.0, f"{label}: checking the instruction")
            matches[label] = match_policy(path, text, spec.name, encoder=built[label].policy.text)
    for label, p in built.items():
        cfg = getattr(getattr(p, "policy", None), "config", None)
        if cfg is not None and (cfg.camera, cfg.image_size) != (camera, size):
            if wm is not None:
                raise InputError(f"policy '{label}' sees {cfg.image_size}px '{cfg.camera}' frames, the world model "
                                 f"{size}px '{camera}'")
            camera, size = cfg.camera, cfg.image_size

    env = SimEnv(spec.name, camera=camera, image_size=size, max_steps=max_steps)
    try:
        start = env.sample_start(parse_perturbation(perturbation), seed=seed, index=index, stream="demo")
        if offsets:
            start = with_offsets(start, spec, offsets)
        from sim.env import StartRejected

        try:
            obs0 = env.reset(start)
        except StartRejected as exc:
            raise InputError(f"these offsets put {spec.name}'s object and goal too close together ({exc})") from exc

        # the expert's actions from this start: the reference for the verified reward
        expert = ExpertChunkPolicy()
        ref_actions = []
        e_obs = obs0
        expert.reset(spec.name, text)
        for _ in range(horizon):
            a = expert.act(e_obs)[0]
            ref_actions.append(a)
            e_obs, _, done = env.step(a)
            if done or env.done:  # success, or the step cap (the simulator refuses to step past it)
                break
        ref_actions += [np.zeros(4, np.float32)] * (horizon - len(ref_actions))  # after success: hold still
        ref_frames = None
        if wm is not None:
            ctx = torch.from_numpy(obs0.frame).permute(2, 0, 1)[None, None]
            ref_frames = wm.rollout(ctx, torch.from_numpy(np.stack(ref_actions))[None])

        cells, rows = [], []
        for i, (label, p) in enumerate(built.items()):
            hooks.progress(i / len(built), f"{label}: simulator")
            success, steps, sim_frames = run_episode(env, p, start, text, max_steps, record=True)
            sim_name = f"{label}_simulator.mp4"
            write_mp4(out_dir / sim_name, sim_frames)
            cells.append({"policy": label, "source": "simulator", "video": sim_name, "success": bool(success),
                          "verified_reward": None, "steps": int(steps)})
            row = [sim_frames]
            if wm is not None and policies[label] != "expert":
                hooks.progress((i + 0.5) / len(built), f"{label}: world model")
                p.reset(spec.name, text)
                wm_frames, _, success_at = imagine_policy(wm, p, obs0.frame, obs0.proprio, text, horizon, rm,
                                                           spec.name)
                pred = torch.from_numpy(wm_frames).permute(0, 3, 1, 2)[None].float() / 255
                reward = float(verified_reward(pred, ref_frames[:, : pred.shape[1]])[0])
                wm_name = f"{label}_world_model.mp4"
                write_mp4(out_dir / wm_name, wm_frames)
                cells.append({"policy": label, "source": "world_model", "video": wm_name,
                              "success": bool(success_at) if rm is not None else None,
                              "verified_reward": reward, "steps": len(wm_frames)})
                row = [wm_frames, sim_frames]
            elif wm is not None:  # the expert itself: its imagined rollout is the reference
                wm_frames = to_uint8(ref_frames[0])
                wm_name = f"{label}_world_model.mp4"
                write_mp4(out_dir / wm_name, wm_frames)
                cells.append({"policy": label, "source": "world_model", "video": wm_name, "success": None,
                              "verified_reward": 0.0, "steps": horizon})
                row = [wm_frames, sim_frames]
            rows.append(side_by_side(*row))
            hooks.artifact("video", str(out_dir / sim_name))
    finally:
        env.close()
    # one row per policy, stacked; every row has the same columns, so the same width
    n = max(len(r) for r in rows)
    write_mp4(out_dir / "grid.mp4", [grid([[r[min(t, len(r) - 1)]] for r in rows]) for t in range(n)])
    hooks.artifact("video", str(out_dir / "grid.mp4"))
    hooks.progress(1.0, "done")
    return {"start": start.to_json(), "instruction": text, "task": spec.name, "cells": cells,
            "grid_video": "grid.mp4", "columns": ["world_model", "simulator"] if wm is not None else ["simulator"],
            "reference": "the world model's rollout under the scripted expert's actions from the same start",
            "instruction_match": matches}
