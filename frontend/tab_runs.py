"""The Runs tab: launch the pipeline or one stage, a live table of runs, and a page per run with live
curves, results, logs, artifact downloads, cancel and resume."""

from __future__ import annotations

import bisect
import json
import threading
from collections import OrderedDict
from typing import Any

import gradio as gr

from backend.client import ACTIVE, RunOut, StudioClient
from backend.client import KINDS as RUN_KINDS
from frontend import charts, estimates, presets, render, results
from frontend.api import cached_artifact, client, client_for, guard
from frontend.loaders import Loader
from frontend.names import named_refs, names_by_ref

POLL_S = 2.0
RUNS_SHOWN = 30
METRIC_PAGE_ROWS = 20_000  # the API's default page of metric rows
MAX_METRIC_PAGES = 10  # per refresh; a huge run catches up over a few refreshes

# The run each browser session shows now. A timer tick that started before the user opened another
# run must not paint the old run over the new one; it checks here before it answers.
_shown: OrderedDict[str, int | None] = OrderedDict()
_shown_lock = threading.Lock()


def _set_shown(request: gr.Request | None, run_id: int | None) -> None:
    key = getattr(request, "session_hash", None) or ""
    with _shown_lock:
        _shown[key] = run_id
        _shown.move_to_end(key)
        while len(_shown) > 10_000:
            _shown.popitem(last=False)


def _is_shown(request: gr.Request | None, run_id: int | None) -> bool:
    with _shown_lock:
        return _shown.get(getattr(request, "session_hash", None) or "", run_id) == run_id


def _empty_detail(run_id: int | None = None) -> dict[str, Any]:
    return {"id": run_id, "metric_id": 0, "series": {}, "log_id": 0, "logs": [], "status": None, "progress": None,
            "attempt": None, "artifacts": None, "results_for": None}


def merge_series(series: dict[str, dict[str, list]], name: str, steps: list[int], values: list,
                 times: list[float] | None = None) -> None:
    """Append newly written rows of one metric. Rows from a step the page already holds mean a resumed run
    logged again from its checkpoint: the old tail is replaced, as the database does."""
    acc = series.setdefault(name, {"steps": [], "values": [], "times": []})
    if steps and acc["steps"] and acc["steps"][-1] >= steps[0]:
        keep = bisect.bisect_left(acc["steps"], steps[0])
        del acc["steps"][keep:], acc["values"][keep:], acc["times"][keep:]
    acc["steps"].extend(steps)
    acc["values"].extend(values)
    acc["times"].extend(times if times and len(times) == len(steps) else [float("nan")] * len(steps))


def all_metrics(c: StudioClient, run_id: int) -> dict[str, dict[str, list]]:
    """Every metric row of a run (for overlays in the explorer)."""
    series: dict[str, dict[str, list]] = {}
    after = 0
    for _ in range(MAX_METRIC_PAGES):
        m = c.metrics(run_id, after_id=after)
        rows = 0
        for name, ser in m.series.items():
            merge_series(series, name, ser.steps, ser.values, ser.times)
            rows += len(ser.steps)
        after = m.last_id if m.last_id is not None else after
        if rows < METRIC_PAGE_ROWS:
            break
    return series


def _merge(detail: dict, c: StudioClient, run_id: int) -> bool:
    """Pull metric rows and log lines written since the page last asked; True when anything arrived.
    The metrics cursor is the row id, not the step: a pipeline's next stage starts its steps at 1 again."""
    grew = False
    for _ in range(MAX_METRIC_PAGES):
        m = c.metrics(run_id, after_id=detail["metric_id"])
        rows = 0
        for name, ser in m.series.items():
            merge_series(detail["series"], name, ser.steps, ser.values, ser.times)
            rows += len(ser.steps)
        grew = grew or rows > 0
        if m.last_id is not None:
            detail["metric_id"] = m.last_id
        if rows < METRIC_PAGE_ROWS:
            break
    logs = c.logs(run_id, since=detail["log_id"])
    if logs.lines:
        detail["logs"].extend(f"{ln.time:%H:%M:%S} {ln.level.upper():7s} {ln.message}" for ln in logs.lines)
        detail["logs"] = detail["logs"][-2000:]
        grew = True
    if logs.last_id is not None:
        detail["log_id"] = logs.last_id
    return grew


