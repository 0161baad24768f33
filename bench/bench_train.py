"""Per-stage training profile: how much of the machine each training stage uses.

    python -m bench.bench_train [--quick] [--stages autoencoder,dynamics,policy,rft] [--threads 2]

For each training stage (world-model autoencoder, world-model dynamics, policy behaviour cloning, one RFT
step with the world-model reward), built from the `cpu-quick` presets and fed a synthetic batch of the real
shapes (speed does not depend on the weights or the pixels): samples/s over timed optimiser steps, model
FLOPs per sample (torch.utils.flop_counter over one whole step: forward, backward and, for RFT, the
sampling and the reward rollouts), the achieved FLOP/s as a fraction of the fp32 matmul peak measured in the
same run (2048² torch.mm), and the top 5 operators by self CPU time (torch.profiler).

Evaluation: simulator steps/s of closed-loop chunks (MuJoCo step + 64×64 render, the untrained cpu-quick
policy acting once per chunk) and policy inference's share of that time. Imagination: the world model's
batched rollout (batch 64, decoded) against MuJoCo step + render, frames/s, in the same process.

Writes bench/out/train_profile.json and prints the markdown tables for docs/results.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from bench.report import write_report

OUT = Path(__file__).resolve().parent / "out"
STAGES = ("autoencoder", "dynamics", "policy", "rft")
IMAGE = 64
TASK = "reach-v3"


@dataclass
class Stage:
    """One training stage: `step()` runs one optimiser step on a fixed synthetic batch of `samples` samples."""

    name: str
    step: Callable[[], None]
    samples: int
    unit: str
    params: int
    batch: str


# -- the matmul peak ----------------------------------------------------------------------------------
def matmul_peak(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> dict:
    """Best GFLOP/s of an n×n by n×n torch.mm (2·n³ FLOPs) over `repeats` timed calls."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "gflops": round(2 * n**3 / best / 1e9, 1)}


# -- measuring one stage --------------------------------------------------------------------------------
def flops_per_step(step: Callable[[], None]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def timed(step: Callable[[], None], warmup: int, steps: int) -> float:
    """Median seconds per step (the median resists the other processes of a shared machine)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def top_ops(step: Callable[[], None], steps: int, n: int = 5) -> list[dict]:
    """The n operators with the most self CPU time over `steps` steps: ms per step and share of the total."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1000 / steps, 2),
             "share": round(e.self_cpu_time_total / total, 3), "calls_per_step": round(e.count / steps, 1)}
            for e in events[:n]]


def profile_stage(stage: Stage, peak_gflops: float, warmup: int, steps: int, prof_steps: int) -> dict:
    flops = flops_per_step(stage.step)
    s_per_step = timed(stage.step, warmup, steps)
    achieved = flops / s_per_step / 1e9
    return {
        "stage": stage.name, "batch": stage.batch, "params": stage.params, "unit": stage.unit,
        "samples_per_step": stage.samples, "s_per_step": round(s_per_step, 4),
        "samples_per_s": round(stage.samples / s_per_step, 1),
        "gflop_per_sample": round(flops / stage.samples / 1e9, 4), "gflop_per_step": round(flops / 1e9, 3),
        "achieved_gflops": round(achieved, 2), "fraction_of_peak": round(achieved / peak_gflops, 4),
        "top_ops": top_ops(stage.step, prof_steps),
    }


# -- the stages -----------------------------------------------------------------------------------------
def _frames(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, IMAGE, IMAGE), dtype=torch.uint8, generator=gen)


def _float(x: torch.Tensor) -> torch.Tensor:
    """uint8 frames to [0, 1] floats, channels-last like the world model's training loop."""
    return (x.float() / 255.0).contiguous(memory_format=torch.channels_last)


def _weighted_l1(pred: torch.Tensor, real: torch.Tensor, ctx: torch.Tensor, moving_weight: float) -> torch.Tensor:
    moving = ((real - ctx).abs().amax(1, keepdim=True) > 0.02).float()
    return ((pred - real).abs() * (1.0 + moving_weight * moving)).mean()


