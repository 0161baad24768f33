"""Simulator commands: tasks, collect, dataset-info, sim-eval."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from backend.params import CAMERAS, IMAGE_SIZES, CollectParams, EvaluateParams
from cli.args import check_fields, field_help
from cli.progress import progress_bar


def register(app: typer.Typer) -> None:
    app.command("tasks")(tasks)
    app.command("collect")(collect)
    app.command("dataset-info")(dataset_info)
    app.command("sim-eval")(sim_eval)


def tasks(
    preset: str = typer.Option(None, help="Only the tasks of a preset: smoke, cpu-quick, mt10, mt50."),
    paraphrases: bool = typer.Option(False, help="Also print the held-out paraphrases."),
) -> None:
    """List the MetaWorld v3 tasks with their instructions."""
    from sim.errors import InputError
    from sim.tasks import TASK_PRESETS, TASKS

    if preset is not None and preset not in TASK_PRESETS:
        raise InputError(f"unknown preset '{preset}': choose from {', '.join(TASK_PRESETS)}")
    names = TASK_PRESETS[preset] if preset else sorted(TASKS)
    for name in names:
        t = TASKS[name]
        typer.echo(f"{name:32s} {t.skill:12s} {t.instruction}")
        if paraphrases:
            for p in t.paraphrases:
                typer.echo(f"{'':45s} ~ {p}")


def collect(
    tasks: str = typer.Option(..., help="Comma-separated task names or a preset (smoke, cpu-quick, mt10)."),
    episodes: int = typer.Option(..., help=field_help(CollectParams, "episodes")),
    out: Path = typer.Option(..., help="Output HDF5 file."),
    perturb: str = typer.Option("none", help="Perturbation of the start states: none or FAMILY:LEVEL."),
    action_noise: float = typer.Option(0.0, help=field_help(CollectParams, "action_noise")),
    seed: int = typer.Option(0, help="Seed of the start states and the action noise."),
    camera: str = typer.Option("workspace", help=f"Camera: {', '.join(CAMERAS)}."),
    image_size: int = typer.Option(64, help=f"Frame size: {', '.join(map(str, IMAGE_SIZES))}."),
    max_steps: int = typer.Option(200, help=field_help(CollectParams, "max_steps")),
    keep_failures: bool = typer.Option(False, help=field_help(CollectParams, "keep_failures")),
    workers: int = typer.Option(0, help="Simulator processes (0: one per core)."),
    policy: Path = typer.Option(None, help="A policy checkpoint acts instead of the expert (re-planning every "
                                "chunk); every episode is kept, failures too, with the expert's action as label."),
    noise_std: float = typer.Option(0.0, help=field_help(CollectParams, "noise_std")),
    after_success: int = typer.Option(0, help=field_help(CollectParams, "after_success")),
    json_out: bool = typer.Option(False, "--json", help="Print the dataset summary as JSON."),
) -> None:
    """Record scripted-expert (or a policy's own) episodes from fresh seeded start states."""
    from sim.collect import CollectConfig
    from sim.collect import collect as run_collect
    from sim.episodes import check_writable
    from sim.errors import InputError

    check_fields(CollectParams, {"episodes": episodes, "action_noise": action_noise, "seed": seed, "camera": camera,
                                 "image_size": image_size, "max_steps": max_steps, "noise_std": noise_std,
                                 "after_success": after_success})
    spec = None
    if policy is not None:
        from models.policy_io import eval_spec

        spec = eval_spec(policy, noise_std=noise_std)
        if (spec.camera, spec.image_size) != (camera, image_size):
            raise InputError(f"policy {policy} sees {spec.camera} at {spec.image_size}px; pass --camera {spec.camera} "
                             f"--image-size {spec.image_size}")
    elif noise_std:
        raise InputError("--noise-std applies only with --policy (use --action-noise for the expert)")
    cfg = CollectConfig(
        tasks=tasks, episodes=episodes, perturbation=perturb, action_noise=action_noise, seed=seed,
        camera=camera, image_size=image_size, max_steps=max_steps, keep_failures=keep_failures, workers=workers,
        policy=spec, after_success=after_success,
    )
    check_writable(out)
    with progress_bar("collecting" + (f" ({spec.name})" if spec else ""), cfg.episodes * len(cfg.tasks)) as update:
        report = run_collect(cfg, str(out), progress=update)
    s = report.summary
    if json_out:
        typer.echo(json.dumps({**s.to_json(), "attempts": report.attempts, "shortfall": report.shortfall}))
    else:
        typer.echo(f"wrote {s.episodes} episodes ({s.steps} steps) to {s.path}")
        for task, n in s.tasks.items():
            typer.echo(f"  {task:32s} {n:4d} kept of {report.attempts[task]} attempts")
        if spec is not None:
            typer.echo(f"  {spec.name} succeeded in {100 * s.success_rate:.1f} % of its episodes")
    for task, missing in report.shortfall.items():
        typer.echo(f"warning: {task}: {missing} episodes short; the expert failed too often", err=True)


def dataset_info(
    path: Path = typer.Argument(..., help="An episode file (HDF5)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Validate an episode file in full and summarise it."""
    from sim.episodes import validate_file

    s = validate_file(path)
    if json_out:
        typer.echo(json.dumps(s.to_json()))
        return
    typer.echo(f"{s.path}: {s.episodes} episodes, {s.steps} steps, {s.image_size}px {s.camera}, "
               f"{s.action_dim}-D actions, format {s.format_version}")
    for task, n in s.tasks.items():
        typer.echo(f"  {task:32s} {n}")


def _instruction_set(name: str | None, paraphrases: bool) -> str:
    """--instruction-set, with --paraphrases as a shorthand for 'paraphrase'."""
    from sim.errors import InputError
    from sim.instructions import check_instruction_set

    if name is None:
        return "paraphrase" if paraphrases else "train"
    check_instruction_set(name)
    if paraphrases and name != "paraphrase":
        raise InputError(f"--paraphrases conflicts with --instruction-set {name}")
    return name


def sim_eval(
    policy: str = typer.Option("expert", help="'expert' or a policy checkpoint folder."),
    tasks: str = typer.Option("cpu-quick", help="Comma-separated task names or a preset."),
    perturb: str = typer.Option("none", help="'all' (the suite), or comma-separated none / FAMILY:LEVEL."),
    episodes: int = typer.Option(20, help=field_help(EvaluateParams, "episodes")),
    seed: int = typer.Option(0, help="Evaluation seed (start states come from a stream disjoint from collect)."),
    max_steps: int = typer.Option(200, help=field_help(EvaluateParams, "max_steps")),
    instruction: str = typer.Option(None, help="Free-text instruction used for every episode."),
    instruction_set: str = typer.Option(
        None, help="train (the training instruction) | paraphrase | question (held-out sets, cycled)."),
    paraphrases: bool = typer.Option(False, help="Shorthand for --instruction-set paraphrase."),
    exclude_dataset: list[Path] = typer.Option([], help="Dataset(s) whose starts must not appear (checked)."),
    video: Path = typer.Option(None, help="Folder for MP4s of the first episodes of each cell."),
    videos_per_cell: int = typer.Option(1, help=field_help(EvaluateParams, "videos_per_cell")),
    workers: int = typer.Option(0, help="Simulator processes (0: one per core)."),
    json_out: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    out: Path = typer.Option(None, help="Also write the JSON report to this file."),
) -> None:
    """Success rate of a policy in the real simulator, with 95% Wilson intervals."""
    from sim.evaluate import EXPERT, EvalConfig, evaluate
    from sim.perturb import parse_perturbations

    check_fields(EvaluateParams, {"episodes": episodes, "seed": seed, "max_steps": max_steps,
                                  "videos_per_cell": videos_per_cell})
    instruction_set = _instruction_set(instruction_set, paraphrases)
    if policy == "expert":
        spec = EXPERT
    else:
        from models.policy_io import eval_spec

        spec = eval_spec(policy)
    cfg = EvalConfig(
        tasks=tasks, perturbations=parse_perturbations(perturb), episodes=episodes, seed=seed, max_steps=max_steps,
        instruction=instruction, instruction_set=instruction_set,
        video_dir=str(video) if video else None, videos_per_cell=videos_per_cell,
        exclude_datasets=tuple(str(p) for p in exclude_dataset), workers=workers,
    )
    if out is not None:
        from sim.episodes import check_writable

        check_writable(out)
    n_units = sum(1 for _ in cfg.tasks) * len(cfg.perturbations) * cfg.episodes
    with progress_bar("evaluating", n_units) as update:
        report = evaluate(spec, cfg, progress=update).summary
    if out is not None:
        out.write_text(json.dumps(report, indent=1))
    if json_out:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"policy {report['policy']}  seed {cfg.seed} (eval stream)  max {cfg.max_steps} steps")
    typer.echo(f"{'task':30s} {'perturbation':16s} {'success':>8s}  {'95% CI':>13s}  {'steps':>6s}")
    for r in report["rows"]:
        lo, hi = r["ci95"]
        typer.echo(f"{r['task']:30s} {r['perturbation']:16s} {r['successes']:3d}/{r['episodes']:<4d}"
                   f" [{lo:.2f}, {hi:.2f}]  {r['mean_steps']:6.1f}")
    for c in report["conditions"]:
        lo, hi = c["ci95"]
        typer.echo(f"{'ALL':30s} {c['perturbation']:16s} {c['success_rate']:8.1%}  [{lo:.2f}, {hi:.2f}]")
    if report["disjoint_from_datasets"]:
        for path, d in report["disjoint_from_datasets"].items():
            verdict = "disjoint" if d["overlap"] == 0 else f"OVERLAP in {d['overlap']} starts"
            typer.echo(f"start states vs {path}: {verdict} ({d['eval_starts']} eval / {d['dataset_starts']} dataset)")
    else:
        typer.echo("start states: drawn from the eval seed stream, disjoint by construction from collect's "
                   "(pass --exclude-dataset to check a file)")
    for v in report["videos"]:
        typer.echo(f"video: {v}")
