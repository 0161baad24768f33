"""VLA-RFT: GRPO fine-tuning of a VLA policy inside a frozen world model, with verified rewards.

One training step, top to bottom:
  1. sample B start states from the dataset (context frames, proprio, instruction, ground-truth chunk);
  2. draw G chunks per state from the stochastic policy (σ-net / SDE mode), keeping per-dimension log-probs;
  3. roll every chunk out in the frozen world model, and
  4. the ground-truth chunk once per state, auto-regressively on the model's own predictions;
  5. verified reward r = −mean_t[ MAE(ô^π_t, ô^ref_t) + λ·perceptual(ô^π_t, ô^ref_t) ], pixels in [0, 1];
  6. group-normalised advantage A = (r − mean_group) / (std_group + 1e-6);
  7. PPO clipped objective on per-dimension ratios (ε, dual clip c), entropy bonus, and an adaptive
     behaviour-cloning term bc · clip(approx_kl / kl_scale, 0, 1) · flow-matching loss on the ground truth;
  8. AdamW with gradient clipping; only the action head, its projections and the σ-net train.

Steps 3–5 are a reward source of models/rewards.py (`REWARDS`, chosen by `reward_source`): "wm" as above;
"sim" computes the same verified reward on real frames (the simulator restored to the dataset state,
replaying each chunk) — the upper bound; "action_l1" is the kinematic baseline −mean|a − a_gt| with no
world model. This module holds the algorithm: config and presets, advantages, the clipped objective, the loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import device_for, load_train_state, output_folder, read_config, save_train_state
from models.hooks import Hooks, MetricsLog
from models.presets import check_fields, from_preset
from models.rewards import REWARD_SOURCES, REWARDS
from sim.errors import InputError


@dataclass
class RFTConfig:
    steps: int = 400
    batch_size: int = 16  # B start states per step
    group_size: int = 16  # G chunks per start state
    lr_head: float = 1e-6  # the paper's, for a 0.5B-parameter policy; presets scale it for ours
    lr_sigma: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 10
    clip_eps: float = 0.2
    dual_clip: float = 3.0
    entropy_coef: float = 0.003
    bc_coef: float = 0.01
    bc_kl_scale: float = 0.2
    grad_clip: float = 1.0
    update_epochs: int = 1  # optimiser steps per batch of rollouts (the paper: 1)
    reward_source: str = "wm"
    reward_lambda: float = 0.0  # weight of the perceptual term
    heldout_fraction: float = 0.0  # start states drawn only from the training split of the dataset
    checkpoint_every: int = 50
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: leave the default)
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.reward_source not in REWARD_SOURCES:
            raise InputError(f"reward source must be one of {', '.join(REWARD_SOURCES)}, got {self.reward_source!r}")
        check_fields(self, "at_least_1", ("steps", "batch_size", "checkpoint_every", "update_epochs"), dashes=True)
        if self.group_size < 2:
            raise InputError(f"group-size must be at least 2 (advantages are relative), got {self.group_size}")


# Our policy is ~1000x smaller than the paper's; its 1e-6 / 1e-5 barely move it in 400 steps, so the
# presets scale the rates (measured in docs/results.md).
PRESETS: dict[str, RFTConfig] = {
    "smoke": RFTConfig(steps=3, batch_size=2, group_size=4, lr_head=1e-4, lr_sigma=1e-3, checkpoint_every=2,
                       warmup_steps=1),
    "cpu-quick": RFTConfig(steps=400, batch_size=8, group_size=8, lr_head=3e-5, lr_sigma=3e-4, checkpoint_every=25),
    "gpu": RFTConfig(steps=400, batch_size=16, group_size=16, lr_head=3e-5, lr_sigma=3e-4, checkpoint_every=50),
}


def make_config(preset: str = "cpu-quick", steps: int | None = None, **overrides: Any) -> RFTConfig:
    return from_preset(PRESETS, preset, "RFT", steps, overrides)


# -- the GRPO objective ------------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """[B, G] rewards → advantages normalised within each group of G samples of one start state."""
    return (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-6)


def clipped_objective(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, adv: torch.Tensor, clip_eps: float, dual_clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate with dual clip, per action dimension; returns (loss, ratio).

    adv is [N] (one advantage per sampled chunk) and broadcasts to every dimension of [N, chunk, A].
    """
    adv = adv.reshape(-1, *([1] * (log_prob.dim() - 1)))
    ratio = (log_prob - old_log_prob).exp()
    surr1 = ratio * adv
    surr2 = ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
    objective = torch.min(surr1, surr2)
    objective = torch.where(adv < 0, torch.max(objective, dual_clip * adv), objective)  # dual clip
    return -objective.mean(), ratio