def _episode_rows(c: StudioClient, run: RunOut, arts) -> list[dict]:
    """An evaluation's episodes (from its report.json), one row per start."""
    report = next((a for a in arts if a.name == "report.json" and not a.is_dir), None)
    if run.kind != "evaluate" or report is None:
        return []
    text = cached_artifact(c, run.id, report.name, report.sha256).read_text(errors="replace")
    return results.episode_rows(json.loads(text), run.result or {})


def _results(c: StudioClient, run: RunOut, arts) -> tuple[Any, str, list[tuple[str, str]]]:
    """Success chart, results markdown and the video choices of a finished run."""
    fig = None
    md = ""
    res = run.result or {}
    if run.kind == "pipeline" and isinstance(res.get("success"), dict):
        fig = charts.success_figure(res["success"], title="Base and fine-tuned policies (95% Wilson interval)")
    elif run.kind == "evaluate" and res.get("families"):
        known = names_by_ref(c.checkpoints(kind="policy"))  # the one name, not the checkpoint's own label
        labels = {ref: known.get(ref, name) for ref, name in (res.get("policy_names") or {}).items()}
        fig = charts.success_figure(charts.success_rows_from_compare(res), labels)
    elif run.kind == "wm_eval" and res.get("policies"):
        fig = charts.imagined_vs_real_figure(res)
    tables = [a for a in arts if a.kind == "table" and a.name.endswith(".md") and not a.is_dir]
    if tables:
        md = cached_artifact(c, run.id, tables[-1].name, tables[-1].sha256).read_text(errors="replace")
    elif res and run.kind != "evaluate":  # an evaluation's episodes are in the table above
        shown = {k: v for k, v in res.items() if k != "resolved_params"}
        md = "```json\n" + json.dumps(shown, indent=1, default=str)[:6000] + "\n```"
    videos = [(a.name, a.name) for a in arts if a.kind == "video" and not a.is_dir]
    return fig, md, videos


def _downloadables(arts) -> list[tuple[str, str]]:
    out = []
    for a in arts:
        if a.is_dir:
            out += [(f"{a.name}/{f}", f"{a.name}/{f}") for f in a.files]
        else:
            out.append((f"{a.name} ({a.kind}, {render.human_bytes(a.size)})", a.name))
    return out


