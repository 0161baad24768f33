"""Compare: two policies on the perturbation suite, on the same seeded start states. A success chart with
95% intervals per perturbation family and level, and side-by-side videos on the same seeds, failures first.
Next to it, the same policies evaluated in imagination (a world model and its success reward model), with
the simulator's outcome on the same starts beside it."""

from __future__ import annotations

import time

import gradio as gr

from backend.client import CompareParams, RunOut, StudioClient
from frontend import charts, estimates, render
from frontend.api import cached_artifact, client, client_for, guard, guard_gen
from frontend.choices import EXPERT, checkpoint_label, checkpoints, guess_pair, picker
from frontend.formcheck import whole
from frontend.loaders import Loader
from frontend.names import names_by_ref, ref_name

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


def _pct(x) -> str:
    return "–" if x is None or x != x else f"{100 * x:.0f}%"


def _num(x) -> str:
    return "–" if x is None or x != x else f"{x:.2f}"


def imagined_table(result: dict, names: dict[str, str]) -> str:
    """A wm_eval run's result: per policy, success in imagination and in the simulator, and how often the two
    agree episode by episode."""
    rows = []
    for rep in result.get("policies", []):
        ref = rep.get("ref") or rep.get("policy", "?")
        im, real, agree = rep.get("imagined") or {}, rep.get("real") or {}, rep.get("agreement") or {}
        rows.append(f"<tr><td>{render.escape(names.get(ref, ref))}</td><td><b>{_pct(im.get('success'))}</b></td>"
                    f"<td>{_pct(real.get('success')) if real else '–'}</td>"
                    f"<td>{_pct(agree.get('episode_accuracy')) if agree else '–'}</td>"
                    f"<td>{rep.get('episodes', '?')}</td></tr>")
    head = ("<tr><th>policy</th><th>imagined success</th><th>real success</th><th>episode agreement</th>"
            "<th>episodes</th></tr>")
    corr = (result.get("correlations") or {}).get("all")
    note = ""
    if corr:
        note = (f"<div class='vr-msg'>Imagined vs real over {corr.get('policies', '?')} policies: Pearson "
                f"{_num(corr.get('pearson'))}, Spearman {_num(corr.get('spearman'))}.</div>")
    return f'{note}<table class="vr-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def build() -> Loader:
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
        episodes = gr.Number(5, label="Episodes per task and perturbation", precision=0, elem_id="cmp-episodes")
        max_steps = gr.Number(200, label="Max steps per episode", precision=0, elem_id="cmp-steps")
        seed = gr.Number(0, label="Seed", precision=0, elem_id="cmp-seed")
        per_cell = gr.Number(1, label="Videos per cell", precision=0, elem_id="cmp-videos")
    estimate = gr.HTML(elem_id="cmp-estimate")
    with gr.Row():
        refresh = gr.Button("Refresh lists", size="sm", elem_id="cmp-refresh")
        go = gr.Button("Run comparison", variant="primary", elem_id="cmp-go")
    with gr.Row():
        earlier = gr.Dropdown([], label="…or open an earlier comparison", elem_id="cmp-earlier", scale=3)
        open_btn = gr.Button("Open", size="sm", elem_id="cmp-open", scale=1)
    with gr.Accordion("Evaluate in imagination (world model + success reward model)", open=False,
                      elem_id="cmp-imagine"):
        gr.Markdown("The same policies (checkpoints, not the expert), tasks, perturbations and held-out starts, "
                    "run closed loop **inside a world model**, success decided by its reward model "
                    "(a `wm_eval` run); with *also in the simulator* each episode's real outcome sits beside it.")
        with gr.Row():
            wm = gr.Dropdown([], label="World model", elem_id="cmp-wm", allow_custom_value=True)
            rm = gr.Dropdown([], label="Reward model", elem_id="cmp-rm", allow_custom_value=True)
            real = gr.Checkbox(True, label="Also in the simulator (imagined vs real)", elem_id="cmp-real")
        wm_go = gr.Button("Evaluate A and B in imagination", elem_id="cmp-wm-go")
        wm_status = gr.HTML(elem_id="cmp-wm-status")
        wm_chart = gr.Plot(visible=False, elem_id="cmp-wm-chart", show_label=False)
        wm_table = gr.HTML(elem_id="cmp-wm-table")
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

    auto = gr.State({})  # the defaults the page picked itself (a refresh may replace those, not the user's)

    def pickers(c: StudioClient, current: dict, auto_v: dict) -> list:
        """Policy A: the newest base policy; B: the newest fine-tuned one; the newest world and reward models.
        A pick of the user's stays while it exists."""
        cps = c.checkpoints(kind="policy")
        choices = [EXPERT] + [(checkpoint_label(cp), cp.ref) for cp in cps]
        base, tuned = guess_pair(cps)
        wms, rms = checkpoints(c, "world_model"), checkpoints(c, "reward_model")
        auto_v = dict(auto_v)
        return [gr.update(**picker("a", choices, base or "expert", current, auto_v)),
                gr.update(**picker("b", choices, tuned, current, auto_v)),
                gr.update(choices=comparisons(c)),
                gr.update(**picker("wm", wms, wms[0][1] if wms else None, current, auto_v)),
                gr.update(**picker("rm", rms, rms[0][1] if rms else None, current, auto_v)), auto_v]

    def lists(c: StudioClient):
        cat = c.tasks()
        pert = c.perturbations()
        task_choices = [(f"preset: {k} ({len(v)} tasks)", k) for k, v in cat.presets.items()] + \
            [(t.name, t.name) for t in cat.tasks]
        a_u, b_u, earlier_u, wm_u, rm_u, auto_v = pickers(c, {}, {})
        return (cat.presets, a_u, b_u, gr.update(choices=task_choices, value=["smoke"]),
                gr.update(choices=pert.suite, value=pert.suite), earlier_u, wm_u, rm_u, auto_v)

    list_outputs = [catalog, a, b, tasks, perts, earlier, wm, rm, auto]
    picker_inputs = [a, b, wm, rm, auto]
    picker_outputs = [a, b, earlier, wm, rm, auto]

    @guard(lambda msg: (*([gr.skip()] * len(picker_outputs)), render.notice(msg)))
    def on_refresh(a_v, b_v, wm_v, rm_v, auto_v: dict, request: gr.Request):
        current = {"a": a_v, "b": b_v, "wm": wm_v, "rm": rm_v}
        return (*pickers(client_for(request), current, auto_v or {}), "")

    refresh.click(on_refresh, picker_inputs, [*picker_outputs, notice])

    def show(c: StudioClient, run: RunOut) -> list:
        res = run.result or {}
        known = names_by_ref(c.checkpoints(kind="policy"))
        names = {ref: ref_name(ref, known) for ref in res.get("policies", [])}
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
        left = estimates.remaining_text(run)
        return (f'<div class="vr-facts"><span>run <b>#{run.id}</b></span>{render.badge(run.status)}'
                f'<span>{left}</span></div>'
                + render.progress_bar(run.progress, run.message or "")
                + f'<div class="vr-msg">{render.escape(run.message or "")}</div>')

    def task_names(tasks_v, presets) -> list[str]:
        names = list(tasks_v or [])
        if len(names) > 1:  # a preset inside a list: expand it here, the API takes a preset only on its own
            names = list(dict.fromkeys(t for n in names for t in presets.get(n, [n])))
        return names

    wm_outputs = [wm_status, notice, wm_chart, wm_table]

    def wm_fail(msg: str):
        return (gr.skip(), render.notice(msg), gr.skip(), gr.skip())

    @guard_gen(wm_fail)
    def on_wm_go(a_v, b_v, wm_v, rm_v, real_v, tasks_v, perts_v, eps, steps, seed_v, presets, request: gr.Request):
        policies = list(dict.fromkeys(x for x in (a_v, b_v) if x and x != "expert"))
        if not policies:
            yield wm_fail("Pick a policy checkpoint as A or B: the scripted expert cannot act in imagination.")
            return
        if not wm_v or not rm_v:
            yield wm_fail("Pick a world model and its reward model (train one with a train_reward run).")
            return
        names = task_names(tasks_v, presets)
        if not names or not perts_v:
            yield wm_fail("Pick at least one task and one perturbation.")
            return
        eps_n = whole(eps, "Episodes per task and perturbation", CompareParams, "episodes")
        steps_n = whole(steps, "Max steps per episode", CompareParams, "max_steps")
        seed_n = whole(seed_v, "Seed", CompareParams, "seed")
        c = client_for(request)
        known = names_by_ref(c.checkpoints(kind="policy"))
        short = {ref: ref_name(ref, known) for ref in policies}
        run = c.wm_eval(policies, wm_v, rm_v, name="imagined " + " vs ".join(short.get(x, x) for x in policies),
                        tasks=names[0] if len(names) == 1 else names, perturbations=list(perts_v),
                        episodes=eps_n, max_steps=steps_n, seed=seed_n, real=bool(real_v))
        yield (progress_html(run), "", gr.skip(), gr.skip())
        deadline = time.monotonic() + WAIT_S
        while not run.done and time.monotonic() < deadline:
            time.sleep(POLL_S)
            run = c.run(run.id)
            yield (progress_html(run), gr.skip(), gr.skip(), gr.skip())
        if run.status != "succeeded":
            yield (progress_html(run), render.notice(f"Imagination run #{run.id}: {run.error or run.status}"),
                   gr.skip(), gr.skip())
            return
        res = run.result or {}
        labels = {ref: short.get(ref, ref) for ref in policies}
        yield (progress_html(run), "", gr.update(value=charts.imagined_vs_real_figure(res, labels), visible=True),
               imagined_table(res, labels))

    wm_go.click(on_wm_go, [a, b, wm, rm, real, tasks, perts, episodes, max_steps, seed, catalog], wm_outputs)

    @guard_gen(fail)
    def on_go(a_v, b_v, tasks_v, perts_v, eps, steps, seed_v, per_cell_v, presets, request: gr.Request):
        if not a_v or not b_v:
            yield fail("Pick two policies.")
            return
        if not perts_v:
            yield fail("Tick at least one perturbation.")
            return
        names = task_names(tasks_v, presets)
        if not names:
            yield fail("Pick at least one task or preset.")
            return
        eps_n = whole(eps, "Episodes per task and perturbation", CompareParams, "episodes")
        steps_n = whole(steps, "Max steps per episode", CompareParams, "max_steps")
        seed_n = whole(seed_v, "Seed", CompareParams, "seed")
        per_cell_n = whole(per_cell_v, "Videos per cell", CompareParams, "videos_per_cell")
        c = client_for(request)
        known = names_by_ref(c.checkpoints(kind="policy"))
        run = c.compare(a_v, b_v, name=f"compare {ref_name(a_v, known)} vs {ref_name(b_v, known)}",
                        tasks=names[0] if len(names) == 1 else names, perturbations=list(perts_v),
                        episodes=eps_n, max_steps=steps_n, seed=seed_n, videos_per_cell=per_cell_n)
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

    go.click(on_go, [a, b, tasks, perts, episodes, max_steps, seed, per_cell, catalog], outputs)

    @guard(fail)
    def on_open(run_id: int | None, request: gr.Request):
        if run_id is None:
            return fail("Pick an earlier comparison.")
        c = client_for(request)
        run = c.run(int(run_id))
        return (progress_html(run), "", *show(c, run))

    open_btn.click(on_open, earlier, outputs)
    earlier.input(on_open, earlier, outputs)

    @guard(lambda msg: render.notice(msg, "warn"))
    def on_estimate(tasks_v, perts_v, eps, presets, request: gr.Request):
        n_tasks = len({t for n in (tasks_v or []) for t in presets.get(n, [n])})
        eps_n = whole(eps, "Episodes per task and perturbation", CompareParams, "episodes")
        total = 2 * n_tasks * len(perts_v or []) * eps_n
        text = estimates.episodes_text(total, client_for(request), "evaluate")
        return render.notice(f"Estimate: 2 policies × {n_tasks} tasks × {len(perts_v or [])} perturbations × "
                             f"{eps_n} = {text}.", "info")

    for control in (tasks, perts, episodes):
        control.change(on_estimate, [tasks, perts, episodes, catalog], estimate, show_progress="hidden")

    return Loader(list_outputs, lambda tok: list(lists(client(tok))),
                  on_select=(on_refresh, picker_inputs, [*picker_outputs, notice]))
