"""The studio's web UI (Gradio 6 Blocks), mounted in the API's FastAPI app at /ui by cli.studio_app.

It is a client of the REST API like any script (backend.client over HTTP, at VLARFT_API_URL), so it
runs wherever the API runs. Fully offline: no analytics, no fonts or scripts from the internet.
When the studio has an API token, the studio's gate lets only signed-in requests (session cookie from
/login, or the bearer token) reach any of the UI's routes; each handler calls the API with the token of
the request it runs for (frontend.api.client_for).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from html import escape
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from frontend import render, tab_compare, tab_datasets, tab_playground, tab_runs
from frontend.api import api_url, client, client_for, configure, guard, token_of
from frontend.api import cache_dir as cache_dir_now
from frontend.loaders import Loader

# System fonts only: a Google font would be fetched from the internet.
THEME = gr.themes.Default(
    primary_hue="blue",
    font=("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"),
    font_mono=("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"),
)
HEAD = '<meta name="robots" content="noindex">'
FINISH_POLL_S = 5.0  # how often an open page asks whether a run has finished
FINISHED = ("succeeded",)  # runs whose outputs (checkpoints, datasets) the pickers offer
FINISHED_WATCHED = 20


def quietly(refresh: Callable) -> Callable:
    """A tab's refresh without its notice (the last output): a refresh nobody asked for leaves the message a
    user is reading in place."""

    @functools.wraps(refresh)  # Gradio reads the signature (the gr.Request argument)
    def inner(*args, **kwargs):
        return tuple(refresh(*args, **kwargs))[:-1]

    return inner


def build() -> gr.Blocks:
    with gr.Blocks(title="VLA-RFT Studio", analytics_enabled=False) as demo:
        with gr.Row(elem_id="topbar"):
            gr.Markdown("## VLA-RFT Studio\nWorld-model pretraining, VLA policies and GRPO fine-tuning with verified "
                        "rewards, judged in the MetaWorld simulator.")
            status = gr.HTML(elem_id="api-status")
        with gr.Tabs(visible=False, elem_id="main-tabs") as tabs:
            with gr.Tab("Runs", id="runs", elem_id="tab-runs") as runs_tab:
                runs = tab_runs.build()
            with gr.Tab("Playground", id="playground", elem_id="tab-playground") as playground_tab:
                playground = tab_playground.build()
            with gr.Tab("Compare", id="compare", elem_id="tab-compare") as compare_tab:
                compare = tab_compare.build()
            with gr.Tab("Datasets", id="datasets", elem_id="tab-datasets") as datasets_tab:
                datasets = tab_datasets.build()
        loaders: list[Loader] = [runs, playground, compare, datasets]
        # opening a tab refreshes its pickers and lists: what a finished run made shows up without a click
        for tab, ld in zip((runs_tab, playground_tab, compare_tab, datasets_tab), loaders, strict=True):
            if ld.on_select is not None:
                fn, inputs, outputs = ld.on_select
                tab.select(fn, inputs, outputs, show_progress="hidden")
        fill_outputs = [o for ld in loaders for o in ld.outputs]
        no_fill = [gr.skip()] * len(fill_outputs)

        def connection(version) -> str:
            sign_out = '<span><a href="/logout" id="sign-out">Sign out</a></span>' if version.auth else ""
            return (f'<div class="vr-facts" style="justify-content:flex-end"><span>API <b>{escape(api_url())}'
                    f"</b></span><span>v{escape(version.version)}</span><span>db <b>"
                    f"{escape(version.database or '?')}</b></span><span>broker <b>{escape(version.broker or '?')}"
                    f"</b></span>{sign_out}</div>")

        @guard(lambda msg: (render.notice(msg), gr.update(visible=False), *no_fill))
        def on_load(request: gr.Request):
            tok = token_of(request)
            c = client(tok)
            version = c.version()
            if version.auth:
                c.runs(limit=1)  # the request's token works (401 → "Not signed in: ...")
            return (connection(version), gr.update(visible=True), *[v for ld in loaders for v in ld.fill(tok)])

        # a run that finishes while the page is open refreshes every tab's pickers and lists (one cheap
        # summary request per tick; the client's ETag turns an unchanged answer into a 304)
        finished = gr.Textbox("", visible="hidden", elem_id="finished-runs")  # in the DOM, so .change fires
        watch = gr.Timer(FINISH_POLL_S, active=False)

        def on_watch(last: str, request: gr.Request):
            try:
                runs = client_for(request).run_summaries(status=list(FINISHED), limit=FINISHED_WATCHED).items
            except Exception:  # a dead API shows up in the tabs' own handlers, not in a poll
                return gr.skip()
            now = ",".join(f"{r.id}:{r.status}" for r in runs)
            return gr.skip() if now == last else now

        watch.tick(on_watch, finished, finished, show_progress="hidden", trigger_mode="once")
        for ld in loaders:
            if ld.on_select is not None:
                fn, inputs, outputs = ld.on_select
                finished.change(quietly(fn), inputs, outputs[:-1], show_progress="hidden")

        loaded = demo.load(on_load, None, [status, tabs, *fill_outputs])
        loaded.then(lambda: gr.Timer(active=True), None, watch)
        for ld in loaders:  # then what the URL asks for (/ui/?run=12 opens run 12)
            if ld.on_page_load is not None:
                loaded.then(*ld.on_page_load)
    return demo


def mount(app: FastAPI, path: str, *, cache_dir: str | os.PathLike | None = None,
          max_file_size: int | None = None) -> None:
    """Serve the UI at `path` inside the API's FastAPI app (called by cli.studio_app.create_app, which
    passes the studio's own cache folder and its upload limit)."""
    configure(Path(cache_dir) if cache_dir is not None else cache_dir_now())
    demo = build()
    demo.queue(default_concurrency_limit=16)
    # browsers ask the site root for a favicon; hand them the UI's
    app.add_api_route("/favicon.ico", lambda: RedirectResponse(f"{path}/favicon.ico"), include_in_schema=False)
    gr.mount_gradio_app(app, demo, path, footer_links=[], run_history=False, show_error=False, theme=THEME,
                        css=render.CSS, head=HEAD, mcp_server=False, pwa=False, enable_monitoring=False,
                        max_file_size=max_file_size)