def world_model():
    from models.world_model import WorldModel
    from models.world_model.config import make_config

    cfg = make_config("cpu-quick", image_size=IMAGE, camera="workspace")
    return WorldModel(cfg).to(memory_format=torch.channels_last), cfg


def autoencoder_stage(gen: torch.Generator) -> Stage:
    """Phase 1 of models/world_model/train.py: ae_batch target frames against ae_batch/2 context frames."""
    from models.world_model.autoencoder import expand_context

    wm, cfg = world_model()
    wm.train()
    opt = torch.optim.AdamW(wm.ae.parameters(), lr=cfg.ae_lr, weight_decay=cfg.weight_decay)
    pairs = cfg.ae_batch // 2
    ctx, real = _float(_frames(pairs, gen)), _float(_frames(pairs * 2, gen))

    def step() -> None:
        cstate = expand_context(wm.ae.context_state(ctx), 2)
        z = wm.ae.encode(real)
        z = z + cfg.ae_latent_noise * (2.0 * torch.rand_like(z) - 1.0)
        loss = _weighted_l1(wm.ae.decode(z, cstate), real, cstate["frame"], cfg.ae_moving_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.ae.parameters(), cfg.grad_clip)
        opt.step()

    return Stage("autoencoder", step, pairs * 2, "frames", sum(p.numel() for p in wm.ae.parameters()),
                 f"{pairs * 2} frames ({pairs} contexts)")


def dynamics_stage(gen: torch.Generator) -> Stage:
    """Phase 2: dyn_batch windows unrolled `horizon` steps on the frozen autoencoder, pixel loss on 2 steps."""
    from models.world_model.autoencoder import expand_context

    wm, cfg = world_model()
    for p in wm.ae.parameters():
        p.requires_grad_(False)
    wm.dynamics.train()
    opt = torch.optim.AdamW(wm.dynamics.parameters(), lr=cfg.dyn_lr, weight_decay=cfg.weight_decay)
    b, h = cfg.dyn_batch, cfg.horizon
    frames = _float(_frames(b * (h + 1), gen))
    with torch.no_grad():
        z_all = wm.ae.encode(frames).unflatten(0, (b, h + 1))
    z_ctx, z_true = z_all[:, :1].contiguous(), z_all[:, 1:].contiguous()
    ctx_frames = frames.unflatten(0, (b, h + 1))[:, 0]
    future = frames.unflatten(0, (b, h + 1))[:, 1:]
    actions = torch.rand(b, h, cfg.action_dim, generator=gen) * 2 - 1
    proprio = torch.randn(b, h, 4, generator=gen)
    pix_steps = [h // 2, h - 1][-max(1, cfg.pixel_steps):]

    def step() -> None:
        with torch.no_grad():
            cstate = wm.ae.context_state(ctx_frames)
        state = wm.begin_from_latents(z_ctx, cstate)
        zs, hand, _ = wm.unroll(state, wm.normalize_actions(actions))
        z_pred = torch.stack(zs, 1)
        latent_mse = F.mse_loss(z_pred, z_true)
        hand_mse = F.mse_loss(hand, proprio)
        zsel = z_pred[:, pix_steps].flatten(0, 1)
        real = future[:, pix_steps].flatten(0, 1).contiguous(memory_format=torch.channels_last)
        csel = expand_context(cstate, len(pix_steps))
        pixel_l1 = _weighted_l1(wm.ae.decode(zsel, csel), real, csel["frame"], cfg.moving_weight)
        loss = cfg.latent_weight * latent_mse + cfg.pixel_weight * pixel_l1 + cfg.hand_weight * hand_mse
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.dynamics.parameters(), cfg.grad_clip)
        opt.step()

    return Stage("dynamics", step, b * h, "frames", sum(p.numel() for p in wm.dynamics.parameters()),
                 f"{b} windows × {h} steps")


def _instructions(n: int) -> tuple[list[str], object]:
    """n instruction strings and a text encoder that already holds their (random, unit) embeddings: training
    reads MiniLM's embeddings from such a cache, so the frozen language model is not part of a step."""
    from models.policy.text import InstructionEncoder

    texts = [f"benchmark instruction {i}" for i in range(n)]
    emb = F.normalize(torch.randn(n, InstructionEncoder.dim), dim=1)
    return texts, InstructionEncoder(dict(zip(texts, emb, strict=True)))


