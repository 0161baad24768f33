"""Speed levers of the training loops and of imagination, each on and off, measured as ratios in one run.

    python -m bench.bench_levers [--quick] [--stages autoencoder,dynamics,policy] [--wm CKPT --heldout H5]

Training: for each stage (world-model autoencoder, world-model dynamics, policy behaviour cloning; cpu-quick
presets, a synthetic batch of the real shapes) every variant runs one optimiser step per round, round after
round (so a busy machine slows all variants alike), and keeps its best time. Variants: the loop before issue 16
(per-parameter AdamW, frames in NCHW for the policy, 2 threads), each math-preserving lever alone (fused AdamW,
channels-last policy input, 1 thread) and all of them together; then, for information only because they change
the maths, bf16 autocast and a doubled batch. Model FLOPs per step come from torch.utils.flop_counter, the peak
is a 2048² fp32 torch.mm measured in the same run, at the same thread count.

Imagination: the batched world-model rollout with decoding (batch 64, horizon 8, 64×64) in float32 and bf16
at 1 and 2 threads, interleaved with MuJoCo step + render rounds in the same process; the ratio is taken
between the best rollout and the best MuJoCo frames/s. With `--wm` (a trained checkpoint) and `--heldout` the
held-out moving-pixel PSNR is computed in both precisions (a bf16 rollout must stay within 0.1 dB).

Writes bench/out/levers.json and prints the markdown table for docs/results.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.report import write_report

OUT = Path(__file__).resolve().parent / "out"
STAGES = ("autoencoder", "dynamics", "policy")
IMAGE = 64
TASK = "reach-v3"
MATH_PRESERVING = ("fused_adamw", "channels_last", "threads_1", "all_exact")


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 4) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _frames(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, IMAGE, IMAGE), dtype=torch.uint8, generator=gen)


def _adamw(params, lr: float, weight_decay: float, fused: bool) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


# -- one optimiser step per stage, with the levers as arguments ------------------------------------------
def autoencoder_step(gen: torch.Generator, fused: bool, bf16: bool, batch_scale: int = 1) -> tuple[Callable, int]:
    """Phase 1 of models/world_model/train.py (uint8 frames in memory, channels-last as the loop has them)."""
    from models.world_model import WorldModel
    from models.world_model.autoencoder import expand_context
    from models.world_model.config import make_config
    from models.world_model.train import _weighted_l1

    cfg = make_config("cpu-quick", image_size=IMAGE, camera="workspace")
    torch.manual_seed(0)
    wm = WorldModel(cfg).to(memory_format=torch.channels_last).train()
    opt = _adamw(wm.ae.parameters(), cfg.ae_lr, cfg.weight_decay, fused)
    pairs = cfg.ae_batch // 2 * batch_scale
    ctx_u8, real_u8 = _frames(pairs, gen), _frames(2 * pairs, gen)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def step() -> None:
        ctx = (ctx_u8.float() / 255.0).contiguous(memory_format=torch.channels_last)
        real = (real_u8.float() / 255.0).contiguous(memory_format=torch.channels_last)
        with amp:
            cstate = expand_context(wm.ae.context_state(ctx), 2)
            z = wm.ae.encode(real)
            z = z + cfg.ae_latent_noise * (2.0 * torch.rand_like(z) - 1.0)
            rec = wm.ae.decode(z, cstate)
        loss = _weighted_l1(rec.float(), real, cstate["frame"], cfg.ae_moving_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.ae.parameters(), cfg.grad_clip)
        opt.step()

    return step, 2 * pairs


def dynamics_step(gen: torch.Generator, fused: bool, bf16: bool, batch_scale: int = 1) -> tuple[Callable, int]:
    """Phase 2: dyn_batch windows unrolled `horizon` steps on the frozen autoencoder, pixel loss on 2 steps."""
    from models.world_model import WorldModel
    from models.world_model.autoencoder import expand_context
    from models.world_model.config import make_config
    from models.world_model.train import _weighted_l1

    cfg = make_config("cpu-quick", image_size=IMAGE, camera="workspace")
    torch.manual_seed(0)
    wm = WorldModel(cfg).to(memory_format=torch.channels_last)
    wm.ae.requires_grad_(False)
    wm.dynamics.train()
    opt = _adamw(wm.dynamics.parameters(), cfg.dyn_lr, cfg.weight_decay, fused)
    b, h = cfg.dyn_batch * batch_scale, cfg.horizon
    frames = (_frames(b * (h + 1), gen).float() / 255.0).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        z_all = wm.ae.encode(frames).unflatten(0, (b, h + 1))
    z_ctx, z_true = z_all[:, :1].contiguous(), z_all[:, 1:].contiguous()
    seq = frames.unflatten(0, (b, h + 1))
    ctx_frames, future = seq[:, 0], seq[:, 1:]
    actions = torch.rand(b, h, cfg.action_dim, generator=gen) * 2 - 1
    proprio = torch.randn(b, h, cfg.proprio_dim, generator=gen)
    pix = [h // 2, h - 1]
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def step() -> None:
        with amp:
            with torch.no_grad():
                cstate = wm.ae.context_state(ctx_frames)
            state = wm.begin_from_latents(z_ctx, cstate)
            zs, hand, _ = wm.unroll(state, wm.normalize_actions(actions))
            z_pred = torch.stack(zs, 1).float()
            csel = expand_context(cstate, len(pix))
            dec = wm.ae.decode(z_pred[:, pix].flatten(0, 1), csel).float()
        real = future[:, pix].flatten(0, 1)
        loss = (F.mse_loss(z_pred, z_true) + F.mse_loss(hand.float(), proprio)
                + _weighted_l1(dec, real, csel["frame"], cfg.moving_weight))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wm.dynamics.parameters(), cfg.grad_clip)
        opt.step()

    return step, b * h


def policy_step(gen: torch.Generator, fused: bool, bf16: bool, batch_scale: int = 1,
                channels_last: bool = False) -> tuple[Callable, int]:
    """Behaviour cloning as in models/policy/train.py: flow matching, the state loss, AdamW, the EMA update."""
    from models.policy.config import make_train_config
    from models.policy.model import VLAPolicy
    from models.policy.text import InstructionEncoder
    from models.policy.train import _ema_update

    cfg = make_train_config("cpu-quick")
    texts = [f"benchmark instruction {i}" for i in range(8)]
    emb = F.normalize(torch.randn(len(texts), InstructionEncoder.dim, generator=gen), dim=1)
    text = InstructionEncoder(dict(zip(texts, emb, strict=True)))
    torch.manual_seed(0)
    pcfg = cfg.policy
    policy = VLAPolicy(pcfg, text)
    ema = VLAPolicy(pcfg, text)
    ema.load_state_dict(policy.state_dict())
    ema.requires_grad_(False)
    policy.set_channels_last(channels_last)
    policy.train()
    opt = _adamw(policy.parameters(), cfg.lr, cfg.weight_decay, fused)
    b = cfg.batch_size * batch_scale
    batch = {"context": torch.randint(0, 256, (b, pcfg.context, 3, IMAGE, IMAGE), dtype=torch.uint8, generator=gen),
             "proprio": torch.randn(b, pcfg.proprio_dim, generator=gen),
             "instruction": [texts[i % len(texts)] for i in range(b)],
             "state": torch.randn(b, 6, generator=gen)}
    actions = torch.rand(b, pcfg.chunk, pcfg.action_dim, generator=gen) * 2 - 1
    mask = torch.ones(b, pcfg.chunk, dtype=torch.bool)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def step() -> None:
        with amp:
            cond, vision = policy.encode(batch, augment_shift=cfg.shift, generator=gen, with_vision=True)
            loss = policy.fm_loss_from_cond(cond, actions, mask, cfg.fm_samples, gen)
            loss = loss + cfg.aux_weight * policy.state_loss(vision, batch["state"])
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        opt.step()
        _ema_update(ema, policy, cfg.ema)

    return step, b


# variant -> (fused AdamW, bf16 autocast, batch scale, channels-last policy input, threads)
VARIANTS: dict[str, tuple[bool, bool, int, bool, int]] = {
    "before": (False, False, 1, False, 2),
    "fused_adamw": (True, False, 1, False, 2),
    "channels_last": (False, False, 1, True, 2),
    "threads_1": (False, False, 1, False, 1),
    "all_exact": (True, False, 1, True, 2),
    "bf16_autocast": (True, True, 1, True, 2),
    "batch_x2": (True, False, 2, True, 2),
}


def build(stage: str, variant: str, gen: torch.Generator) -> tuple[Callable, int]:
    fused, bf16, scale, cl, _ = VARIANTS[variant]
    if stage == "policy":
        return policy_step(gen, fused, bf16, scale, cl)
    return (autoencoder_step if stage == "autoencoder" else dynamics_step)(gen, fused, bf16, scale)


def measure_stage(stage: str, rounds: int, peaks: dict[int, float]) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    names = [v for v in VARIANTS if stage == "policy" or v != "channels_last"]
    steps = {v: build(stage, v, gen) for v in names}
    flops = {}
    for v, (fn, _) in steps.items():
        torch.set_num_threads(VARIANTS[v][4])
        fn()  # warm-up
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        flops[v] = counter.get_total_flops()
    best = dict.fromkeys(names, float("inf"))
    for _ in range(rounds):  # round robin: a busy machine slows every variant alike
        for v, (fn, _) in steps.items():
            torch.set_num_threads(VARIANTS[v][4])
            t = time.perf_counter()
            fn()
            best[v] = min(best[v], time.perf_counter() - t)
    base = steps["before"][1] / best["before"]
    rows = []
    for v in names:
        samples = steps[v][1]
        achieved = flops[v] / best[v] / 1e9
        rows.append({"stage": stage, "variant": v, "exact": v in MATH_PRESERVING or v == "before",
                     "samples_per_step": samples, "s_per_step": round(best[v], 4),
                     "samples_per_s": round(samples / best[v], 1),
                     "speedup_vs_before": round(samples / best[v] / base, 3),
                     "gflop_per_step": round(flops[v] / 1e9, 3), "achieved_gflops": round(achieved, 1),
                     "fraction_of_fp32_peak": round(achieved / peaks[VARIANTS[v][4]], 4)})
    return rows


# -- imagination against the simulator ------------------------------------------------------------------
def imagination(rounds: int, sim_steps: int, wm_path: str | None, batch: int = 64, horizon: int = 8) -> dict:
    """Decoded rollout frames/s per (precision, threads), interleaved with MuJoCo step + render rounds."""
    from models.world_model import WorldModel, load_world_model
    from models.world_model.config import make_config
    from models.world_model.model import native_bf16
    from sim.env import SimEnv

    if wm_path:
        wm = load_world_model(wm_path)
    else:
        wm = WorldModel(make_config("cpu-quick", image_size=IMAGE, camera="workspace"))
        wm = wm.to(memory_format=torch.channels_last).eval()
    gen = torch.Generator().manual_seed(1)
    context = torch.randint(0, 256, (batch, wm.context_frames, 3, IMAGE, IMAGE), dtype=torch.uint8, generator=gen)
    actions = torch.rand(batch, horizon, wm.cfg.action_dim, generator=gen) * 2 - 1
    configs = [(d, th) for d in ("float32", "bfloat16") for th in (2, 1)]
    best = dict.fromkeys(configs, float("inf"))
    sim_best = float("inf")
    rng = np.random.default_rng(0)
    with SimEnv(TASK, image_size=IMAGE) as env:
        env.reset(env.sample_start(seed=0))
        for _ in range(5):
            env.step(rng.uniform(-1, 1, 4))
        for d, th in configs:  # warm-up
            torch.set_num_threads(th)
            wm.set_rollout_dtype(d)
            wm.rollout(context, actions)
        for _ in range(rounds):
            for d, th in configs:
                torch.set_num_threads(th)
                wm.set_rollout_dtype(d)
                t = time.perf_counter()
                wm.rollout(context, actions)
                best[(d, th)] = min(best[(d, th)], time.perf_counter() - t)
            t = time.perf_counter()
            for _ in range(sim_steps):
                env.step(rng.uniform(-1, 1, 4))
                if env.done:
                    env.reset(env.sample_start(seed=1))
            sim_best = min(sim_best, (time.perf_counter() - t) / sim_steps)
    wm.set_rollout_dtype(wm.cfg.rollout_dtype)
    mujoco_fps = 1.0 / sim_best
    rows = [{"dtype": d, "threads": th, "rollout_fps_decoded": round(batch * horizon / best[(d, th)], 1),
             "ratio_vs_mujoco": round(batch * horizon / best[(d, th)] / mujoco_fps, 2)} for d, th in configs]
    return {"batch": batch, "horizon": horizon, "image": IMAGE, "mujoco_task": TASK, "mujoco_fps": round(mujoco_fps, 1),
            "native_bf16": native_bf16(), "trained_model": wm_path, "rows": rows}


def bf16_psnr(wm_path: str, heldout: str, threads: int, max_windows: int = 128) -> dict:
    """Held-out PSNR (whole frame and moving pixels, h1/h8) of the same model rolled out in float32 and bf16."""
    from models.world_model import load_world_model
    from models.world_model.data import load_store
    from models.world_model.evaluate import frame_metrics

    torch.set_num_threads(threads)
    wm = load_world_model(wm_path)
    store = load_store(heldout, action_dim=wm.cfg.action_dim, proprio_dim=wm.cfg.proprio_dim)
    out = {}
    for d in ("float32", "bfloat16"):
        wm.set_rollout_dtype(d)
        rows = frame_metrics(wm, store, horizons=(1, 8), max_windows=max_windows)["rows"]["true_actions"]
        out[d] = {h: {"psnr": rows[h]["psnr"], "psnr_moving": rows[h]["psnr_moving"]} for h in ("h1", "h8")}
    out["delta_moving_h8_db"] = round(out["bfloat16"]["h8"]["psnr_moving"] - out["float32"]["h8"]["psnr_moving"], 3)
    out["delta_whole_h8_db"] = round(out["bfloat16"]["h8"]["psnr"] - out["float32"]["h8"]["psnr"], 3)
    out["windows"] = max_windows
    return out


# -- report ---------------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    pk = report["peak_gflops"]
    lines = [f"fp32 matmul peak (2048² torch.mm, best in this run): {pk['2']} GFLOP/s at 2 threads, "
             f"{pk['1']} at 1 thread", "",
             "| stage | variant | maths | samples/s | × before | GFLOP/step | GFLOP/s | fraction of fp32 peak |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["stages"]:
        maths = "same" if r["exact"] else "changed"
        lines.append(f"| {r['stage']} | {r['variant']} | {maths} | {r['samples_per_s']} | {r['speedup_vs_before']} | "
                     f"{r['gflop_per_step']} | {r['achieved_gflops']} | {r['fraction_of_fp32_peak']:.1%} |")
    if im := report.get("imagination"):
        lines += ["", f"imagination: batch {im['batch']}, horizon {im['horizon']}, {im['image']}×{im['image']}, "
                  f"decoded; MuJoCo step + render ({im['mujoco_task']}) {im['mujoco_fps']} frames/s in the same run",
                  "", "| rollout precision | threads | frames/s | × MuJoCo |", "|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['threads']} | {r['rollout_fps_decoded']} | {r['ratio_vs_mujoco']} |"
                  for r in im["rows"]]
    if ps := report.get("bf16_psnr"):
        lines += ["", f"bf16 rollout quality ({ps['windows']} held-out windows): moving-pixel PSNR h8 "
                  f"{ps['float32']['h8']['psnr_moving']} dB fp32, {ps['bfloat16']['h8']['psnr_moving']} dB bf16 "
                  f"(Δ {ps['delta_moving_h8_db']} dB); whole frame Δ {ps['delta_whole_h8_db']} dB"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a few minutes in all)")
    ap.add_argument("--stages", default=",".join(STAGES),
                    help=f"comma-separated, from {', '.join(STAGES)}; none: imagination only")
    ap.add_argument("--no-sim", action="store_true", help="skip the imagination-vs-MuJoCo measurement")
    ap.add_argument("--wm", default=None, help="trained world-model checkpoint for imagination and the PSNR check")
    ap.add_argument("--heldout", default=None, help="held-out episode file for the bf16 PSNR check (with --wm)")
    ap.add_argument("--out", default=str(OUT / "levers.json"))
    args = ap.parse_args(argv)
    stages = [] if args.stages == "none" else [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad or (not stages and args.stages != "none"):
        ap.error(f"unknown stage(s) {', '.join(bad) or '(none given)'}: choose from {', '.join(STAGES)}")
    for flag, value in (("--wm", args.wm), ("--heldout", args.heldout)):
        if value and not Path(value).exists():
            ap.error(f"{flag} {value}: no such file or folder")
    if args.heldout and not args.wm:
        ap.error("--heldout needs --wm (the PSNR check rolls out a trained model)")
    rounds, sim_rounds = (4, 3) if args.quick else (10, 10)
    peaks = {th: matmul_gflops(th) for th in (2, 1)}
    rows = []
    for s in stages:
        print(f"levers of {s} …", flush=True)
        rows += measure_stage(s, rounds, peaks)
    for th in (2, 1):  # the best peak this run saw: a busy machine lowers it
        peaks[th] = max(peaks[th], matmul_gflops(th))
    for r in rows:
        th = VARIANTS[r["variant"]][4]
        r["fraction_of_fp32_peak"] = round(r["achieved_gflops"] / peaks[th], 4)
    report = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, torch {torch.__version__}",
              "command": " ".join(["python -m bench.bench_levers", *(sys.argv[1:] if argv is None else argv)]),
              "quick": args.quick,
              "rounds": rounds, "peak_gflops": {str(k): round(v, 1) for k, v in peaks.items()}, "stages": rows}
    if not args.no_sim:
        print("imagination vs MuJoCo …", flush=True)
        report["imagination"] = imagination(sim_rounds, 40 if args.quick else 100, args.wm)
    if args.wm and args.heldout:
        print("bf16 rollout PSNR …", flush=True)
        report["bf16_psnr"] = bf16_psnr(args.wm, args.heldout, threads=1)
    torch.set_num_threads(2)
    write_report(report, Path(args.out))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
