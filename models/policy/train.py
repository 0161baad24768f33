"""Behaviour-cloning pretraining of the VLA policy by flow matching, top to bottom.

Two checkpoints come out of one run, mirroring the paper's 30K- vs 150K-iteration SFT policies:
    OUT/        the "full" policy after `steps` (EMA weights), updated every `save_every` steps
    OUT/base/   the "base" policy: a snapshot at step `base_at` (or that fraction of the steps), deliberately
                short of convergence; cpu-quick: step 250 of 4500, chosen from measured success (docs/results.md)
    OUT/snapshots/step-N/  optional (`snapshot_every`): more snapshots, to see success against training steps
Metrics go to OUT/metrics.jsonl (split "train": loss, lr, grad norm, speed; split "heldout": action MSE).
OUT/train_state.pt holds everything needed to resume after a kill.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from models.checkpoint import device_for, load_train_state, read_config, save_train_state
from models.hooks import Hooks, MetricsLog
from models.policy.config import TrainConfig, make_train_config
from models.policy.data import WindowTensors, inspect_datasets, load_split, parse_datasets
from models.policy.model import VLAPolicy
from models.policy.text import InstructionEncoder
from models.policy_io import check_dataset_compat, save_policy
from sim.errors import InputError
from sim.instructions import all_known, training_phrasings
from sim.tasks import TASKS


@torch.no_grad()
def heldout_action_mse(policy: VLAPolicy, data: WindowTensors, windows: torch.Tensor, batch: int = 256) -> dict:
    """Mean squared error (simulator units) between the deterministic chunk and the expert's, on real steps."""
    sq, first_sq, count, first_count = 0.0, 0.0, 0.0, 0.0
    for i in range(0, len(windows), batch):
        b = data.batch(windows[i : i + batch])
        pred = policy.act(b).cpu()
        err = ((pred - b["actions"]) ** 2).mean(-1)  # [B, chunk]
        m = b["mask"].float()
        sq += float((err * m).sum())
        count += float(m.sum())
        first_sq += float(err[:, 0].sum())
        first_count += err.shape[0]
    return {"action_mse": sq / max(count, 1.0), "first_action_mse": first_sq / max(first_count, 1.0)}


def _lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def _ema_update(ema: VLAPolicy, model: VLAPolicy, decay: float) -> None:
    # one call for all tensors: the same per-tensor lerp without a Python loop
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