# -- training ---------------------------------------------------------------------------------------
def _collate(items: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


def _lr_factor(cfg: RFTConfig, step: int) -> float:
    return min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def train_rft(
    policy: str,
    wm: str | None,
    dataset: str,
    out: str,
    steps: int | None = None,
    resume: bool = False,
    hooks: Hooks | None = None,
    preset: str = "cpu-quick",
    **overrides: Any,
) -> dict:
    """Fine-tune the policy checkpoint `policy` with GRPO; writes a policy checkpoint to `out`."""
    from models.policy_io import check_dataset_compat, load_policy, save_policy
    from sim.episodes import EpisodeFile
    from sim.loader import WindowDataset, split_episodes

    hooks = hooks or Hooks()
    cfg = make_config(preset, steps, **overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = device_for(cfg.device)
    if REWARDS[cfg.reward_source].needs_wm and not wm:
        raise InputError("--wm is required with the world-model reward (or use --reward-source sim|action_l1)")
    # every input is checked before anything is written
    base_cfg = read_config(policy, "policy")
    if wm:
        read_config(wm, "world_model")
    EpisodeFile(dataset).close()
    out_dir = output_folder(out)

    state = load_train_state(out_dir) if resume else None
    start_step = 0
    source = policy
    if state is not None:
        source, start_step = str(out_dir), int(state["step"])
    elif resume:
        hooks.progress(0.0, "nothing to resume: starting from the base policy")
    model = load_policy(source, device=str(device))
    check_dataset_compat(model.config, dataset, what=f"policy {policy}")

    groups = model.rft_parameter_groups()
    trainable = {id(p) for ps in groups.values() for p in ps}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    model.train()
    opt = torch.optim.AdamW(
        [{"params": groups["head"], "lr": cfg.lr_head, "base_lr": cfg.lr_head},
         {"params": groups["sigma"], "lr": cfg.lr_sigma, "base_lr": cfg.lr_sigma}],
        betas=(0.9, 0.999), weight_decay=cfg.weight_decay,
    )
    if state is not None:
        opt.load_state_dict(state["optimizer"])

    reward_fn = REWARDS[cfg.reward_source](wm=wm, dataset=dataset, device=device, lam=cfg.reward_lambda)
    context = max(model.config.context, reward_fn.context_frames)
    train_eps = split_episodes(dataset, cfg.heldout_fraction, cfg.seed)[0] if cfg.heldout_fraction else None
    data = WindowDataset(dataset, context=context, horizon=model.config.chunk, episodes=train_eps, in_memory=True)

    rng = np.random.default_rng(cfg.seed + start_step)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + start_step)
    if state is not None:
        rng.bit_generator.state = state["numpy_rng"]
        gen.set_state(state["torch_rng"])
    log = MetricsLog(out_dir / "metrics.jsonl")
    log.truncate_after(start_step)
    meta = {"base_policy": str(Path(policy).resolve()), "world_model": str(Path(wm).resolve()) if wm else None,
            "datasets": list(dict.fromkeys([*base_cfg.get("datasets", []), str(Path(dataset).resolve())])),
            "rft": asdict(cfg), "preset": preset}

    def save(step: int) -> None:
        save_policy(model, out_dir, extra={**meta, "step": step, "complete": step >= cfg.steps})
        save_train_state(out_dir, {"step": step, "optimizer": opt.state_dict(),
                                   "numpy_rng": rng.bit_generator.state, "torch_rng": gen.get_state()})
        hooks.artifact("checkpoint", str(out_dir))

    history: list[dict] = []
    t_start = time.time()
    step = start_step
    try:
        while step < cfg.steps:
            if hooks.should_stop():
                break
            t0 = time.time()
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * _lr_factor(cfg, step)
            # 1. B start states
            idx = rng.choice(len(data), size=cfg.batch_size, replace=len(data) < cfg.batch_size)
            batch = _collate([data[int(i)] for i in idx])
            pbatch = {**batch, "context": batch["context"][:, -model.config.context :]}
            gt = batch["actions"]  # ground-truth chunk, raw simulator units
            # 2. G chunks per state from the SDE policy (no grad: these are the behaviour samples)
            sample = model.sample_sde(pbatch, cfg.group_size, generator=gen)
            # 3–5. verified rewards [B, G]
            t_r = time.time()
            rewards, rinfo = reward_fn(batch, sample.actions, gt)
            reward_time = time.time() - t_r
            # 6. group-normalised advantages, broadcast to every action dimension
            adv = group_advantages(rewards).reshape(-1).to(device)
            # 7–8. clipped policy-gradient loss with entropy bonus and adaptive BC, AdamW step(s)
            for _ in range(cfg.update_epochs):
                log_prob = model.log_prob_of(pbatch, sample.chain)  # [N, chunk, A]
                pg_loss, ratio = clipped_objective(log_prob, sample.log_prob.to(device), adv, cfg.clip_eps,
                                                   cfg.dual_clip)
                entropy = model.entropy_of(pbatch, sample.chain).mean()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - ratio.log()).mean()  # the k3 estimator of KL(old ‖ new)
                    clip_frac = ((ratio - 1).abs() > cfg.clip_eps).float().mean()
                bc_weight = cfg.bc_coef * float(torch.clamp(approx_kl / cfg.bc_kl_scale, 0.0, 1.0))
                bc_loss = model.flow_matching_loss(pbatch, gt) if bc_weight > 0 else torch.zeros((), device=device)
                loss = pg_loss - cfg.entropy_coef * entropy + bc_weight * bc_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_([p for g in groups.values() for p in g], cfg.grad_clip)
                opt.step()
            step += 1
            row = {
                "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
                "reward_group_std": float(rewards.std(1).mean()), "adv_std": float(adv.std()),
                "loss": loss.item(), "pg_loss": pg_loss.item(), "bc_loss": bc_loss.item(), "bc_weight": bc_weight,
                "clip_frac": clip_frac.item(), "approx_kl": approx_kl.item(), "entropy": entropy.item(),
                "sigma_mean": sample.sigma.mean().item(), "grad_norm": grad_norm.item(),
                "step_time": time.time() - t0, "reward_time": reward_time, "lr_head": opt.param_groups[0]["lr"],
                **{f"reward_{k}": float(v) for k, v in rinfo.items()},
            }
            log.write(step, row)
            hooks.metrics(step, row)
            history.append(row)
            hooks.progress(step / cfg.steps, f"RFT step {step}/{cfg.steps} reward {row['reward_mean']:.4f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save(step)
    finally:
        reward_fn.close()
    if step > start_step and (step % cfg.checkpoint_every != 0 and step != cfg.steps):
        save(step)  # stopped early: keep what was learned
    if step == start_step and state is None:
        save(step)
    wall = time.time() - t_start
    first = history[: max(1, len(history) // 10)]
    last = history[-max(1, len(history) // 10) :]
    return {
        "out": str(out_dir), "steps": step, "complete": step >= cfg.steps, "wall_seconds": wall,
        "seconds_per_step": wall / max(1, step - start_step), "reward_source": cfg.reward_source,
        "reward_first": float(np.mean([h["reward_mean"] for h in first])) if history else math.nan,
        "reward_last": float(np.mean([h["reward_mean"] for h in last])) if history else math.nan,
    }
