"""`vlarft` commands of the policy stage: train-policy, policy-latency, language-check."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.progress import fraction_bar


def register(app: typer.Typer) -> None:
    app.command("train-policy")(train_policy)
    app.command("policy-latency")(policy_latency)
    app.command("language-check")(language_check)


def _parse_value(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "," in text:  # a tuple such as vision_channels=32,64,64
        return tuple(_parse_value(t) for t in text.split(","))
    return text


def parse_overrides(items: list[str]) -> dict:
    from sim.errors import InputError

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = _parse_value(value.strip())
    return out


def train_policy(
    dataset: list[str] = typer.Option(..., help="Episode file(s); repeat the option or separate with commas."),
    out: Path = typer.Option(..., help="Checkpoint folder (the 'full' policy; the 'base' snapshot goes to OUT/base)."),
    preset: str = typer.Option("cpu-quick", help="smoke (seconds), cpu-quick (~10 min on 2 cores) or gpu."),
    steps: int = typer.Option(None, help="Training steps (default: the preset's)."),
    resume: bool = typer.Option(False, help="Continue the run in OUT from its last saved step."),
    base_at: float = typer.Option(None, help="Step (>= 1) or fraction of the steps (< 1) at which to save OUT/base; "
                                         "0: no base snapshot. Default: the preset's (cpu-quick: 250)."),
    device: str = typer.Option(None, help="auto, cpu or cuda (default: the preset's)."),
    set_: list[str] = typer.Option([], "--set", help="Override any config field, e.g. --set lr=3e-4 --set shift=0."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Behaviour-cloning pretraining of the VLA policy by flow matching."""
    from models.policy.train import train_policy as run

    overrides = parse_overrides(set_)
    if base_at is not None:
        overrides["base_at"] = base_at
    if device is not None:
        overrides["device"] = device
    paths = ",".join(dataset)
    with fraction_bar("training policy") as progress:
        from models.hooks import Hooks

        hooks = Hooks(progress=progress)
        summary = run(paths, str(out), preset=preset, steps=steps, resume=resume, hooks=hooks, **overrides)
    if json_out:
        typer.echo(json.dumps(summary))
        return
    held = summary["heldout"]
    mse = f"held-out action MSE {held['action_mse']:.4f}" if held else "no held-out episodes"
    state = "complete" if summary["complete"] else f"stopped at step {summary['step']}"
    typer.echo(f"policy {summary['out']}: {state}, {summary['steps']} steps in {summary['elapsed_s']:.0f} s, {mse}")
    if summary["base"]:
        typer.echo(f"base snapshot: {summary['base']}")
    typer.echo(f"metrics: {Path(summary['out']) / 'metrics.jsonl'}")