def _policy(preset: str = "cpu-quick"):
    from models.policy.config import make_train_config
    from models.policy.model import VLAPolicy

    cfg = make_train_config(preset)
    texts, text = _instructions(8)
    return VLAPolicy(cfg.policy, text), cfg, texts


def _policy_batch(b: int, pcfg, texts: list[str], gen: torch.Generator) -> dict:
    return {
        "context": torch.randint(0, 256, (b, 1, 3, IMAGE, IMAGE), dtype=torch.uint8, generator=gen),
        "proprio": torch.randn(b, pcfg.proprio_dim, generator=gen),
        "instruction": [texts[i % len(texts)] for i in range(b)],
        "actions": torch.rand(b, pcfg.chunk, pcfg.action_dim, generator=gen) * 2 - 1,
        "mask": torch.ones(b, pcfg.chunk, dtype=torch.bool),
        "state": torch.randn(b, 6, generator=gen),
    }


def policy_stage(gen: torch.Generator) -> Stage:
    """Behaviour cloning as in models/policy/train.py: flow matching with fm_samples draws per window, the
    auxiliary state loss, AdamW and the EMA update."""
    policy, cfg, texts = _policy()
    ema = _policy()[0]
    ema.load_state_dict(policy.state_dict())
    ema.requires_grad_(False)
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = _policy_batch(cfg.batch_size, cfg.policy, texts, gen)
    actions = policy.action_norm.normalize(batch["actions"])

    def step() -> None:
        cond, vision = policy.encode(batch, augment_shift=cfg.shift, generator=gen, with_vision=True)
        fm_loss = policy.fm_loss_from_cond(cond, actions, batch["mask"], cfg.fm_samples, gen)
        loss = fm_loss + cfg.aux_weight * policy.state_loss(vision, batch["state"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), policy.parameters(), strict=True):
                e.lerp_(p, 1.0 - cfg.ema)

    n = sum(p.numel() for n_, p in policy.named_parameters() if not n_.startswith(("sigma_net.", "state_head.")))
    return Stage("policy", step, cfg.batch_size, "windows", n,
                 f"{cfg.batch_size} windows × {cfg.fm_samples} flow samples")


def rft_stage(gen: torch.Generator, folder: Path) -> Stage:
    """One GRPO step of models/rft.py (cpu-quick: B start states × G chunks): SDE sampling, the world-model
    reward (one batched rollout of the B·G chunks and the B references), log-probs, entropy, AdamW."""
    from models.rewards import REWARDS
    from models.rft import clipped_objective, group_advantages, make_config

    cfg = make_config("cpu-quick")
    wm, _ = world_model()
    wm.save(folder / "wm")
    reward_fn = REWARDS["wm"](wm=str(folder / "wm"), device=torch.device("cpu"), lam=cfg.reward_lambda)
    model, _, texts = _policy()
    groups = model.rft_parameter_groups()
    trainable = {id(p) for ps in groups.values() for p in ps}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    model.train()
    opt = torch.optim.AdamW([{"params": groups["head"], "lr": cfg.lr_head},
                             {"params": groups["sigma"], "lr": cfg.lr_sigma}], weight_decay=cfg.weight_decay)
    batch = _policy_batch(cfg.batch_size, model.config, texts, gen)
    gt = batch["actions"]

    def step() -> None:
        sample = model.sample_sde(batch, cfg.group_size, generator=gen)
        rewards, _ = reward_fn(batch, sample.actions, gt)
        adv = group_advantages(rewards).reshape(-1)
        log_prob = model.log_prob_of(batch, sample.chain)
        pg_loss, ratio = clipped_objective(log_prob, sample.log_prob, adv, cfg.clip_eps, cfg.dual_clip)
        entropy = model.entropy_of(batch, sample.chain).mean()
        with torch.no_grad():
            approx_kl = ((ratio - 1) - ratio.log()).mean()
        bc_weight = cfg.bc_coef * float(torch.clamp(approx_kl / cfg.bc_kl_scale, 0.0, 1.0))
        loss = pg_loss - cfg.entropy_coef * entropy
        if bc_weight > 0:
            loss = loss + bc_weight * model.flow_matching_loss(batch, gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups.values() for p in g], cfg.grad_clip)
        opt.step()

    n = sum(p.numel() for g in groups.values() for p in g)
    return Stage("rft", step, cfg.batch_size * cfg.group_size, "chunks", n,
                 f"{cfg.batch_size} starts × {cfg.group_size} chunks (world-model reward)")


