"""Hostile input: episode files built to exhaust memory (declared sizes, gzip bombs), files the models cannot
use, ids beyond the database's range, runs that could only fail, and server paths in failure messages.

Each hostile file is refused with a 422 naming the problem, and validating any file stays under
sim.episodes.MEMORY_CEILING (the peak resident memory of a fresh process, measured)."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from backend_helpers import ROOT, stack_fixture, write_episode_file

from backend.params import IMAGE_SIZES
from sim.episodes import MEMORY_CEILING, DatasetError, validate_file, validate_isolated

BIG = 2**63


# Hostile files ----------------------------------------------------------------------------------

def _episode(data: h5py.Group, steps: int, size: int = 64, actions=None, frames: dict | None = None) -> h5py.Group:
    g = data.create_group(f"demo_{len(data)}")
    g.attrs["task"] = "reach-v3"
    g.create_dataset("obs/workspace_rgb", data=np.zeros((steps, size, size, 3), np.uint8),
                     chunks=(1, size, size, 3), **(frames or {"compression": "gzip"}))
    g.create_dataset("obs/proprio", data=np.zeros((steps, 4), np.float32))
    g.create_dataset("actions", data=np.zeros((steps, 4), np.float32) if actions is None else actions)
    return g


def declared_frames(path: Path) -> Path:
    """7 KB declaring 10,000 × 224 × 224 × 3 frames (1.5 GB) that were never written."""
    with h5py.File(path, "w") as f:
        g = f.create_group("data").create_group("demo_0")
        g.create_dataset("obs/workspace_rgb", shape=(10_000, 224, 224, 3), dtype=np.uint8,
                         chunks=(1, 224, 224, 3), compression="gzip")
        for name, shape in (("obs/proprio", (10_000, 4)), ("actions", (10_000, 4))):
            g.create_dataset(name, shape=shape, dtype=np.float32, chunks=shape, compression="gzip")
    return path


def _zeros_gzip(rows: int, size: int = 224) -> bytes:
    return zlib.compress(bytes(rows * size * size * 3), 9)


def gzip_bomb(path: Path, steps: int = 200_000) -> Path:
    """30 GB of frames in one array, every chunk written: 4,000 chunks of 7.5 MB of zeros, ~7 KB each."""
    block = _zeros_gzip(50)
    with h5py.File(path, "w") as f:
        g = f.create_group("data").create_group("demo_0")
        d = g.create_dataset("obs/workspace_rgb", shape=(steps, 224, 224, 3), dtype=np.uint8,
                             chunks=(50, 224, 224, 3), compression="gzip")
        for t in range(0, steps, 50):
            d.id.write_direct_chunk((t, 0, 0, 0), block)
        g.create_dataset("obs/proprio", data=np.zeros((steps, 4), np.float32))
        g.create_dataset("actions", data=np.zeros((steps, 4), np.float32))
    return path


def gzip_bomb_spread(path: Path) -> Path:
    """The same 30 GB within every per-episode bound: 40 episodes of 5,000 black 224 px frames."""
    block = _zeros_gzip(50)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for e in range(40):
            g = data.create_group(f"demo_{e}")
            d = g.create_dataset("obs/workspace_rgb", shape=(5000, 224, 224, 3), dtype=np.uint8,
                                 chunks=(50, 224, 224, 3), compression="gzip")
            for t in range(0, 5000, 50):
                d.id.write_direct_chunk((t, 0, 0, 0), block)
            g.create_dataset("obs/proprio", data=np.zeros((5000, 4), np.float32))
            g.create_dataset("actions", data=np.zeros((5000, 4), np.float32))
    return path


def chunk_bomb(path: Path) -> Path:
    """Chunks of one 224 px frame (147 KB) whose gzip streams inflate to 150 MB each."""
    stream = zlib.compress(bytes(150 << 20), 9)
    with h5py.File(path, "w") as f:
        d = _episode(f.create_group("data"), 4, size=224)["obs/workspace_rgb"]
        for t in range(4):
            d.id.write_direct_chunk((t, 0, 0, 0), stream)
    return path


def huge_chunks(path: Path) -> Path:
    """Chunks of 250 frames (37 MB each): HDF5 inflates a whole chunk to read one frame."""
    block = _zeros_gzip(250)
    with h5py.File(path, "w") as f:
        g = f.create_group("data").create_group("demo_0")
        d = g.create_dataset("obs/workspace_rgb", shape=(1000, 224, 224, 3), dtype=np.uint8,
                             chunks=(250, 224, 224, 3), compression="gzip")
        for t in range(0, 1000, 250):
            d.id.write_direct_chunk((t, 0, 0, 0), block)
        g.create_dataset("obs/proprio", data=np.zeros((1000, 4), np.float32))
        g.create_dataset("actions", data=np.zeros((1000, 4), np.float32))
    return path


def small_frames(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        _episode(f.create_group("data"), 10, size=32)
    return path


def flat_actions(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        _episode(f.create_group("data"), 10, actions=np.zeros(10, np.float32))
    return path


def seven_d_actions(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        _episode(f.create_group("data"), 10, actions=np.zeros((10, 7), np.float32))
    return path


def external_storage(path: Path) -> Path:
    """Actions whose bytes are read from a file of the server."""
    with h5py.File(path, "w") as f:
        g = _episode(f.create_group("data"), 4)
        del g["actions"]
        g.create_dataset("actions", shape=(4, 4), dtype=np.float32, external=[("/etc/passwd", 0, 64)])
    return path


def external_link(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        _episode(f.create_group("data"), 4)
        f["data/demo_1"] = h5py.ExternalLink("/etc/hosts.h5", "/data/demo_0")
    return path


def lzf_frames(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        _episode(f.create_group("data"), 4, frames={"compression": "lzf"})
    return path


def unwritten_chunks(path: Path) -> Path:
    """A plausible episode whose frames were never written: they would read as fill values."""
    with h5py.File(path, "w") as f:
        g = _episode(f.create_group("data"), 10)
        del g["obs/workspace_rgb"]
        g.create_dataset("obs/workspace_rgb", shape=(10, 64, 64, 3), dtype=np.uint8, chunks=(1, 64, 64, 3),
                         compression="gzip")
    return path


def large_valid(path: Path, steps: int = 2000, size: int = 224) -> Path:
    """A real episode whose frames (300 MB) are larger than the memory ceiling; ~6 MB on disk."""
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx // 28 * 30, yy // 28 * 30, (xx // 28 + yy // 28) * 15], -1).astype(np.uint8)
    with h5py.File(path, "w") as f:
        g = f.create_group("data").create_group("demo_0")
        d = g.create_dataset("obs/workspace_rgb", shape=(steps, size, size, 3), dtype=np.uint8,
                             chunks=(1, size, size, 3), compression="gzip", compression_opts=1)
        for lo in range(0, steps, 200):
            block = np.broadcast_to(base, (200, size, size, 3)).copy()
            for i in range(200):
                x = (lo + i) % 150
                block[i, 100:120, x:x + 20] = 255  # a moving square
            d[lo:lo + 200] = block
        g.create_dataset("obs/proprio", data=np.zeros((steps, 4), np.float32))
        g.create_dataset("actions", data=np.full((steps, 4), 0.1, np.float32))
    return path


HOSTILE = {  # name → (builder, what the refusal says)
    "declared_frames": (declared_frames, "10000 steps; an episode has 1 to 5000"),
    "gzip_bomb": (gzip_bomb, "200000 steps"),
    "gzip_bomb_spread": (gzip_bomb_spread, "more than 100× its size"),
    "chunk_bomb": (chunk_bomb, "decompression bomb"),
    "huge_chunks": (huge_chunks, "at most 8388608"),
    "small_frames": (small_frames, "images are 32×32 px; the models take 64, 128, 224 px"),
    "flat_actions": (flat_actions, "actions has shape (10,), a 1-D array; expected (steps, 4)"),
    "seven_d_actions": (seven_d_actions, "actions are 7-D (shape (10, 7)); expected 4-D (steps, 4)"),
    "external_storage": (external_storage, "stored outside the file"),
    "external_link": (external_link, "demo_1 is a link (ExternalLink)"),
    "lzf_frames": (lzf_frames, "uses HDF5 filter 32000"),
    "unwritten_chunks": (unwritten_chunks, "has 0 of its 10 chunks written"),
}

# The peak is VmHWM, which starts afresh at exec (ru_maxrss would carry over the forking test process's).
PROBE = """
import json, re, sys
from sim.episodes import DatasetError, validate_file
try:
    out = {"steps": validate_file(sys.argv[1], action_dim=4, image_sizes=(64, 128, 224)).steps}
