"""The studio as a daily research tool (issue 13), without a browser: one name per artifact, refused
out-of-range values, pickers that keep a user's pick, the per-episode table and its filters, the diff of
two runs' parameters, the metrics explorer (smoothing, per-panel legends, human numbers, the flat-GRPO
warning), datasets a run writes registered with their lineage, offline /docs and gzip."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from backend_helpers import stack_fixture, write_episode_file

from backend.client import CheckpointOut, CollectParams, CompareParams, RunOut


@pytest.fixture(scope="module")
def stack():
    yield from stack_fixture("embedded")


def _cp(i: int, name: str, run_id: int = 1) -> CheckpointOut:
    return CheckpointOut(ref=f"artifact:{i}", artifact_id=i, name=name, kind="policy", run_id=run_id,
                         run_kind="pipeline", run_name=None, run_status="succeeded", updated_at=datetime.now(UTC))


def test_one_name_per_artifact_in_pickers_pages_and_text():
    from frontend.choices import checkpoint_label
    from frontend.names import artifact_name, named_refs, names_by_ref, ref_name

    cp = _cp(4, "policy/base", run_id=1)
    assert artifact_name(cp) == checkpoint_label(cp) == "policy/base #4 · run 1"
    names = names_by_ref([cp])
    assert ref_name("artifact:4", names) == "policy/base #4 · run 1" and ref_name("expert", names) == "scripted expert"
    assert ref_name("artifact:99", names) == "artifact:99"  # a deleted artifact keeps its reference
    assert named_refs({"policies": ["artifact:4", "expert"], "n": 2}, names) == \
        {"policies": ["artifact:4 (policy/base #4 · run 1)", "expert"], "n": 2}


def test_out_of_range_values_are_refused_not_changed():
    from frontend.api import describe
    from frontend.formcheck import FormError, bounds, whole

    assert bounds(CollectParams, "episodes") == (1, 1000)
    assert whole(3, "Episodes", CollectParams, "episodes") == 3
    for bad, words in ((-5, "must be between 1 and 1000; got -5"), (0, "got 0"), (2.5, "not a whole number"),
                       (None, "enter a whole number")):
        with pytest.raises(FormError) as err:
            whole(bad, "Episodes", CollectParams, "episodes")
        assert words in str(err.value) and describe(err.value) == str(err.value)
    with pytest.raises(FormError, match="Seed must be between 0 and"):
        whole(-1, "Seed", CompareParams, "seed")


def test_a_refresh_keeps_the_users_pick_and_moves_the_pages_default():
    from frontend.choices import keep_or_default, picker

    choices = [("expert", "expert"), ("a", "artifact:1"), ("b", "artifact:2")]
    # the page had set "expert" itself: a newer default replaces it
    assert keep_or_default("expert", "expert", choices, "artifact:2") == "artifact:2"
    # the user picked artifact:1: it stays while offered, and goes once deleted
    assert keep_or_default("artifact:1", "expert", choices, "artifact:2") == "artifact:1"
    assert keep_or_default("artifact:9", "expert", choices, "artifact:2") == "artifact:2"
    auto: dict = {}
    assert picker("b", choices, "artifact:2", {"b": None}, auto) == {"choices": choices, "value": "artifact:2"}
    assert auto == {"b": "artifact:2"}


REPORT = {"reports": {
    "expert": {"episodes": [{"task": "reach-v3", "perturbation": "none", "index": 0, "success": True, "steps": 40},
                            {"task": "reach-v3", "perturbation": "object:minor", "index": 0, "success": True,
                             "steps": 55},
                            {"task": "push-v3", "perturbation": "none", "index": 0, "success": False, "steps": 200}]},
    "artifact:4": {"episodes": [{"task": "reach-v3", "perturbation": "none", "index": 0, "success": False,
                                 "steps": 200},
                                {"task": "reach-v3", "perturbation": "object:minor", "index": 0, "success": True,
                                 "steps": 61},
                                {"task": "push-v3", "perturbation": "none", "index": 0, "success": False,
                                 "steps": 200}]}}}
RESULT = {"seed": 7, "videos": [{"task": "reach-v3", "perturbation": "none", "index": 0,
                                 "artifact": "videos/reach.mp4"}]}


def test_per_episode_table_filters_and_plays():
    from frontend import results

    rows = results.episode_rows(REPORT, RESULT)
    assert len(rows) == 3 and rows[0]["seed"] == 7 and rows[0]["video"] == "videos/reach.mp4"
    assert rows[0]["by_policy"] == {"expert": {"success": True, "steps": 40},
                                    "artifact:4": {"success": False, "steps": 200}}
    names = {"artifact:4": "<rft #4>"}
    html = results.episode_table(rows, names)
    assert "3 of 3 episodes" in html and "&lt;rft #4&gt;" in html and html.count("data-episode=") == 1
    assert "1 of 3" in results.episode_table(rows, names, outcome="policies disagree")
    assert "1 of 3" in results.episode_table(rows, names, outcome="all failed")
    assert "2 of 3" in results.episode_table(rows, names, task="reach-v3")
    assert "1 of 3" in results.episode_table(rows, names, task="reach-v3", perturbation="object:minor")
    assert "No episode matches" in results.episode_table(rows, names, task="push-v3", outcome="all succeeded")


def test_params_diff_lists_only_what_differs():
    from frontend.results import params_diff

    a = {"params": {"preset": "smoke", "seed": 0, "extra": {"lr": 1e-3}}}
    b = {"params": {"preset": "smoke", "seed": 3, "extra": {}}}
    html = params_diff(a, b, "run #1", "run #2")
    assert "params.seed" in html and "params.extra.lr" in html and "params.preset" not in html
    assert "<i>absent</i>" in html
    assert "same parameters" in params_diff(a, a, "x", "y")


def test_metrics_explorer_and_curves_read_like_numbers():
    from frontend import charts

    assert charts.smooth([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])  # no start-up bias
    assert charts.smooth([0.0, 10.0], 0.5)[1] == pytest.approx(20 / 3)
    series = {"rft/loss": {"steps": [1, 2], "values": [1.0, 0.5], "times": [100.0, 103.0]},
              "rft/reward_mean": {"steps": [1, 2], "values": [1e-10, 2e-10], "times": [100.0, 103.0]},
              "lr": {"steps": [1, 2], "values": [1e-3, 5e-4], "times": [100.0, 103.0]}}
    fig = charts.metrics_figure(series)
    legends = {t.legend for t in fig.data}
    assert len(legends) == 2  # one legend per panel, not one shared
    assert all(ax.exponentformat == "e" for ax in (fig.layout.yaxis, fig.layout.yaxis2))  # 1e-10, not "100p"
    assert fig.layout.xaxis.dtick == 1  # whole steps: no "1.5"
    other = {"rft/loss": {"steps": [1, 2], "values": [2.0, 1.0], "times": [50.0, 60.0]}}
    ex = charts.explore_figure({"#1": series, "#2": other}, ["lr", "rft/loss"], smoothing=0.5, log_y=True,
                               x_axis="wall time")
    named = [t for t in ex.data if t.showlegend is not False]
    assert [(t.name, t.legend) for t in named] == [("#1", "legend"), ("#1", "legend2"), ("#2", "legend2")]
    assert list(named[1].x) == [0.0, 3.0] and ex.layout.yaxis.type == "log"
    assert "Pick series" in charts.explore_figure({"#1": series}, []).layout.annotations[0].text


def test_flat_group_rewards_are_flagged():
    from frontend import charts

    flat = {"rft/reward_group_std": {"steps": [1, 2, 3], "values": [0.0, 0.0, 1e-9]}}
    assert "nothing to learn" in charts.flat_reward_warning(flat)
    assert charts.flat_reward_warning({"rft/reward_group_std": {"steps": [1, 2, 3], "values": [0.0, 0.0, 0.2]}}) == ""
    assert "rl/mixed_fraction" in charts.flat_reward_warning({"rl/mixed_fraction": {"steps": [1, 2], "values": [0, 0]}})


def test_time_left_and_estimates_come_from_measurements():
    from frontend import estimates

    now = datetime.now(UTC)
    run = RunOut(id=1, kind="evaluate", name=None, status="running", params={}, progress=0.25, message=None,
                 error=None, result=None, parent_id=None, queue="sim", worker=None, attempt=1, stop_request=None,
                 created_at=now - timedelta(seconds=70), started_at=now - timedelta(seconds=60), finished_at=None,
                 heartbeat=None)
    assert estimates.remaining(run, now) == pytest.approx(180)
    done = run.model_copy(update={"status": "succeeded", "finished_at": now, "result": {"families": [
        {"by_policy": {"a": {"episodes": 4}, "b": {"episodes": 4}}}]}})
    assert estimates.episodes_of(done) == 8 and estimates.remaining(done) is None
    c = SimpleNamespace(runs=lambda **_: SimpleNamespace(items=[done]))
    assert "7.5 s per episode (1 earlier run)" in estimates.episodes_text(100, c, "evaluate")
    assert "no earlier run" in estimates.episodes_text(4, SimpleNamespace(runs=lambda **_: SimpleNamespace(items=[])),
                                                       "evaluate")


def test_episode_files_a_run_writes_become_datasets_with_lineage(stack, tmp_path):
    """The pipeline's collected episodes (and later stages' rollouts) are registered as datasets made by the run;
    registering again changes nothing, and deleting the run keeps the dataset's file."""
    from backend.celery_app import new_task_id
    from backend.db import session_scope, utcnow
    from backend.files import resolve_stored, run_folder
    from backend.models import Dataset, Run
    from workers.jobs import register_run_datasets, resolved_params

    cfg = stack.settings()
    with session_scope(cfg.db_url) as s:
        run = Run(kind="pipeline", name="p", params={"preset": "smoke"}, status="running", queue="train",
                  task_id=new_task_id(), attempt=1, progress=0.0, created_at=utcnow())
        s.add(run)
        s.flush()
        run_id = run.id
    out = run_folder(cfg.artifacts, run_id)
    (out / "collect").mkdir(parents=True)
    write_episode_file(out / "collect" / "clean.h5", episodes=2)
    (out / "rollouts").mkdir()
    write_episode_file(out / "rollouts" / "base_det.h5", episodes=3)
    logged: list[str] = []
    ctx = SimpleNamespace(out=out, settings=cfg, url=cfg.db_url, run_id=run_id, log=logged.append)
    ids = register_run_datasets(ctx)
    assert register_run_datasets(ctx) == ids and len(ids) == 2
    with session_scope(cfg.db_url) as s:
        rows = {d.name: (d.run_id, d.source, d.episodes, d.path) for d in s.query(Dataset).filter(Dataset.id.in_(ids))}
    assert {k: v[:3] for k, v in rows.items()} == {f"run{run_id}-collect-clean": (run_id, "pipeline", 2),
                                                   f"run{run_id}-rollouts-base_det": (run_id, "pipeline", 3)}
    assert len(logged) == 2 and "episodes from collect/clean.h5" in logged[0]
    import shutil

    shutil.rmtree(out)  # what deleting the run does to its folder
    assert all(resolve_stored(cfg.artifacts, v[3]).is_file() for v in rows.values())
    from backend.params import PipelineParams

    rp = resolved_params(PipelineParams(preset="smoke"), {"config": {"seed": 0, "tasks": "smoke"}})
    assert rp["params"]["preset"] == "smoke" and rp["config"] == {"seed": 0, "tasks": "smoke"}


