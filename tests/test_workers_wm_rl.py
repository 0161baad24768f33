"""World-model RL through the studio, end to end with smoke-sized models: runs created over the API are executed
by the worker's own code path (`workers.execute.execute`, in this process instead of a Celery child): policy
rollouts with success frames, world-model fine-tuning on two datasets, the reward model, evaluation in
imagination next to the simulator, and RL inside the world model with its imagined and real held-out curves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from backend_helpers import stack_fixture
from rl_toys import TASK, toy_policy

from backend import worker_store
from backend.celery_app import make_celery, new_task_id
from backend.client import StudioClient
from backend.db import session_scope, utcnow
from backend.files import run_folder
from backend.models import Run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack():
    yield from stack_fixture("embedded")


@pytest.fixture(scope="module")
def api(stack):
    with stack.client(reaper=False) as c:
        yield c


def execute(stack, run_id: int) -> str:
    """What the worker does with the run's message: claim it, run the job, write the outcome."""
    from workers.execute import execute as run

    settings = stack.settings()
    with session_scope(settings.db_url) as s:
        task_id = s.get(Run, run_id).task_id
    return run(settings, make_celery(settings), run_id, task_id, "test-worker")


def _done(api: StudioClient, stack, run_id: int):
    outcome = execute(stack, run_id)
    run = api.run(run_id)
    assert run.status == "succeeded", (outcome, run.error, [ln.message for ln in api.logs(run_id).lines][-5:])
    return run


@pytest.fixture(scope="module")
def models(stack, api, tmp_path_factory) -> dict[str, str]:
    """A finished run holding a random smoke world model (64 px, workspace) and an untrained toy policy; a
    dataset of reach-v3 episodes at 64 px whose last steps succeed."""
    from models.world_model.config import make_config
    from models.world_model.model import WorldModel
    from sim.episodes import Episode, EpisodeWriter

    cfg = stack.settings()
    with session_scope(cfg.db_url) as s:
        run = Run(kind="pipeline", name="wm-rl", params={}, status="succeeded", queue="train",
                  task_id=new_task_id(), attempt=1, progress=1.0, created_at=utcnow())
        s.add(run)
        s.flush()
        run_id = run.id
    folder = run_folder(cfg.artifacts, run_id)
    torch.manual_seed(0)
    wm_cfg = make_config("smoke")
    wm_cfg.image_size, wm_cfg.camera = 64, "workspace"
    WorldModel(wm_cfg).save(folder / "wm")
    toy_policy(folder / "policy")
    refs = {}
    for name in ("wm", "policy"):
        art = worker_store.register_artifact(cfg.db_url, cfg.artifacts, run_id, "checkpoint", folder / name)
        refs[name] = f"artifact:{art.id}"

    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("wm-rl") / "eps.h5"
    with EpisodeWriter(path, "workspace", 64) as w:
        for i in range(8):
            steps = 14
            actions = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
            w.add(Episode(task=TASK, instruction="reach the goal", actions=actions, expert_actions=actions.copy(),
                          frames=rng.integers(0, 255, (steps, 64, 64, 3), dtype=np.uint8),
                          proprio=rng.normal(size=(steps, 4)).astype(np.float32), rewards=np.zeros(steps, np.float32),
                          successes=np.arange(steps) >= (10 if i % 2 else steps)))  # half succeed, half fail
    refs["dataset"] = str(api.upload_dataset(path, "wm-rl-eps").id)
    return refs


def test_policy_rollouts_then_fine_tuning_on_two_datasets(stack, api, models):
    col = api.collect(tasks=TASK, episodes=2, policy=models["policy"], noise_std=0.1, after_success=3, max_steps=16)
    col = _done(api, stack, col.id)
    ds = api.dataset(col.result["dataset_id"])
    assert ds.episodes == 2 and ds.tasks == {TASK: 2}  # a policy keeps every episode, failures too
    # fine-tuned from the world model (the align preset does the same with the default's larger batches)
    wm = api.train_world_model(int(models["dataset"]), preset="smoke", steps=4, init_world_model=models["wm"],
                               extra_dataset_ids=[ds.id])
    assert wm.params["extra_dataset_ids"] == [ds.id]
    wm = _done(api, stack, wm.id)
    assert wm.result["step"] == 4
    arts = api.artifacts(wm.id, kind="checkpoint")
    assert arts and json.loads(api.artifact_bytes(wm.id, "checkpoint/config.json"))["config"]["init_from"]


