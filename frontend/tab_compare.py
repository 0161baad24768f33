"""Compare: two policies on the perturbation suite, on the same seeded start states. A success chart with
95% intervals per perturbation family and level, and side-by-side videos on the same seeds, failures first."""

from __future__ import annotations

import time

import gradio as gr

from backend.client import RunOut, StudioClient
from frontend import charts, render
from frontend.api import cached_artifact, client, guard, guard_gen
from frontend.choices import EXPERT, checkpoint_label, guess_pair
from frontend.loaders import Loader

MAX_VIDEOS = 6
POLL_S = 1.0
WAIT_S = 6 * 3600


def order_videos(videos: list[dict]) -> list[dict]:
    """Failures first: episodes where both policies failed, then where exactly one did, then successes."""
    def key(v: dict) -> tuple:
        outcomes = list(v.get("success", {}).values())
        return (-sum(not ok for ok in outcomes), v.get("perturbation", ""), v.get("task", ""), v.get("index", 0))

    return sorted(videos, key=key)


def video_caption(v: dict, names: dict[str, str]) -> str:
    parts = [f"{render.escape(names.get(ref, ref))}: {'✓ success' if ok else '✗ failure'}"
             for ref, ok in v.get("success", {}).items()]
    where = f"{render.escape(v.get('task', ''))} · {render.escape(v.get('perturbation', ''))} · start #{v.get('index')}"
    return f'<div class="vr-cell"><b>{where}</b><br>{" | ".join(parts)} <i>(left | right)</i></div>'