def test_docs_are_served_offline_and_pages_are_gzipped(stack):
    from fastapi.testclient import TestClient

    from backend.main import create_app

    with TestClient(create_app(stack.settings(), reaper=False)) as http:
        page = http.get("/docs").text
        assert "/docs/static/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        redoc = http.get("/redoc").text
        assert "/docs/static/redoc.standalone.js" in redoc and "fonts.googleapis" not in redoc
        js = http.get("/docs/static/swagger-ui-bundle.js", headers={"Accept-Encoding": "gzip"})
        assert js.status_code == 200 and js.headers["content-encoding"] == "gzip"
        assert http.get("/docs/static/../main.py").status_code == 404
        assert http.get("/docs/static/nothing.js").status_code == 404
        raw = http.get("/api/v1/openapi.json", headers={"Accept-Encoding": "gzip"})
        assert raw.headers.get("content-encoding") == "gzip" and json.loads(raw.text)["paths"]
        plain = http.get("/api/v1/openapi.json", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers


def test_side_by_side_videos_carry_their_labels(tmp_path):
    """Name, outcome (green ✓ / red ✗) and the step counter are drawn into the frames; a clip that ended
    holds its last frame while the longer one goes on."""
    import numpy as np

    from sim.video_labels import BAR, labelled_clip, write_labelled_side_by_side

    short = [np.full((64, 64, 3), 200, np.uint8)] * 3
    ok = labelled_clip(short, "policy/base #4 · run 1", True, total=5)
    bad = labelled_clip(short, "rft #7 · run 1", False, total=5)
    assert len(ok) == 5 and ok[0].shape == (256 + 2 * BAR, 256, 3)
    mark_ok, mark_bad = ok[0][:BAR, :BAR].reshape(-1, 3), bad[0][:BAR, :BAR].reshape(-1, 3)
    assert (mark_ok[:, 1] > 150).any() and not (mark_ok[:, 0] > 200).any()  # green strokes
    assert (mark_bad[:, 0] > 200).any()  # red strokes
    assert (ok[0][:BAR, BAR:] > 200).any()  # the name is written
    assert not np.array_equal(ok[1][-BAR:], ok[2][-BAR:])  # the step counter moves
    assert np.array_equal(ok[3][BAR:-BAR], ok[4][BAR:-BAR])  # ended: the last frame holds
    path = write_labelled_side_by_side(tmp_path / "v.mp4", {"a": (short, True), "b": (short * 2, False)})
    assert path.read_bytes()[4:8] == b"ftyp"
