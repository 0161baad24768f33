"""Datasets: collect MetaWorld episodes with the scripted expert or upload an HDF5 file, then browse a
dataset's episodes with a video preview and the instruction."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from backend.client import CollectParams, StudioClient
from frontend import estimates, import_panel, render
from frontend.api import cached_episode_video, client, client_for, guard, guard_gen
from frontend.formcheck import whole
from frontend.loaders import Loader

POLL_S = 0.5
WAIT_S = 6 * 3600


def build() -> Loader:
    sel = gr.State(None)
    gr.Markdown("Episodes are stored as HDF5 (robomimic layout: `data/demo_K/obs/<camera>_rgb`, `actions`, ...).")
    notice = gr.HTML(elem_id="ds-notice")
    with gr.Row():
        with gr.Column():
            gr.Markdown("#### Collect with the scripted expert")
            with gr.Row():
                tasks = gr.Dropdown([], label="Tasks (a preset or task names)", multiselect=True,
                                    elem_id="ds-tasks", scale=2)
                episodes = gr.Number(3, label="Successful episodes per task", precision=0, elem_id="ds-episodes")
            with gr.Row():
                pert = gr.Dropdown(["none"], value="none", label="Perturbation", elem_id="ds-pert")
                noise = gr.Slider(0, 1, 0, step=0.05, label="Action noise", elem_id="ds-noise")
                seed = gr.Number(0, label="Seed", precision=0, elem_id="ds-seed")
            with gr.Row():
                keep = gr.Checkbox(False, label="Keep failed episodes", elem_id="ds-keep")
                ds_name = gr.Textbox(label="Dataset name (optional)", elem_id="ds-name", max_length=100)
            collect_estimate = gr.HTML(elem_id="ds-estimate")
            collect = gr.Button("Collect", variant="primary", elem_id="ds-collect")
            progress = gr.HTML(elem_id="ds-progress")
        with gr.Column():
            gr.Markdown("#### Upload an episode file")
            upload = gr.File(label="HDF5 file (.h5 / .hdf5)", file_types=[".h5", ".hdf5", ".hdf"],
                             elem_id="ds-upload-file")
            up_name = gr.Textbox(label="Name", elem_id="ds-upload-name", max_length=100,
                                 info="Letters, digits, '.', '_' and '-'; unique.")
            up_btn = gr.Button("Upload and validate", elem_id="ds-upload")
            importer = import_panel.build()
    with gr.Row():
        gr.Markdown("#### Datasets  \nClick a row to browse its episodes.")
        refresh = gr.Button("Refresh", size="sm", elem_id="ds-refresh", scale=0)
    table = gr.HTML(render.datasets_table([]), elem_id="ds-table", js_on_load=render.row_click_js("dataset"))
    with gr.Column(visible=False, elem_id="ds-browser") as browser:
        title = gr.HTML(elem_id="ds-title")
        with gr.Row():
            with gr.Column(scale=3):
                episodes_html = gr.HTML(elem_id="ds-episodes-table", js_on_load=render.row_click_js("episode"),
                                        max_height=420)
            with gr.Column(scale=2):
                instruction = gr.HTML(elem_id="ds-instruction")
                preview = gr.Video(label="Episode preview", elem_id="ds-preview", autoplay=True, loop=True,
                                   interactive=False, height=300)

    def lists(c: StudioClient, selected: int | None = None):
        cat = c.tasks()
        suite = c.perturbations().suite
        choices = [(f"preset: {k} ({len(v)} tasks)", k) for k, v in cat.presets.items()] + \
            [(t.name, t.name) for t in cat.tasks]
        return (gr.update(choices=choices, value=["smoke"]), gr.update(choices=suite, value="none"),
                render.datasets_table(c.datasets(limit=100).items, selected))

    list_outputs = [tasks, pert, table]

    @guard(lambda msg: (gr.skip(), render.notice(msg)))
    def on_refresh(selected: int | None, request: gr.Request):
        return render.datasets_table(client_for(request).datasets(limit=100).items, selected), ""

    refresh.click(on_refresh, sel, [table, notice])

    # Collect ------------------------------------------------------------------------------------
    collect_outputs = [progress, notice, table]

    @guard_gen(lambda msg: (gr.skip(), render.notice(msg), gr.skip()))
    def on_collect(tasks_v, eps, pert_v, noise_v, seed_v, keep_v, name_v, selected, request: gr.Request):
        names = list(tasks_v or [])
        if not names:
            yield gr.skip(), render.notice("Pick at least one task or preset."), gr.skip()
            return
        eps_n = whole(eps, "Successful episodes per task", CollectParams, "episodes")
        seed_n = whole(seed_v, "Seed", CollectParams, "seed")
        c = client_for(request)
        presets = c.tasks().presets
        if len(names) > 1:
            names = list(dict.fromkeys(t for n in names for t in presets.get(n, [n])))
        run = c.collect(tasks=names[0] if len(names) == 1 else names, episodes=eps_n, perturbation=pert_v or "none",
                        action_noise=float(noise_v), seed=seed_n, keep_failures=bool(keep_v),
                        dataset_name=(name_v or "").strip() or None)
        while True:
            yield (f"<div class='vr-facts'><span>collect run <b>#{run.id}</b></span>{render.badge(run.status)}"
                   f"<span>{estimates.remaining_text(run)}</span></div>"
                   + render.progress_bar(run.progress, run.message or "")
                   + f"<div class='vr-msg'>{render.escape(run.message or '')}</div>", "", gr.skip())
            if run.done:
                break
            time.sleep(POLL_S)
            run = c.run(run.id)
        if run.status != "succeeded":
            yield gr.skip(), render.notice(f"Collect run #{run.id}: {run.error or run.status}"), gr.skip()
            return
        ds = c.dataset(run.result["dataset_id"])
        yield (gr.skip(), render.notice(f"Dataset #{ds.id} “{ds.name}”: {ds.episodes} episodes, {ds.steps} steps.",
                                        "ok"), render.datasets_table(c.datasets(limit=100).items, selected))

    collect.click(on_collect, [tasks, episodes, pert, noise, seed, keep, ds_name, sel], collect_outputs)

    # Upload -------------------------------------------------------------------------------------
    @guard(lambda msg: (render.notice(msg), gr.skip()))
    def on_upload(path: str | None, name_v: str, selected: int | None, request: gr.Request):
        if not path:
            return render.notice("Choose a file to upload."), gr.skip()
        if not Path(path).is_file():
            return render.notice("Choose the file again (an uploaded file is sent once)."), gr.skip()
        name_v = (name_v or "").strip() or Path(path).stem
        c = client_for(request)
        try:
            ds = c.upload_dataset(path, name_v)
        finally:  # the API keeps its own copy; Gradio's stays in the UI's cache no longer than needed
            Path(path).unlink(missing_ok=True)
        return (render.notice(f"Uploaded dataset #{ds.id} “{ds.name}”: {ds.episodes} episodes of "
                              f"{', '.join(ds.tasks)} — every array checked.", "ok"),
                render.datasets_table(c.datasets(limit=100).items, selected))

    up_btn.click(on_upload, [upload, up_name, sel], [notice, table])
    import_panel.wire(importer, notice, table, sel)

    # Browse -------------------------------------------------------------------------------------
    browse_outputs = [sel, browser, title, episodes_html, instruction, preview, table, notice]

    def _row(evt: gr.EventData) -> int | None:
        v = str((getattr(evt, "_data", None) or {}).get("row", ""))
        return int(v) if v.isdigit() else None

    def show_episode(c: StudioClient, ds_id: int, index: int):
        ds = c.dataset(ds_id)
        eps = c.episodes(ds_id)
        ep = next((e for e in eps if e.index == index), None)
        if ep is None:
            return render.episodes_table(eps), "", None
        text = (f"<div class='vr-cell'><b>Episode {ep.index}</b> · {render.escape(ep.task)} · {ep.length} steps · "
                f"{'success ✓' if ep.success else 'failure ✗'}</div><blockquote style='font-size:16px'>“"
                f"{render.escape(ep.instruction)}”</blockquote>")
        return render.episodes_table(eps, index), text, str(cached_episode_video(c, ds_id, ds.sha256, index))

    @guard(lambda msg: (*([gr.skip()] * (len(browse_outputs) - 1)), render.notice(msg)))
    def on_dataset(evt: gr.EventData, request: gr.Request):
        ds_id = _row(evt)
        if ds_id is None:
            return (*([gr.skip()] * (len(browse_outputs) - 1)), "")
        c = client_for(request)
        ds = c.dataset(ds_id)
        eps_html, text, video = show_episode(c, ds_id, 0)
        head = (f"<h4 style='margin:4px 0'>Dataset #{ds.id} “{render.escape(ds.name)}”</h4><div class='vr-facts'>"
                f"<span>{ds.episodes} episodes</span><span>{ds.steps} steps</span><span>{ds.image_size}px "
                f"{render.escape(ds.camera)} camera</span><span>source {render.escape(ds.source)}</span>"
                f"<span>sha256 <code>{ds.sha256[:12]}</code></span></div>")
        return (ds_id, gr.update(visible=True), head, eps_html, text, video,
                render.datasets_table(c.datasets(limit=100).items, ds_id), "")

    table.click(on_dataset, None, browse_outputs)

    @guard(lambda msg: (gr.skip(), gr.skip(), gr.skip(), render.notice(msg)))
    def on_episode(evt: gr.EventData, ds_id: int | None, request: gr.Request):
        index = _row(evt)
        if ds_id is None or index is None:
            return gr.skip(), gr.skip(), gr.skip(), ""
        return (*show_episode(client_for(request), ds_id, index), "")

    episodes_html.click(on_episode, sel, [episodes_html, instruction, preview, notice])

    @guard(lambda msg: render.notice(msg, "warn"))
    def on_estimate(tasks_v, eps, request: gr.Request):
        c = client_for(request)
        presets = c.tasks().presets
        n_tasks = len({t for n in (tasks_v or []) for t in presets.get(n, [n])})
        eps_n = whole(eps, "Successful episodes per task", CollectParams, "episodes")
        text = estimates.episodes_text(n_tasks * eps_n, c, "collect")
        return render.notice(f"Estimate: {n_tasks} tasks × {eps_n} successful episodes = at least {text}.", "info")

    for control in (tasks, episodes):
        control.change(on_estimate, [tasks, episodes], collect_estimate, show_progress="hidden")

    return Loader(list_outputs, lambda tok: list(lists(client(tok))), on_select=(on_refresh, sel, [table, notice]))
