"""The REST API without workers, on the embedded default and on PostgreSQL + Redis: every kind of bad
input is a 4xx naming the problem (never a 500) and leaves nothing behind; auth; metrics, logs and
artifact endpoints over rows written the way a worker writes them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from backend_helpers import stack_fixture, write_episode_file
from sqlalchemy import func, select

from backend import worker_store
from backend.celery_app import new_task_id
from backend.db import session_scope, utcnow
from backend.files import run_folder
from backend.models import Dataset, Metric, Run, RunLog

SERVICES = pytest.param("services", marks=[pytest.mark.postgres, pytest.mark.redis])


@pytest.fixture(scope="module", params=["embedded", SERVICES])
def stack(request):
    yield from stack_fixture(request.param)


@pytest.fixture(scope="module")
def api(stack):
    from fastapi.testclient import TestClient

    with TestClient(stack.app(reaper=False)) as http:
        yield http


def _rows(stack, model) -> int:
    with session_scope(stack.settings().db_url) as s:
        return s.scalar(select(func.count()).select_from(model))


def _message(r) -> str:
    body = r.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    return body["message"]


def _insert_run(stack, status: str = "succeeded", kind: str = "collect") -> int:
    with session_scope(stack.settings().db_url) as s:
        run = Run(kind=kind, params={}, status=status, queue="sim", task_id=new_task_id(), attempt=1,
                  progress=0.0, created_at=utcnow())
        s.add(run)
        s.flush()
        return run.id


# Bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 422, "malformed JSON"),
    (b"[1, 2]", 422, "valid dictionary"),
    (b'{"kind": "bake", "params": {}}', 422, "does not match any of the expected tags"),
    (b'{"kind": "collect"}', 422, "params: Field required"),
    (b'{"kind": "collect", "params": {"tasks": "reach-v3", "episodes": "two"}}', 422, "params.episodes"),
    (b'{"kind": "collect", "params": {"tasks": "levitate-v3", "episodes": 1}}', 422, "unknown task 'levitate-v3'"),
    (b'{"kind": "collect", "params": {"tasks": "reach-v3", "episodes": 100000}}', 422, "params.episodes"),
    (b'{"kind": "collect", "params": {"tasks": "reach-v3", "episodes": 1, "image_size": 512}}', 422,
     "params.image_size"),
    (b'{"kind": "collect", "params": {"tasks": "mt50", "episodes": 1000, "image_size": 224, "max_steps": 1000}}',
     422, "too big for this machine"),
    (b'{"kind": "evaluate", "params": {"tasks": "mt50", "perturbations": "all", "episodes": 10, '
     b'"videos_per_cell": 10, "max_steps": 1000}}', 422, "params.videos_per_cell: too big for this machine"),
    (b'{"kind": "train_policy", "params": {"dataset_id": 999, "preset": "smoke"}}', 422,
     "params.dataset_id: no dataset 999"),
    (b'{"kind": "train_wm", "params": {"dataset_id": 1, "preset": "enormous"}}', 422, "params.preset"),
    (b'{"kind": "evaluate", "params": {"policies": ["run:999"]}}', 422, "params.policies.0: no run 999"),
    (b'{"kind": "evaluate", "params": {"policies": ["artifact:999"]}}', 422, "no artifact 999"),
    (b'{"kind": "rft", "params": {"policy": "run:1", "world_model": "run:1", "dataset_id": 1, "steps": 0}}', 422,
     "params.steps"),
    (b'{"kind": "rft", "params": {"policy": "run:1", "world_model": "run:1", "dataset_id": 1, '
     b'"options": {"group_sise": 8}}}', 422, "options.group_sise: Extra inputs are not permitted"),
    (b'{"kind": "rft", "params": {"policy": "run:1", "world_model": "run:1", "dataset_id": 1, '
     b'"options": {"group_size": 1}}}', 422, "options.group_size: Input should be greater than or equal to 2"),
    (b'{"kind": "rft", "params": {"policy": "run:1", "world": "sim", "reward": "success", '
     b'"options": {"noise": "wide", "batch_size": 0}}}', 422, "options.noise"),
    (b'{"kind": "rft", "params": {"policy": "run:1", "world": "wm", "reward": "success"}}', 422,
     "params.world_model: required with world wm and the success reward"),
    (b'{"kind": "rft", "params": {"policy": "run:1", "world": "sim", "reward": "success", "reward_model": "run:1"}}',
     422, "params.reward_model: applies only to world wm with reward success"),
    (b'{"kind": "train_reward", "params": {"world_model": "run:1", "dataset_ids": []}}', 422, "params.dataset_ids"),
    (b'{"kind": "wm_eval", "params": {"policies": ["run:1"], "world_model": "run:2"}}', 422,
     "params.reward_model: Field required"),
    (b'{"kind": "train_wm", "params": {"dataset_id": 1, "preset": "align"}}', 422,
     "params.init_world_model: required with preset align"),
    (b'{"kind": "collect", "params": {"tasks": "reach-v3", "episodes": 1, "noise_std": 0.5}}', 422,
     "params.noise_std: applies only with a policy"),
    (b'{"kind": "pipeline", "params": {"preset": "gpu"}}', 422, "params.preset"),
    (b'{"kind": "collect", "params": {"tasks": "reach-v3", "episodes": 1}, "parent_id": 424242}', 422,
     "parent_id: no run 424242"),
])
def test_bad_run_requests_are_4xx_naming_the_field(stack, api, body, status, needle):
    before = _rows(stack, Run)
    r = api.post("/api/v1/runs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in _message(r)
    assert _rows(stack, Run) == before


@pytest.mark.parametrize(("method", "path", "status", "needle"), [
    ("GET", "/api/v1/runs/777", 404, "no run 777"),
    ("GET", "/api/v1/runs/abc", 422, "run_id"),
    ("GET", "/api/v1/runs/99999999999999999999", 422, "run_id"),
    ("GET", "/api/v1/runs/0", 422, "run_id"),
    ("POST", "/api/v1/runs/777/cancel", 404, "no run 777"),
    ("POST", "/api/v1/runs/777/resume", 404, "no run 777"),
    ("DELETE", "/api/v1/runs/777", 404, "no run 777"),
    ("GET", "/api/v1/runs/777/metrics", 404, "no run 777"),
    ("GET", "/api/v1/runs/777/logs", 404, "no run 777"),
    ("GET", "/api/v1/runs/777/artifacts", 404, "no run 777"),
    ("GET", "/api/v1/datasets/777", 404, "no dataset 777"),
    ("DELETE", "/api/v1/datasets/777", 404, "no dataset 777"),
    ("GET", "/api/v1/datasets/777/download", 404, "no dataset 777"),
    ("GET", "/api/v1/runs?limit=0", 422, "limit"),
    ("GET", "/api/v1/runs?status=done", 422, "status"),
    ("GET", "/api/v1/runs?kind=bake", 422, "kind"),
    ("GET", "/api/v1/runs/1/metrics?since=-5", 422, "since"),
    ("GET", "/api/v1/nowhere", 404, "Not Found"),
])
def test_unknown_ids_and_bad_queries(api, method, path, status, needle):
    r = api.request(method, path)
    assert r.status_code == status, r.text
    assert needle in _message(r)


def test_compare_and_imagine_validate_their_bodies(api):
    r = api.post("/api/v1/compare", json={"policy_a": "expert", "policy_b": "expert"})
    assert r.status_code == 422 and "policy_b" in _message(r)
    r = api.post("/api/v1/compare", json={"policy_a": "expert", "policy_b": "run:31337", "tasks": "reach-v3"})
    assert r.status_code == 422 and "no run 31337" in _message(r)
    r = api.post("/api/v1/imagine", json={"world_model": "run:31337", "task": "reach-v3"})
    assert r.status_code == 422 and "world_model: no run 31337" in _message(r)
    r = api.post("/api/v1/imagine", json={"world_model": "run:1", "task": "reach-v3", "horizon": -1})
    assert r.status_code == 422 and "horizon" in _message(r)


def _checkpoint_run(stack, kinds: dict[str, dict]) -> tuple[int, dict[str, str]]:
    """A finished run with checkpoint folders (name → config.json); returns its id and name → artifact:<id>."""
    import json

    cfg = stack.settings()
    run_id = _insert_run(stack, kind="pipeline")
    folder = run_folder(cfg.artifacts, run_id)
    refs = {}
    for name, config in kinds.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "config.json").write_text(json.dumps({"format": "vlarft-checkpoint/1", **config}))
        art = worker_store.register_artifact(cfg.db_url, cfg.artifacts, run_id, "checkpoint", folder / name)
        refs[name] = f"artifact:{art.id}"
    return run_id, refs


def test_world_model_rl_runs_check_their_references(stack, api, tmp_path):
    """train_reward, RL in the world model, wm_eval, policy rollouts and alignment: a reference to the wrong kind
    of checkpoint, a missing dataset or an oversized request is a 422 naming the field; good ones are queued."""
    view = {"kind": "policy", "policy": {"camera": "workspace", "image_size": 64}}
    run_id, ref = _checkpoint_run(stack, {
        "policy": view, "policy2": view, "policy3": view,
        "wm": {"kind": "world_model"},
        "rm": {"kind": "reward_model", "config": {"tasks": ["reach-v3", "push-v3"]}}})
    ds = _upload(api, write_episode_file(tmp_path / "eps.h5"), "wm-rl-eps").json()["id"]

    def post(kind: str, params: dict):
        return api.post("/api/v1/runs", json={"kind": kind, "params": params})

    bad = [
        ("train_reward", {"world_model": ref["policy"], "dataset_ids": [ds]},
         f"params.world_model: {ref['policy'].replace(':', ' ')} is a policy checkpoint, not a world_model"),
        ("train_reward", {"world_model": ref["wm"], "dataset_ids": [ds, 999_999]}, "params.dataset_ids.1: no dataset"),
        ("train_reward", {"world_model": ref["wm"], "dataset_ids": [ds], "steps": 10**7 + 1}, "params.steps"),
        ("rft", {"policy": ref["policy"], "world": "wm", "reward": "success", "world_model": ref["wm"],
                 "reward_model": ref["policy"]}, "params.reward_model: artifact"),
        ("rft", {"policy": ref["policy"], "world": "wm", "reward": "success", "world_model": ref["rm"],
                 "reward_model": ref["rm"]}, "is a reward_model checkpoint, not a world_model"),
        ("rft", {"policy": ref["policy"], "world": "wm", "reward": "success", "world_model": ref["wm"],
                 "reward_model": f"run:{run_id + 1000}"}, f"params.reward_model: no run {run_id + 1000}"),
        ("wm_eval", {"policies": [ref["policy"], ref["wm"]], "world_model": ref["wm"], "reward_model": ref["rm"],
                     "tasks": "reach-v3"}, "params.policies.1: "),
        ("wm_eval", {"policies": [ref["policy"]], "world_model": ref["wm"], "reward_model": ref["wm"],
                     "tasks": "reach-v3"}, "params.reward_model: "),
        ("wm_eval", {"policies": [ref["policy"]], "world_model": ref["wm"], "reward_model": ref["rm"],
                     "tasks": "reach-v3,drawer-open-v3"}, "params.tasks: the reward model knows reach-v3, push-v3; "
                                                          "not drawer-open-v3"),
        ("wm_eval", {"policies": [ref["policy"], ref["policy2"], ref["policy3"]], "world_model": ref["wm"],
                     "reward_model": ref["rm"], "tasks": "reach-v3,push-v3", "perturbations": "all", "episodes": 1000},
         "params.episodes: 108000 episodes in all (imagined and real) exceeds this studio's limit of 100000"),
        ("collect", {"tasks": "reach-v3", "episodes": 1, "policy": ref["wm"]}, "params.policy: "),
        ("collect", {"tasks": "reach-v3", "episodes": 1, "policy": ref["policy"], "camera": "corner"},
         "params.policy: artifact"),
        ("train_wm", {"dataset_id": ds, "preset": "align", "init_world_model": ref["policy"]},
         "params.init_world_model: "),
        ("train_wm", {"dataset_id": ds, "extra_dataset_ids": [999_999]}, "params.extra_dataset_ids.0: no dataset"),
    ]
    before = _rows(stack, Run)
    for kind, params, needle in bad:
        r = post(kind, params)
        assert r.status_code == 422, (kind, params, r.text)
        assert needle in _message(r), (needle, _message(r))
    assert _rows(stack, Run) == before
    assert "sees camera workspace at 64 px" in _message(post("collect", {"tasks": "reach-v3", "episodes": 1,
                                                                           "policy": ref["policy"], "image_size": 128}))

    good = [
        ("train_reward", {"world_model": ref["wm"], "dataset_ids": [ds], "preset": "smoke"}, "train"),
        ("rft", {"policy": ref["policy"], "world": "wm", "reward": "success", "world_model": ref["wm"],
                 "reward_model": ref["rm"], "preset": "smoke", "options": {"tasks": "reach-v3"}}, "train"),
        ("wm_eval", {"policies": [ref["policy"]], "world_model": ref["wm"], "reward_model": ref["rm"],
                     "tasks": "reach-v3", "episodes": 2, "real": False}, "train"),
        ("collect", {"tasks": "reach-v3", "episodes": 1, "policy": ref["policy"], "noise_std": 0.1,
                     "after_success": 4}, "sim"),
        ("train_wm", {"dataset_id": ds, "preset": "align", "init_world_model": ref["wm"]}, "train"),
    ]
    for kind, params, queue in good:
        r = post(kind, params)
        assert r.status_code == 201, (kind, r.text)
        run = r.json()
        assert run["kind"] == kind and run["queue"] == queue and run["status"] == "queued"
        assert run["parent_id"] is None  # artifact refs name no run; run:<id> refs make it the parent
        if kind == "train_reward":  # a queued run that lists the dataset blocks its deletion
            r = api.delete(f"/api/v1/datasets/{ds}")
            assert r.status_code == 409 and f"run {run['id']}" in _message(r)
        assert api.post(f"/api/v1/runs/{run['id']}/cancel").json()["status"] == "cancelled"
    r = post("wm_eval", {"policies": [f"run:{run_id}"], "world_model": ref["wm"], "reward_model": f"run:{run_id}",
                         "tasks": "push-v3", "episodes": 1})
    assert r.status_code == 201 and r.json()["parent_id"] == run_id, r.text
    api.post(f"/api/v1/runs/{r.json()['id']}/cancel")
    listed = {c["ref"]: c["kind"] for c in api.get("/api/v1/checkpoints", params={"kind": "reward_model"}).json()}
    assert listed[ref["rm"]] == "reward_model" and set(listed.values()) == {"reward_model"}
    assert {"train_reward", "wm_eval"} <= set(api.get("/api/v1/version").json()["kinds"])
    assert api.delete(f"/api/v1/datasets/{ds}").status_code == 204


def test_broker_down_is_503_and_leaves_no_run(stack):
    from fastapi.testclient import TestClient

    dead = stack.app(reaper=False, broker_url="redis+socket:///nonexistent/redis.sock")
    before = _rows(stack, Run)
    with TestClient(dead) as http:
        r = http.post("/api/v1/runs", json={"kind": "collect", "params": {"tasks": "reach-v3", "episodes": 1}})
        assert r.status_code == 503 and "broker" in _message(r)
        h = http.get("/api/v1/health")
        assert h.status_code == 503 and h.json()["database"] == "ok" and h.json()["broker"].startswith("error")
    assert _rows(stack, Run) == before


# Auth -----------------------------------------------------------------------------------------

def test_token_is_required_when_set(stack):
    from fastapi.testclient import TestClient

    with TestClient(stack.app(reaper=False, api_token="s3cret")) as http:
        assert http.get("/api/v1/health").status_code == 200
        anonymous = http.get("/api/v1/version").json()
        assert anonymous["auth"] is True and anonymous["database"] is None and anonymous["broker"] is None
        signed = http.get("/api/v1/version", headers={"Authorization": "Bearer s3cret"}).json()
        assert signed["database"] and signed["broker"]
        r = http.get("/api/v1/runs")
        assert r.status_code == 401 and "missing bearer token" in _message(r)
        assert r.headers["www-authenticate"] == "Bearer"
        r = http.get("/api/v1/runs", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and "wrong bearer token" in _message(r)
        r = http.post("/api/v1/runs", json={"kind": "collect", "params": {"tasks": "reach-v3", "episodes": 1}},
                      headers={"Authorization": "Basic czNjcmV0"})
        assert r.status_code == 401
        assert http.get("/api/v1/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        r = http.get("/api/v1/datasets", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200


# Uploads --------------------------------------------------------------------------------------

def _leftovers(stack) -> list[str]:
    art = stack.settings().artifacts
    return sorted(p.name for sub in ("uploads", "datasets") for p in (art / sub).iterdir())


def _upload(api, path: Path, name: str):
    with path.open("rb") as f:
        return api.post("/api/v1/datasets", files={"file": (path.name, f, "application/x-hdf5")},
                        data={"name": name})


def test_bad_uploads_are_422_and_leave_nothing(stack, api, tmp_path):
    before_files, before_rows = _leftovers(stack), _rows(stack, Dataset)
    text = tmp_path / "notes.h5"
    text.write_text("this is not an HDF5 file\n" * 10)
    good = write_episode_file(tmp_path / "good.h5", episodes=3, steps=6)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    cases = [
        (text, "not an HDF5 file"),
        (truncated, "file:"),
        (empty, "file:"),
        (write_episode_file(tmp_path / "nan.h5", nan=True), "NaN"),
        (write_episode_file(tmp_path / "shape.h5", bad_shape=True), "shape"),
    ]
    for path, needle in cases:
        r = _upload(api, path, f"bad-{path.stem}")
        assert r.status_code == 422, (path.name, r.text)
        assert needle in _message(r), (path.name, r.text)
        assert str(path) not in r.text  # the server's temporary path is not leaked
    r = api.post("/api/v1/datasets", data={"name": "nofile"})
    assert r.status_code == 422 and "file" in _message(r)
    r = _upload(api, good, "../escape")
    assert r.status_code == 422 and "name" in _message(r)
    assert _leftovers(stack) == before_files
    assert _rows(stack, Dataset) == before_rows


def test_valid_upload_is_accepted_downloadable_and_deletable(stack, api, tmp_path):
    good = write_episode_file(tmp_path / "good.h5", episodes=3, steps=6)
    r = _upload(api, good, "tiny-upload")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["episodes"] == 3 and ds["steps"] == 18 and ds["tasks"] == {"reach-v3": 3}
    assert ds["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest() and ds["size"] == good.stat().st_size
    r = _upload(api, good, "tiny-upload")
    assert r.status_code == 409 and "exists" in _message(r)
    got = api.get(f"/api/v1/datasets/{ds['id']}/download")
    assert got.status_code == 200 and got.content == good.read_bytes()
    assert api.get("/api/v1/datasets").json()["total"] >= 1
    # a queued run that uses it blocks deletion
    run_id = _insert_run(stack, status="queued", kind="train_policy")
    with session_scope(stack.settings().db_url) as s:
        s.get(Run, run_id).params = {"dataset_id": ds["id"], "preset": "smoke", "steps": None}
    r = api.delete(f"/api/v1/datasets/{ds['id']}")
    assert r.status_code == 409 and f"run {run_id}" in _message(r)
    with session_scope(stack.settings().db_url) as s:
        s.get(Run, run_id).status = "failed"
    assert api.delete(f"/api/v1/datasets/{ds['id']}").status_code == 204
    assert api.get(f"/api/v1/datasets/{ds['id']}").status_code == 404
    assert not any(n.startswith("upload-") for n in _leftovers(stack))


def test_oversized_upload_is_refused_before_reading(stack, tmp_path):
    from fastapi.testclient import TestClient

    big = tmp_path / "big.h5"
    big.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * (3 << 20))
    with TestClient(stack.app(reaper=False, max_upload_bytes=1 << 20)) as http, big.open("rb") as f:
        r = http.post("/api/v1/datasets", files={"file": ("big.h5", f)}, data={"name": "big"})
    assert r.status_code == 413 and "limit" in _message(r)


# Metrics, logs, artifacts ----------------------------------------------------------------------

def test_metrics_since_and_resumed_rewrites(stack, api):
    url = stack.settings().db_url
    run_id = _insert_run(stack)
    with session_scope(url) as s:
        worker_store.write_metrics(s, run_id, [(step, "loss", 1.0 / step) for step in range(1, 11)]
                            + [(10, "acc", worker_store.clean_value(float("nan")))])
    m = api.get(f"/api/v1/runs/{run_id}/metrics").json()
    assert m["last_step"] == 10 and m["series"]["loss"]["steps"] == list(range(1, 11))
    assert m["series"]["acc"]["values"] == [None]  # NaN is stored and served as null
    newer = api.get(f"/api/v1/runs/{run_id}/metrics", params={"since": 7}).json()
    assert newer["series"]["loss"]["steps"] == [8, 9, 10]
    assert api.get(f"/api/v1/runs/{run_id}/metrics", params={"since": 10}).json()["series"] == {}
    # a run resumed from its step-6 checkpoint logs step 7 again: the old tail is replaced
    with session_scope(url) as s:
        worker_store.write_metrics(s, run_id, [(7, "loss", 0.5)])
    m = api.get(f"/api/v1/runs/{run_id}/metrics", params={"names": "loss"}).json()
    assert m["series"]["loss"]["steps"] == list(range(1, 8)) and m["series"]["loss"]["values"][-1] == 0.5
    # a truncated answer ends on a whole step
    page = api.get(f"/api/v1/runs/{run_id}/metrics", params={"limit": 3}).json()
    assert page["last_step"] == 3 and page["series"]["loss"]["steps"] == [1, 2, 3]
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(Metric).where(Metric.run_id == run_id)) == 8


def test_logs_since(stack, api):
    run_id = _insert_run(stack)
    with session_scope(stack.settings().db_url) as s:
        for i in range(5):
            s.add(RunLog.line(run_id, f"line {i}"))
    first = api.get(f"/api/v1/runs/{run_id}/logs").json()
    assert [line["message"] for line in first["lines"]] == [f"line {i}" for i in range(5)]
    later = api.get(f"/api/v1/runs/{run_id}/logs", params={"since": first["lines"][2]["id"]}).json()
    assert [line["message"] for line in later["lines"]] == ["line 3", "line 4"]


def test_artifacts_listed_with_checksums_streamed_and_guarded(stack, api, tmp_path):
    cfg = stack.settings()
    run_id = _insert_run(stack)
    folder = run_folder(cfg.artifacts, run_id)
    (folder / "videos").mkdir(parents=True)
    video = folder / "videos" / "clip.mp4"
    video.write_bytes(os.urandom(3000))
    ckpt = folder / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"kind": "policy", "format": "vlarft-checkpoint/1"}')
    (ckpt / "model.safetensors").write_bytes(os.urandom(500))
    (ckpt / "escape").symlink_to("/etc")
    worker_store.register_artifact(cfg.db_url, cfg.artifacts, run_id, "video", video)
    worker_store.register_artifact(cfg.db_url, cfg.artifacts, run_id, "checkpoint", ckpt)
    arts = {a["name"]: a for a in api.get(f"/api/v1/runs/{run_id}/artifacts").json()}
    assert arts["videos/clip.mp4"]["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert arts["videos/clip.mp4"]["size"] == 3000
    assert arts["ckpt"]["is_dir"] and "config.json" in arts["ckpt"]["files"]
    got = api.get(arts["videos/clip.mp4"]["url"])
    assert got.status_code == 200 and got.content == video.read_bytes()
    assert got.headers["content-type"] == "video/mp4"
    assert api.get(f"/api/v1/runs/{run_id}/artifacts/ckpt/config.json").json()["kind"] == "policy"
    assert api.get(f"/api/v1/runs/{run_id}/artifacts?kind=video").json()[0]["name"] == "videos/clip.mp4"
    for bad in ("%2e%2e/%2e%2e/etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "videos/..%2F..%2F1",
                "ckpt/..%2F..%2F..%2Fstudio.db", "a%00b", "videos%5C..%5Cclip.mp4"):
        r = api.get(f"/api/v1/runs/{run_id}/artifacts/{bad}")
        assert r.status_code == 400, (bad, r.text)
        assert "invalid name" in _message(r)
    assert api.get(f"/api/v1/runs/{run_id}/artifacts/ckpt/escape/passwd").status_code == 400
    assert api.get(f"/api/v1/runs/{run_id}/artifacts/videos/other.mp4").status_code == 404
    assert api.get(f"/api/v1/runs/{run_id}/artifacts/ckpt").status_code == 404  # a folder is not a file
    # deleting the run removes its rows and folder
    assert api.delete(f"/api/v1/runs/{run_id}").status_code == 204
    assert not folder.exists()
    assert api.get(f"/api/v1/runs/{run_id}").status_code == 404


# Run life-cycle without a worker -----------------------------------------------------------------

def test_queued_run_cancel_resume_delete_and_listing(stack, api):
    r = api.post("/api/v1/runs", json={"kind": "collect", "name": "lonely",
                                       "params": {"tasks": "reach-v3", "episodes": 1}})
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "queued" and run["queue"] == "sim" and run["params"]["tasks"] == ["reach-v3"]
    r = api.delete(f"/api/v1/runs/{run['id']}")
    assert r.status_code == 409 and "cancel it first" in _message(r)
    assert api.post(f"/api/v1/runs/{run['id']}/cancel").json()["status"] == "cancelled"
    r = api.post(f"/api/v1/runs/{run['id']}/cancel")
    assert r.status_code == 409 and "already cancelled" in _message(r)
    resumed = api.post(f"/api/v1/runs/{run['id']}/resume").json()
    assert resumed["status"] == "queued"
    api.post(f"/api/v1/runs/{run['id']}/cancel")
    listing = api.get("/api/v1/runs", params={"kind": "collect", "status": ["cancelled"], "limit": 1,
                                              "count": True}).json()
    assert listing["items"][0]["id"] == run["id"] and listing["limit"] == 1 and listing["total"] >= 1
    logs = [line["message"] for line in api.get(f"/api/v1/runs/{run['id']}/logs").json()["lines"]]
    assert logs[0].startswith("queued") and "resumed (was cancelled)" in logs
    assert api.delete(f"/api/v1/runs/{run['id']}").status_code == 204
    succeeded = _insert_run(stack, status="succeeded")
    r = api.post(f"/api/v1/runs/{succeeded}/resume")
    assert r.status_code == 409 and "succeeded" in _message(r)
