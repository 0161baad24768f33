"""The Datasets tab's "Import a LeRobot or LIBERO dataset" accordion: upload an archive of a LeRobot dataset
folder or a LIBERO .hdf5 file, follow the `import` run that converts it, then show the new dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import gradio as gr

from backend.client import CollectParams, StudioClient
from frontend import render
from frontend.api import client_for, guard_gen

POLL_S = 0.5
FILE_TYPES = [".zip", ".tar", ".gz", ".tgz", ".hdf5", ".h5"]
IMAGE_SIZES = get_args(CollectParams.model_fields["image_size"].annotation)  # the sizes the models take


@dataclass
class ImportPanel:
    file: gr.File
    name: gr.Textbox
    image_size: gr.Dropdown
    camera: gr.Textbox
    button: gr.Button
    progress: gr.HTML


def build() -> ImportPanel:
    """The accordion's controls, where the caller is in the page."""
    with gr.Accordion("Import a LeRobot or LIBERO dataset", open=False, elem_id="ds-import"):
        gr.Markdown("A LeRobot v3.0 dataset folder as a `.zip`, `.tar` or `.tar.gz`, or a LIBERO demo file "
                    "(`.hdf5`). A run converts it; imported episodes have no simulator states.")
        file = gr.File(label="Archive or LIBERO file", file_types=FILE_TYPES, elem_id="ds-import-file")
        with gr.Row():
            name = gr.Textbox(label="Name (optional)", elem_id="ds-import-name", max_length=100,
                              info="Default: the file's name.")
            size = gr.Dropdown(list(IMAGE_SIZES), value=IMAGE_SIZES[0], label="Frame size (px)",
                               elem_id="ds-import-size")
            camera = gr.Textbox(label="Camera (LeRobot, optional)", elem_id="ds-import-camera", max_length=200,
                                info="An image feature, e.g. observation.images.front; default: the first.")
        button = gr.Button("Import", elem_id="ds-import-button")
        progress = gr.HTML(elem_id="ds-import-progress")
    return ImportPanel(file, name, size, camera, button, progress)


def _status(run) -> str:
    return (f"<div class='vr-facts'><span>import run <b>#{run.id}</b></span>{render.badge(run.status)}</div>"
            + render.progress_bar(run.progress, run.message or "")
            + f"<div class='vr-msg'>{render.escape(run.message or '')}</div>")


def wire(panel: ImportPanel, notice: gr.HTML, table: gr.HTML, selected: gr.State) -> None:
    """Connect the button: upload, follow the run, then list the new dataset."""

    @guard_gen(lambda msg: (gr.skip(), render.notice(msg), gr.skip()))
    def on_import(path: str | None, name: str, size, camera: str, sel: int | None, request: gr.Request):
        if not path:
            yield gr.skip(), render.notice("Choose a file to import."), gr.skip()
            return
        if not Path(path).is_file():
            yield gr.skip(), render.notice("Choose the file again (an uploaded file is sent once)."), gr.skip()
            return
        c: StudioClient = client_for(request)
        try:
            run = c.import_dataset(path, name=(name or "").strip() or None, image_size=int(size or IMAGE_SIZES[0]),
                                   camera=(camera or "").strip() or None)
        finally:  # the API keeps its own copy
            Path(path).unlink(missing_ok=True)
        for seen in c.follow(run.id, poll=POLL_S):
            run = seen  # the last one is the ended run
            yield _status(run), "", gr.skip()
        if run.status != "succeeded":
            yield gr.skip(), render.notice(f"Import run #{run.id}: {run.error or run.status}"), gr.skip()
            return
        ds = c.dataset(run.result["dataset_id"])
        text = (f"Imported dataset #{ds.id} “{ds.name}” ({ds.source}, made by run #{run.id}): {ds.episodes} "
                f"episodes, {ds.steps} steps, {ds.action_dim}-D actions; no simulator states.")
        yield gr.skip(), render.notice(text, "ok"), render.datasets_table(c.datasets(limit=100).items, sel)

    panel.button.click(on_import, [panel.file, panel.name, panel.image_size, panel.camera, selected],
                       [panel.progress, notice, table])