# -- evaluation and imagination --------------------------------------------------------------------------
def evaluation(chunks: int) -> dict:
    """Closed-loop chunks in the simulator as sim/evaluate.run_episode runs them (step + render every action),
    with the untrained cpu-quick policy acting once per chunk: steps/s and the policy's share of the time."""
    from sim.env import SimEnv

    policy, cfg, texts = _policy()
    policy.eval()
    t_policy = t_sim = 0.0
    steps = 0
    with SimEnv(TASK, image_size=IMAGE) as env:
        obs = env.reset(env.sample_start(seed=0))
        for k in range(chunks + 1):
            t = time.perf_counter()
            batch = {"context": torch.from_numpy(np.ascontiguousarray(obs.frame)).permute(2, 0, 1)[None, None],
                     "proprio": torch.from_numpy(np.asarray(obs.proprio, np.float32))[None],
                     "instruction": texts[:1]}
            chunk = policy.act(batch)[0].numpy()
            t1 = time.perf_counter()
            for a in chunk:
                obs, _, _ = env.step(a)
            if env.done:
                obs = env.reset(env.sample_start(seed=k + 1))
            t2 = time.perf_counter()
            if k:  # the first chunk warms both up
                t_policy += t1 - t
                t_sim += t2 - t1
                steps += len(chunk)
    total = t_policy + t_sim
    return {"task": TASK, "chunk": cfg.policy.chunk, "steps": steps, "steps_per_s": round(steps / total, 1),
            "sim_steps_per_s": round(steps / t_sim, 1), "policy_ms_per_chunk": round(1000 * t_policy / chunks, 2),
            "sim_ms_per_step": round(1000 * t_sim / steps, 3), "policy_share": round(t_policy / total, 3)}


def imagination(repeats: int, sim_steps: int, batch: int = 64) -> dict:
    """World-model batched rollout frames/s (decoded, and latent only) against MuJoCo step + render frames/s."""
    from sim.env import SimEnv

    wm, cfg = world_model()
    wm.eval()
    gen = torch.Generator().manual_seed(1)
    context = torch.randint(0, 256, (batch, 1, 3, IMAGE, IMAGE), dtype=torch.uint8, generator=gen)
    actions = torch.rand(batch, cfg.horizon, cfg.action_dim, generator=gen) * 2 - 1
    out = {"batch": batch, "horizon": cfg.horizon}
    for decode in (True, False):
        wm.rollout(context, actions, decode=decode)
        best = min(_seconds(lambda d=decode: wm.rollout(context, actions, decode=d)) for _ in range(repeats))
        out["rollout_fps_decoded" if decode else "rollout_fps_latent"] = round(batch * cfg.horizon / best, 1)
    rng = np.random.default_rng(0)
    with SimEnv(TASK, image_size=IMAGE) as env:
        env.reset(env.sample_start(seed=0))
        for _ in range(5):
            env.step(rng.uniform(-1, 1, 4))
        t = time.perf_counter()
        for _ in range(sim_steps):
            env.step(rng.uniform(-1, 1, 4))
            if env.done:
                env.reset(env.sample_start(seed=1))
        out["mujoco_fps"] = round(sim_steps / (time.perf_counter() - t), 1)
    out["ratio_decoded_vs_mujoco"] = round(out["rollout_fps_decoded"] / out["mujoco_fps"], 2)
    out["ratio_latent_vs_mujoco"] = round(out["rollout_fps_latent"] / out["mujoco_fps"], 2)
    return out