def build() -> Loader:
    sel = gr.State(None)
    detail = gr.State(_empty_detail())
    table_cache = gr.State("")

    notice = gr.HTML(elem_id="runs-notice")
    with gr.Accordion("Launch a run", open=True):
        with gr.Row():
            kind = gr.Dropdown([(v, k) for k, v in presets.KIND_LABELS.items()], value="pipeline", label="What",
                               elem_id="launch-kind", scale=3)
            preset = gr.Dropdown(presets.presets_for("pipeline"), value="smoke", label="Preset",
                                 elem_id="launch-preset", scale=1)
            name = gr.Textbox(label="Name (optional)", max_length=200, elem_id="launch-name", scale=2)
        with gr.Row():
            params = gr.Code(presets.params_json("pipeline", "smoke", None), language="json", lines=8,
                             label="Parameters (JSON, edit freely: the API checks every field)", interactive=True,
                             elem_id="launch-params", scale=3)
            help_md = gr.Markdown(presets.fields_help("pipeline"), elem_id="launch-help")
        launch_estimate = gr.HTML(elem_id="launch-estimate")
        launch = gr.Button("Launch", variant="primary", elem_id="launch-btn")

    with gr.Row():
        gr.Markdown("### Runs  \nClick a row to open its page. The table refreshes every two seconds.")
        kind_filter = gr.Dropdown(["all", *RUN_KINDS], value="all", label="Kind", scale=0,
                                  min_width=160, elem_id="runs-filter")
    table = gr.HTML(render.runs_table([]), elem_id="runs-table", js_on_load=render.row_click_js("run"))

    with gr.Column(visible=False, elem_id="run-page") as page:
        header = gr.HTML(elem_id="run-header")
        with gr.Row():
            cancel = gr.Button("Cancel", variant="stop", elem_id="run-cancel", size="sm")
            resume = gr.Button("Resume", elem_id="run-resume", size="sm")
            close = gr.Button("Close", elem_id="run-close", size="sm")
        with gr.Tabs():
            with gr.Tab("Curves", id="curves"):
                flat = gr.HTML(elem_id="run-flat-warning")
                curves = gr.Plot(charts.metrics_figure({}), elem_id="run-curves", show_label=False)
            with gr.Tab("Explore metrics", id="explore") as explore_tab:
                with gr.Row():
                    ex_names = gr.Dropdown([], multiselect=True, label="Series (type to search)", scale=3,
                                           elem_id="run-explore-series")
                    ex_runs = gr.Dropdown([], multiselect=True, label="Overlay runs of the same kind", scale=2,
                                          elem_id="run-explore-runs")
                with gr.Row():
                    ex_smooth = gr.Slider(0, 0.99, 0, step=0.01, label="Smoothing (EMA)", elem_id="run-explore-smooth")
                    ex_log = gr.Checkbox(False, label="Log scale", elem_id="run-explore-log")
                    ex_x = gr.Radio(["step", "wall time"], value="step", label="x axis", elem_id="run-explore-x")
                explore = gr.Plot(charts.explore_figure({}, []), elem_id="run-explore", show_label=False)
            with gr.Tab("Results & videos", id="results"):
                success = gr.Plot(visible=False, elem_id="run-success", show_label=False)
                with gr.Column(visible=False, elem_id="run-episodes-box") as ep_box:
                    with gr.Row():
                        ep_task = gr.Dropdown(["all"], value="all", label="Task", elem_id="run-ep-task")
                        ep_pert = gr.Dropdown(["all"], value="all", label="Perturbation", elem_id="run-ep-pert")
                        ep_outcome = gr.Dropdown(list(results.OUTCOMES), value="all", label="Outcome",
                                                 elem_id="run-ep-outcome")
                    ep_table = gr.HTML(elem_id="run-episodes", js_on_load=render.row_click_js("episode"),
                                       max_height=420)
                video_pick = gr.Dropdown([], label="Video", elem_id="run-video-pick")
                video = gr.Video(label="Video", elem_id="run-video", autoplay=True, loop=True, interactive=False,
                                 height=340)
                results_md = gr.Markdown(elem_id="run-results")
            with gr.Tab("Logs", id="logs"):
                logs = gr.Textbox(lines=16, max_lines=16, show_label=False, elem_id="run-logs", interactive=False,
                                  autoscroll=True)
            with gr.Tab("Artifacts", id="artifacts"):
                arts_html = gr.HTML(elem_id="run-artifacts")
                with gr.Row():
                    art_pick = gr.Dropdown([], label="File", elem_id="run-artifact-pick", scale=3)
                    fetch = gr.Button("Download", elem_id="run-artifact-fetch", scale=1)
                art_file = gr.File(label="Download", elem_id="run-artifact-file", interactive=False)
            with gr.Tab("Parameters", id="params") as params_tab:
                gr.Markdown("What the run actually ran with: every parameter with its default filled in and the "
                            "stage's configuration with its preset applied (models named as in the pickers).")
                params_json = gr.JSON(elem_id="run-params", show_label=False)
                with gr.Row():
                    diff_with = gr.Dropdown([], label="Compare the parameters with run", elem_id="run-diff-with")
                diff_html = gr.HTML(elem_id="run-diff")

    # Launch form ---------------------------------------------------------------------------------
    def form_fail(msg: str):
        return gr.skip(), gr.skip(), gr.skip(), render.notice(msg)

    @guard(form_fail)
    def on_kind(kind_v: str, request: gr.Request):
        names = presets.presets_for(kind_v)
        c = client_for(request)
        return (gr.update(choices=names, value=names[0]), presets.params_json(kind_v, names[0], c),
                presets.fields_help(kind_v), "")

    kind.change(on_kind, kind, [preset, params, help_md, notice])

    @guard(lambda msg: (gr.skip(), render.notice(msg)))
    def on_preset(kind_v: str, preset_v: str, request: gr.Request):
        return presets.params_json(kind_v, preset_v, client_for(request)), ""

    preset.input(on_preset, [kind, preset], [params, notice])

    # Runs table and run page ---------------------------------------------------------------------
    ep_rows = gr.State([])  # the evaluation's episodes the table filters

    def shown_params(c: StudioClient, run: RunOut) -> Any:
        """The resolved parameters when the run has them (else what was submitted), models by their names."""
        resolved = (run.result or {}).get("resolved_params") or {"params": run.params}
        return named_refs(resolved, names_by_ref(c.checkpoints()))

    def show_run(c: StudioClient, run_id: int, d: dict, fresh: bool):
        """Everything the run page shows; only parts that changed are sent again."""
        run = c.run(run_id)
        if run.attempt != d["attempt"] and not fresh:
            # resumed: it logs again from its checkpoint and (on SQLite) rewritten rows may reuse row ids
            d.update(metric_id=0, series={})
        d["attempt"] = run.attempt
        changed = fresh or run.status != d["status"] or run.progress != d["progress"]
        active = run.status in ACTIVE
        skip = gr.skip()
        out_curves = out_logs = out_arts = out_pick = out_success = out_md = out_vpick = out_flat = skip
        out_params = out_box = out_table = out_task = out_pert = out_rows = out_names = skip
        if (fresh or active or changed) and (_merge(d, c, run_id) or fresh):
            out_curves = charts.metrics_figure(d["series"], run.name or f"run #{run.id}")
            out_logs = "\n".join(d["logs"])
            out_flat = render.notice(charts.flat_reward_warning(d["series"]), "warn")
            out_names = gr.update(choices=sorted(d["series"]))
        if fresh:
            out_params = shown_params(c, run)
        if fresh or changed:
            arts = c.artifacts(run_id)
            key = [(a.name, a.sha256) for a in arts]
            if key != d["artifacts"]:
                d["artifacts"] = key
                out_arts = render.artifacts_table(arts)
                out_pick = gr.update(choices=_downloadables(arts), value=None)
            if not active and d["results_for"] != (run.status, key):
                d["results_for"] = (run.status, key)
                fig, md, vids = _results(c, run, arts)
                out_success = gr.update(value=fig, visible=fig is not None)
                out_md = md
                out_vpick = gr.update(choices=vids, value=vids[0][1] if vids else None)
                rows = _episode_rows(c, run, arts)
                names = {ref: (run.result or {}).get("policy_names", {}).get(ref, ref)
                         for r in rows for ref in r["by_policy"]}
                names.update({k: v for k, v in names_by_ref(c.checkpoints(kind="policy")).items() if k in names})
                out_rows = {"rows": rows, "names": names}
                out_box = gr.update(visible=bool(rows))
                out_table = results.episode_table(rows, names) if rows else ""
                out_task = gr.update(choices=["all", *sorted({r["task"] for r in rows})], value="all")
                out_pert = gr.update(choices=["all", *dict.fromkeys(r["perturbation"] for r in rows)], value="all")
                out_params = shown_params(c, run)
            elif fresh:
                out_success, out_md = gr.update(value=None, visible=False), "*Results appear when the run ends.*"
                out_vpick = gr.update(choices=[], value=None)
                out_box, out_rows = gr.update(visible=False), {"rows": [], "names": {}}
        d["status"], d["progress"] = run.status, run.progress
        return (render.run_header(run, estimates.remaining_text(run)), out_curves, out_logs, out_arts, out_pick,
                out_success, out_md, out_vpick, out_params, gr.update(interactive=active),
                gr.update(interactive=run.status in ("failed", "cancelled")), out_flat, out_box, out_table, out_task,
                out_pert, out_rows, out_names)

    page_outputs = [header, curves, logs, arts_html, art_pick, success, results_md, video_pick, params_json, cancel,
                    resume, flat, ep_box, ep_table, ep_task, ep_pert, ep_rows, ex_names]

    def list_html(c: StudioClient, kind_v: str, selected: int | None) -> str:
        runs = c.run_summaries(kind=None if kind_v in (None, "all") else kind_v, limit=RUNS_SHOWN).items
        return render.runs_table(runs, selected)

    def open_run(run_id: int, kind_v: str, request: gr.Request | None):
        c = client_for(request)
        d = _empty_detail(run_id)
        parts = show_run(c, run_id, d, fresh=True)
        html = list_html(c, kind_v, run_id)
        _set_shown(request, run_id)
        return ("", html, html, run_id, d, gr.update(visible=True), *parts)

    open_outputs = [notice, table, table_cache, sel, detail, page, *page_outputs]

    def open_fail(msg: str):
        return (render.notice(msg), *([gr.skip()] * (len(open_outputs) - 1)))

    @guard(open_fail)
    def on_row(evt: gr.EventData, kind_v: str, request: gr.Request):
        row = getattr(evt, "_data", None) or {}
        run_id = int(row.get("row")) if str(row.get("row", "")).isdigit() else None
        if run_id is None:
            return open_fail("Pick a run in the table.")
        return open_run(run_id, kind_v, request)

    table.click(on_row, kind_filter, open_outputs)

    @guard(open_fail)
    def on_launch(kind_v: str, params_text: str, name_v: str, kind_filter_v: str, request: gr.Request):
        try:
            body = json.loads(params_text or "{}")
        except json.JSONDecodeError as exc:
            return open_fail(f"Parameters are not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.")
        if not isinstance(body, dict):
            return open_fail("Parameters must be a JSON object: {\"field\": value, ...}.")
        body = {k: v for k, v in body.items() if v is not None}
        run = client_for(request).create_run(presets.API_KIND.get(kind_v, kind_v), body, name=name_v.strip() or None)
        out = list(open_run(run.id, kind_filter_v, request))
        out[0] = render.notice(f"Run #{run.id} ({run.kind}) queued.", "ok")
        return tuple(out)

    launch.click(on_launch, [kind, params, name, kind_filter], open_outputs)

    tick_outputs = [table, table_cache, detail, *page_outputs]
    no_page = [gr.skip()] * len(page_outputs)

    @guard(lambda msg: (render.notice(msg) + render.runs_table([]), "", gr.skip(), *no_page))
    def on_tick(kind_v: str, run_id: int | None, d: dict, last_html: str, request: gr.Request):
        c = client_for(request)
        html = list_html(c, kind_v, run_id)
        table_out = gr.skip() if html == last_html else html
        if run_id is None or d.get("id") != run_id:
            return (table_out, html, gr.skip(), *no_page)
        parts = show_run(c, run_id, d, fresh=False)
        if not _is_shown(request, run_id):  # the user opened another run meanwhile
            return (gr.skip(), gr.skip(), gr.skip(), *no_page)
        return (table_out, html, d, *parts)

    timer = gr.Timer(POLL_S, active=False)  # started once the page may talk to the API
    timer.tick(on_tick, [kind_filter, sel, detail, table_cache], tick_outputs, show_progress="hidden",
               queue=True, trigger_mode="once")
    kind_filter.change(on_tick, [kind_filter, sel, detail, table_cache], tick_outputs, show_progress="hidden")

    def on_close(request: gr.Request):
        _set_shown(request, None)
        return None, _empty_detail(), gr.update(visible=False)

    close.click(on_close, None, [sel, detail, page])

    @guard(lambda msg: render.notice(msg))
    def on_cancel(run_id: int | None, request: gr.Request):
        run = client_for(request).cancel(run_id)
        return render.notice(f"Run #{run.id}: cancel requested ({run.status}).", "info")

    @guard(lambda msg: render.notice(msg))
    def on_resume(run_id: int | None, request: gr.Request):
        run = client_for(request).resume(run_id)
        return render.notice(f"Run #{run.id} queued again (attempt {run.attempt + 1}); it continues from its last "
                             "checkpoint.", "ok")

    cancel.click(on_cancel, sel, notice)
    resume.click(on_resume, sel, notice)

    @guard(lambda msg: (gr.skip(), render.notice(msg)))
    def on_fetch(run_id: int | None, name_v: str | None, request: gr.Request):
        if not name_v:
            return gr.skip(), render.notice("Pick a file to download.", "info")
        c = client_for(request)
        sha = next((a.sha256 for a in c.artifacts(run_id) if a.name == name_v), "")
        return str(cached_artifact(c, run_id, name_v, sha)), ""

    fetch.click(on_fetch, [sel, art_pick], [art_file, notice])

    @guard(lambda msg: (gr.skip(), render.notice(msg)))
    def on_video(run_id: int | None, name_v: str | None, request: gr.Request):
        if not name_v or run_id is None:
            return None, ""
        c = client_for(request)
        sha = next((a.sha256 for a in c.artifacts(run_id, kind="video") if a.name == name_v), "")
        return str(cached_artifact(c, run_id, name_v, sha)), ""

    video_pick.change(on_video, [sel, video_pick], [video, notice])

    # Per-episode table: filters and click-to-play ---------------------------------------------------
    def on_filter(state: dict, task_v: str, pert_v: str, outcome_v: str):
        state = state or {}
        return results.episode_table(state.get("rows", []), state.get("names", {}), task_v, pert_v, outcome_v)

    for control in (ep_task, ep_pert, ep_outcome):
        control.change(on_filter, [ep_rows, ep_task, ep_pert, ep_outcome], ep_table, show_progress="hidden")

    @guard(lambda msg: (gr.skip(), render.notice(msg)))
    def on_episode(evt: gr.EventData, state: dict):
        k = str((getattr(evt, "_data", None) or {}).get("row", ""))
        rows = (state or {}).get("rows", [])
        if not k.isdigit() or int(k) >= len(rows) or not rows[int(k)]["video"]:
            return gr.skip(), ""
        return gr.update(value=rows[int(k)]["video"]), ""

    ep_table.click(on_episode, ep_rows, [video_pick, notice])

    # Metrics explorer ----------------------------------------------------------------------------------
    @guard(lambda msg: (gr.skip(), render.notice(msg)))
    def on_explore(run_id: int | None, d: dict, names_v: list, overlay: list, smooth_v: float, log_v: bool,
                   x_v: str, request: gr.Request):
        if run_id is None:
            return gr.skip(), ""
        c = client_for(request)
        runs_series = {f"#{run_id} (this run)": d.get("series", {})}
        for other in overlay or []:
            if int(other) != run_id:
                r = c.run(int(other))
                runs_series[f"#{r.id} {r.name or r.kind}"] = all_metrics(c, r.id)
        return charts.explore_figure(runs_series, list(names_v or []), float(smooth_v or 0), bool(log_v), x_v), ""

    ex_inputs = [sel, detail, ex_names, ex_runs, ex_smooth, ex_log, ex_x]
    for control in (ex_names, ex_runs, ex_log, ex_x):
        control.change(on_explore, ex_inputs, [explore, notice], show_progress="hidden")
    ex_smooth.release(on_explore, ex_inputs, [explore, notice], show_progress="hidden")

    def same_kind(c: StudioClient, run_id: int) -> list[tuple[str, int]]:
        kind_v = c.run(run_id).kind
        return [(f"#{r.id} {r.name or r.kind} ({r.status})", r.id) for r in c.run_summaries(kind=kind_v, limit=50).items
                if r.id != run_id]

    @guard(lambda msg: (gr.skip(), gr.skip(), render.notice(msg)))
    def on_explore_tab(run_id: int | None, d: dict, request: gr.Request):
        if run_id is None:
            return gr.skip(), gr.skip(), ""
        others = same_kind(client_for(request), run_id)
        return gr.update(choices=sorted(d.get("series", {}))), gr.update(choices=others), ""

    explore_tab.select(on_explore_tab, [sel, detail], [ex_names, ex_runs, notice], show_progress="hidden")

    # Parameters: diff with another run -----------------------------------------------------------------
    @guard(lambda msg: (gr.skip(), render.notice(msg)))
    def on_params_tab(run_id: int | None, request: gr.Request):
        if run_id is None:
            return gr.skip(), ""
        return gr.update(choices=same_kind(client_for(request), run_id), value=None), ""

    params_tab.select(on_params_tab, sel, [diff_with, notice], show_progress="hidden")

    @guard(lambda msg: (gr.skip(), render.notice(msg)))
    def on_diff(run_id: int | None, other: int | None, request: gr.Request):
        if run_id is None or other is None:
            return "", ""
        c = client_for(request)
        a, b = c.run(run_id), c.run(int(other))
        return results.params_diff(shown_params(c, a), shown_params(c, b), f"run #{a.id}", f"run #{b.id}"), ""

    diff_with.change(on_diff, [sel, diff_with], [diff_html, notice])

    # The run's own URL: /ui/?run=12 opens run 12 ------------------------------------------------------
    @guard(open_fail)
    def on_url(kind_v: str, request: gr.Request):
        wanted = str((getattr(request, "query_params", None) or {}).get("run", "")).strip()
        if not wanted:
            return tuple(gr.skip() for _ in open_outputs)
        if not wanted.isdigit():
            return open_fail(f"?run={wanted[:40]}: a run id is a whole number.")
        return open_run(int(wanted), kind_v, request)

    # Launch estimate: how long the same preset took here before -------------------------------------------
    @guard(lambda msg: render.notice(msg, "warn"))
    def on_launch_estimate(kind_v: str, preset_v: str, request: gr.Request):
        api_kind = presets.API_KIND.get(kind_v, kind_v)
        if api_kind != "pipeline":
            return ""
        took = estimates.last_duration(client_for(request), "pipeline", preset=preset_v)
        if took is None:
            return render.notice(f"Estimate: no {preset_v} pipeline has finished in this studio yet, so there is "
                                 "no time to go by; the run page shows the time left once it runs.", "info")
        return render.notice(f"Estimate: the last {preset_v} pipeline here took {render.human_seconds(took)}.", "info")

    preset.change(on_launch_estimate, [kind, preset], launch_estimate, show_progress="hidden")

    def fill(tok: str) -> list:
        c = client(tok)
        return [gr.Timer(active=True), render.runs_table(c.run_summaries(limit=RUNS_SHOWN).items)]

    return Loader([timer, table], fill, on_page_load=(on_url, kind_filter, open_outputs))