def train_policy(
    dataset: str,
    out: str,
    preset: str = "cpu-quick",
    steps: int | None = None,
    resume: bool = False,
    hooks: Hooks | None = None,
    **overrides: Any,
) -> dict:
    """Train a policy on one or more episode files ('a.h5,b.h5'); returns a JSON-ready summary."""
    hooks = hooks or Hooks()
    out_dir = Path(out).expanduser()
    paths = parse_datasets(dataset)
    prior = load_train_state(out_dir) if resume else None
    if prior is not None:  # rebuilt through the constructor: checked like a new run's config
        cfg = TrainConfig(**{**prior["cfg"], **({"steps": steps} if steps is not None else {})})
        if overrides:
            raise InputError(f"cannot change {', '.join(sorted(overrides))} when resuming")
        if sorted(prior["datasets"]) != sorted(paths):
            raise InputError(f"resume: the run was trained on {', '.join(prior['datasets'])}, not {', '.join(paths)}")
    else:
        cfg = make_train_config(preset, steps, **overrides)
        if (out_dir / "config.json").exists():
            raise InputError(f"{out_dir} already holds a checkpoint: pass --resume to continue it or pick a new --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    info = inspect_datasets(paths)

    # -- the policy, sized to the data ---------------------------------------------------------
    cfg = replace(cfg, policy=replace(cfg.policy, camera=info.camera, image_size=info.image_size,
                                      action_dim=info.action_dim, proprio_dim=info.proprio_dim))
    pcfg = cfg.policy
    if prior is not None:
        for p in paths:
            check_dataset_compat(pcfg, p, f"checkpoint {out_dir}")
    device = device_for(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    hooks.progress(0.0, "loading episodes")
    train, held = load_split(paths, cfg.heldout_fraction, cfg.seed, pcfg.context, pcfg.chunk, cfg.label)
    text = InstructionEncoder()
    # every instruction the data uses, each task's training phrasings and its held-out sets (for evaluation):
    # embedded once here, so sampling a phrasing per window costs a dictionary lookup
    known = [s for t in info.tasks if t in TASKS for s in all_known(t)]
    text.warm(list(dict.fromkeys([*info.instructions, *known])))
    if cfg.instructions == "augmented":
        train.use_phrasings({t: training_phrasings(t) for t in train.tasks if t in TASKS})
    policy = VLAPolicy(pcfg, text).to(device)
    valid = train.chunk_idx[train.mask]  # label rows that some window's loss actually uses
    policy.action_norm.fit(train.labels[valid], pcfg.action_norm)
    policy.proprio_norm.fit(train.proprio, "meanstd")
    known_state = torch.isfinite(train.states).all(1)
    if known_state.any():
        policy.state_norm.fit(train.states[known_state], "meanstd")
    ema = VLAPolicy(pcfg, text).to(device)
    ema.load_state_dict(policy.state_dict())
    ema.requires_grad_(False)
    policy.set_channels_last(cfg.channels_last)

    vision = list(policy.vision.parameters())
    rest = [p for n, p in policy.named_parameters() if not n.startswith(("vision.", "sigma_net."))]  # σ-net: RFT
    opt = torch.optim.AdamW(
        [{"params": vision, "lr_scale": cfg.vision_lr_scale}, {"params": rest, "lr_scale": 1.0}],
        lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cfg.fused_optimizer or None,
    )
    eval_windows = None
    if held is not None:
        pick = torch.Generator().manual_seed(cfg.seed + 1)
        eval_windows = torch.randperm(len(held), generator=pick)[: cfg.eval_windows]

    log = MetricsLog(out_dir / "metrics.jsonl")
    step, elapsed = 0, 0.0
    if prior is not None:
        policy.load_state_dict(prior["model"])
        ema.load_state_dict(prior["ema"])
        opt.load_state_dict(prior["optim"])
        gen.set_state(prior["gen"])
        torch.set_rng_state(prior["rng"])
        step, elapsed = int(prior["step"]), float(prior["elapsed"])
        log.truncate_after(step)
    else:
        log.path.write_text("")
    base_step = cfg.base_step
    n_params = sum(p.numel() for n, p in policy.named_parameters() if not n.startswith(("sigma_net.", "state_head.")))

    def extra(role: str, at: int, scores: dict | None) -> dict:
        return {
            "role": role, "step": at, "complete": at >= cfg.steps, "datasets": paths, "tasks": info.tasks,
            "train": cfg.to_json(), "elapsed_s": round(elapsed, 1), "heldout": scores or {},
            "train_windows": len(train), "heldout_windows": len(held) if held is not None else 0,
        }

    def evaluate_heldout(at: int) -> dict | None:
        if eval_windows is None:
            return None
        scores = heldout_action_mse(ema, held, eval_windows)
        log.write(at, scores, split="heldout")
        hooks.metrics(at, {f"heldout_{k}": v for k, v in scores.items()})
        return scores

    def save(at: int, scores: dict | None) -> None:
        save_policy(ema, out_dir, extra("full" if at >= cfg.steps else "latest", at, scores))
        save_train_state(out_dir, {
            "step": at, "elapsed": elapsed, "cfg": cfg.to_json(), "datasets": paths, "model": policy.state_dict(),
            "ema": ema.state_dict(), "optim": opt.state_dict(), "gen": gen.get_state(), "rng": torch.get_rng_state(),
        })
        hooks.artifact("checkpoint", str(out_dir))

    # -- the loop ----------------------------------------------------------------------------
    policy.train()
    scores: dict | None = None
    stopped = False
    tick, tick_step = time.time(), step
    shown_loss: float | None = None
    while step < cfg.steps:
        if hooks.should_stop():
            stopped = True
            break
        t0 = time.time()
        lr = _lr_at(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        idx = torch.randint(len(train), (cfg.batch_size,), generator=gen)
        batch = train.batch(idx, gen)
        cond, vision = policy.encode(batch, augment_shift=cfg.shift, generator=gen, with_vision=True)
        actions = policy.action_norm.normalize(batch["actions"].to(device))
        # flow matching: x_t = (1 − t)·ε + t·a, regress the velocity ε − a (fm_samples draws per image)
        fm_loss = policy.fm_loss_from_cond(cond, actions, batch["mask"].to(device), cfg.fm_samples, gen)
        state_loss = policy.state_loss(vision, batch["state"]) if cfg.aux_weight > 0 else fm_loss.new_zeros(())
        loss = fm_loss + cfg.aux_weight * state_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        opt.step()
        _ema_update(ema, policy, min(cfg.ema, (1 + step) / (10 + step)))
        step += 1
        elapsed += time.time() - t0

        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.time()
            row = {"loss": loss.item(), "fm_loss": fm_loss.item(), "state_loss": state_loss.item(), "lr": lr,
                   "grad_norm": float(grad_norm), "steps_per_s": (step - tick_step) / max(now - tick, 1e-9),
                   "elapsed_s": elapsed}
            tick, tick_step = now, step
            shown_loss = row["fm_loss"]
            log.write(step, row)
            hooks.metrics(step, row)
        if step == base_step:
            base_scores = evaluate_heldout(step)
            save_policy(ema, out_dir / "base", extra("base", step, base_scores))
            hooks.artifact("checkpoint", str(out_dir / "base"))
        if cfg.snapshot_every and step % cfg.snapshot_every == 0 and step < cfg.steps:
            save_policy(ema, out_dir / "snapshots" / f"step-{step}", extra("snapshot", step, None))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            scores = evaluate_heldout(step)
        if step % cfg.save_every == 0 or step == cfg.steps:
            save(step, scores)
        # the loss of the last logged step: reading a tensor every step would wait for the device each time
        shown = "" if shown_loss is None else f" loss {shown_loss:.4f}"
        hooks.progress(step / cfg.steps, f"step {step}/{cfg.steps}{shown}")

    if stopped:
        save(step, scores)
    if scores is None and step > 0:  # resumed a finished run: report what its checkpoint recorded
        scores = read_config(out_dir).get("heldout") or None
    summary = {
        "out": str(out_dir), "base": str(out_dir / "base") if (out_dir / "base" / "config.json").exists() else None,
        "step": step, "steps": cfg.steps, "complete": step >= cfg.steps, "stopped": stopped,
        "elapsed_s": round(elapsed, 1), "heldout": scores or {}, "params": n_params,
        "train_windows": len(train), "datasets": paths,
    }
    hooks.progress(1.0 if not stopped else step / cfg.steps, "done" if not stopped else "stopped")
    return summary

