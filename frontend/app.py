"""The studio's web UI (Gradio 6 Blocks), mounted in the API's FastAPI app at /ui by cli.studio_app.

It is a client of the REST API like any script (backend.client over HTTP, at VLARFT_API_URL), so it
runs wherever the API runs. Fully offline: no analytics, no fonts or scripts from the internet.
When the studio has an API token, the page asks for it and sends it with every call.
"""

from __future__ import annotations

import os
from html import escape

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from frontend import render, tab_compare, tab_datasets, tab_playground, tab_runs
from frontend.api import CACHE, api_url, client, guard
from frontend.loaders import Loader

# System fonts only: a Google font would be fetched from the internet.
THEME = gr.themes.Default(
    primary_hue="blue",
    font=("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"),
    font_mono=("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"),
)
HEAD = '<meta name="robots" content="noindex">'


def build() -> gr.Blocks:
    with gr.Blocks(title="VLA-RFT Studio", analytics_enabled=False) as demo:
        token = gr.State("")
        with gr.Row(elem_id="topbar"):
            gr.Markdown("## VLA-RFT Studio\nWorld-model pretraining, VLA policies and GRPO fine-tuning with verified "
                        "rewards, judged in the MetaWorld simulator.")
            status = gr.HTML(elem_id="api-status")
        with gr.Column(visible=False, elem_id="login") as login:
            gr.Markdown("### Sign in\nThis studio needs its API token (`VLARFT_API_TOKEN`).")
            with gr.Row():
                token_box = gr.Textbox(type="password", label="API token", elem_id="token-input", scale=3)
                sign_in = gr.Button("Sign in", variant="primary", elem_id="token-submit", scale=1)
            login_notice = gr.HTML(elem_id="login-notice")
        with gr.Tabs(visible=False, elem_id="main-tabs") as tabs:
            with gr.Tab("Runs", id="runs", elem_id="tab-runs"):
                runs = tab_runs.build(token)
            with gr.Tab("Playground", id="playground", elem_id="tab-playground"):
                playground = tab_playground.build(token)
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                compare = tab_compare.build(token)
            with gr.Tab("Datasets", id="datasets", elem_id="tab-datasets"):
                datasets = tab_datasets.build(token)
        loaders: list[Loader] = [runs, playground, compare, datasets]
        fill_outputs = [o for ld in loaders for o in ld.outputs]
        no_fill = [gr.skip()] * len(fill_outputs)

        def fill(tok: str) -> list:
            return [v for ld in loaders for v in ld.fill(tok)]

        def connection(version) -> str:
            return (f'<div class="vr-facts" style="justify-content:flex-end"><span>API <b>{escape(api_url())}'
                    f"</b></span><span>v{escape(version.version)}</span><span>db <b>"
                    f"{escape(version.database)}</b></span><span>broker <b>{escape(version.broker)}"
                    "</b></span></div>")

        @guard(lambda msg: (render.notice(msg), gr.update(visible=False), gr.update(visible=False), *no_fill))
        def on_load():
            version = client("").version()
            if version.auth:
                return (connection(version), gr.update(visible=True), gr.update(visible=False), *no_fill)
            return (connection(version), gr.update(visible=False), gr.update(visible=True), *fill(""))

        demo.load(on_load, None, [status, login, tabs, *fill_outputs])

        @guard(lambda msg: (gr.skip(), render.notice(msg), gr.skip(), gr.skip(), *no_fill))
        def on_sign_in(tok: str):
            tok = (tok or "").strip()
            if not tok:
                return gr.skip(), render.notice("Enter the API token."), gr.skip(), gr.skip(), *no_fill
            client(tok).runs(limit=1)  # 401 → "Not signed in: wrong bearer token"
            return tok, "", gr.update(visible=False), gr.update(visible=True), *fill(tok)

        sign_in.click(on_sign_in, token_box, [token, login_notice, login, tabs, *fill_outputs])
        token_box.submit(on_sign_in, token_box, [token, login_notice, login, tabs, *fill_outputs])
    return demo


def mount(app: FastAPI, path: str) -> None:
    """Serve the UI at `path` inside the API's FastAPI app (called by cli.studio_app.create_app)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    demo = build()
    demo.queue(default_concurrency_limit=16)
    # browsers ask the site root for a favicon; hand them the UI's
    app.add_api_route("/favicon.ico", lambda: RedirectResponse(f"{path}/favicon.ico"), include_in_schema=False)
    gr.mount_gradio_app(app, demo, path, footer_links=[], run_history=False, show_error=False, theme=THEME,
                        css=render.CSS, head=HEAD, allowed_paths=[str(CACHE)], mcp_server=False, pwa=False,
                        enable_monitoring=False)
