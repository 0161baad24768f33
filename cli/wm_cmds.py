"""`vlarft` commands of the wm stage: train-wm, eval-wm."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("train-wm")(train_wm)
    app.command("eval-wm")(eval_wm)


def train_wm(
    dataset: str = typer.Option(..., help="Episode file(s), comma-separated (same camera and image size)."),
    out: Path = typer.Option(..., help="Output folder: checkpoint, train_state.pt, metrics.jsonl."),
    preset: str = typer.Option("cpu-quick", help="smoke (seconds), cpu-quick (~20 min on 2 cores), align "
                               "(fine-tune the dynamics of --init) or gpu."),
    steps: int = typer.Option(None, help="Total optimiser steps (autoencoder + dynamics), split as in the preset."),
    heldout: str = typer.Option(None, help="Episode file for the periodic held-out check (default: a split)."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in --out."),
    init: Path = typer.Option(None, help="Fine-tune this world model (e.g. on added policy rollouts: policy "
                              "alignment; use --preset align) instead of starting from scratch."),
    json_out: bool = typer.Option(False, "--json", help="Print the training summary as JSON."),
) -> None:
    """Train the action-conditioned world model (frame autoencoder + latent dynamics), or fine-tune one (--init)."""
    from cli.progress import fraction_bar
    from models.hooks import Hooks
    from models.world_model.train import train_world_model

    with fraction_bar("train-wm") as progress:
        hooks = Hooks(progress=progress)
        summary = train_world_model(str(dataset), str(out), preset=preset, steps=steps, resume=resume,
                                    hooks=hooks, heldout=heldout,
                                    **({"init_from": str(init)} if init is not None else {}))
    if json_out:
        typer.echo(json.dumps(summary))
        return
    h = summary.get("heldout") or {}
    typer.echo(f"{'stopped' if summary['stopped'] else 'trained'} {summary['step']}/{summary['total_steps']} steps "
               f"in {summary['wall_s']:.0f} s -> {summary['out']}")
    if h.get("psnr_h8") is not None:
        typer.echo(f"  held-out h8: whole {h['psnr_h8']:.2f} dB (copy-last {h['psnr_copy_h8']:.2f}), moving "
                   f"{h['psnr_moving_h8']:.2f} dB (shuffled actions {h['psnr_moving_shuffled_h8']:.2f}, "
                   f"copy-last {h['psnr_moving_copy_h8']:.2f}); autoencoder {h['ae_psnr_h8']:.2f} dB")


def eval_wm(
    wm: Path = typer.Option(..., help="World-model checkpoint folder."),
    dataset: Path = typer.Option(..., help="Held-out episode file (with simulator states for reward fidelity)."),
    windows: int = typer.Option(256, help="Held-out windows for the frame metrics."),
    video: Path = typer.Option(None, help="Folder for MP4s of real | predicted | shuffled-action prediction."),
    png: Path = typer.Option(None, help="PNG grid: context | real | autoencoder | predicted | shuffled (h8)."),
    fidelity: bool = typer.Option(True, help="Measure reward fidelity against the real simulator."),
    fidelity_states: int = typer.Option(24, help="Interaction states for reward fidelity (plus half as many others)."),
    throughput: bool = typer.Option(True, help="Measure rollout and MuJoCo frames/s."),
    json_out: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    out: Path = typer.Option(None, help="Also write the JSON report to this file."),
) -> None:
    """Evaluate a world model on held-out episodes: frame quality, action sensitivity, reward fidelity, speed."""
    from cli.args import check_report_file, emit_report
    from cli.progress import fraction_bar
    from models.world_model.evaluate import evaluate_world_model
    from models.world_model.fidelity import FidelityConfig
    from sim.errors import InputError

    if windows < 1 or fidelity_states < 1:
        raise InputError("--windows and --fidelity-states must be positive")
    check_report_file(out)
    fcfg = FidelityConfig(interaction_states=fidelity_states, other_states=max(1, fidelity_states // 2))
    with fraction_bar("eval-wm") as progress:
        report = evaluate_world_model(str(wm), str(dataset), max_windows=windows,
                                      video=str(video) if video else None, fidelity=fidelity, fidelity_config=fcfg,
                                      measure_throughput=throughput, png=str(png) if png else None,
                                      progress=progress)
    if emit_report(report, out, json_out):
        return
    rows = report["frames"]["rows"]
    typer.echo(f"{'row':18s} {'h1 psnr':>8s} {'h8 psnr':>8s} {'h8 ssim':>8s} {'h8 moving':>10s} {'h16 moving':>11s}")
    for name, r in rows.items():
        h16 = r.get("h16", {}).get("psnr_moving")
        typer.echo(f"{name:18s} {r['h1']['psnr']:8.2f} {r['h8']['psnr']:8.2f} {r['h8']['ssim']:8.3f} "
                   f"{r['h8']['psnr_moving']:10.2f} {h16 if h16 is not None else float('nan'):11.2f}")
    for k, v in report.get("targets", {}).items():
        typer.echo(f"  {k}: {v}")
    fid = report.get("reward_fidelity", {})
    inter = fid.get("summary", {}).get("interaction", {})
    if inter:
        g = inter["grpo"]
        typer.echo(f"reward fidelity (interaction states, GRPO groups): world model rho {g.get('wm_lambda_0')} "
                   f"hand-path {g.get('hand_path')} action-L1 {g.get('action_l1')}")
    if "throughput" in report:
        t = report["throughput"]
        typer.echo(f"throughput: {t['rollout_fps_decoded']} frames/s decoded vs MuJoCo {t['mujoco_fps']} "
                   f"({t['ratio_decoded_vs_mujoco']}x)")
