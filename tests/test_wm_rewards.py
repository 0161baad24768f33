"""Verified reward and the reward-fidelity helpers (chunk groups, baselines, rank correlation, state selection)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.rewards import RewardInputError, action_l1, per_frame_distance, ssim_distance, verified_reward
from models.world_model.fidelity import (
    Candidate,
    FidelityConfig,
    _balanced,
    chunk_groups,
    hand_path_reward,
    spearman,
)


def _frames(b=4, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, 16, 16, generator=g)


def test_reward_is_minus_mean_absolute_error():
    ref = _frames()
    pred = ref.clone()
    pred[1] += 0.1
    pred[2, 0] += 0.3  # only the first of three frames
    r = verified_reward(pred.clamp(0, 1), ref)
    assert r.shape == (4,)
    assert r[0] == 0 and r[3] == 0
    expected1 = -(pred[1].clamp(0, 1) - ref[1]).abs().mean()
    assert torch.isclose(r[1], expected1)
    assert r[2] < 0 and r[1] < 0


def test_reward_orders_by_distance_and_broadcasts_one_reference():
    ref = _frames(b=1)
    preds = torch.cat([ref + d for d in (0.0, 0.01, 0.05, 0.2)]).clamp(0, 1)
    r = verified_reward(preds, ref)
    assert torch.all(r[:-1] > r[1:])


def test_perceptual_term_adds_lambda_times_distance():
    ref = _frames(b=2)
    pred = (ref + 0.05 * torch.randn_like(ref)).clamp(0, 1)
    d0 = per_frame_distance(pred, ref, lam=0.0)
    d1 = per_frame_distance(pred, ref, lam=0.5, perceptual="ssim")
    s = ssim_distance(pred.flatten(0, 1), ref.flatten(0, 1)).reshape(2, 3)
    assert torch.allclose(d1, d0 + 0.5 * s, atol=1e-6)
    assert torch.all(s > 0)
    assert torch.allclose(ssim_distance(ref[0], ref[0]), torch.zeros(3), atol=1e-5)
    custom = per_frame_distance(pred, ref, lam=2.0, perceptual=lambda a, b: torch.ones(a.shape[0]))
    assert torch.allclose(custom, d0 + 2.0)


@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (4, 3, 1, 16, 16), (2, 3, 3, 16, 16)])
def test_reward_rejects_mismatched_shapes(shape):
    with pytest.raises(RewardInputError):
        verified_reward(torch.rand(*shape) if len(shape) == 4 else torch.rand(shape), _frames())
    with pytest.raises(RewardInputError, match="unknown perceptual"):
        verified_reward(_frames(), _frames(), lam=1.0, perceptual="lpips")


def test_spearman_matches_scipy_and_handles_ties_and_constants():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=16), rng.normal(size=16)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert spearman(x, 2 * x + 1) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, np.ones(16)))
    ties = np.array([1, 1, 2, 3.0])
    assert spearman(ties, np.array([0, 0, 1, 2.0])) == pytest.approx(1.0)


def test_chunk_groups_are_grpo_like_and_clipped():
    rng = np.random.default_rng(0)
    expert = np.clip(rng.normal(0, 0.5, (8, 4)), -1, 1).astype(np.float32)
    cfg = FidelityConfig(group=16, sigmas=(0.1, 0.3))
    groups = chunk_groups(rng, expert, cfg)
    assert set(groups) == {"sigma_0.1", "sigma_0.3", "mixed"}
    for g in groups.values():
        assert g.shape == (16, 8, 4) and g.min() >= -1 and g.max() <= 1
    dev = {k: np.abs(v - expert).mean() for k, v in groups.items()}
    assert dev["sigma_0.1"] < dev["sigma_0.3"] < dev["mixed"]


def test_kinematic_baselines():
    gt = np.zeros((8, 4), np.float32)
    chunks = np.zeros((3, 8, 4), np.float32)
    chunks[1, 0, 0] = 0.5  # one early step off: the whole later path is displaced
    chunks[2, 7, 0] = 0.5  # one late step off: only the last position
    chunks[2, :, 3] = 1.0  # gripper: ignored by the hand path, seen by action L1
    hp = hand_path_reward(chunks, gt)
    assert hp[0] == 0 and hp[1] == pytest.approx(-0.5) and hp[2] == pytest.approx(-0.5 / 8)
    l1 = action_l1(chunks, gt[None])
    assert l1[0] == 0 and l1[2] < l1[1] < 0


def test_state_selection_is_balanced_over_tasks():
    cands = [Candidate(e, t, task, 0.01) for e, task in enumerate(["a"] * 10 + ["b"] * 2 + ["c"] * 5) for t in (0,)]
    got = _balanced(cands, 6, np.random.default_rng(0))
    tasks = [c.task for c in got]
    assert len(got) == 6 and tasks.count("a") == 2 and tasks.count("b") == 2 and tasks.count("c") == 2
    assert len(_balanced(cands, 100, np.random.default_rng(0))) == len(cands)
