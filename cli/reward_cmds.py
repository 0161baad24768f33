"""`vlarft` commands of world-model RL: train-reward, eval-reward, wm-eval."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.args import check_report_file, emit_report, require_checkpoint
from cli.progress import fraction_bar


def register(app: typer.Typer) -> None:
    app.command("train-reward")(train_reward)
    app.command("eval-reward")(eval_reward)
    app.command("wm-eval")(wm_eval)


def _fmt(x: float) -> str:
    return "  -  " if x != x else f"{x:.3f}"


def train_reward(
    wm: Path = typer.Option(..., help="World-model checkpoint: the classifier reads its latents."),
    dataset: str = typer.Option(..., help="Episode file(s), comma-separated, with per-step success (expert and "
                                "policy episodes, ideally collected with --after-success)."),
    out: Path = typer.Option(..., help="Output folder for the reward model."),
    preset: str = typer.Option("cpu-quick", help="smoke | cpu-quick | gpu"),
    steps: int = typer.Option(None, help="Optimiser steps (default: the preset's)."),
    imagined: bool = typer.Option(True, help="Also train on the world model's imagination of the same episodes."),
    min_steps: int = typer.Option(None, help="Guard: no success is detected before this step."),
    confirm: int = typer.Option(None, help="Consecutive steps at or above the threshold for a detection."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Train the success reward model on world-model latents; the threshold is chosen on a validation split."""
    from models.reward_model import train_reward_model

    require_checkpoint("--wm", wm)
    with fraction_bar("train-reward") as progress:
        from models.hooks import Hooks

        hooks = Hooks(progress=progress)
        summary = train_reward_model(str(wm), dataset, str(out), preset=preset, hooks=hooks, steps=steps,
                                     imagined=imagined, min_steps=min_steps, confirm=confirm)
    if json_out:
        typer.echo(json.dumps(summary, default=float))
        return
    typer.echo(f"wrote {summary['out']}: {summary['train_episodes']} training / {summary['validation_episodes']} "
               f"validation episodes, threshold {summary['threshold']:.2f} (validation F1 on "
               f"{summary['threshold_source']} episodes {summary['validation_f1']:.3f})")
    for source, rep in summary["validation"].items():
        a = rep["all"]
        typer.echo(f"  validation {source:8s} precision {_fmt(a['precision'])} recall {_fmt(a['recall'])} "
                   f"F1 {_fmt(a['f1'])}  hallucinated {a['hallucinated']}/{a['episodes'] - a['true_successes']}")


def eval_reward(
    reward_model: Path = typer.Option(..., help="Reward-model checkpoint folder."),
    wm: Path = typer.Option(..., help="World model that imagines the episodes (same autoencoder as the reward "
                            "model's)."),
    dataset: str = typer.Option(..., help="Held-out episode file(s) with per-step success."),
    out: Path = typer.Option(None, help="Also write the JSON report to this file."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Precision / recall / F1 of detected success against the simulator's truth, on real and imagined episodes."""
    from models.reward_model import evaluate_reward_model

    require_checkpoint("--reward-model", reward_model)
    require_checkpoint("--wm", wm)
    check_report_file(out)
    with fraction_bar("eval-reward", label="imagining") as progress:
        report = evaluate_reward_model(str(reward_model), str(wm), dataset, progress=progress)
    if emit_report(report, out, json_out):
        return
    typer.echo(f"{'set':10s} {'task':24s} {'episodes':>8s} {'successes':>9s} {'precision':>9s} {'recall':>7s} "
               f"{'F1':>6s} {'hallucinated':>12s}")
    for source in ("real", "imagined"):
        for task, a in report[source].items():
            typer.echo(f"{source:10s} {task:24s} {a['episodes']:8d} {a['true_successes']:9d} "
                       f"{_fmt(a['precision']):>9s} {_fmt(a['recall']):>7s} {_fmt(a['f1']):>6s} "
                       f"{a['hallucinated']:>12d}")


def wm_eval(
    policy: list[Path] = typer.Option(..., help="Policy checkpoint(s); repeat to rank several."),
    wm: Path = typer.Option(..., help="World-model checkpoint folder."),
    reward_model: Path = typer.Option(..., help="Success reward model for this world model."),
    tasks: str = typer.Option("cpu-quick", help="Task names or a preset."),
    perturb: str = typer.Option("none", help="'all' (the suite), or comma-separated none / FAMILY:LEVEL."),
    episodes: int = typer.Option(20, help="Episodes per task and perturbation."),
    seed: int = typer.Option(0, help="Evaluation seed (the eval stream, as sim-eval)."),
    max_steps: int = typer.Option(200, help="Episode cap."),
    real: bool = typer.Option(False, help="Also run the same starts in the simulator; with several policies, "
                              "report imagined-vs-real correlations."),
    out: Path = typer.Option(None, help="Also write the JSON report to this file."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Success of policies inside the world model (cheap ranking), optionally next to the real simulator."""
    from models.hooks import Hooks
    from models.wm_eval import eval_requests, evaluate_policies_in_imagination
    from sim.errors import InputError

    for p in policy:
        require_checkpoint("--policy", p)
    require_checkpoint("--wm", wm)
    require_checkpoint("--reward-model", reward_model)
    check_report_file(out)
    if max_steps < 1:
        raise InputError(f"--max-steps must be positive, got {max_steps}")
    eval_requests(tasks, perturb, episodes, seed)  # checks tasks, perturbations and episodes up front
    with fraction_bar("wm-eval") as progress:
        result = evaluate_policies_in_imagination(
            [str(p) for p in policy], str(wm), str(reward_model), real=real,
            hooks=Hooks(progress=progress), tasks=tasks, perturbations=perturb,
            episodes=episodes, seed=seed, max_steps=max_steps)
    reports = result["policies"]
    if emit_report(result, out, json_out):
        return
    for rep in reports:
        line = f"{rep['policy']}: imagined {100 * rep['imagined']['success']:.1f} %"
        if "real" in rep:
            line += (f", real {100 * rep['real']['success']:.1f} % (episode agreement "
                     f"{100 * rep['agreement']['episode_accuracy']:.0f} %)")
        typer.echo(line)
        for cell, c in rep["imagined"]["cells"].items():
            real_c = rep.get("real", {}).get("cells", {}).get(cell)
            typer.echo(f"  {cell:40s} imagined {100 * c['rate']:5.1f}"
                       + (f"  real {100 * real_c['rate']:5.1f}" if real_c else ""))
    for k, c in result.get("correlations", {}).items():
        typer.echo(f"correlation {k:24s} pearson {_fmt(c['pearson'])} spearman {_fmt(c['spearman'])} "
                   f"(|gap| {c['mean_abs_gap']:.3f}, {c['policies']} policies)")
