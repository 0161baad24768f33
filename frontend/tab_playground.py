"""The Playground: type an instruction, pick a task, a seed and offsets of the object, goal and robot,
then watch a 2×2 grid for the same start: the world model's imagined rollout and the real simulator's
rollout, under the base and the fine-tuned policy, with the verified reward and the simulator's verdict, and
the instruction the run used with a ⚠ warning when a policy does not understand it on that scene."""

from __future__ import annotations

import time

import gradio as gr

from backend.client import ImagineParams, RunOut, StudioClient
from frontend import player, render
from frontend.api import cached_artifact, client, client_for, guard, guard_gen
from frontend.choices import EXPERT, checkpoint_label, guess_pair, picker
from frontend.formcheck import whole
from frontend.loaders import Loader

POLICIES = ("base", "rft")
POLICY_TITLES = {"base": "Base policy", "rft": "Fine-tuned policy (RFT)"}
SOURCES = ("world_model", "simulator")
SOURCE_TITLES = {"world_model": "World model (imagined)", "simulator": "Simulator (real)"}
OFFSET_CM = 10.0  # slider range, ± centimetres (the suite's major perturbations move 5–10 cm)
POLL_S = 0.5
WAIT_S = 1800
NO_WM = ("none: simulator only", "none")
NO_RM = ("none: no success detection in imagination", "none")


def _caption(cell: dict | None) -> str:
    if cell is None:
        return '<div class="vr-cell vr-empty">–</div>'
    reward = cell.get("verified_reward")
    success = cell.get("success")
    bits = [f"{cell.get('steps', '?')} steps"]
    if reward is not None:
        bits.append(f"verified reward <b>{reward:.3f}</b>")
    if success is not None:
        who = "reward model" if cell.get("source") == "world_model" else "simulator"
        bits.append(f"{who}: <b>success ✓</b>" if success else f"{who}: <b>failure ✗</b>")
    return f'<div class="vr-cell">{" · ".join(bits)}</div>'


def grid_cells(result: dict) -> dict[tuple[str, str], dict]:
    """An imagine run's result → {(policy label, source): cell}, for the cells the grid shows."""
    cells = {}
    for cell in result.get("cells", []):
        key = (cell.get("policy"), cell.get("source"))
        if key[0] in POLICIES and key[1] in SOURCES:
            cells[key] = cell
    return cells


def offsets_m(ox, oy, gx, gy, rx, ry, rz) -> dict[str, list[float]]:
    cm = 0.01
    return {"object": [ox * cm, oy * cm], "goal": [gx * cm, gy * cm], "robot": [rx * cm, ry * cm, rz * cm]}


def progress_html(run: RunOut) -> str:
    return (f'<div class="vr-facts"><span>run <b>#{run.id}</b></span>{render.badge(run.status)}</div>'
            + render.progress_bar(run.progress, run.message or "")
            + f'<div class="vr-msg">{render.escape(run.message or "")}</div>')


