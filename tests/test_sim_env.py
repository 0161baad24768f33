"""Rendering (several environments, upright, sizes) and exact state restore."""

import numpy as np
import pytest

from sim.env import CAMERAS, SimEnv, SimError
from sim.experts import ExpertPolicy


def test_several_environments_in_one_process_render_non_black_frames():
    envs = [SimEnv(t) for t in ("reach-v3", "push-v3", "drawer-open-v3", "button-press-topdown-v3")]
    try:
        frames = []
        for env in envs:
            env.reset(env.sample_start(seed=1))
            frames.append(env.render())
        for env in reversed(envs):  # rendering again after the others keeps working
            f = env.render()
            assert f.shape == (64, 64, 3) and f.dtype == np.uint8
            assert f.mean() > 40 and f.std() > 10, "black or blank frame"
        # the tasks look different
        assert np.abs(frames[0].astype(int) - frames[2].astype(int)).mean() > 3
    finally:
        for env in envs:
            env.close()


@pytest.mark.parametrize("camera", ["workspace", "corner"])
def test_frames_are_upright_and_hand_motion_goes_the_right_way(camera):
    """Upright: moving the hand up moves the gripper up in the image."""
    env = SimEnv("reach-v3", camera=camera)
    try:
        rows = []
        for z in (0.12, 0.28):
            start = env.sample_start(seed=0)
            start = type(start)(task=start.task, rand_vec=start.rand_vec, hand_init=(0.0, 0.6, z))
            env.reset(start)
            env_mask = _gripper_mask(env.render())
            rows.append(np.nonzero(env_mask)[0].mean())
        assert rows[1] < rows[0] - 2, rows  # higher hand → smaller row index
    finally:
        env.close()


def _gripper_mask(frame: np.ndarray) -> np.ndarray:
    # the Sawyer's fingers are the only cyan pixels in the scene
    f = frame.astype(int)
    return (f[..., 1] > 120) & (f[..., 2] > 120) & (f[..., 0] < 100)


def test_the_fixed_cameras_are_rotated_not_mirrored():
    """MetaWorld's corner camera renders rotated by 180°; +x hand motion must move right."""
    env = SimEnv("reach-v3", camera="corner")
    try:
        cols = []
        for x in (-0.15, 0.15):
            start = env.sample_start(seed=0)
            env.reset(type(start)(task=start.task, rand_vec=start.rand_vec, hand_init=(x, 0.6, 0.2)))
            cols.append(np.nonzero(_gripper_mask(env.render()))[1].mean())
        assert cols[1] > cols[0] + 2, cols
    finally:
        env.close()


@pytest.mark.parametrize("size", [128, 224])
def test_larger_frames(size):
    env = SimEnv("push-v3", image_size=size)
    try:
        env.reset(env.sample_start(seed=0))
        f = env.render()
        assert f.shape == (size, size, 3) and f.mean() > 40
    finally:
        env.close()


def test_bad_camera_and_size_are_rejected():
    with pytest.raises(SimError, match="unknown camera"):
        SimEnv("push-v3", camera="fisheye")
    with pytest.raises(SimError, match="image size"):
        SimEnv("push-v3", image_size=100)
    assert "workspace" in CAMERAS and "corner4" in CAMERAS


def test_restoring_a_recorded_state_reproduces_frames_and_replays_exactly():
    env = SimEnv("push-v3")
    try:
        start = env.sample_start(seed=2)
        obs = env.reset(start)
        expert = ExpertPolicy("push-v3")
        frames, states, actions, rewards = [obs.frame], [env.state()], [], []
        for _ in range(40):
            a = expert(obs.env_obs)
            obs, r, _ = env.step(a)
            frames.append(obs.frame)
            states.append(env.state())
            actions.append(a)
            rewards.append(r)
        other = SimEnv("push-v3")  # a fresh environment of the same task
        try:
            o = other.restore(start, states[25])
            assert np.array_equal(o.frame, frames[25])
            for k in range(25, 40):
                o, r, _ = other.step(actions[k])
                assert np.array_equal(o.frame, frames[k + 1])
                assert r == pytest.approx(rewards[k])
        finally:
            other.close()
        # restoring again in the environment that just stepped (no reset in between) is exact too
        for k in (5, 30, 12):
            assert np.array_equal(env.restore(start, states[k]).frame, frames[k])
            o, _, _ = env.step(actions[k])
            assert np.array_equal(o.frame, frames[k + 1])
        with pytest.raises(SimError, match="state has"):
            env.restore(start, states[0][:-3])
    finally:
        env.close()