except DatasetError as exc:
    out = {"error": str(exc)}
out["peak"] = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
print(json.dumps(out))
"""


def _probe(path: Path) -> dict:
    """validate_file in a fresh process: its answer and the process's peak resident memory (bytes)."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    return {name: build(folder / f"{name}.h5") for name, (build, _) in HOSTILE.items()}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_file_refused_in_bounded_memory(hostile, name):
    got = _probe(hostile[name])
    assert "error" in got, got
    assert HOSTILE[name][1] in got["error"], got["error"]
    assert got["peak"] < MEMORY_CEILING, f"{name}: peak {got['peak'] >> 20} MB"
    print(f"{name}: {hostile[name].stat().st_size} bytes, peak {got['peak'] >> 20} MB: {got['error']}")


def test_file_larger_than_the_ceiling_is_read_in_slices(tmp_path):
    path = large_valid(tmp_path / "large.h5")
    got = _probe(path)
    assert got.get("steps") == 2000, got
    assert got["peak"] < MEMORY_CEILING, f"peak {got['peak'] >> 20} MB for 300 MB of frames"
    print(f"large valid file: {path.stat().st_size} bytes, 300 MB of frames, peak {got['peak'] >> 20} MB")


def test_isolated_validation_is_held_to_its_memory_limit(tmp_path):
    path = large_valid(tmp_path / "large.h5", steps=400)
    assert validate_isolated(path, action_dim=4, image_sizes=IMAGE_SIZES).steps == 400
    with pytest.raises(DatasetError, match=str(path)):  # less than Python, numpy and h5py hold: refused, no crash
        validate_isolated(path, memory=32 << 20)


