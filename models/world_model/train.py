"""World-model training, top to bottom: data -> autoencoder phase -> latent dynamics phase.

Phase 1 trains the context-conditioned frame autoencoder on (context frame, later frame) pairs
with an L1 loss that up-weights moving pixels. Phase 2 freezes it, encodes every frame once and
trains the latent dynamics with unrolls on its own predictions: latent MSE + a moving-weighted L1
on decoded frames (through the frozen decoder) + an auxiliary next-proprio loss.

Everything needed to continue after a kill -9 (weights, optimiser, schedule, RNG, step) is saved in
`train_state.pt` every `checkpoint_every` steps, before the published `model.safetensors`.
Metrics go to `metrics.jsonl` (see METRIC_SCHEMA).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.checkpoint import CheckpointError, device_for, load_train_state, read_config, save_train_state
from models.hooks import Hooks, MetricsLog
from models.world_model.autoencoder import expand_context
from models.world_model.config import INHERITED, WMConfig, WMConfigError, make_config
from models.world_model.data import FrameStore, load_store, split_by_task
from models.world_model.metrics import frame_psnr, moving_mask, moving_sums, psnr_from_mse
from models.world_model.model import ARCH, KIND, WorldModel, precision

# split -> keys of every row of that split in metrics.jsonl (besides step, time, split)
METRIC_SCHEMA: dict[str, tuple[str, ...]] = {
    "ae": ("loss", "l1", "psnr", "lr", "frames_per_s"),
    "dyn": ("loss", "latent_mse", "pixel_l1", "hand_mse", "lr", "frames_per_s"),
    "heldout": ("ae_psnr_h8", "ae_psnr_moving_h8", "psnr_h1", "psnr_h8", "psnr_moving_h8", "psnr_moving_shuffled_h8",
                "psnr_moving_copy_h8", "psnr_copy_h8"),
}
WARMUP = 50


def _lr(step: int, total: int, base: float) -> float:
    if step < WARMUP:
        return base * (step + 1) / WARMUP
    frac = (step - WARMUP) / max(1, total - WARMUP)
    return base * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac))))


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0


def _weighted_l1(pred: torch.Tensor, real: torch.Tensor, ctx: torch.Tensor, moving_weight: float) -> torch.Tensor:
    w = 1.0 + (moving_weight - 1.0) * moving_mask(real, ctx).float()
    return ((pred - real).abs() * w).sum() / (w.sum() * pred.shape[1])


def _eval_windows(store: FrameStore, episodes: np.ndarray, horizon: int, n: int) -> np.ndarray:
    starts = store.window_starts(episodes, horizon)
    if len(starts) == 0:
        return starts
    return starts[np.linspace(0, len(starts) - 1, min(n, len(starts))).round().astype(np.int64)]


def _shuffle_other_episode(episodes: np.ndarray) -> np.ndarray:
    """A permutation that sends each window to one from another episode where possible (deterministic)."""
    n = len(episodes)
    for shift in range(1, n):
        perm = np.roll(np.arange(n), shift)
        if np.all(episodes[perm] != episodes):
            return perm
    return np.roll(np.arange(n), 1)


@torch.no_grad()
def heldout_metrics(wm: WorldModel, store: FrameStore, starts: np.ndarray, horizon: int,
                    with_dynamics: bool, batch: int = 64) -> dict[str, float]:
    """Quick held-out check used during training (the full evaluation is evaluate.py)."""
    wm.eval()
    h = horizon
    sums = {k: [0.0, 0.0] for k in ("true", "shuffled", "copy", "ae")}
    psnr = {"ae": [], "h1": [], "h8": [], "copy": []}
    perm = _shuffle_other_episode(store.episode_of(starts))
    for i in range(0, len(starts), batch):
        idx = np.arange(i, min(i + batch, len(starts)))
        b = store.gather(starts[idx], wm.context_frames, h)
        b_shuf = store.gather(starts[perm[idx]], wm.context_frames, h)
        ctx = _float(b["context"]).to(wm.device)
        real = _float(b["future"][:, h - 1]).to(wm.device)
        last = ctx[:, -1]
        mask = moving_mask(real, last)
        rec = wm.reconstruct(ctx, b["future"][:, h - 1 : h])[:, 0]
        psnr["ae"].append(frame_psnr(rec, real))
        _add(sums["ae"], moving_sums(rec, real, mask))
        psnr["copy"].append(frame_psnr(last, real))
        _add(sums["copy"], moving_sums(last, real, mask))
        if with_dynamics:
            pred = wm.rollout(ctx, b["actions"])
            psnr["h1"].append(frame_psnr(pred[:, 0], _float(b["future"][:, 0]).to(wm.device)))
            psnr["h8"].append(frame_psnr(pred[:, h - 1], real))
            _add(sums["true"], moving_sums(pred[:, h - 1], real, mask))
            shuf = wm.rollout(ctx, b_shuf["actions"])
            _add(sums["shuffled"], moving_sums(shuf[:, h - 1], real, mask))

    def mean(k):
        return float(torch.cat(psnr[k]).mean()) if psnr[k] else None

    def pooled(k):
        return float(psnr_from_mse(sums[k][0] / sums[k][1])) if sums[k][1] else None

    return {"ae_psnr_h8": mean("ae"), "ae_psnr_moving_h8": pooled("ae"), "psnr_h1": mean("h1"), "psnr_h8": mean("h8"),
            "psnr_moving_h8": pooled("true"), "psnr_moving_shuffled_h8": pooled("shuffled"),
            "psnr_moving_copy_h8": pooled("copy"), "psnr_copy_h8": mean("copy")}


def _add(acc: list[float], s: tuple[float, float]) -> None:
    acc[0] += s[0]
    acc[1] += s[1]


@torch.no_grad()
def encode_store(wm: WorldModel, store: FrameStore, batch: int = 256, progress=None) -> torch.Tensor:
    """Latents of every frame in the store, float16 on the CPU, (N, lat, h, w)."""
    wm.eval()
    out = []
    n = len(store.frames)
    for i in range(0, n, batch):
        x = torch.from_numpy(store.frames[i : i + batch]).permute(0, 3, 1, 2).to(wm.device)
        out.append(wm.ae.encode(_float(x)).half().cpu())
        if progress:
            progress(min(n, i + batch) / n)
    return torch.cat(out)


def _load_autoencoder(wm: WorldModel, path: str) -> None:
    from models.checkpoint import load_checkpoint, load_into

    meta, state = load_checkpoint(path, KIND)
    if meta.get("architecture") != ARCH:
        raise CheckpointError(f"{path}: architecture {meta.get('architecture')!r}, expected {ARCH!r}")
    ae_state = {k[len("ae."):]: v for k, v in state.items() if k.startswith("ae.")}
    load_into(wm.ae, ae_state, f"autoencoder of {path}")


def _resolve_config(out: Path, preset: str, steps: int | None, resume: bool, overrides: dict) -> WMConfig:
    if resume and (out / "config.json").exists():
        meta = read_config(out, KIND)
        if meta.get("architecture") != ARCH:
            raise CheckpointError(f"{out}: cannot resume a {meta.get('architecture')!r} world model with {ARCH!r}")
        cfg = WMConfig.from_json(meta["config"])  # checked as a new run's (WMConfig.__post_init__)
        if steps is not None or overrides:  # an explicit change to the run's length or options
            fresh = make_config(preset, steps, **overrides)
            cfg = replace(cfg, **{k: getattr(fresh, k) for k in ("ae_steps", "dyn_steps", *overrides)})
        return cfg
    cfg = make_config(preset, steps, **overrides)
    if cfg.init_from:
        if not (Path(cfg.init_from) / "config.json").exists():
            raise WMConfigError(f"--init {cfg.init_from}: no world-model checkpoint there")
        meta = read_config(cfg.init_from, KIND)
        if meta.get("architecture") != ARCH:
            raise CheckpointError(f"{cfg.init_from}: world-model architecture {meta.get('architecture')!r} cannot be "
                                  f"fine-tuned as {ARCH!r}")
        src = WMConfig.from_json(meta["config"])
        cfg = replace(cfg, **{k: getattr(src, k) for k in INHERITED})
    return cfg


def train_world_model(
    dataset: str,
    out: str,
    preset: str = "cpu-quick",
    steps: int | None = None,
    resume: bool = False,
    hooks: Hooks | None = None,
    heldout: str | None = None,
    **overrides,
) -> dict:
    """Train a world model on one or more episode files (comma-separated) into the folder `out`.

    `heldout`: an episode file for the periodic held-out evaluation (default: a per-task split of
    `dataset`, `heldout_fraction` of the episodes). Returns a summary dict (also in out/summary.json).
    """
    hooks = hooks or Hooks()
    t_start = time.time()
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise WMConfigError(f"output {out_dir} exists and is not a folder")
    cfg = _resolve_config(out_dir, preset, steps, resume, overrides)
    if cfg.ae_steps == 0 and not (cfg.init_from or cfg.init_autoencoder):
        raise WMConfigError(f"preset '{preset}' trains no autoencoder: give a world model to start from (--init)")

    # ---- data: everything validated before any training ----------------------------------------
    hooks.progress(0.0, "loading episodes")
    fresh = cfg.camera is None  # a new model takes its shapes from the data; a resumed or fine-tuned one checks them
    store = load_store(dataset, cfg.image_size, None if fresh else cfg.action_dim,
                       proprio_dim=None if fresh else cfg.proprio_dim)
    if heldout:
        held_store = load_store(heldout, store.image_size, store.actions.shape[1], proprio_dim=store.proprio.shape[1])
        if held_store.camera != store.camera:
            raise WMConfigError(f"held-out file uses camera '{held_store.camera}', training data '{store.camera}'")
        train_eps, held_eps = np.arange(store.episodes), np.arange(held_store.episodes)
    else:
        train_eps, held_eps = split_by_task(store, cfg.heldout_fraction, cfg.seed)
        held_store = store
    train_starts = store.window_starts(train_eps, cfg.horizon)
    if len(train_starts) == 0:
        raise WMConfigError(f"no training episode is longer than the horizon ({cfg.horizon} steps)")
    if cfg.camera is None:
        rows = np.concatenate([np.arange(store.ep_start[e], store.ep_start[e] + store.ep_len[e]) for e in train_eps])
        cfg = replace(cfg, camera=store.camera, image_size=store.image_size, action_dim=int(store.actions.shape[1]),
                      proprio_dim=int(store.proprio.shape[1]),
                      action_low=store.actions[rows].min(0).astype(float).tolist(),
                      action_high=store.actions[rows].max(0).astype(float).tolist(),
                      proprio_mean=store.proprio[rows].mean(0).astype(float).tolist(),
                      proprio_std=(store.proprio[rows].std(0) + 1e-3).astype(float).tolist())
    elif (cfg.image_size, cfg.camera) != (store.image_size, store.camera):
        raise WMConfigError(f"resuming a model of {cfg.image_size}px '{cfg.camera}' frames on {store.image_size}px "
                            f"'{store.camera}' data")
    eval_starts = _eval_windows(held_store, held_eps, cfg.horizon, cfg.eval_windows)

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = device_for(cfg.device)
    torch.manual_seed(cfg.seed)
    wm = WorldModel(cfg).to(device, memory_format=torch.channels_last)  # faster convolutions on CPU
    fused = cfg.fused_optimizer or None  # None: torch's default (the per-parameter loop on the CPU)
    opt_ae = torch.optim.AdamW(wm.ae.parameters(), lr=cfg.ae_lr, weight_decay=cfg.weight_decay, fused=fused)
    opt_dyn = torch.optim.AdamW(wm.dynamics.parameters(), lr=cfg.dyn_lr, weight_decay=cfg.weight_decay, fused=fused)

    def amp():  # the training steps' precision
        return precision(cfg.train_dtype, device)

    rng = np.random.default_rng(cfg.seed)
    step = 0
    total = cfg.ae_steps + cfg.dyn_steps
    log = MetricsLog(out_dir / "metrics.jsonl")
    resumed_from = None
    ts = load_train_state(out_dir) if resume else None
    if ts is not None:
        wm.load_state_dict(ts["model"])
        opt_ae.load_state_dict(ts["opt_ae"])
        opt_dyn.load_state_dict(ts["opt_dyn"])
        rng.bit_generator.state = ts["rng"]
        torch.set_rng_state(ts["torch_rng"])
        step = resumed_from = int(ts["step"])
        log.truncate_after(step)
    else:
        if cfg.init_from:
            from models.checkpoint import load_checkpoint, load_into

            load_into(wm, load_checkpoint(cfg.init_from, KIND)[1], f"world model {cfg.init_from}")
        elif cfg.init_autoencoder:
            _load_autoencoder(wm, cfg.init_autoencoder)
        if log.path.exists():
            log.path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)

    def checkpoint(at: int) -> None:
        save_train_state(out_dir, {"step": at, "model": wm.state_dict(), "opt_ae": opt_ae.state_dict(),
                                   "opt_dyn": opt_dyn.state_dict(), "rng": rng.bit_generator.state,
                                   "torch_rng": torch.get_rng_state()})
        wm.save(out_dir, {"step": at, "total_steps": total, "train_dataset": str(dataset),
                          "phase": "autoencoder" if at < cfg.ae_steps else "dynamics"})
        hooks.artifact("checkpoint", str(out_dir))

    def evaluate(at: int, with_dynamics: bool) -> dict:
        if len(eval_starts) == 0:
            return {}
        m = heldout_metrics(wm, held_store, eval_starts, cfg.horizon, with_dynamics)
        log.write(at, m, split="heldout")
        hooks.metrics(at, {f"heldout/{k}": v for k, v in m.items() if v is not None})
        return m

    stopped = False
    last_eval: dict = {}

    # ---- phase 1: frame autoencoder --------------------------------------------------------------
    ae_pairs = cfg.ae_batch // 2  # two target frames per context frame
    wm.train()
    t_phase, frames_seen = time.time(), 0
    while step < cfg.ae_steps:
        if hooks.should_stop():
            stopped = True
            break
        lr = _lr(step, cfg.ae_steps, cfg.ae_lr)
        for g in opt_ae.param_groups:
            g["lr"] = lr
        t = rng.choice(train_starts, ae_pairs)
        e = store.episode_of(t)
        end = store.ep_start[e] + store.ep_len[e] - 1
        gaps = rng.integers(1, cfg.ae_max_gap + 1, (ae_pairs, 2))
        tgt = np.minimum(t[:, None] + gaps, end[:, None]).reshape(-1)
        ctx = _float(torch.from_numpy(store.frames[t]).permute(0, 3, 1, 2)).to(device)
        real = _float(torch.from_numpy(store.frames[tgt]).permute(0, 3, 1, 2)).to(device)
        with amp():
            cstate = expand_context(wm.ae.context_state(ctx), 2)
            z = wm.ae.encode(real)
            z = z + cfg.ae_latent_noise * (2.0 * torch.rand_like(z) - 1.0)
            rec = wm.ae.decode(z, cstate).float()
            loss = _weighted_l1(rec, real, cstate["frame"], cfg.ae_moving_weight)
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.ae.parameters(), cfg.grad_clip)
        opt_ae.step()
        step += 1
        frames_seen += len(tgt)
        if step % 25 == 0 or step == cfg.ae_steps:
            with torch.no_grad():
                row = {"loss": loss.item(), "l1": float((rec - real).abs().mean()),
                       "psnr": float(frame_psnr(rec.clamp(0, 1), real).mean()), "lr": lr,
                       "frames_per_s": frames_seen / max(1e-6, time.time() - t_phase)}
            log.write(step, row, split="ae")
            hooks.metrics(step, {f"ae/{k}": v for k, v in row.items()})
            hooks.progress(step / total, f"autoencoder {step}/{cfg.ae_steps} psnr {row['psnr']:.1f} dB")
        if step % cfg.eval_every == 0 or step == cfg.ae_steps:
            last_eval = evaluate(step, with_dynamics=False)
            wm.train()
        if step % cfg.checkpoint_every == 0 or step == cfg.ae_steps:
            checkpoint(step)

    # ---- phase 2: latent dynamics on the frozen autoencoder -------------------------------------
    if not stopped and step < total:
        hooks.progress(step / total, "encoding frames")
        latents = encode_store(wm, store)
        for p in wm.ae.parameters():
            p.requires_grad_(False)
        p_mean, p_std = wm.proprio_mean, wm.proprio_std
        t_phase, frames_seen = time.time(), 0
        h = cfg.horizon
        while step < total:
            if hooks.should_stop():
                stopped = True
                break
            wm.dynamics.train()
            k = step - cfg.ae_steps
            lr = _lr(k, cfg.dyn_steps, cfg.dyn_lr)
            for g in opt_dyn.param_groups:
                g["lr"] = lr
            t = rng.choice(train_starts, cfg.dyn_batch)
            b = store.gather(t, cfg.context_frames, h)
            z_ctx_all = latents[b["ctx_index"]].float().to(device)  # (B, C, lat, h, w)
            z_true = latents[b["fut_index"]].float().to(device)  # (B, T, lat, h, w)
            ctx_frames = _float(b["context"]).to(device)
            pix_steps = sorted({h - 1, *rng.choice(h, max(0, cfg.pixel_steps - 1), replace=False).tolist()})
            with amp():
                with torch.no_grad():
                    cstate = wm.ae.context_state(ctx_frames[:, -1])
                state = wm.begin_from_latents(z_ctx_all, cstate)
                zs, hand, _ = wm.unroll(state, wm.normalize_actions(b["actions"].to(device)))
                z_pred = torch.stack(zs, 1).float()
                latent_mse = F.mse_loss(z_pred, z_true)
                hand_mse = F.mse_loss(hand.float(), (b["future_proprio"].to(device) - p_mean) / p_std)
                pixel_l1 = z_pred.new_zeros(())
                if cfg.pixel_weight > 0 and pix_steps:
                    zsel = z_pred[:, pix_steps].flatten(0, 1)
                    real = _float(b["future"][:, pix_steps]).flatten(0, 1).to(device)
                    csel = expand_context(cstate, len(pix_steps))
                    pixel_l1 = _weighted_l1(wm.ae.decode(zsel, csel).float(), real, csel["frame"], cfg.moving_weight)
                loss = cfg.latent_weight * latent_mse + cfg.pixel_weight * pixel_l1 + cfg.hand_weight * hand_mse
            opt_dyn.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(wm.dynamics.parameters(), cfg.grad_clip)
            opt_dyn.step()
            step += 1
            frames_seen += cfg.dyn_batch * h
            if step % 25 == 0 or step == total:
                row = {"loss": loss.item(), "latent_mse": latent_mse.item(), "pixel_l1": pixel_l1.item(),
                       "hand_mse": hand_mse.item(), "lr": lr,
                       "frames_per_s": frames_seen / max(1e-6, time.time() - t_phase)}
                log.write(step, row, split="dyn")
                hooks.metrics(step, {f"dyn/{k}": v for k, v in row.items()})
                hooks.progress(step / total, f"dynamics {k + 1}/{cfg.dyn_steps} loss {row['loss']:.4f}")
            if step % cfg.eval_every == 0 or step == total:
                last_eval = evaluate(step, with_dynamics=True)
            if step % cfg.checkpoint_every == 0 or step == total:
                checkpoint(step)
    if stopped:
        checkpoint(step)
    wm.eval()
    summary = {
        "out": str(out_dir), "step": step, "total_steps": total, "stopped": stopped, "resumed_from": resumed_from,
        "wall_s": round(time.time() - t_start, 1), "preset": preset, "train_frames": len(store.frames),
        "train_episodes": len(train_eps), "heldout_episodes": len(held_eps),
        "image_size": cfg.image_size, "camera": cfg.camera,
        "params": {"autoencoder": sum(p.numel() for p in wm.ae.parameters()),
                   "dynamics": sum(p.numel() for p in wm.dynamics.parameters())},
        "heldout": last_eval,
    }
    (out_dir / "summary.json").write_text(__import__("json").dumps(summary, indent=1))
    hooks.progress(1.0, "stopped" if stopped else "done")
    return summary
