"""Episode files round-trip; bad files are rejected with a message naming the problem; loader windows."""

import h5py
import numpy as np
import pytest
import torch

from sim.episodes import DatasetError, Episode, EpisodeFile, EpisodeWriter, validate_file
from sim.loader import WindowDataset, split_episodes
from sim.perturb import StartState


def _episode(n=12, task="push-v3", seed=0):
    rng = np.random.default_rng(seed)
    return Episode(
        task=task, instruction="push the puck to the goal",
        frames=rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8),
        proprio=rng.normal(size=(n, 4)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, 4)).astype(np.float32),
        expert_actions=rng.uniform(-1, 1, (n, 4)).astype(np.float32),
        rewards=rng.uniform(0, 10, n).astype(np.float32),
        successes=np.arange(n) == n - 1,
        states=rng.normal(size=(n, 30)),
        env_obs=rng.normal(size=(n, 39)),
        start=StartState(task=task, rand_vec=(0.0, 0.6, 0.02, 0.1, 0.8, 0.02), hand_init=(0, 0.6, 0.2), seed=seed),
        action_noise=0.1,
    )


def test_round_trip(tmp_path):
    eps = [_episode(12, seed=1), _episode(9, task="reach-v3", seed=2)]
    path = tmp_path / "eps.h5"
    with EpisodeWriter(path, "workspace", 64, meta={"note": "x"}) as w:
        for ep in eps:
            w.add(ep)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"
    ef = EpisodeFile(path)
    assert len(ef) == 2 and ef.image_size == 64 and ef.action_dim == 4 and ef.camera == "workspace"
    for i, ep in enumerate(eps):
        got = ef.load(i)
        for k in ("frames", "proprio", "actions", "expert_actions", "rewards", "states"):
            np.testing.assert_array_equal(getattr(got, k), getattr(ep, k).astype(getattr(got, k).dtype))
        assert got.start == ep.start and got.task == ep.task and got.success and got.action_noise == 0.1
    with h5py.File(path) as f:  # robomimic / LIBERO layout
        assert f["data"].attrs["format_version"] == "vlarft-episodes/1"
        assert f["data/demo_0/obs/workspace_rgb"].shape == (12, 64, 64, 3)
        assert int(f["data"].attrs["total"]) == 21
    s = validate_file(path)
    assert s.episodes == 2 and s.steps == 21 and s.tasks == {"push-v3": 1, "reach-v3": 1}


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "eps.h5"
    with pytest.raises(RuntimeError), EpisodeWriter(path, "workspace", 64) as w:
        w.add(_episode())
        raise RuntimeError("killed mid-way")
    assert list(tmp_path.iterdir()) == []


def test_libero_layout_loads(tmp_path):
    path = tmp_path / "libero.h5"
    with h5py.File(path, "w") as f:
        d = f.create_group("data")
        d.attrs["problem_info"] = '{"language_instruction": "put the bowl on the plate"}'
        g = d.create_group("demo_0")
        g.create_dataset("obs/agentview_rgb", data=np.zeros((5, 128, 128, 3), np.uint8))
        g.create_dataset("obs/eye_in_hand_rgb", data=np.zeros((5, 128, 128, 3), np.uint8))
        g.create_dataset("obs/ee_pos", data=np.zeros((5, 3)))
        g.create_dataset("obs/gripper_states", data=np.zeros((5, 2)))
        g.create_dataset("actions", data=np.zeros((5, 7)))
    ef = EpisodeFile(path)
    ep = ef.load(0)
    assert ef.image_key == "agentview_rgb" and ef.action_dim == 7
    assert ep.instruction == "put the bowl on the plate" and ep.proprio.shape == (5, 4)
    assert validate_file(path).action_dim == 7


def test_bad_files(tmp_path):
    good = tmp_path / "good.h5"
    with EpisodeWriter(good, "workspace", 64) as w:
        w.add(_episode(30))
    raw = good.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match=r"truncated|not a readable"):
        validate_file(truncated)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        validate_file(garbage)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("weights", data=np.zeros(3))
    with pytest.raises(DatasetError, match="no 'data' group"):
        validate_file(foreign)
    nan = tmp_path / "nan.h5"
    ep = _episode()
    ep.actions[3, 1] = np.nan
    with EpisodeWriter(nan, "workspace", 64) as w:
        w.add(ep)
    with pytest.raises(DatasetError, match="NaN"):
        validate_file(nan)
    with pytest.raises(DatasetError, match="does not exist"):
        EpisodeFile(tmp_path / "missing.h5")
    with pytest.raises(DatasetError, match="expected 128px"):
        validate_file(good, image_size=128)


def test_loader_windows_line_up_with_the_episode(tmp_path):
    path = tmp_path / "eps.h5"
    ep = _episode(20)
    with EpisodeWriter(path, "workspace", 64) as w:
        w.add(ep)
    ds = WindowDataset(path, context=2, horizon=8)
    assert len(ds) == 20 - 8  # t in [0, 11]: frames t+1..t+8 must exist
    item = ds[5]
    assert item["t"] == 5 and item["instruction"] == "push the puck to the goal"
    assert item["context"].shape == (2, 3, 64, 64) and item["context"].dtype == torch.uint8
    np.testing.assert_array_equal(item["context"][1].permute(1, 2, 0).numpy(), ep.frames[5])
    np.testing.assert_array_equal(item["context"][0].permute(1, 2, 0).numpy(), ep.frames[4])
    np.testing.assert_array_equal(item["future"].permute(0, 2, 3, 1).numpy(), ep.frames[6:14])
    np.testing.assert_allclose(item["actions"].numpy(), ep.actions[5:13])
    np.testing.assert_allclose(item["expert_actions"].numpy(), ep.expert_actions[5:13])
    np.testing.assert_allclose(item["proprio"].numpy(), ep.proprio[5])
    np.testing.assert_allclose(item["future_proprio"].numpy(), ep.proprio[6:14])
    first = ds[0]  # context before the episode start repeats frame 0
    np.testing.assert_array_equal(first["context"][0], first["context"][1])
    padded = WindowDataset(path, context=1, horizon=8, pad=True, in_memory=True)
    assert len(padded) == 20
    last = padded[19]
    assert last["mask"].tolist() == [True] + [False] * 7
    assert torch.all(last["actions"][1:] == 0)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["actions"].shape == (4, 8, 4) and len(batch["instruction"]) == 4


def test_split_is_per_task_and_disjoint(tiny_dataset):
    train, held = split_episodes(tiny_dataset, heldout_fraction=0.5, seed=0)
    assert not set(train) & set(held) and sorted(train + held) == [0, 1, 2, 3]
    ef = EpisodeFile(tiny_dataset)
    assert {ef.info(i).task for i in held} == {"drawer-open-v3", "button-press-topdown-v3"}