def test_validator_accepts_what_the_studio_writes(tmp_path):
    s = validate_file(write_episode_file(tmp_path / "ok.h5", episodes=3, steps=6), action_dim=4,
                      image_sizes=IMAGE_SIZES)
    assert (s.episodes, s.steps, s.image_size) == (3, 18, 64)
    with h5py.File(tmp_path / "fletcher.h5", "w") as f:  # shuffle + gzip + checksums, h5py's automatic chunks
        g = _episode(f.create_group("data"), 30, frames={"compression": "gzip", "shuffle": True, "fletcher32": True})
        g.create_dataset("states", data=np.ones((30, 50)), compression="gzip", shuffle=True, fletcher32=True)
    assert validate_file(tmp_path / "fletcher.h5").steps == 30


def test_nan_in_a_compressed_array_is_found(tmp_path):
    with h5py.File(tmp_path / "nan.h5", "w") as f:
        g = _episode(f.create_group("data"), 30)
        states = np.ones((30, 50))
        states[17, 3] = np.inf
        g.create_dataset("states", data=states, chunks=(4, 50), compression="gzip")
    with pytest.raises(DatasetError, match="demo_0/states contains NaN or inf"):
        validate_file(tmp_path / "nan.h5")


# Through the API --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack():
    yield from stack_fixture("embedded")


@pytest.fixture(scope="module")
def api(stack):
    from fastapi.testclient import TestClient

    with TestClient(stack.app(reaper=False)) as http:
        yield http


def _leftovers(stack) -> list[str]:
    art = stack.settings().artifacts
    return sorted(p.name for sub in ("uploads", "datasets") if (art / sub).exists() for p in (art / sub).iterdir())


def _upload(api, path: Path, name: str):
    with path.open("rb") as f:
        return api.post("/api/v1/datasets", files={"file": (path.name, f, "application/x-hdf5")}, data={"name": name})


@pytest.mark.parametrize("name", ["declared_frames", "gzip_bomb", "gzip_bomb_spread", "chunk_bomb", "small_frames",
                                  "flat_actions", "external_storage"])
def test_hostile_upload_is_422_and_leaves_nothing(stack, api, hostile, name):
    before = _leftovers(stack)
    r = _upload(api, hostile[name], f"hostile-{name.replace('_', '-')}")
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["message"].startswith("file: upload: ") and HOSTILE[name][1] in body["message"], body
    assert body["detail"][0]["loc"] == ["body", "file"]
    assert str(hostile[name].parent) not in r.text and "/uploads/" not in r.text
    assert _leftovers(stack) == before