def policy_latency(
    policy: Path = typer.Option(..., help="A policy checkpoint folder."),
    repeats: int = typer.Option(200, help="Timed chunks per setting."),
    threads: str = typer.Option("1,2", help="Comma-separated torch thread counts to time."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Time one deterministic chunk (vision + language lookup + 10 Euler steps) at batch 1 on the CPU."""
    import time

    import numpy as np
    import torch

    from models.policy_io import load_policy
    from sim.errors import InputError

    if repeats <= 0:
        raise InputError(f"--repeats must be positive, got {repeats}")
    try:
        counts = [int(t) for t in threads.split(",") if t.strip()]
    except ValueError as exc:
        raise InputError(f"--threads must be comma-separated integers, got {threads!r}") from exc
    if not counts or min(counts) < 1:
        raise InputError("--threads needs at least one positive count")
    net = load_policy(policy)
    c = net.config
    rng = np.random.default_rng(0)
    batch = {
        "context": torch.from_numpy(rng.integers(0, 255, (1, 1, 3, c.image_size, c.image_size), dtype=np.uint8)),
        "proprio": torch.zeros(1, c.proprio_dim),
        "instruction": [net.text.state()[0][0] if net.text.cache else "reach to the goal"],
    }
    rows = []
    for n in counts:
        torch.set_num_threads(n)
        for _ in range(10):
            net.act(batch)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            net.act(batch)
            times.append((time.perf_counter() - t0) * 1000)
        rows.append({"threads": n, "median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
                     "mean_ms": float(np.mean(times)), "repeats": repeats})
    if json_out:
        typer.echo(json.dumps({"policy": str(policy), "image_size": c.image_size, "rows": rows}))
        return
    for r in rows:
        typer.echo(f"threads {r['threads']}: median {r['median_ms']:.2f} ms, p90 {r['p90_ms']:.2f} ms per chunk "
                   f"(batch 1, {c.image_size}px, {c.euler_steps} Euler steps)")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def language_check(
    policy: Path = typer.Option(..., help="A policy checkpoint folder."),
    instruction: str = typer.Option(None, help="An instruction to check (default: report the thresholds)."),
    task: str = typer.Option(None, help="The scene's task for --instruction, e.g. reach-v3."),
    save: bool = typer.Option(True, help="Without --instruction: write the thresholds to POLICY/language.json."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Does the policy understand an instruction? Without one: the similarity / margin thresholds chosen on
    the held-out phrasings, their false-alarm and miss rates, and the per-task nearest-task table."""
    from cli.args import require_checkpoint
    from models.policy.text import check_instruction
    from sim.errors import InputError
    from sim.tasks import get_task

    require_checkpoint("--policy", policy)
    if instruction is not None:
        instruction = check_instruction(instruction)
    if task is not None:
        task = get_task(task).name
        if instruction is None:
            raise InputError("--task needs --instruction")
    from models.policy.language import match_policy, policy_language, write_language
    from models.policy_io import load_policy

    encoder = load_policy(policy).text
    if instruction is not None:
        m = match_policy(policy, instruction, task, encoder)
        if json_out:
            typer.echo(json.dumps(m))
            return
        scene = f" on the {m['scene_task']} scene" if m["scene_task"] else ""
        typer.echo(f"instruction: {m['instruction']!r}{scene}")
        second = f", then {m['second_task']} (margin {m['margin']:.3f})" if m["second_task"] else ""
        typer.echo(f"nearest task: {m['nearest_task']} (similarity {m['similarity']:.3f}){second}")
        t = m["thresholds"]
        verdict = "understood" if m["understood"] else f"⚠ {m['warning']}"
        typer.echo(f"{verdict} (thresholds: similarity {t['similarity']:.2f}, margin {t['margin']:.3f})")
        return
    report = policy_language(policy, encoder)
    saved = write_language(policy, report) if save else None
    if json_out:
        typer.echo(json.dumps({**report, "saved": str(saved) if saved else None}))
        return
    c = report["counts"]
    typer.echo(f"policy {policy}: {len(report['tasks'])} tasks ({', '.join(report['tasks'])})")
    typer.echo(f"thresholds: similarity {report['similarity']:.2f}, margin {report['margin']:.3f} "
               f"({report['rule']})")
    fa, miss = report["false_alarm"], report["miss"]
    typer.echo(f"false alarms ({c['positives']} held-out phrasings on their own scene): "
               + ", ".join(f"{k} {_pct(v)}" for k, v in fa.items()))
    typer.echo(f"misses ({c['cross_task_negatives']} cross-task, {c['unknown_task_negatives']} unknown-task "
               "pairs): " + ", ".join(f"{k.replace('_', '-')} {_pct(v)}" for k, v in miss.items()))
    typer.echo("")
    typer.echo(f"{'task':<28} {'held-out':>8} {'nearest ok':>10} {'similarity':>10}  closest other (similarity)")
    for r in report["per_task"]:
        other = f"{r['closest_other']} ({r['closest_other_similarity']:.2f})" if r["closest_other"] else "–"
        if r["confused_with"]:
            other += f"; confused with {r['confused_with']}"
        sim = "–" if r["mean_similarity"] is None else f"{r['mean_similarity']:.2f}"
        typer.echo(f"{r['task']:<28} {r['heldout']:>8} {_pct(r['nearest_is_task']):>10} {sim:>10}  {other}")
    if saved:
        typer.echo(f"saved {saved}: used with the policy while its tasks and the phrasing tables match")
