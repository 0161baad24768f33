"""Runs end to end with real `vlarft worker` processes and smoke-sized stages, on the embedded default
and on PostgreSQL + Redis: collect → dataset, evaluate → evaluations + videos, cancel (cooperative and
terminate), kill -9 of a worker (Celery redelivery, and the heartbeat reaper), a failing stage."""

from __future__ import annotations

import pytest
from backend_helpers import Stack, stack_fixture, wait_for

from backend.client import StudioClient

pytestmark = pytest.mark.slow
SERVICES = pytest.param("services", marks=[pytest.mark.postgres, pytest.mark.redis])
MP4_MAGIC = b"ftyp"


@pytest.fixture(scope="module", params=["embedded", SERVICES])
def stack(request):
    yield from stack_fixture(request.param)


@pytest.fixture(scope="module")
def worker(stack):
    w = stack.worker("sim,train")
    yield w
    w.stop()


@pytest.fixture
def studio(stack, worker):
    with stack.client() as client:
        yield client


def _wait_running(client: StudioClient, run_id: int, timeout: float = 60.0):
    return wait_for(lambda: (r := client.run(run_id)).status == "running" and r.progress > 0 and r,
                    timeout, f"run {run_id} to make progress")


def test_collect_then_evaluate_with_videos(stack, worker, studio):
    run = studio.collect(tasks="reach-v3", episodes=2, dataset_name=f"reach-{stack.tag}")
    assert run.status == "queued" and run.queue == "sim"
    done = studio.wait(run.id, timeout=120)
    assert done.status == "succeeded", (done.error, worker.output())
    assert done.progress == 1.0 and done.attempt == 1 and done.worker.startswith(worker.name)
    assert done.started_at >= done.created_at and done.finished_at >= done.started_at
    ds = studio.dataset(done.result["dataset_id"])
    assert (ds.name, ds.episodes, ds.tasks, ds.source, ds.run_id) == (f"reach-{stack.tag}", 2, {"reach-v3": 2},
                                                                     "collect", run.id)
    logs = [line.message for line in studio.logs(run.id).lines]
    assert logs[0] == "queued on 'sim'" and logs[1].startswith("started on") and logs[-1] == "succeeded"

    ev = studio.evaluate(tasks="reach-v3", perturbations=["none", "object:minor"], episodes=2, max_steps=60,
                         videos_per_cell=1, exclude_dataset_ids=[ds.id])
    ev = studio.wait(ev.id, timeout=120)
    assert ev.status == "succeeded", (ev.error, worker.output())
    rows = studio.evaluations(ev.id)
    assert sorted((e.task, e.perturbation, e.episodes) for e in rows) == [
        ("reach-v3", "none", 2), ("reach-v3", "object:minor", 2)]
    assert all(0 <= e.ci_low <= e.success_rate <= e.ci_high <= 1 for e in rows)
    fam = {f["perturbation"]: f for f in ev.result["families"]}
    assert set(fam) == {"none", "object:minor"} and fam["object:minor"]["family"] == "object"
    assert fam["none"]["by_policy"]["expert"]["episodes"] == 2
    assert ev.result["starts_disjoint"] == {"expert": True}
    videos = studio.artifacts(ev.id, kind="video")
    assert len(videos) == 2 and all(v.size > 0 for v in videos)
    assert MP4_MAGIC in studio.artifact_bytes(ev.id, videos[0].name)[:16]
    table = studio.artifacts(ev.id, kind="table")
    assert [t.name for t in table] == ["report.json"]
    assert studio.runs(kind="evaluate").items[0].id == ev.id


def test_cancel_stops_a_running_job_cooperatively(stack, worker, studio):
    run = studio.collect(tasks="reach-v3", episodes=200)
    _wait_running(studio, run.id)
    asked = studio.cancel(run.id)
    assert asked.status == "running" and asked.stop_request == "cancel"
    done = studio.wait(run.id, timeout=30)
    assert done.status == "cancelled" and done.message == "cancelled; partial artifacts kept"
    assert all(d.run_id != run.id for d in studio.datasets().items)
    leftovers = list((stack.settings().artifacts / "datasets").glob(f".collect-run{run.id}.h5.tmp*"))
    assert leftovers == []  # the half-written episode file was removed
    # the worker takes the next job
    nxt = studio.wait(studio.collect(tasks="reach-v3", episodes=1).id, timeout=60)
    assert nxt.status == "succeeded", nxt.error


