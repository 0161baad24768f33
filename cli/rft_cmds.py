"""`vlarft rft` (GRPO inside the world model) and `vlarft pipeline` (the whole chain)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.args import require_checkpoint
from cli.progress import progress_bar


def register(app: typer.Typer) -> None:
    app.command("rft")(rft)
    app.command("pipeline")(pipeline)


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
    reward_source: str = typer.Option(None, help="Old spelling of --world/--reward for the one-chunk reward: "
                                      "wm | sim | action_l1."),
    group_size: int = typer.Option(None, help="G: samples (chunks or episodes) per start state."),
    batch_size: int = typer.Option(None, help="B: start states per step (per round, with --reward success)."),
    lr_head: float = typer.Option(None, help="Learning rate of the action head and its projections."),
    lr_sigma: float = typer.Option(None, help="Learning rate of the σ-net (one-chunk rewards)."),
    reward_lambda: float = typer.Option(None, help="Weight of the perceptual term in the verified reward."),
    update_epochs: int = typer.Option(None, help="Optimiser passes over each batch of rollouts."),
    seed: int = typer.Option(None),
    checkpoint_every: int = typer.Option(None, help="Save a checkpoint every N steps."),
    tasks: str = typer.Option(None, help="success: tasks (names or a preset) the episodes start in."),
    perturbations: str = typer.Option(None, help="success: training starts cycle through these (none, FAMILY:LEVEL)."),
    max_steps: int = typer.Option(None, help="success: episode cap in environment steps."),
    max_rounds: int = typer.Option(None, help="success: dynamic sampling, rounds of fresh starts per step at most."),
    min_mixed: int = typer.Option(None, help="success: stop sampling once this many groups have mixed outcomes."),
    noise: str = typer.Option(None, help="success: gauss (ODE mean + learned σ) | sde (the paper's σ-net)."),
    init_std: float = typer.Option(None, help="success: initial σ in normalised action units."),
    explore_chunks: int = typer.Option(None, help="success: 0 = every chunk explores; k = only k consecutive chunks "
                                       "per episode (the rest deterministic), shared by the group."),
    explore_window: int = typer.Option(None, help="success: the explored chunks start in [0, window)."),
    lr_std: float = typer.Option(None, help="success: learning rate of the noise scale."),
    minibatches: int = typer.Option(None, help="success: mini-batches per pass."),
    kl_coef: float = typer.Option(None, help="success: weight of KL(policy ‖ base policy)."),
    clip_low: float = typer.Option(None, help="success: PPO clip below 1."),
    clip_high: float = typer.Option(None, help="success: PPO clip above 1."),
    speed_bonus: float = typer.Option(
        None, help="success: reward = success·(1 − bonus·steps/max_steps); 0: plain 0/1."),
    eval_every: int = typer.Option(None, help="success: held-out success every N steps (0: never)."),
    eval_episodes: int = typer.Option(None, help="success: held-out episodes per task."),
    workers: int = typer.Option(None, help="success: simulator processes (0: one per core)."),
    max_minutes: float = typer.Option(None, help="success: stop (with a checkpoint) after this many minutes."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint in --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Fine-tune a policy with GRPO: closed-loop episodes with a success reward, or the paper's one-chunk reward."""
    from models.hooks import Hooks
    from sim.errors import InputError

    world, reward = resolve_world_reward(world, reward, reward_source)
    shared = {"group_size": group_size, "batch_size": batch_size, "lr_head": lr_head,
              "update_epochs": update_epochs, "seed": seed, "checkpoint_every": checkpoint_every}
    rl_only = {"tasks": tasks, "perturbations": perturbations, "max_steps": max_steps, "max_rounds": max_rounds,
               "min_mixed": min_mixed, "noise": noise, "init_std": init_std, "explore_chunks": explore_chunks,
               "explore_window": explore_window, "lr_std": lr_std, "minibatches": minibatches,
               "kl_coef": kl_coef, "clip_low": clip_low, "clip_high": clip_high, "speed_bonus": speed_bonus,
               "eval_every": eval_every, "eval_episodes": eval_episodes, "workers": workers,
               "max_minutes": max_minutes}
    # every option is checked before anything runs
    if reward == "success":
        for name, value in (("--dataset", dataset), ("--lr-sigma", lr_sigma), ("--reward-lambda", reward_lambda),
                            *((("--wm", wm), ("--reward-model", reward_model)) if world == "sim" else ())):
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
        for name, value in rl_only.items():
            if value is not None:
                raise InputError(f"--{name.replace('_', '-')} applies only to --reward success")
        if dataset is None:
            raise InputError(f"--dataset is required with --reward {reward}")
    with progress_bar(f"rft {world}/{reward}", 1000) as update:
        hooks = Hooks(progress=lambda frac, msg: update(int(frac * 1000), 1000, msg))
        if reward == "success":
            from models.rl import train_rl

            summary = train_rl(str(policy), str(out), world=world, steps=steps, resume=resume, hooks=hooks,
                               preset=preset, wm=str(wm) if wm else None,
                               reward_model=str(reward_model) if reward_model else None, **shared, **rl_only)
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
                                resume=resume, hooks=hooks, preset=preset, reward_source=source, lr_sigma=lr_sigma,
                                reward_lambda=reward_lambda, **shared)
            line = (f"wrote {summary['out']} after {summary['steps']} steps "
                    f"({summary['seconds_per_step']:.2f} s/step); "
                    f"reward {summary['reward_first']:.4f} → {summary['reward_last']:.4f}")
    typer.echo(json.dumps(summary) if json_out else line)


WORLDS = ("wm", "sim")
REWARDS = ("verified", "success", "action_l1")


def resolve_world_reward(world: str, reward: str, reward_source: str | None) -> tuple[str, str]:
    """Check --world/--reward (and the old --reward-source) and return the pair."""
    from sim.errors import InputError

    if reward_source is not None:
        if reward_source not in ("wm", "sim", "action_l1"):
            raise InputError(f"reward source must be one of wm, sim, action_l1, got {reward_source!r}")
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
    with progress_bar(f"pipeline {preset}", 1000) as update:
        hooks = Hooks(progress=lambda frac, msg: update(int(frac * 1000), 1000, msg))
        summary = run_pipeline(preset, str(out), resume=resume, hooks=hooks, eval_episodes=eval_episodes,
                               rft_steps=rft_steps, rl_steps=rl_steps)
    if json_out:
        typer.echo(json.dumps(summary))
        return
    if not summary["complete"]:
        typer.echo(f"stopped during {summary['stopped_in']}; continue with --resume")
        return
    typer.echo((out / "results.md").read_text())