def build() -> Loader:
    tasks_state = gr.State({})
    gr.Markdown("Type any instruction, choose a start state, and compare what the world model imagines with "
                "what really happens in MetaWorld, for the base and the fine-tuned policy on the **same start**.")
    notice = gr.HTML(elem_id="play-notice")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            instruction = gr.Textbox(label="Instruction (free text)", lines=2, max_length=512,
                                     elem_id="play-instruction",
                                     info="Left empty, the task's own instruction is used (shown with the result).")
            with gr.Row():
                task = gr.Dropdown([], label="Task (scene and start state)", elem_id="play-task", scale=3)
                seed = gr.Number(0, label="Start seed", precision=0, elem_id="play-seed", scale=1)
            with gr.Accordion("Offsets from the seeded start (cm)", open=True):
                with gr.Row():
                    ox = gr.Slider(-OFFSET_CM, OFFSET_CM, 0, step=0.5, label="object x", elem_id="play-ox")
                    oy = gr.Slider(-OFFSET_CM, OFFSET_CM, 0, step=0.5, label="object y", elem_id="play-oy")
                with gr.Row():
                    gx = gr.Slider(-OFFSET_CM, OFFSET_CM, 0, step=0.5, label="goal x", elem_id="play-gx")
                    gy = gr.Slider(-OFFSET_CM, OFFSET_CM, 0, step=0.5, label="goal y", elem_id="play-gy")
                with gr.Row():
                    rx = gr.Slider(-OFFSET_CM, OFFSET_CM, 0, step=0.5, label="robot x", elem_id="play-rx")
                    ry = gr.Slider(-OFFSET_CM, OFFSET_CM, 0, step=0.5, label="robot y", elem_id="play-ry")
                    rz = gr.Slider(-OFFSET_CM, OFFSET_CM, 0, step=0.5, label="robot z", elem_id="play-rz")
                scale_md = gr.Markdown(elem_id="play-scale")
        with gr.Column(scale=2, min_width=320):
            wm = gr.Dropdown([], label="World model", elem_id="play-wm")
            rm = gr.Dropdown([], label="Success reward model (ends the imagined episode at its detected success)",
                             elem_id="play-rm")
            base = gr.Dropdown([], label="Base policy", elem_id="play-base", allow_custom_value=True)
            tuned = gr.Dropdown([], label="Fine-tuned policy", elem_id="play-tuned", allow_custom_value=True)
            with gr.Row():
                horizon = gr.Slider(8, 400, 48, step=1, label="Imagined steps (world model)",
                                    elem_id="play-horizon")
                max_steps = gr.Slider(20, 1000, 200, step=10, label="Simulator steps at most",
                                      elem_id="play-max-steps")
            with gr.Row():
                refresh = gr.Button("Refresh lists", size="sm", elem_id="play-refresh")
                go = gr.Button("Imagine and run", variant="primary", elem_id="play-go")
            status = gr.HTML(elem_id="play-status")
    # the instruction the run used and, when a policy does not understand it, a warning next to the videos
    language = gr.HTML(elem_id="play-language")
    # one play button and scrubber for the four clips, on one clock (frontend/player.py)
    bar = gr.HTML("", elem_id="play-player", js_on_load=player.JS)
    videos: dict[tuple[str, str], gr.Video] = {}
    captions: dict[tuple[str, str], gr.HTML] = {}
    with gr.Column(elem_id="play-cells"):
        for pol in POLICIES:
            gr.HTML(f"<h4 style='margin:8px 0 0'>{POLICY_TITLES[pol]}</h4>")
            with gr.Row(equal_height=True):
                for src in SOURCES:
                    with gr.Column():
                        videos[pol, src] = gr.Video(label=f"{POLICY_TITLES[pol]} · {SOURCE_TITLES[src]}",
                                                    elem_id=f"play-{pol}-{src}", autoplay=False, loop=False,
                                                    interactive=False, height=260)
                        captions[pol, src] = gr.HTML(_caption(None), elem_id=f"play-{pol}-{src}-caption")
    grid = gr.File(label="2×2 composite video", elem_id="play-grid", interactive=False, visible=False)

    cells = [(p, s) for p in POLICIES for s in SOURCES]
    outputs = [status, notice, language, *[videos[k] for k in cells], *[captions[k] for k in cells], grid, bar]
    auto = gr.State({})  # the defaults the page picked itself (a refresh may replace those, not the user's)

    # Lists --------------------------------------------------------------------------------------
    def pickers(c: StudioClient, current: dict, auto: dict) -> list:
        """The model pickers: the newest world model, the newest fine-tuned policy and its base by default;
        a model the user picked stays picked while it exists."""
        wms = c.checkpoints(kind="world_model")
        rms = c.checkpoints(kind="reward_model")
        pols = c.checkpoints(kind="policy")
        pol_choices = [EXPERT] + [(checkpoint_label(cp), cp.ref) for cp in pols]
        b, t = guess_pair(pols)
        auto = dict(auto)
        return [gr.update(**picker("wm", [(checkpoint_label(cp), cp.ref) for cp in wms] + [NO_WM],
                                   wms[0].ref if wms else NO_WM[1], current, auto)),
                gr.update(**picker("rm", [NO_RM] + [(checkpoint_label(cp), cp.ref) for cp in rms], NO_RM[1],
                                   current, auto)),
                gr.update(**picker("base", pol_choices, b or "expert", current, auto)),
                gr.update(**picker("tuned", pol_choices, t, current, auto)), auto]

    def lists(c: StudioClient):
        cat = c.tasks()
        pert = c.perturbations()
        by_name = {t_.name: t_.model_dump() for t_ in cat.tasks}
        first = cat.presets.get("smoke", [cat.tasks[0].name])[0]
        mags = ", ".join(f"{fam} {v['minor'] * 100:g} / {v['major'] * 100:g} cm" for fam, v in pert.magnitudes.items())
        return (by_name, gr.update(choices=sorted(by_name), value=first), by_name[first]["instruction"],
                *pickers(c, {}, {}), f"The perturbation suite moves (minor / major): {mags}.")

    list_outputs = [tasks_state, task, instruction, wm, rm, base, tuned, auto, scale_md]
    picker_outputs = [wm, rm, base, tuned, auto]

    @guard(lambda msg: (*([gr.skip()] * len(picker_outputs)), render.notice(msg)))
    def on_refresh(wm_v, rm_v, base_v, tuned_v, auto_v: dict, request: gr.Request):
        current = {"wm": wm_v, "rm": rm_v, "base": base_v, "tuned": tuned_v}
        return (*pickers(client_for(request), current, auto_v or {}), "")

    picker_inputs = [wm, rm, base, tuned, auto]
    refresh.click(on_refresh, picker_inputs, [*picker_outputs, notice])

    def on_task(name: str, typed: str, catalog: dict):
        """The scene changes; a typed instruction stays (only a task's own instruction follows the task)."""
        spec = catalog.get(name)
        if not spec:
            return (gr.skip(),) * 5
        obj, goal = spec["has_object"], spec["has_goal"]
        own = {t["instruction"] for t in catalog.values()}
        text = spec["instruction"] if not (typed or "").strip() or typed.strip() in own else gr.skip()
        return (text, gr.update(interactive=obj), gr.update(interactive=obj),
                gr.update(interactive=goal), gr.update(interactive=goal))

    task.input(on_task, [task, instruction, tasks_state], [instruction, ox, oy, gx, gy])

    # Imagine ------------------------------------------------------------------------------------
    def fail(msg: str):
        return (gr.skip(), render.notice(msg), *([gr.skip()] * (len(outputs) - 2)))

    @guard_gen(fail)
    def on_go(instr, task_v, seed_v, ox_v, oy_v, gx_v, gy_v, rx_v, ry_v, rz_v, wm_v, rm_v, base_v, tuned_v, hor,
              steps_v, request: gr.Request):
        if not task_v:
            yield fail("Pick a task.")
            return
        if not base_v or not tuned_v:
            yield fail("Pick a base and a fine-tuned policy.")
            return
        seed_n = whole(seed_v, "Start seed", ImagineParams, "seed")
        c = client_for(request)
        no_wm = wm_v in (None, "", NO_WM[1])
        run = c.imagine(world_model=None if no_wm else wm_v,
                        reward_model=None if no_wm or rm_v in (None, "", NO_RM[1]) else rm_v,
                        policies={"base": base_v, "rft": tuned_v}, task=task_v,
                        instruction=(instr or "").strip() or None, seed=seed_n,
                        offsets=offsets_m(ox_v, oy_v, gx_v, gy_v, rx_v, ry_v, rz_v), horizon=int(hor),
                        max_steps=int(steps_v), name=f"playground: {(instr or task_v or '')[:60]}")
        used = (instr or "").strip() or f"the task's own instruction (empty box), for {task_v}"
        blank = ([render.notice(f"Instruction: {used}", "info")] + [None] * 4 + [_caption(None)] * 4
                 + [gr.update(value=None, visible=False), ""])
        yield (progress_html(run), "", *blank)
        deadline = time.monotonic() + WAIT_S
        while not run.done and time.monotonic() < deadline:
            time.sleep(POLL_S)
            run = c.run(run.id)
            yield (progress_html(run), gr.skip(), *([gr.skip()] * len(blank)))
        if run.status != "succeeded":
            why = run.error or f"the run is {run.status}"
            yield (progress_html(run), render.notice(f"Imagine run #{run.id}: {why}"), *([gr.skip()] * len(blank)))
            return
        yield (progress_html(run), "", *show_result(c, run))

    def show_result(c: StudioClient, run: RunOut) -> list:
        res = run.result or {}
        arts = {a.name: a for a in c.artifacts(run.id, kind="video")}
        by_cell = grid_cells(res)

        def video(name: str | None):
            art = arts.get(name or "")
            return str(cached_artifact(c, run.id, art.name, art.sha256)) if art else None

        vids = [video(by_cell.get(k, {}).get("video")) for k in cells]
        caps = [_caption(by_cell.get(k)) for k in cells]
        grid_path = video(res.get("grid_video"))
        lang = render.instruction_check(res, POLICY_TITLES)
        steps = {f"{POLICY_TITLES[p].split(' (')[0]} · {s.replace('_', ' ')}": int(by_cell[p, s].get("steps") or 0)
                 for p, s in cells if (p, s) in by_cell and by_cell[p, s].get("video") in arts}
        return [lang, *vids, *caps, gr.update(value=grid_path, visible=grid_path is not None),
                player.controls(steps)]

    go.click(on_go, [instruction, task, seed, ox, oy, gx, gy, rx, ry, rz, wm, rm, base, tuned, horizon,
                     max_steps], outputs)

    return Loader(list_outputs, lambda tok: list(lists(client(tok))),
                  on_select=(on_refresh, picker_inputs, [*picker_outputs, notice]))
