"""The `import` run: an upload stored by POST /datasets/import (a LeRobot dataset archive or a LIBERO HDF5 file)
is extracted with backend.archives, converted by sim.lerobot_io / sim.libero_io into an episode file (frames
resized, no simulator states) and registered as a dataset whose run is this one.

Whatever happens, the extracted folder and a partial output are removed, and the upload too once the run ends
(it stays only for a run that a worker shutdown interrupts, so that its next attempt can read it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sqlalchemy import select

from backend import archives, worker_store
from backend.db import session_scope
from backend.models import Dataset
from backend.params import ImportParams
from sim.errors import InputError
from workers.context import RunContext, RunStopped

EXTRACT_SHARE = 0.1  # of the run's progress bar
LEROBOT_MARKER = "meta/info.json"


def _quiet() -> None:
    """The `datasets` library draws progress bars on the worker's stderr; the run has its own."""
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:
        pass


def _without(text: str, names: dict[Path, str]) -> str:
    """`text` with each path (longest first) named by its word; names under it keep their relative part."""
    for path, word in names.items():
        text = text.replace(f"{path}/", "").replace(str(path), word)
    return text


def _progress(ctx: RunContext):
    def step(done: int, total: int) -> None:
        ctx.progress(EXTRACT_SHARE + (1 - EXTRACT_SHARE) * done / max(total, 1), f"episode {done}/{total}")
        if ctx.should_stop():
            raise RunStopped(ctx.stop_request or "stop")

    return step


def _convert(p: ImportParams, upload: Path, scratch: Path, out: Path, ctx: RunContext) -> dict:
    """The importer's report; its errors in one line that names the archive, not the server's folders."""
    names = {upload: "the upload", out: "the output", scratch: "the archive"}
    try:
        if p.format == "libero":
            from sim.libero_io import import_libero

            report = import_libero(upload, out, image_size=p.image_size, progress=_progress(ctx))
        else:
            from sim.lerobot_io import import_lerobot

            ctx.progress(0.0, "extracting the archive")
            root = archives.extract(upload, archives.file_kind(upload) or "?", scratch,
                                    ctx.settings.max_upload_bytes, LEROBOT_MARKER)
            names = {root: "the archive", **names}
            if ctx.should_stop():
                raise RunStopped(ctx.stop_request or "stop")
            _quiet()
            report = import_lerobot(root, out, image_size=p.image_size, camera=p.camera,
                                    progress=_progress(ctx)).to_json()
    except InputError as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(_without(text, names)) from None
    report.pop("path", None)
    return report


def run_import(p: ImportParams, ctx: RunContext) -> dict:
    art = ctx.settings.artifacts
    upload = art / "uploads" / p.upload
    with session_scope(ctx.url) as s:  # an earlier attempt may have registered it before the worker died
        done = s.scalar(select(Dataset).where(Dataset.run_id == ctx.run_id, Dataset.source == p.format))
        if done is not None:
            upload.unlink(missing_ok=True)
            return {"dataset_id": done.id, "dataset_name": done.name, "format": p.format, "episodes": done.episodes}
    out = art / "datasets" / f"import-run{ctx.run_id}.h5"
    scratch = ctx.out / f".extract.tmp-{os.getpid()}"
    registered = False
    try:
        if not upload.is_file():
            raise InputError("the uploaded file is gone (an import run removes it when it ends): upload it again")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)  # the output of an attempt that died before registering it
        report = _convert(p, upload, scratch, out, ctx)
        from sim.episodes import EpisodeFile, validate_file

        summary = validate_file(out).to_json()
        ef = EpisodeFile(out)
        try:
            sim_states = ef.has_sim_states
        finally:
            ef.close()
        name = p.dataset_name or f"{p.format}-run{ctx.run_id}"
        ds = worker_store.register_dataset(ctx.url, art, ctx.run_id, name, out, summary, p.format)
        registered = True
        ctx.log(f"dataset #{ds.id} {ds.name}: {summary['episodes']} episodes, {summary['steps']} steps imported "
                f"from {p.format}" + ("" if sim_states else " (no simulator states)"))
        return {"dataset_id": ds.id, "dataset_name": ds.name, "format": p.format, "sim_states": sim_states,
                **report}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not registered:
            out.unlink(missing_ok=True)
        interrupted = ctx.lost or (ctx.told_to_stop and ctx.stop_request == "interrupt")
        if registered or not interrupted:
            upload.unlink(missing_ok=True)
