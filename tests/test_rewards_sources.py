"""The reward sources of RFT behind one registry, and the helpers the reward-fidelity measurement shares."""

from __future__ import annotations

import numpy as np
import torch

from models.rewards import (
    REWARD_SOURCES,
    REWARDS,
    ActionL1Reward,
    RewardSource,
    action_l1,
    frames_to_tensor,
    replay_chunk,
)
from models.rft import RFTConfig


def test_the_registry_names_the_sources_rft_accepts():
    assert REWARD_SOURCES == tuple(REWARDS) == ("wm", "sim", "action_l1")
    assert all(issubclass(cls, RewardSource) for cls in REWARDS.values())
    assert [name for name, cls in REWARDS.items() if cls.needs_wm] == ["wm"]
    for name in REWARD_SOURCES:
        assert RFTConfig(reward_source=name).reward_source == name


def test_action_l1_is_one_function_for_rft_and_fidelity():
    rng = np.random.default_rng(0)
    gt = rng.uniform(-1, 1, (2, 8, 4)).astype(np.float32)
    actions = rng.uniform(-1, 1, (6, 8, 4)).astype(np.float32)  # B = 2 states, G = 3 chunks each
    source = REWARDS["action_l1"](wm=None, dataset="unused.h5", device=torch.device("cpu"), lam=0.0)
    assert isinstance(source, ActionL1Reward)
    r, info = source({}, torch.from_numpy(actions), torch.from_numpy(gt))
    assert r.shape == (2, 3) and info == {}
    for i in range(2):
        group = actions[3 * i : 3 * i + 3]
        expected = -np.abs(group - gt[i][None]).mean((1, 2))
        np.testing.assert_allclose(action_l1(group, gt[i][None]), expected)  # numpy, as fidelity calls it
        np.testing.assert_allclose(r[i].numpy(), expected, rtol=1e-6)


def test_frames_to_tensor_is_the_rewards_input_layout():
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8, 3), dtype=np.uint8)
    t = frames_to_tensor(frames)
    assert t.shape == (2, 3, 3, 8, 8) and t.dtype == torch.float32
    assert torch.equal(t, torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float() / 255.0)


def test_replay_chunk_restores_the_state_and_reproduces_the_frames():
    from sim.env import SimEnv

    rng = np.random.default_rng(0)
    with SimEnv("reach-v3", max_steps=100) as env:
        start = env.sample_start(seed=0, index=0)
        env.reset(start)
        for a in rng.uniform(-1, 1, (3, 4)):
            env.step(a)
        state = env.state()
        chunk = rng.uniform(-1, 1, (4, 4)).astype(np.float32)
        direct = np.stack([env.step(a)[0].frame for a in chunk])
        env.step(np.ones(4))  # move on: the replay must restore the state first
        frames = replay_chunk(env, start, state, chunk)
        assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
        np.testing.assert_array_equal(frames, direct)
        np.testing.assert_array_equal(replay_chunk(env, start, state, chunk), direct)