def _seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# -- report ----------------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    peak = report["peak"]
    lines = [f"fp32 matmul peak ({peak['fp32']['n']}² torch.mm, best of the run's measurements): "
             f"{peak['fp32']['gflops']} GFLOP/s (start {peak['start_gflops']}, end {peak['end_gflops']}); "
             f"bf16 {peak['bf16']['gflops']} GFLOP/s; {report['threads']} threads", "",
             "| stage | batch | samples/s | GFLOP/sample | achieved GFLOP/s | fraction of peak "
             "| top 5 ops (self CPU share) |",
             "|---|---|---|---|---|---|---|"]
    for r in report["stages"]:
        ops = ", ".join(f"{o['op']} {o['share']:.0%}" for o in r["top_ops"])
        lines.append(f"| {r['stage']} | {r['batch']} | {r['samples_per_s']} {r['unit']}/s | {r['gflop_per_sample']} | "
                     f"{r['achieved_gflops']} | {r['fraction_of_peak']:.1%} | {ops} |")
    if ev := report.get("evaluation"):
        lines += ["", f"evaluation ({ev['task']}, chunk {ev['chunk']}): {ev['steps_per_s']} steps/s closed loop, "
                  f"simulator alone {ev['sim_steps_per_s']} steps/s ({ev['sim_ms_per_step']} ms per step + render), "
                  f"policy {ev['policy_ms_per_chunk']} ms per chunk = {ev['policy_share']:.0%} of the time"]
    if im := report.get("imagination"):
        lines += [f"imagination (batch {im['batch']}, horizon {im['horizon']}): {im['rollout_fps_decoded']} frames/s "
                  f"decoded, {im['rollout_fps_latent']} latent; MuJoCo step + render {im['mujoco_fps']} frames/s: "
                  f"{im['ratio_decoded_vs_mujoco']}× decoded, {im['ratio_latent_vs_mujoco']}× latent"]
    return "\n".join(lines)


def parse_stages(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise ValueError(f"unknown stage(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(STAGES)}")
    return names


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed steps (about a minute in all)")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {', '.join(STAGES)}")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the cpu-quick presets use 2)")
    ap.add_argument("--no-sim", action="store_true", help="skip the evaluation and imagination measurements")
    ap.add_argument("--out", default=str(OUT / "train_profile.json"))
    args = ap.parse_args(argv)
    try:
        stages = parse_stages(args.stages)
    except ValueError as exc:
        ap.error(str(exc))  # one line, exit code 2
    if args.threads < 1:
        ap.error(f"--threads must be at least 1, got {args.threads}")
    warmup, steps, prof_steps = (1, 3, 2) if args.quick else (3, 10, 5)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    start_peak = matmul_peak()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        builders = {"autoencoder": lambda: autoencoder_stage(gen), "dynamics": lambda: dynamics_stage(gen),
                    "policy": lambda: policy_stage(gen), "rft": lambda: rft_stage(gen, Path(tmp))}
        for name in stages:
            print(f"profiling {name} …", flush=True)
            rows.append(profile_stage(builders[name](), start_peak["gflops"], warmup, steps, prof_steps))
    end_peak = matmul_peak()
    # the fraction is taken against the best peak this run saw (a busy machine lowers both)
    peak = max(start_peak, end_peak, key=lambda p: p["gflops"])
    for r in rows:
        r["fraction_of_peak"] = round(r["achieved_gflops"] / peak["gflops"], 4)
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, torch {torch.__version__}",
        "command": "python -m bench.bench_train " + " ".join(argv or []),
        "threads": args.threads, "quick": args.quick, "timed_steps": steps,
        "peak": {"fp32": peak, "start_gflops": start_peak["gflops"], "end_gflops": end_peak["gflops"],
                 "bf16": matmul_peak(dtype=torch.bfloat16, repeats=3)},
        "stages": rows,
    }
    if not args.no_sim:
        print("evaluation and imagination …", flush=True)
        report["evaluation"] = evaluation(chunks=15 if args.quick else 50)
        report["imagination"] = imagination(repeats=2 if args.quick else 5, sim_steps=100 if args.quick else 300)
    write_report(report, Path(args.out))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
