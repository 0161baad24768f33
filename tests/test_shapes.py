"""Models take their action, proprio and image shapes from the data, store them, and refuse other shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.episodes import Episode, EpisodeWriter, NoSimulatorError
from sim.errors import InputError


def write(path: Path, adim: int, pdim: int, size: int, episodes: int = 4, steps: int = 12) -> str:
    rng = np.random.default_rng(0)
    with EpisodeWriter(path, "front", size, meta={"sim_states": False}) as w:
        for e in range(episodes):
            x = np.linspace(0, 1, size)
            frames = np.stack([np.broadcast_to(((np.sin(6 * x + 0.3 * t + e)[:, None] + 1) * 120).astype(np.uint8)
                                               [..., None], (size, size, 3)) for t in range(steps)])
            a = rng.uniform(-1, 1, (steps, adim)).astype(np.float32)
            succ = np.arange(steps) >= steps - 3
            w.add(Episode(task="stack the blocks", instruction="stack the blocks", frames=frames,
                          proprio=rng.standard_normal((steps, pdim)).astype(np.float32), actions=a, expert_actions=a,
                          rewards=succ.astype(np.float32), successes=succ))
    return str(path)


@pytest.fixture(scope="module")
def data7(tmp_path_factory) -> str:
    return write(tmp_path_factory.mktemp("d") / "seven.h5", 7, 8, 128)


@pytest.fixture(scope="module")
def wm7(data7: str, tmp_path_factory) -> str:
    from models.world_model.train import train_world_model

    out = tmp_path_factory.mktemp("wm") / "wm"
    train_world_model(data7, str(out), preset="smoke", steps=4)
    return str(out)


def test_world_model_takes_shapes_from_data(wm7: str) -> None:
    import torch

    from models.checkpoint import read_config
    from models.world_model import load_world_model

    cfg = read_config(wm7, "world_model")["config"]
    assert (cfg["action_dim"], cfg["proprio_dim"], cfg["image_size"]) == (7, 8, 128)
    wm = load_world_model(wm7)
    with torch.no_grad():
        state = wm.begin(torch.rand(2, 1, 3, 128, 128))
        zs, proprio, _ = wm.unroll(state, torch.zeros(2, 3, 7))
        frames = wm.decode(zs, state.ctx)
    assert proprio.shape == (2, 3, 8) and frames.shape[-2:] == (128, 128)


def test_world_model_checkpoint_meets_other_shapes(wm7: str, tmp_path: Path) -> None:
    from models.world_model.train import train_world_model

    four = write(tmp_path / "four.h5", 4, 4, 128)
    with pytest.raises(InputError, match=r"4-D.*7-D"):
        train_world_model(four, str(tmp_path / "ft"), preset="smoke", steps=2, init_from=wm7)


def test_policy_shapes_and_no_simulator(data7: str, tmp_path: Path) -> None:
    from models.checkpoint import CheckpointError
    from models.policy.train import train_policy
    from models.policy_io import check_dataset_compat, eval_spec, load_policy

    out = tmp_path / "pol"
    train_policy(data7, str(out), preset="smoke", steps=2)
    policy = load_policy(out)
    c = policy.config
    assert (c.action_dim, c.proprio_dim, c.image_size) == (7, 8, 128)
    with pytest.raises(CheckpointError, match=r"4-D actions \(policy: 7-D\)"):
        check_dataset_compat(c, write(tmp_path / "four.h5", 4, 4, 128))
    with pytest.raises(NoSimulatorError, match="no simulator is attached"):
        eval_spec(out)


def test_simulator_reward_refuses_data_without_states(data7: str) -> None:
    from models.rewards import SimulatorReward

    with pytest.raises(NoSimulatorError, match="needs simulator states"):
        SimulatorReward(data7, lam=1.0)


def test_reward_model_takes_shapes_from_its_world_model(data7: str, wm7: str, tmp_path: Path) -> None:
    """A success classifier on a 7-D / 8-D / 128 px world model: its proprio input follows the world model,
    it is stored, and a dataset of another shape is refused naming both."""
    from models.checkpoint import read_config
    from models.reward_model import load_reward_model, train_reward_model
    from models.world_model import load_world_model
    from sim.episodes import DatasetError

    out = tmp_path / "rm"
    train_reward_model(wm7, data7, str(out), preset="smoke", steps=5, min_steps=2, confirm=1)
    assert read_config(out, "reward_model")["config"]["proprio_dim"] == 8
    rm = load_reward_model(out, load_world_model(wm7))
    assert rm.head[0].in_features == 4 * rm.cfg.channels + 8
    with pytest.raises(DatasetError, match=r"4-D proprio and 4-D actions.*8-D proprio and 7-D actions"):
        train_reward_model(wm7, write(tmp_path / "four.h5", 4, 4, 128), str(tmp_path / "rm4"), preset="smoke",
                           steps=2)
