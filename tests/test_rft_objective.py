"""The GRPO pieces of models/rft.py against hand computations."""

import math

import pytest
import torch

from models.rft import PRESETS, RFTConfig, clipped_objective, group_advantages, make_config
from sim.errors import InputError


def test_group_advantages_are_normalised_within_each_group():
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 10.0], [-1.0, 0.0, 0.0, 1.0]])
    a = group_advantages(r)
    # group 0: mean 2.5, sample std sqrt(5/3)
    s = math.sqrt(5 / 3)
    assert torch.allclose(a[0], torch.tensor([-1.5, -0.5, 0.5, 1.5]) / (s + 1e-6))
    assert torch.all(a[1] == 0)  # no spread, no signal
    assert torch.allclose(a.mean(1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(a[0].std(), torch.tensor(1.0), atol=1e-5)


def test_clipped_objective_matches_a_hand_computation():
    eps, c = 0.2, 3.0
    old = torch.zeros(4, 1, 1)
    # ratios 1.5 (above 1+eps), 0.5 (below 1-eps), 1.1 (inside), 5.0 (large, negative advantage: dual clip)
    new = torch.log(torch.tensor([1.5, 0.5, 1.1, 5.0])).reshape(4, 1, 1)
    adv = torch.tensor([1.0, -2.0, 0.5, -1.0])
    loss, ratio = clipped_objective(new, old, adv, eps, c)
    # per sample objective by hand:
    #   A>0, r=1.5: min(1.5*1, 1.2*1) = 1.2
    #   A<0, r=0.5: min(0.5*-2, 0.8*-2) = -1.6; dual: max(-1.6, 3*-2) = -1.6
    #   A>0, r=1.1: min(0.55, 0.55) = 0.55
    #   A<0, r=5.0: min(-5, -1.2) = -5; dual: max(-5, -3) = -3
    expected = -(1.2 - 1.6 + 0.55 - 3.0) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(ratio.flatten(), torch.tensor([1.5, 0.5, 1.1, 5.0]))


def test_objective_broadcasts_one_advantage_to_every_action_dimension():
    old = torch.zeros(2, 8, 4)
    new = torch.full((2, 8, 4), 0.05, requires_grad=True)
    loss, _ = clipped_objective(new, old, torch.tensor([1.0, -1.0]), 0.2, 3.0)
    loss.backward()
    g = new.grad
    assert torch.all(g[0] < 0) and torch.all(g[1] > 0)  # raise the good chunk's log-prob, lower the bad one's
    assert torch.allclose(g[0], g[0, 0, 0].expand_as(g[0]))


def test_presets_and_bad_options():
    assert PRESETS["gpu"].group_size == 16 and PRESETS["gpu"].batch_size == 16  # the paper's G and B
    assert make_config("smoke", steps=7).steps == 7
    with pytest.raises(InputError, match="unknown RFT preset"):
        make_config("huge")
    with pytest.raises(InputError, match="unknown RFT option"):
        make_config("smoke", temperature=3)
    with pytest.raises(InputError, match="reward source"):
        RFTConfig(reward_source="vibes")
    with pytest.raises(InputError, match="group-size"):
        RFTConfig(group_size=1)


def test_pipeline_and_rft_cli_bad_input(tmp_path):
    from conftest import assert_one_line_error, run_cli

    assert_one_line_error(run_cli("pipeline", "--preset", "huge", "--out", str(tmp_path / "p")), "preset")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert_one_line_error(run_cli("pipeline", "--preset", "smoke", "--out", str(tmp_path / "busy")), "not empty")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert_one_line_error(run_cli("rft", "--policy", str(tmp_path / "none"), "--dataset", str(tmp_path / "d.h5"),
                                  "--out", str(tmp_path / "o"), "--reward-source", "action_l1"), "none")
    assert_one_line_error(run_cli("rft", "--policy", str(tmp_path), "--dataset", str(tmp_path / "d.h5"),
                                  "--out", str(tmp_path / "o"), "--reward-source", "vibes"), "reward source")
