"""`vlarft rft` (GRPO inside the world model) and `vlarft pipeline` (the whole chain)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.progress import progress_bar


def register(app: typer.Typer) -> None:
    app.command("rft")(rft)
    app.command("pipeline")(pipeline)


def rft(
    policy: Path = typer.Option(..., help="Base policy checkpoint folder."),
    dataset: Path = typer.Option(..., help="Episode file the start states are drawn from."),
    out: Path = typer.Option(..., help="Output folder (a policy checkpoint)."),
    wm: Path = typer.Option(None, help="World-model checkpoint folder (required with --reward-source wm)."),
    steps: int = typer.Option(None, help="GRPO steps (default: the preset's, 400)."),
    preset: str = typer.Option("cpu-quick", help="smoke | cpu-quick | gpu"),
    reward_source: str = typer.Option("wm", help="wm (verified reward in the world model) | sim | action_l1"),
    group_size: int = typer.Option(None, help="G: chunks sampled per start state."),
    batch_size: int = typer.Option(None, help="B: start states per step."),
    lr_head: float = typer.Option(None, help="Learning rate of the action head and its projections."),
    lr_sigma: float = typer.Option(None, help="Learning rate of the σ-net."),
    reward_lambda: float = typer.Option(None, help="Weight of the perceptual term in the verified reward."),
    update_epochs: int = typer.Option(None, help="Optimiser steps per batch of rollouts."),
    seed: int = typer.Option(None),
    checkpoint_every: int = typer.Option(None, help="Save a checkpoint every N steps."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Fine-tune a policy with GRPO and verified rewards (VLA-RFT)."""
    from models.hooks import Hooks
    from models.rft import train_rft

    overrides = {"reward_source": reward_source, "group_size": group_size, "batch_size": batch_size,
                 "lr_head": lr_head, "lr_sigma": lr_sigma, "reward_lambda": reward_lambda,
                 "update_epochs": update_epochs, "seed": seed, "checkpoint_every": checkpoint_every}
    with progress_bar("rft", 1000) as update:
        hooks = Hooks(progress=lambda frac, msg: update(int(frac * 1000), 1000, msg))
        summary = train_rft(str(policy), str(wm) if wm else None, str(dataset), str(out), steps=steps,
                            resume=resume, hooks=hooks, preset=preset, **overrides)
    typer.echo(json.dumps(summary) if json_out else
               f"wrote {summary['out']} after {summary['steps']} steps ({summary['seconds_per_step']:.2f} s/step); "
               f"reward {summary['reward_first']:.4f} → {summary['reward_last']:.4f}")


def pipeline(
    preset: str = typer.Option(..., help="smoke (< 2 min) | cpu-quick (2-core CPU) | mt10-gpu"),
    out: Path = typer.Option(..., help="Output folder for data, checkpoints, results and videos."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --out."),
    eval_episodes: int = typer.Option(None, help="Evaluation episodes per task and perturbation."),
    rft_steps: int = typer.Option(None, help="GRPO steps (default: the preset's)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Collect → world model → base policy → RFT → base vs RFT in the simulator, in one command."""
    from models.hooks import Hooks
    from models.pipeline import run_pipeline
    from sim.errors import InputError

    if eval_episodes is not None and eval_episodes <= 0:
        raise InputError(f"--eval-episodes must be positive, got {eval_episodes}")
    with progress_bar(f"pipeline {preset}", 1000) as update:
        hooks = Hooks(progress=lambda frac, msg: update(int(frac * 1000), 1000, msg))
        summary = run_pipeline(preset, str(out), resume=resume, hooks=hooks, eval_episodes=eval_episodes,
                               rft_steps=rft_steps)
    if json_out:
        typer.echo(json.dumps(summary))
        return
    if not summary["complete"]:
        typer.echo(f"stopped during {summary['stopped_in']}; continue with --resume")
        return
    typer.echo((out / "results.md").read_text())
