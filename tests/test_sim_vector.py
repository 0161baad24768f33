"""Batched closed-loop episodes in the real simulator (sim/vector.py) behind the rollout interface."""

from __future__ import annotations

import numpy as np
import pytest

from models.worlds import SimWorld, make_world
from sim.env import SimEnv
from sim.errors import InputError
from sim.perturb import Perturbation
from sim.vector import StartRequest, VectorSim

TASK = "reach-v3"


def _reqs() -> list[StartRequest]:
    return [StartRequest(TASK, index=0), StartRequest(TASK, index=1), StartRequest(TASK, index=0)]


def test_slots_match_a_single_environment_step_for_step():
    chunks = np.random.default_rng(0).uniform(-1, 1, (3, 8, 4)).astype(np.float32)
    with VectorSim(max_steps=40, workers=1) as vec:
        frames, proprio = vec.reset(_reqs())
        res = vec.step(chunks)
    with SimEnv(TASK) as env:
        start = env.sample_start(Perturbation(), seed=0, index=1, stream="rl")
        obs = env.reset(start)
        assert np.array_equal(obs.frame, frames[1]) and np.allclose(obs.proprio, proprio[1])
        for a in chunks[1]:
            obs, _, _ = env.step(a)
    assert np.array_equal(res.frames[1], obs.frame)  # rendered only at the chunk's end, the same picture
    assert np.allclose(res.proprio[1], obs.proprio, atol=1e-6)
    assert np.array_equal(frames[0], frames[2]) and not np.array_equal(frames[0], frames[1])
    assert res.steps.tolist() == [8, 8, 8] and res.executed == 24


def test_done_slots_stay_put_and_the_cap_ends_episodes():
    with VectorSim(max_steps=12, workers=1) as vec:
        vec.reset(_reqs())
        zeros = np.zeros((3, 8, 4), np.float32)
        first = vec.step(zeros, live=np.array([True, False, True]))
        assert first.steps.tolist() == [8, 0, 8] and first.executed == 16
        second = vec.step(zeros)
        assert second.steps.tolist() == [12, 8, 12]  # capped at 12 inside the chunk
        assert second.done.tolist() == [True, False, True] and not second.success.any()
        third = vec.step(zeros)
        assert third.steps.tolist() == [12, 12, 12] and third.executed == 4 and third.done.all()
        assert np.array_equal(third.frames[0], second.frames[0])


def test_two_processes_give_the_same_episodes_as_one():
    chunks = np.random.default_rng(1).uniform(-1, 1, (3, 8, 4)).astype(np.float32)
    out = []
    for workers in (1, 2):
        with VectorSim(max_steps=40, workers=workers) as vec:
            vec.reset(_reqs())
            out.append(vec.step(chunks))
            assert vec.starts[0]["stream"] == "rl"
    assert np.array_equal(out[0].frames, out[1].frames) and np.array_equal(out[0].steps, out[1].steps)


def test_sim_world_obeys_the_rollout_interface():
    world = make_world("sim", max_steps=16, workers=1)
    try:
        assert isinstance(world, SimWorld)
        obs = world.reset(_reqs())
        assert obs.frames.shape == (3, 64, 64, 3) and obs.frames.dtype == np.uint8 and obs.proprio.shape == (3, 4)
        batch = obs.policy_batch(np.array([0, 2]), ["reach"] * 3)
        assert batch["context"].shape == (2, 1, 3, 64, 64) and batch["proprio"].shape == (2, 4)
        res = world.step(np.zeros((3, 8, 4), np.float32))
        assert res.obs.frames.shape == (3, 64, 64, 3) and res.success.dtype == bool and res.done.dtype == bool
        assert len(world.starts) == 3 and world.starts[1]["index"] == 1
    finally:
        world.close()
    with pytest.raises(InputError, match="unknown world"):
        make_world("mars")


def test_bad_chunks_are_refused():
    with VectorSim(max_steps=8, workers=1) as vec:
        vec.reset(_reqs()[:1])
        with pytest.raises(InputError, match="chunks must be"):
            vec.step(np.zeros((2, 8, 4)))
        with pytest.raises(InputError, match="at least one start"):
            vec.reset([])