@pytest.mark.parametrize(("method", "url", "body"), [
    ("POST", "/api/v1/runs", {"kind": "collect", "params": {"tasks": "reach-v3", "episodes": 1}, "parent_id": BIG}),
    ("POST", "/api/v1/runs", {"kind": "train_policy", "params": {"dataset_id": BIG}}),
    ("POST", "/api/v1/runs", {"kind": "train_wm", "params": {"dataset_id": 1, "extra_dataset_ids": [BIG]}}),
    ("POST", "/api/v1/runs", {"kind": "train_reward", "params": {"world_model": "run:1", "dataset_ids": [BIG]}}),
    ("POST", "/api/v1/runs", {"kind": "rft", "params": {"policy": "run:1", "world": "sim", "dataset_id": BIG}}),
    ("POST", "/api/v1/runs", {"kind": "evaluate", "params": {"exclude_dataset_ids": [BIG]}}),
    ("POST", "/api/v1/runs", {"kind": "evaluate", "params": {"policies": [f"run:{BIG}"]}}),
    ("POST", "/api/v1/runs", {"kind": "wm_eval", "params": {"policies": [f"artifact:{BIG}"], "world_model": "run:1",
                                                             "reward_model": "run:1"}}),
    ("POST", "/api/v1/compare", {"policy_a": "expert", "policy_b": f"run:{BIG}"}),
    ("POST", "/api/v1/imagine", {"task": "reach-v3", "world_model": f"run:{BIG}"}),
    ("POST", "/api/v1/imagine", {"task": "reach-v3", "world_model": "run:9999999999"}),
    ("POST", "/api/v1/runs", {"kind": "collect", "params": {"tasks": "reach-v3", "episodes": 1,
                                                             "policy": "artifact:2147483648"}}),
    ("POST", "/api/v1/datasets/collect", {"tasks": "reach-v3", "episodes": BIG}),
    ("GET", f"/api/v1/runs?parent_id={BIG}", None),
    ("GET", f"/api/v1/runs?offset={BIG}", None),
    ("GET", f"/api/v1/runs?limit={BIG}", None),
    ("GET", f"/api/v1/runs/{BIG}", None),
    ("POST", f"/api/v1/runs/{BIG}/cancel", None),
    ("POST", f"/api/v1/runs/{BIG}/resume", None),
    ("DELETE", f"/api/v1/runs/{BIG}", None),
    ("GET", f"/api/v1/runs/{BIG}/metrics", None),
    ("GET", f"/api/v1/runs/1/metrics?since={BIG}", None),
    ("GET", f"/api/v1/runs/1/metrics?after_id={BIG}", None),
    ("GET", f"/api/v1/runs/{BIG}/logs", None),
    ("GET", f"/api/v1/runs/1/logs?since={BIG}", None),
    ("GET", f"/api/v1/runs/{BIG}/artifacts", None),
    ("GET", f"/api/v1/runs/{BIG}/artifacts/videos/a.mp4", None),
    ("GET", f"/api/v1/runs/{BIG}/evaluations", None),
    ("GET", f"/api/v1/evaluations?offset={BIG}", None),
    ("GET", f"/api/v1/datasets?offset={BIG}", None),
    ("GET", f"/api/v1/datasets/{BIG}", None),
    ("GET", f"/api/v1/datasets/{BIG}/download", None),
    ("DELETE", f"/api/v1/datasets/{BIG}", None),
    ("GET", f"/api/v1/datasets/{BIG}/episodes", None),
    ("GET", f"/api/v1/datasets/1/episodes?offset={BIG}", None),
    ("GET", f"/api/v1/datasets/1/episodes/{BIG}/video", None),
    ("GET", f"/api/v1/checkpoints?limit={BIG}", None),
])
@pytest.mark.parametrize("value", [BIG, 2**64, 10**30])
def test_ids_beyond_the_database_are_422(api, method, url, body, value):
    text = json.dumps(body).replace(str(BIG), str(value)) if body is not None else None
    r = api.request(method, url.replace(str(BIG), str(value)), content=text,
                    headers={"content-type": "application/json"} if text else None)
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], list) and r.json()["message"]


