"""`vlarft rft` (GRPO inside the world model) and `vlarft pipeline` (the whole chain)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from backend.params import REWARD_SOURCES, REWARDS, WORLDS, RFTOptions, RLOptions
from cli.args import flag, model_flags, require_checkpoint, validate_flags
from cli.progress import fraction_bar


def register(app: typer.Typer) -> None:
    app.command("rft")(rft)
    app.command("pipeline")(pipeline)


@model_flags({"--reward success": RLOptions, "one-chunk rewards": RFTOptions})
def rft(
    policy: Path = typer.Option(..., help="Policy checkpoint folder to fine-tune."),
    out: Path = typer.Option(..., help="Output folder (a policy checkpoint)."),
    world: str = typer.Option("wm", help="Where episodes happen: wm (the world model) | sim (the real simulator)."),
    reward: str = typer.Option(
        "verified", help="verified (the paper's one-chunk pixel reward, computed in --world) | success "
        "(closed-loop episodes, 0/1 task success) | action_l1 (one-chunk kinematic baseline)."),
    dataset: Path = typer.Option(None, help="Episode file the one-chunk start states come from (verified, action_l1)."),
    wm: Path = typer.Option(None, help="World-model checkpoint folder (--world wm)."),
    reward_model: Path = typer.Option(None, help="Success reward model (`vlarft train-reward`) for --world wm "
                                      "--reward success: it decides when an imagined episode has succeeded."),
    steps: int = typer.Option(None, help="GRPO steps (default: the preset's)."),
    preset: str = typer.Option("cpu-quick", help="smoke | cpu-quick | gpu"),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    options: dict | None = None,
) -> None:
    """Fine-tune a policy with GRPO: closed-loop episodes with a success reward, or the paper's one-chunk reward.

    The algorithm flags are the fields of the API's RLOptions (--reward success) and RFTOptions (the one-chunk
    rewards), with the same bounds."""
    from models.hooks import Hooks
    from sim.errors import InputError

    options = dict(options or {})
    world, reward = resolve_world_reward(world, reward, options.pop("reward_source", None))
    model = RLOptions if reward == "success" else RFTOptions
    for name in options:
        if name not in model.model_fields:
            applies = "--reward success" if name in RLOptions.model_fields else "the one-chunk rewards"
            raise InputError(f"{flag(name)} applies only to {applies}, not --reward {reward}")
    opts = validate_flags(model, options)  # every option is checked before anything runs
    if reward == "success":
        for name, value in (("--dataset", dataset), *((("--wm", wm), ("--reward-model", reward_model))
                                                      if world == "sim" else ())):
            if value is not None:
                raise InputError(f"{name} does not apply to --reward success in --world {world}")
        if world == "wm":
            for name, value in (("--wm", wm), ("--reward-model", reward_model)):
                if value is None:
                    raise InputError(f"{name} is required with --world wm --reward success")
                require_checkpoint(name, value)
    else:
        if reward_model is not None:
            raise InputError("--reward-model applies only to --world wm --reward success")
        if dataset is None:
            raise InputError(f"--dataset is required with --reward {reward}")
    with fraction_bar(f"rft {world}/{reward}") as progress:
        hooks = Hooks(progress=progress)
        if reward == "success":
            from models.rl import train_rl

            summary = train_rl(str(policy), str(out), world=world, steps=steps, resume=resume, hooks=hooks,
                               preset=preset, wm=str(wm) if wm else None,
                               reward_model=str(reward_model) if reward_model else None, **opts)
            line = (f"wrote {summary['out']} after {summary['steps']} steps ({summary['seconds_per_step']:.1f} s/step, "
                    f"{summary['env_steps']} real environment steps, {summary['world_steps']} in the world); "
                    f"held-out success in the simulator {summary['heldout_first']:.2f} → {summary['heldout_last']:.2f}")
            if world == "wm":
                line += (f", imagined {summary['heldout_imagined_first']:.2f} → "
                         f"{summary['heldout_imagined_last']:.2f}")
        else:
            from models.rft import train_rft

            source = "action_l1" if reward == "action_l1" else world
            summary = train_rft(str(policy), str(wm) if wm else None, str(dataset), str(out), steps=steps,
                                resume=resume, hooks=hooks, preset=preset, reward_source=source, **opts)
            line = (f"wrote {summary['out']} after {summary['steps']} steps "
                    f"({summary['seconds_per_step']:.2f} s/step); "
                    f"reward {summary['reward_first']:.4f} → {summary['reward_last']:.4f}")
    typer.echo(json.dumps(summary) if json_out else line)


def resolve_world_reward(world: str, reward: str, reward_source: str | None) -> tuple[str, str]:
    """Check --world/--reward (and the old --reward-source) and return the pair."""
    from sim.errors import InputError

    if reward_source is not None:
        if reward_source not in REWARD_SOURCES:
            raise InputError(f"reward source must be one of {', '.join(REWARD_SOURCES)}, got {reward_source!r}")
        world, reward = ("wm", "action_l1") if reward_source == "action_l1" else (reward_source, "verified")
    if world not in WORLDS:
        raise InputError(f"--world must be one of {', '.join(WORLDS)}, got {world!r}")
    if reward not in REWARDS:
        raise InputError(f"--reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    return world, reward


def pipeline(
    preset: str = typer.Option(
        ..., help="smoke (< 2 min) | cpu-quick (2-core CPU) | cpu-quick-rl (cpu-quick + closed-loop RL) | mt10-gpu"),
    out: Path = typer.Option(..., help="Output folder for data, checkpoints, results and videos."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --out."),
    eval_episodes: int = typer.Option(None, help="Evaluation episodes per task and perturbation."),
    rft_steps: int = typer.Option(None, help="GRPO steps of the paper's recipe (default: the preset's)."),
    rl_steps: int = typer.Option(None, help="Closed-loop RL steps, for presets with an RL stage."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Collect → world model → base policy → RFT (→ closed-loop RL) → every policy in the simulator, in one command."""
    from models.hooks import Hooks
    from models.pipeline import run_pipeline
    from sim.errors import InputError

    if eval_episodes is not None and eval_episodes <= 0:
        raise InputError(f"--eval-episodes must be positive, got {eval_episodes}")
    for name, value in (("--rft-steps", rft_steps), ("--rl-steps", rl_steps)):
        if value is not None and value <= 0:
            raise InputError(f"{name} must be positive, got {value}")
    with fraction_bar(f"pipeline {preset}") as progress:
        hooks = Hooks(progress=progress)
        summary = run_pipeline(preset, str(out), resume=resume, hooks=hooks, eval_episodes=eval_episodes,
                               rft_steps=rft_steps, rl_steps=rl_steps)
    if json_out:
        typer.echo(json.dumps(summary))
        return
    if not summary["complete"]:
        typer.echo(f"stopped during {summary['stopped_in']}; continue with --resume")
        return
    typer.echo((out / "results.md").read_text())
