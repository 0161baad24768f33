"""Bring-your-own-data commands: import-lerobot, import-libero, export-lerobot."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.progress import progress_bar


def register(app: typer.Typer) -> None:
    app.command("import-lerobot")(import_lerobot)
    app.command("import-libero")(import_libero)
    app.command("export-lerobot")(export_lerobot)


def _quiet() -> None:
    """The LeRobot package and `datasets` print progress bars and notices; one line per command is enough."""
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:
        pass


def _print(report: dict, json_out: bool, lines: list[str]) -> None:
    if json_out:
        typer.echo(json.dumps(report, indent=2))
    else:
        for line in lines:
            typer.echo(line)


def import_lerobot(
    root: Path = typer.Argument(..., help="Root folder of a local LeRobot dataset (v3.0: meta/, data/, videos/)."),
    out: Path = typer.Option(..., help="Output HDF5 episode file."),
    image_size: int = typer.Option(64, help="Frame size after a centre crop and resize (a multiple of 8)."),
    camera: str = typer.Option(None, help="Image feature to import (default: the first, alphabetically)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Convert a LeRobot dataset (parquet + MP4 + meta/) into a studio episode file. Nothing is downloaded."""
    from sim.lerobot_io import import_lerobot as run

    _quiet()
    with progress_bar("importing episodes", None) as bar:
        rep = run(root, out, image_size=image_size, camera=camera, progress=lambda i, n: bar(i, n))
    d = rep.to_json()
    _print(d, json_out, [
        f"wrote {d['path']}: {d['episodes']} episodes, {d['steps']} steps, camera {d['camera']} "
        f"({d['source_size'][0]}×{d['source_size'][1]} → {d['image_size']} px), {d['action_dim']}-D actions, "
        f"{d['proprio_dim']}-D proprio, {d['steps'] / max(d['seconds'], 1e-9):.0f} frames/s",
        *([f"not imported: cameras {', '.join(d['other_cameras'])}"] if d["other_cameras"] else []),
        "no simulator states: simulator rewards, reward fidelity and simulator evaluation are unavailable for it",
    ])


def import_libero(
    path: Path = typer.Argument(..., help="A LIBERO demo file (robomimic layout HDF5)."),
    out: Path = typer.Option(..., help="Output HDF5 episode file."),
    image_size: int = typer.Option(64, help="Frame size after resizing (a multiple of 8)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Convert a LIBERO HDF5 file (agentview_rgb, 7-D actions, ee_states + gripper_states) into an episode file."""
    from sim.libero_io import import_libero as run

    with progress_bar("importing episodes", None) as bar:
        d = run(path, out, image_size=image_size, progress=lambda i, n: bar(i, n))
    _print(d, json_out, [
        f"wrote {d['path']}: {d['episodes']} episodes, {d['steps']} steps, \"{d['instruction']}\", "
        f"{d['source_size']} → {d['image_size']} px, {d['action_dim']}-D actions, {d['proprio_dim']}-D proprio",
    ])


def export_lerobot(
    dataset: Path = typer.Argument(..., help="A studio episode file (HDF5)."),
    out: Path = typer.Option(..., help="New folder for the LeRobot dataset (must not exist)."),
    fps: int = typer.Option(10, help="Frames per second recorded in the dataset."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Write an episode file as a LeRobot v3.0 dataset (H.264 videos) that LeRobot's reader and trainers load."""
    from sim.lerobot_io import export_lerobot as run

    _quiet()
    with progress_bar("exporting episodes", None) as bar:
        d = run(dataset, out, fps=fps, progress=lambda i, n: bar(i, n))
    _print(d, json_out, [f"wrote {d['path']}: {d['episodes']} episodes, {d['steps']} frames at {d['fps']} fps"])