@pytest.mark.parametrize(("body", "needle"), [
    ({"kind": "collect", "params": {"tasks": "reach-v3", "episodes": 1, "max_steps": 1}},
     "params.max_steps: Input should be greater than or equal to 10"),
    ({"kind": "collect", "params": {"tasks": "reach-v3", "episodes": 1, "max_steps": 9, "keep_failures": True}},
     "params.max_steps"),
    ({"kind": "rft", "params": {"policy": "run:1", "world_model": "run:1", "dataset_id": 1,
                                "options": {"bogus": 1}}}, "params.options.bogus: Extra inputs are not permitted"),
    ({"kind": "rft", "params": {"policy": "run:1", "world_model": "run:1", "dataset_id": 1,
                                "options": {"reward_source": "imagination"}}},
     "params.options.reward_source: Input should be 'wm', 'sim' or 'action_l1'"),
    ({"kind": "rft", "params": {"policy": "run:1", "world_model": "run:1", "dataset_id": 1,
                                "options": {"group_size": -5}}},
     "params.options.group_size: Input should be greater than or equal to 2"),
    ({"kind": "rft", "params": {"policy": "run:1", "world": "sim", "reward": "success",
                                "options": {"group_size": -5}}},
     "params.options.group_size: Input should be greater than or equal to 2"),
    ({"kind": "rft", "params": {"policy": "run:1", "world": "sim", "reward": "success",
                                "options": {"reward_source": "sim"}}},
     "params.options.reward_source: Extra inputs are not permitted"),
])
def test_doomed_runs_are_refused_at_submit(api, body, needle):
    r = api.post("/api/v1/runs", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.json()["message"], r.json()["message"]


def test_collect_route_refuses_max_steps_1(api):
    r = api.post("/api/v1/datasets/collect", json={"tasks": "reach-v3", "episodes": 1, "max_steps": 1})
    assert r.status_code == 422 and "max_steps" in r.json()["message"], r.text


def test_error_bodies_have_their_documented_shape(api):
    from backend.schemas import ErrorOut, ValidationErrorOut

    ErrorOut.model_validate(api.get("/api/v1/runs/424242").json())
    ValidationErrorOut.model_validate(api.get("/api/v1/runs/0").json())
    r = api.post("/api/v1/datasets", files={"file": ("x.h5", b"plain text", "application/x-hdf5")},
                 data={"name": "plain"})
    assert r.status_code == 422
    assert ValidationErrorOut.model_validate(r.json()).detail[0].loc == ["body", "file"]


def test_an_unexpected_error_is_a_json_500_that_does_not_escape():
    """The exception is answered, not re-raised to the server (which would drop a keep-alive connection)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from backend.api import errors

    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    def boom() -> None:
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    with TestClient(app, raise_server_exceptions=True) as http:
        r = http.get("/boom")
    assert r.status_code == 500 and r.json() == {"message": "internal error (OverflowError)",
                                                 "detail": "internal error (OverflowError)"}


# Failure messages of runs ----------------------------------------------------------------------

def _ctx(stack, run_id: int = 777) -> SimpleNamespace:
    cfg = stack.settings()
    return SimpleNamespace(settings=cfg, url=cfg.db_url, run_id=run_id, log=lambda *a, **k: None,
                           sim_progress=lambda *a, **k: None)


def test_failure_messages_name_datasets_not_server_paths(stack, api, tmp_path):
    from sqlalchemy import select

    from backend.db import session_scope
    from backend.models import Dataset
    from workers.jobs import without_paths

    ds = _upload(api, write_episode_file(tmp_path / "eps.h5"), "paths-eps").json()
    with session_scope(stack.settings().db_url) as s:
        rel = s.scalar(select(Dataset.path).where(Dataset.id == ds["id"]))
    art, ctx = stack.settings().artifacts, _ctx(stack)
    assert without_paths(f"dataset {art / rel} does not exist", ctx) == \
        f"dataset 'paths-eps' (id {ds['id']}) does not exist"
    assert without_paths(f"dataset {ds['id']}'s file {art / rel} is missing", ctx) == \
        f"dataset {ds['id']}'s file is missing"
    assert without_paths(f"{art}/datasets/collect-run12.h5 contains no episodes", ctx) == \
        "the dataset of run 12 contains no episodes"
    assert without_paths(f"[Errno 2] No such file: '{art}/runs/5/ckpt' under {art}", ctx) == \
        "[Errno 2] No such file: 'runs/5/ckpt' under the artifact folder"


def test_a_failing_collect_names_its_run_not_its_file(stack):
    """An expert that cannot succeed within max_steps keeps no episode: the run fails naming the dataset of
    the run, not the file's path on the server."""
    from backend.params import CollectParams
    from workers.jobs import JOBS

    params = CollectParams(tasks="reach-v3", episodes=1, max_steps=10)
    with pytest.raises(DatasetError) as err:
        JOBS["collect"](params, _ctx(stack, run_id=31337))
    assert str(err.value) == "the dataset of run 31337 contains no episodes (no data/demo_K groups)"
    (stack.settings().artifacts / "datasets" / "collect-run31337.h5").unlink(missing_ok=True)