def results_table(result: dict, names: dict[str, str]) -> str:
    rows = []
    for fam in result.get("families", []):
        for ref, st in fam.get("by_policy", {}).items():
            lo, hi = st["ci95"]
            rows.append(f"<tr><td>{render.escape(fam['perturbation'])}</td><td>{render.escape(names.get(ref, ref))}"
                        f"</td><td>{st['successes']}/{st['episodes']}</td><td><b>{100 * st['success_rate']:.0f}%</b>"
                        f"</td><td>[{100 * lo:.0f}%, {100 * hi:.0f}%]</td></tr>")
    head = "<tr><th>perturbation</th><th>policy</th><th>successes</th><th>rate</th><th>95% interval</th></tr>"
    same = result.get("same_start_states")
    note = ("<div class='vr-msg'>Both policies ran on the same seeded start states.</div>" if same else
            "<div class='vr-msg'>Start states differed between the policies.</div>" if same is False else "")
    return f'{note}<table class="vr-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def build(token: gr.State) -> Loader:
    catalog = gr.State({})
    gr.Markdown("Run two policies on the perturbation suite (object, goal, robot and combined shifts, minor and "
                "major) from the **same seeded start states**, and see where each one succeeds.")
    notice = gr.HTML(elem_id="cmp-notice")
    with gr.Row():
        a = gr.Dropdown([], label="Policy A (left)", elem_id="cmp-a", allow_custom_value=True)
        b = gr.Dropdown([], label="Policy B (right)", elem_id="cmp-b", allow_custom_value=True)
    with gr.Row():
        tasks = gr.Dropdown([], multiselect=True, label="Tasks (or a preset)", elem_id="cmp-tasks", scale=2)
        perts = gr.CheckboxGroup([], label="Perturbations", elem_id="cmp-perts", scale=3)
    with gr.Row():
        episodes = gr.Slider(1, 100, 5, step=1, label="Episodes per task and perturbation", elem_id="cmp-episodes")
        max_steps = gr.Slider(20, 500, 200, step=10, label="Max steps per episode", elem_id="cmp-steps")
        seed = gr.Number(0, label="Seed", precision=0, minimum=0, elem_id="cmp-seed")
        per_cell = gr.Slider(0, 5, 1, step=1, label="Videos per cell", elem_id="cmp-videos")
    with gr.Row():
        refresh = gr.Button("Refresh lists", size="sm", elem_id="cmp-refresh")
        go = gr.Button("Run comparison", variant="primary", elem_id="cmp-go")
    with gr.Row():
        earlier = gr.Dropdown([], label="…or open an earlier comparison", elem_id="cmp-earlier", scale=3)
        open_btn = gr.Button("Open", size="sm", elem_id="cmp-open", scale=1)
    status = gr.HTML(elem_id="cmp-status")
    chart = gr.Plot(visible=False, elem_id="cmp-chart", show_label=False)
    table = gr.HTML(elem_id="cmp-table")
    gr.Markdown("#### Side by side on the same seeds (failures first)")
    vids, caps = [], []
    for row in range(MAX_VIDEOS // 2):
        with gr.Row():
            for col in range(2):
                k = 2 * row + col
                with gr.Column():
                    vids.append(gr.Video(elem_id=f"cmp-video-{k}", autoplay=True, loop=True, interactive=False,
                                         show_label=False, visible=False))
                    caps.append(gr.HTML(elem_id=f"cmp-caption-{k}"))
    outputs = [status, notice, chart, table, *vids, *caps, earlier]
    keep = [gr.skip()] * (len(outputs) - 2)

    def fail(msg: str):
        return (gr.skip(), render.notice(msg), *keep)

    def comparisons(c: StudioClient) -> list[tuple[str, int]]:
        runs = c.runs(kind="evaluate", status="succeeded", limit=50).items
        return [(f"#{r.id} {r.name or ' vs '.join(r.params.get('policies', []))}", r.id) for r in runs
                if len(r.params.get("policies", [])) == 2]

    def lists(c: StudioClient):
        cat = c.tasks()
        pert = c.perturbations()
        cps = c.checkpoints(kind="policy")
        choices = [EXPERT] + [(checkpoint_label(cp), cp.ref) for cp in cps]
        base, tuned = guess_pair(cps)
        task_choices = [(f"preset: {k} ({len(v)} tasks)", k) for k, v in cat.presets.items()] + \
            [(t.name, t.name) for t in cat.tasks]
        return (cat.presets, gr.update(choices=choices, value=base or "expert"),
                gr.update(choices=choices, value=tuned), gr.update(choices=task_choices, value=["smoke"]),
                gr.update(choices=pert.suite, value=pert.suite), gr.update(choices=comparisons(c), value=None))

    list_outputs = [catalog, a, b, tasks, perts, earlier]

    @guard(lambda msg: (*([gr.skip()] * len(list_outputs)), render.notice(msg)))
    def on_refresh(tok: str):
        return (*lists(client(tok)), "")

    refresh.click(on_refresh, token, [*list_outputs, notice])

    def show(c: StudioClient, run: RunOut) -> list:
        res = run.result or {}
        known = {cp.ref: f"{cp.name} (run #{cp.run_id})" for cp in c.checkpoints(kind="policy")}
        names = {ref: known.get(ref, ref) for ref in res.get("policies", [])}
        fig = charts.success_figure(charts.success_rows_from_compare(res), names)
        arts = {x.name: x for x in c.artifacts(run.id, kind="video")}
        shown = [v for v in order_videos(res.get("videos", [])) if v.get("artifact") in arts][:MAX_VIDEOS]
        v_out, c_out = [], []
        for k in range(MAX_VIDEOS):
            if k < len(shown):
                art = arts[shown[k]["artifact"]]
                v_out.append(gr.update(value=str(cached_artifact(c, run.id, art.name, art.sha256)), visible=True))
                c_out.append(video_caption(shown[k], names))
            else:
                v_out.append(gr.update(value=None, visible=False))
                c_out.append("")
        return [gr.update(value=fig, visible=True), results_table(res, names), *v_out, *c_out,
                gr.update(choices=comparisons(c), value=run.id)]

    def progress_html(run: RunOut) -> str:
        return (f'<div class="vr-facts"><span>run <b>#{run.id}</b></span>{render.badge(run.status)}</div>'
                + render.progress_bar(run.progress, run.message or "")
                + f'<div class="vr-msg">{render.escape(run.message or "")}</div>')

    @guard_gen(fail)
    def on_go(tok, a_v, b_v, tasks_v, perts_v, eps, steps, seed_v, per_cell_v, presets):
        if not a_v or not b_v:
            yield fail("Pick two policies.")
            return
        if not perts_v:
            yield fail("Tick at least one perturbation.")
            return
        names = list(tasks_v or [])
        if not names:
            yield fail("Pick at least one task or preset.")
            return
        if len(names) > 1:  # a preset inside a list: expand it here, the API takes a preset only on its own
            names = list(dict.fromkeys(t for n in names for t in presets.get(n, [n])))
        c = client(tok)
        short = {cp.ref: f"{cp.name} (run #{cp.run_id})" for cp in c.checkpoints(kind="policy")}
        run = c.compare(a_v, b_v, name=f"compare {short.get(a_v, a_v)} vs {short.get(b_v, b_v)}",
                        tasks=names[0] if len(names) == 1 else names, perturbations=list(perts_v),
                        episodes=int(eps), max_steps=int(steps), seed=int(seed_v or 0),
                        videos_per_cell=min(int(per_cell_v), int(eps)))
        yield (progress_html(run), "", *keep)
        deadline = time.monotonic() + WAIT_S
        while not run.done and time.monotonic() < deadline:
            time.sleep(POLL_S)
            run = c.run(run.id)
            yield (progress_html(run), gr.skip(), *keep)
        if run.status != "succeeded":
            yield (progress_html(run), render.notice(f"Comparison run #{run.id}: {run.error or run.status}"), *keep)
            return
        yield (progress_html(run), "", *show(c, run))

    go.click(on_go, [token, a, b, tasks, perts, episodes, max_steps, seed, per_cell, catalog], outputs)

    @guard(fail)
    def on_open(tok: str, run_id: int | None):
        if run_id is None:
            return fail("Pick an earlier comparison.")
        c = client(tok)
        run = c.run(int(run_id))
        return (progress_html(run), "", *show(c, run))

    open_btn.click(on_open, [token, earlier], outputs)
    earlier.input(on_open, [token, earlier], outputs)

    return Loader(list_outputs, lambda tok: list(lists(client(tok))))