def test_cancel_terminates_a_job_that_does_not_stop(stack, worker):
    # With no grace, cancel goes straight to revoke(terminate=True): the job's process is killed.
    with stack.client(cancel_grace_s=0) as studio:
        run = studio.collect(tasks="reach-v3", episodes=200)
        _wait_running(studio, run.id)
        done = studio.cancel(run.id)
        assert done.status == "cancelled" and "terminated" in done.message
        logs = [line.message for line in studio.logs(run.id).lines]
        assert "cancelled: the worker process was terminated" in logs
        # the worker replaced its killed child and keeps working
        nxt = studio.wait(studio.collect(tasks="reach-v3", episodes=1).id, timeout=90)
        assert nxt.status == "succeeded", (nxt.error, worker.output())
        # the terminated run's redelivered or stale message does not bring it back
        assert studio.run(run.id).status == "cancelled"


def test_every_kind_of_run_has_a_job():
    from backend.kinds import KINDS
    from workers.jobs import JOBS

    assert set(JOBS) == set(KINDS)


def test_a_stage_that_is_not_installed_fails_its_run_clearly():
    from workers.jobs import StageUnavailable, stage

    with pytest.raises(StageUnavailable, match=r"not available in this worker: module models\.no_such_stage"):
        stage("rft", "models.no_such_stage", "train")


def test_pipeline_smoke_then_imagine_from_its_world_model(stack, worker, studio):
    """The whole chain as one run (resumable stages, checkpoints as artifacts), then an imagine run on
    its world model: a video if models.imagine exists, else a failed run that says the stage is missing."""
    if stack.kind != "embedded":
        pytest.skip("the pipeline runs once, on the embedded stack (its stages are the same code on both)")
    run = studio.wait(studio.pipeline(preset="smoke").id, timeout=600)
    assert run.status == "succeeded", (run.error, worker.output())
    assert run.result["complete"] is True and set(run.result["success"]) == {"base", "rft", "rl", "wm_rl"}
    ckpts = {a.name for a in studio.artifacts(run.id, kind="checkpoint")}
    assert {"world_model", "policy", "policy/base", "rft", "rl", "align", "reward_model", "wm_rl"} <= ckpts
    assert studio.artifacts(run.id, kind="video")
    names = set(studio.metrics(run.id).series)
    assert any(n.startswith("world_model/") for n in names) and any(n.startswith("policy/") for n in names)
    assert {"rl/train_success", "rl/heldout_success", "rl/mixed_fraction"} <= names
    assert {"wm_rl/heldout_success", "wm_rl/heldout_imagined_success", "wm_rl/world_steps"} <= names

    im = studio.wait(studio.imagine(world_model=f"run:{run.id}", policies={"base": f"run:{run.id}"},
                                    task="drawer-open-v3", horizon=8, max_steps=20).id, timeout=300)
    assert im.status == "succeeded", (im.error, worker.output())
    cells = {(c["policy"], c["source"]) for c in im.result["cells"]}
    assert cells == {("base", "world_model"), ("base", "simulator")}
    assert {"grid.mp4", "base_world_model.mp4", "base_simulator.mp4"} <= {a.name for a in studio.artifacts(im.id)}


# kill -9 ---------------------------------------------------------------------------------------

@pytest.fixture(params=["embedded", SERVICES])
def fresh_stack(request):
    yield from stack_fixture(request.param)


def test_kill9_of_a_worker_redelivers_and_the_run_finishes(fresh_stack: Stack):
    # Celery's own path: the unacknowledged message comes back after the visibility timeout.
    env = {"VLARFT_VISIBILITY_TIMEOUT": "3"}
    first = fresh_stack.worker("sim", **env)
    with fresh_stack.client(reaper=False) as studio:
        run = studio.collect(tasks="reach-v3", episodes=8)
        _wait_running(studio, run.id)
        first.kill9()
        assert studio.run(run.id).status == "running"  # the database still thinks so
        second = fresh_stack.worker("sim", **env)
        done = studio.wait(run.id, timeout=90)
        assert done.status == "succeeded", (done.error, second.output())
        assert done.attempt == 2 and done.worker.startswith(second.name)
        logs = [line.message for line in studio.logs(run.id).lines]
        assert "resumed (attempt 2) on " + done.worker in logs
        assert studio.dataset(done.result["dataset_id"]).episodes == 8


def test_reaper_requeues_a_run_whose_worker_went_silent(fresh_stack: Stack):
    # Long visibility timeout: only the heartbeat reaper (stale after 4 s here) can recover the run.
    first = fresh_stack.worker("sim")
    with fresh_stack.client(reaper=True) as studio:
        run = studio.collect(tasks="reach-v3", episodes=8)
        _wait_running(studio, run.id)
        first.kill9()
        second = fresh_stack.worker("sim")
        done = studio.wait(run.id, timeout=90)
        assert done.status == "succeeded", (done.error, second.output())
        assert done.attempt == 2 and done.worker.startswith(second.name)
        logs = " | ".join(line.message for line in studio.logs(run.id).lines)
        assert "requeued to resume from its last checkpoint" in logs