def test_reward_model_then_evaluation_in_imagination_then_rl_in_the_world_model(stack, api, models):
    rm = _done(api, stack, api.train_reward(models["wm"], [int(models["dataset"])], preset="smoke", steps=10).id)
    assert rm.result["tasks"] == [TASK] and rm.result["positives"] > 0 and 0 < rm.result["threshold"] < 1
    assert "loss" in api.metrics(rm.id).series
    assert json.loads(api.artifact_bytes(rm.id, "checkpoint/config.json"))["kind"] == "reward_model"
    rm_ref = f"run:{rm.id}"

    ev = api.wm_eval([models["policy"]], models["wm"], rm_ref, tasks=TASK, episodes=2, max_steps=16, real=True)
    ev = _done(api, stack, ev.id)
    (rep,) = ev.result["policies"]
    assert rep["ref"] == models["policy"] and rep["episodes"] == 2
    assert 0 <= rep["imagined"]["success"] <= 1 and 0 <= rep["real"]["success"] <= 1
    assert rep["agreement"]["both"] + rep["agreement"]["neither"] + rep["agreement"]["imagined_only"] \
        + rep["agreement"]["real_only"] == 2
    assert "correlations" not in ev.result  # one policy ranks nothing
    tables = {a.name for a in api.artifacts(ev.id, kind="table")}
    assert tables == {"report.json", "report.md"}
    assert json.loads(api.artifact_bytes(ev.id, "report.json"))["policies"][0]["ref"] == models["policy"]
    assert models["policy"] in api.artifact_bytes(ev.id, "report.md").decode()

    rl = api.rl_in_world_model(models["policy"], models["wm"], rm_ref, preset="smoke", steps=1, tasks=TASK,
                               max_steps=16, eval_every=1, eval_episodes=1, batch_size=2, group_size=2)
    assert rl.params["world"] == "wm" and rl.params["reward_model"] == rm_ref
    rl = _done(api, stack, rl.id)
    assert rl.result["env_steps"] == 0 and rl.result["world_steps"] > 0
    series = api.metrics(rl.id).series
    assert {"heldout_success", "heldout_imagined_success", "world_steps_per_s"} <= set(series)
    assert api.artifacts(rl.id, kind="checkpoint")


def test_a_reward_model_of_another_world_model_fails_the_run_in_one_line(stack, api, models, tmp_path):
    """The API cannot tell two world models' latents apart without torch; the worker can, and says so."""
    from models.world_model.config import make_config
    from models.world_model.model import WorldModel

    rm = _done(api, stack, api.train_reward(models["wm"], [int(models["dataset"])], preset="smoke", steps=2).id)
    rm_ref = f"artifact:{api.artifacts(rm.id, kind='checkpoint')[0].id}"
    cfg = stack.settings()
    torch.manual_seed(7)
    other_cfg = make_config("smoke")
    other_cfg.image_size, other_cfg.camera = 64, "workspace"
    folder = run_folder(cfg.artifacts, rm.id) / "other-wm"
    WorldModel(other_cfg).save(folder)
    other = worker_store.register_artifact(cfg.db_url, cfg.artifacts, rm.id, "checkpoint", folder)
    ev = api.wm_eval([models["policy"]], f"artifact:{other.id}", rm_ref, tasks=TASK, episodes=1, max_steps=8,
                     real=False)
    execute(stack, ev.id)
    run = api.run(ev.id)
    assert run.status == "failed" and "another world model's autoencoder" in run.error and "\n" not in run.error
