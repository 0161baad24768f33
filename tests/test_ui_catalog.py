"""The routes the UI added to the API (tasks, perturbations, checkpoints, dataset episodes and their
preview videos) and the UI's pure helpers: launch-form defaults, charts, tables, error messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from backend_helpers import stack_fixture, write_episode_file

from backend import worker_store
from backend.celery_app import new_task_id
from backend.client import RunOut, StudioClient, StudioError
from backend.db import session_scope, utcnow
from backend.files import run_folder
from backend.models import Run
from backend.params import PARAMS


@pytest.fixture(scope="module")
def stack():
    yield from stack_fixture("embedded")


@pytest.fixture(scope="module")
def api(stack):
    with stack.client(reaper=False) as c:
        yield c


def _run_with_checkpoints(stack, kinds: dict[str, str]) -> int:
    """A finished run with checkpoint folders (name → kind written in config.json)."""
    cfg = stack.settings()
    with session_scope(cfg.db_url) as s:
        run = Run(kind="pipeline", name="demo", params={}, status="succeeded", queue="train",
                  task_id=new_task_id(), attempt=1, progress=1.0, created_at=utcnow())
        s.add(run)
        s.flush()
        run_id = run.id
    folder = run_folder(cfg.artifacts, run_id)
    for name, kind in kinds.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "config.json").write_text(json.dumps({"format": "vlarft-checkpoint/1", "kind": kind}))
        worker_store.register_artifact(cfg.db_url, cfg.artifacts, run_id, "checkpoint", folder / name)
    return run_id


def test_tasks_and_perturbations(api: StudioClient):
    cat = api.tasks()
    assert len(cat.tasks) == 50
    drawer = next(t for t in cat.tasks if t.name == "drawer-open-v3")
    assert drawer.instruction and len(drawer.paraphrases) >= 3 and drawer.has_object
    assert set(cat.presets["smoke"]) <= {t.name for t in cat.tasks}
    pert = api.perturbations()
    assert pert.suite[0] == "none" and "combined:major" in pert.suite
    assert pert.magnitudes["object"]["minor"] < pert.magnitudes["object"]["major"]


def test_checkpoints_by_kind_newest_first(stack, api: StudioClient):
    first = _run_with_checkpoints(stack, {"world_model": "world_model", "policy/base": "policy"})
    second = _run_with_checkpoints(stack, {"rft": "policy"})
    policies = api.checkpoints(kind="policy")
    assert [(p.run_id, p.name) for p in policies][:2] == [(second, "rft"), (first, "policy/base")]
    assert all(p.kind == "policy" and p.ref == f"artifact:{p.artifact_id}" for p in policies)
    wms = api.checkpoints(kind="world_model")
    assert [(w.run_id, w.name, w.run_name) for w in wms] == [(first, "world_model", "demo")]
    with pytest.raises(StudioError) as err:
        api.checkpoints(kind="optimizer")
    assert err.value.status == 422 and "kind" in err.value.message


def test_episodes_and_preview_video(stack, api: StudioClient, tmp_path):
    ds = api.upload_dataset(write_episode_file(tmp_path / "eps.h5", episodes=3, steps=6), "ui-eps")
    eps = api.episodes(ds.id)
    assert [e.index for e in eps] == [0, 1, 2]
    assert eps[0].task == "reach-v3" and eps[0].instruction == "reach the goal" and eps[0].length == 6
    video = api.episode_video(ds.id, 1, tmp_path / "ep1.mp4")
    head = video.read_bytes()[:12]
    assert head[4:8] == b"ftyp", head  # an MP4
    again = api.episode_video(ds.id, 1, tmp_path / "again.mp4")  # served from the cache
    assert again.read_bytes() == video.read_bytes()
    with pytest.raises(StudioError) as err:
        api.episode_video(ds.id, 3, tmp_path / "x.mp4")
    assert err.value.status == 404 and "no episode 3" in err.value.message
    with pytest.raises(StudioError) as err:
        api.episodes(999_999)
    assert err.value.status == 404


def test_catalog_needs_the_token_when_set(stack):
    with stack.client(reaper=False, api_token="s3cret") as anon:
        assert anon.version().auth is True
        with pytest.raises(StudioError) as err:
            anon.tasks()
        assert err.value.status == 401


@pytest.mark.parametrize("ui", [True, False])
def test_the_served_app_mounts_the_ui_only_when_asked(stack, ui):
    """`vlarft api` serves cli.studio_app: the API, plus the Gradio UI at /ui when settings.ui is on."""
    from fastapi.testclient import TestClient

    from cli.studio_app import create_app

    app = create_app(stack.settings(ui=ui), reaper=False)
    assert app.state.ui is ui
    with TestClient(app) as http:
        assert http.get("/", follow_redirects=False).headers["location"] == ("/ui" if ui else "/docs")
        assert http.get("/ui/").status_code == (200 if ui else 404)
        assert http.get("/api/v1/version").status_code == 200


# Pure helpers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["pipeline", "collect", "evaluate"])
def test_launch_defaults_validate_against_the_api_models(kind):
    from frontend import presets

    for preset in presets.presets_for(kind):
        params = {k: v for k, v in presets.default_params(kind, preset, None).items() if v is not None}
        PARAMS[kind].model_validate(json.loads(json.dumps(params)))


def test_stage_defaults_use_the_newest_dataset_and_checkpoints(stack, api: StudioClient, tmp_path):
    from frontend import presets

    ds = api.upload_dataset(write_episode_file(tmp_path / "d.h5"), "ui-newest")
    p = presets.default_params("rft", "smoke", api)
    newest_policy = api.checkpoints(kind="policy")[0].ref
    newest_wm = api.checkpoints(kind="world_model")[0].ref
    assert (p["dataset_id"], p["policy"], p["world_model"], p["preset"]) == (ds.id, newest_policy, newest_wm, "smoke")
    PARAMS["rft"].model_validate(p)
    rl = {k: v for k, v in presets.default_params("rl", "smoke", api).items() if v is not None}
    assert (rl["policy"], rl["world"], rl["reward"]) == (newest_policy, "sim", "success")
    PARAMS[presets.API_KIND["rl"]].model_validate(rl)
    assert "`preset`" in presets.fields_help("pipeline") and "`mt10-gpu`" in presets.fields_help("pipeline")


def test_world_model_rl_launch_entries_use_the_newest_world_and_reward_models(stack, api: StudioClient, tmp_path):
    """RL in the world model, the reward model, evaluation in imagination and alignment, from the launch form:
    defaults reference the newest checkpoints of each kind, validate, and are accepted by the API."""
    from frontend import presets

    ds = api.upload_dataset(write_episode_file(tmp_path / "d.h5"), "ui-wm-rl")
    run_id = _run_with_checkpoints(stack, {"wm": "world_model", "rm": "reward_model", "pol": "policy"})
    refs = {cp.name: cp.ref for cp in api.checkpoints() if cp.run_id == run_id}
    assert api.checkpoints(kind="reward_model")[0].ref == refs["rm"]
    assert presets.API_KIND["rl_wm"] == "rft" and {"train_reward", "wm_eval", "rl_wm"} <= set(presets.KIND_LABELS)
    assert "align" in presets.presets_for("train_wm") and presets.presets_for("wm_eval")[0] == "smoke"

    rl = presets.default_params("rl_wm", "smoke", api)
    assert (rl["policy"], rl["world"], rl["reward"], rl["world_model"], rl["reward_model"]) == \
        (refs["pol"], "wm", "success", refs["wm"], refs["rm"])
    ev = presets.default_params("wm_eval", "smoke", api)
    assert (ev["policies"], ev["world_model"], ev["reward_model"], ev["tasks"]) == \
        ([refs["pol"]], refs["wm"], refs["rm"], "smoke")
    rm = presets.default_params("train_reward", "cpu-quick", api)
    assert (rm["world_model"], rm["dataset_ids"], rm["preset"]) == (refs["wm"], [ds.id], "cpu-quick")
    align = presets.default_params("train_wm", "align", api)
    assert (align["init_world_model"], align["dataset_id"]) == (refs["wm"], ds.id)
    assert presets.default_params("train_wm", "smoke", api)["init_world_model"] is None
    for entry, params in (("rl_wm", rl), ("wm_eval", ev), ("train_reward", rm), ("train_wm", align)):
        body = {k: v for k, v in params.items() if v is not None}
        PARAMS[presets.API_KIND.get(entry, entry)].model_validate(json.loads(json.dumps(body)))
        run = api.create_run(presets.API_KIND.get(entry, entry), body)
        assert run.status == "queued", entry
        api.cancel(run.id)
    assert "`reward_model`" in presets.fields_help("rl_wm") and "`align`" in presets.fields_help("train_wm")


def test_metric_panels_and_curves():
    from frontend import charts

    series = {
        "rft/loss": {"steps": [1, 2, 3], "values": [1.0, None, 0.5]},
        "rft/reward_mean": {"steps": [1, 2, 3], "values": [0.1, 0.2, 0.3]},
        "rft/reward_std": {"steps": [1, 2, 3], "values": [0.05, 0.04, 0.03]},
        "rft/approx_kl": {"steps": [1, 2, 3], "values": [0.0, 0.01, 0.02]},
        "rft/sigma_mean": {"steps": [1, 2, 3], "values": [0.3, 0.3, 0.29]},
        "world_model/dyn/loss": {"steps": [25, 50], "values": [0.9, 0.7]},
        "lr": {"steps": [1], "values": [1e-3]},
    }
    groups = charts.panels(series)
    assert groups == {"rft losses": ["rft/loss"], "world_model losses": ["world_model/dyn/loss"],
                      "reward (mean ± std)": ["rft/reward_mean"], "KL": ["rft/approx_kl"], "σ": ["rft/sigma_mean"]}
    assert charts.panels({"loss": {"steps": [1], "values": [1.0]}}) == {"losses": ["loss"]}
    fig = charts.metrics_figure(series)
    names = [t.name for t in fig.data]
    assert "rft/± std" in names and "lr" not in names
    loss = next(t for t in fig.data if t.name == "rft/loss")
    assert list(loss.x) == [1, 3] and list(loss.y) == [1.0, 0.5]  # the NaN step is dropped
    band = next(t for t in fig.data if t.name == "rft/± std")
    assert max(band.y) == pytest.approx(0.33) and min(band.y) == pytest.approx(0.05)
    assert "No curves yet" in charts.metrics_figure({}).layout.annotations[0].text


def test_imagined_and_real_held_out_success_share_a_panel():
    from frontend import charts

    series = {
        "wm_rl/train_success": {"steps": [1, 2], "values": [0.2, 0.3]},
        "wm_rl/heldout_success": {"steps": [0, 2], "values": [0.25, 0.5]},
        "wm_rl/heldout_imagined_success": {"steps": [0, 2], "values": [0.4, 0.75]},
        "rl/heldout_success": {"steps": [0, 2], "values": [0.1, 0.2]},
    }
    groups = charts.panels(series)
    assert groups[charts.IMAGINED_PANEL] == ["wm_rl/heldout_success", "wm_rl/heldout_imagined_success"]
    assert groups["success"] == ["wm_rl/train_success", "rl/heldout_success"]
    fig = charts.metrics_figure(series)
    imagined = next(t for t in fig.data if t.name == "wm_rl/heldout_imagined_success")
    real = next(t for t in fig.data if t.name == "wm_rl/heldout_success")
    assert imagined.line.dash == "dash" and real.line.dash is None and imagined.xaxis == real.xaxis
    titles = [a.text for a in fig.layout.annotations]
    assert charts.IMAGINED_PANEL in titles
    # a sim-only RL run keeps its held-out curve in the success panel and has no imagined panel
    assert charts.IMAGINED_PANEL not in charts.panels({"heldout_success": {"steps": [0], "values": [0.5]}})


def test_imagination_results_chart_and_table():
    from frontend import charts
    from frontend.tab_compare import imagined_table

    def part(k: int, n: int) -> dict:  # what models.wm_eval reports per source
        return {"success": k / n, "successes": k, "episodes": n, "ci95": [0.2, 0.8],
                "cells": {"reach-v3/none": {"successes": k, "episodes": n, "rate": k / n, "ci95": [0.2, 0.8]}}}

    result = {"policies": [
        {"ref": "run:3", "policy": "/a", "episodes": 4, "imagined": part(3, 4), "real": part(2, 4),
         "agreement": {"episode_accuracy": 0.75}},
        {"ref": "run:6", "policy": "/b", "episodes": 4, "imagined": part(1, 4)}],
        "correlations": {"all": {"policies": 3, "pearson": 0.91, "spearman": None, "mean_abs_gap": 0.1}}}
    rows = charts.rows_from_wm_eval(result, {"run:3": "base"})
    assert [r["x"] for r in rows["imagined"]] == ["base", "run:6"] and [r["x"] for r in rows["real"]] == ["base"]
    assert rows["imagined"][0]["success_rate"] == 0.75 and rows["real"][0]["successes"] == 2
    assert rows["real"][0]["ci95"] == [0.2, 0.8]  # the report's interval, not one recomputed in the UI
    fig = charts.imagined_vs_real_figure(result, {"run:3": "base"})
    bars = {t.name: t for t in fig.data}
    assert set(bars) == {"imagined (world model)", "real (simulator)"}
    assert list(bars["imagined (world model)"].y) == [75.0, 25.0] and list(bars["real (simulator)"].x) == ["base"]
    assert fig.layout.xaxis.title.text == "policy"
    html = imagined_table(result, {"run:3": "<base>"})
    assert "&lt;base&gt;" in html and "<b>75%</b>" in html and "50%" in html and "Pearson 0.91, Spearman –" in html


def test_success_chart_has_95_intervals():
    from frontend import charts

    result = {"families": [
        {"perturbation": "none", "by_policy": {"expert": {"episodes": 4, "successes": 3, "success_rate": 0.75,
                                                          "ci95": [0.3, 0.95]},
                                               "run:2": {"episodes": 4, "successes": 1, "success_rate": 0.25,
                                                         "ci95": [0.05, 0.7]}}}]}
    fig = charts.success_figure(charts.success_rows_from_compare(result), {"run:2": "RFT"})
    bars = {t.name: t for t in fig.data}
    assert set(bars) == {"expert", "RFT"}
    assert list(bars["expert"].y) == [75.0]
    assert bars["expert"].error_y.array[0] == pytest.approx(20.0)
    assert bars["expert"].error_y.arrayminus[0] == pytest.approx(45.0)
    assert list(bars["RFT"].text) == ["1/4"]


def test_failures_first_and_pair_guess():
    from backend.client import CheckpointOut
    from frontend.choices import guess_pair
    from frontend.tab_compare import order_videos

    vids = [{"task": "t", "perturbation": "none", "index": 0, "success": {"a": True, "b": True}},
            {"task": "t", "perturbation": "none", "index": 1, "success": {"a": False, "b": True}},
            {"task": "t", "perturbation": "none", "index": 2, "success": {"a": False, "b": False}}]
    assert [v["index"] for v in order_videos(vids)] == [2, 1, 0]

    now = datetime.now(UTC)

    def cp(i: int, name: str, run_kind: str) -> CheckpointOut:
        return CheckpointOut(ref=f"artifact:{i}", artifact_id=i, name=name, kind="policy", run_id=i, run_kind=run_kind,
                             run_name=None, run_status="succeeded", updated_at=now - timedelta(minutes=i))

    assert guess_pair([cp(3, "rft", "pipeline"), cp(2, "policy", "pipeline"), cp(1, "policy/base", "pipeline")]) \
        == ("artifact:1", "artifact:3")
    assert guess_pair([cp(5, "checkpoint", "rft"), cp(4, "checkpoint", "train_policy")]) == ("artifact:4", "artifact:5")
    assert guess_pair([]) == (None, None)


def test_tables_escape_and_show_progress():
    from frontend import render

    now = datetime.now(UTC)
    run = RunOut(id=7, kind="pipeline", name="<b>x</b>", status="running", params={}, progress=0.42,
                 message="world_model: dynamics 3/10", error=None, result=None, parent_id=3, queue="train",
                 worker=None, attempt=1, stop_request=None, created_at=now - timedelta(seconds=100),
                 started_at=now - timedelta(seconds=95), finished_at=None, heartbeat=None)
    html = render.runs_table([run], selected=7)
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert 'data-run="7"' in html and "42%" in html and "#3" in html and "vr-selected" in html
    assert render.human_seconds(95) == "1 min 35 s" and render.human_bytes(2048) == "2.0 KB"
    assert "vr-error" in render.notice("boom") and render.notice("") == ""


def test_error_messages_are_one_readable_line():
    from frontend.api import describe, guard

    assert describe(StudioError(422, "params.episodes: Input should be greater than or equal to 1")) == \
        "params.episodes: Input should be greater than or equal to 1 (HTTP 422)"
    assert "API token" in describe(StudioError(401, "wrong bearer token"))
    assert "Cannot reach the studio API" in describe(httpx.ConnectError("refused"))

    @guard(lambda msg: ("failed", msg))
    def broken(x: int) -> tuple:
        raise RuntimeError("line one\nline two")

    status, msg = broken(1)
    assert status == "failed" and "RuntimeError: line one" in msg and "line two" not in msg
    assert broken.__name__ == "broken"


def test_playground_grid_and_offsets():
    from frontend.tab_playground import _caption, grid_cells, offsets_m

    result = {"cells": [
        {"policy": "base", "source": "world_model", "video": "base_wm.mp4", "success": None,
         "verified_reward": 0.8125, "steps": 30},
        {"policy": "base", "source": "simulator", "video": "base_sim.mp4", "success": False, "verified_reward": None,
         "steps": 30},
        {"policy": "rft", "source": "simulator", "video": "rft_sim.mp4", "success": True, "verified_reward": None,
         "steps": 22},
        {"policy": "other", "source": "simulator", "video": "x.mp4", "success": True, "steps": 1}]}
    cells = grid_cells(result)
    assert set(cells) == {("base", "world_model"), ("base", "simulator"), ("rft", "simulator")}
    assert "verified reward <b>0.812</b>" in _caption(cells["base", "world_model"])
    assert "failure" in _caption(cells["base", "simulator"]) and "success" in _caption(cells["rft", "simulator"])
    assert offsets_m(2, -1, 0, 0, 0, 0, -3) == {"object": [0.02, -0.01], "goal": [0.0, 0.0],
                                               "robot": [0.0, 0.0, -0.03]}


def test_metrics_by_row_id_see_a_new_stage_and_a_rewritten_tail(stack, api: StudioClient):
    """The run page's cursor: a pipeline's RFT stage logs steps 1..3 after the policy logged up to 60."""
    from frontend.tab_runs import merge_series

    run_id = _run_with_checkpoints(stack, {})
    url = stack.settings().db_url
    with session_scope(url) as s:
        worker_store.write_metrics(s, run_id, [(step, "policy/loss", 1.0 / step) for step in (10, 20, 60)])
    first = api.metrics(run_id, after_id=0)
    assert first.series["policy/loss"].steps == [10, 20, 60] and first.last_id is not None
    with session_scope(url) as s:
        worker_store.write_metrics(s, run_id, [(step, "rft/reward_mean", 0.1 * step) for step in (1, 2, 3)])
    assert api.metrics(run_id, since=first.last_step).series == {}  # the step cursor misses the new stage
    second = api.metrics(run_id, after_id=first.last_id)
    assert list(second.series) == ["rft/reward_mean"] and second.series["rft/reward_mean"].steps == [1, 2, 3]
    assert api.metrics(run_id, after_id=second.last_id).series == {}
    assert api.metrics(run_id, after_id=second.last_id).last_id == second.last_id

    page: dict = {}
    for m in (first, second):
        for name, ser in m.series.items():
            merge_series(page, name, ser.steps, ser.values)
    merge_series(page, "rft/reward_mean", [3, 4], [0.9, 1.0])  # a resumed run logs its step 3 again
    assert page["rft/reward_mean"]["steps"] == [1, 2, 3, 4]
    assert page["rft/reward_mean"]["values"][2:] == [0.9, 1.0]
    assert page["policy/loss"]["steps"] == [10, 20, 60]
    with pytest.raises(StudioError) as err:
        api.metrics(run_id, after_id=-1)
    assert err.value.status == 422 and "after_id" in err.value.message


def test_playground_request_is_accepted_or_refused_by_field(stack, api: StudioClient):
    """What the Playground sends: a world model and two labelled policies (or no world model)."""
    run_id = _run_with_checkpoints(stack, {"world_model": "world_model", "policy/base": "policy", "rft": "policy"})
    refs = {cp.name: cp.ref for cp in api.checkpoints() if cp.run_id == run_id}
    run = api.imagine(world_model=refs["world_model"], policies={"base": refs["policy/base"], "rft": refs["rft"]},
                      task="drawer-open-v3", instruction="open the drawer", seed=3,
                      offsets={"object": [0.02, 0.0], "goal": [0.0, 0.0], "robot": [0.0, 0.0, -0.03]}, horizon=30,
                      max_steps=100)
    assert run.kind == "imagine" and run.status == "queued" and run.params["policies"]["rft"] == refs["rft"]
    sim_only = api.imagine(world_model=None, policies={"base": "expert", "rft": refs["rft"]}, task="drawer-open-v3")
    assert sim_only.params["world_model"] is None
    with pytest.raises(StudioError) as err:
        api.imagine(world_model=refs["rft"], policies={"base": "artifact:999999", "rft": refs["rft"]},
                    task="drawer-open-v3")
    assert err.value.status == 422
    assert "params.world_model" in err.value.message and "params.policies.base: no artifact 999999" in err.value.message
    for r in (run, sim_only):
        api.cancel(r.id)
