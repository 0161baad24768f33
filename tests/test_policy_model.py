"""The VLA policy module: shapes, the deterministic ODE, the SDE's log-probabilities, normalisation, input errors."""

from __future__ import annotations

import math

import pytest
import torch

from models.policy.config import PRESETS, PolicyConfig
from models.policy.model import VLAPolicy
from models.policy.processor import Normalizer, random_shift
from models.policy.text import InstructionEncoder, InstructionError, check_instruction

INSTRUCTIONS = ["press the button from the top", "open the drawer"]


def tiny_config(**kw) -> PolicyConfig:
    d = PRESETS["smoke"].policy.to_json()
    d.update(kw)
    return PolicyConfig.from_json(d)


@pytest.fixture(scope="module")
def text() -> InstructionEncoder:
    enc = InstructionEncoder()
    enc.warm(INSTRUCTIONS)
    return enc


@pytest.fixture()
def policy(text) -> VLAPolicy:
    torch.manual_seed(0)
    p = VLAPolicy(tiny_config(), InstructionEncoder(text.cache))
    # non-trivial normalisation, so raw and normalised actions differ clearly
    p.action_norm.center.copy_(torch.tensor([0.3, -0.2, 0.1, 0.5]))
    p.action_norm.scale.copy_(torch.tensor([0.2, 0.4, 0.3, 0.1]))
    p.action_norm.low.fill_(-1.0)
    p.action_norm.high.fill_(1.0)
    # a σ-net that depends on its input, so per-step σ varies as it will after RFT
    torch.nn.init.normal_(p.sigma_net.net.out.weight, std=0.5)
    return p.eval()


def make_batch(b: int = 2, size: int = 64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "context": torch.randint(0, 256, (b, 1, 3, size, size), dtype=torch.uint8, generator=g),
        "proprio": torch.randn(b, 4, generator=g),
        "instruction": [INSTRUCTIONS[i % 2] for i in range(b)],
    }


def test_shapes(policy):
    batch = make_batch(3)
    assert policy.encode(batch).shape == (3, policy.config.cond_dim)
    assert policy.act(batch).shape == (3, 8, 4)
    s = policy.sample_sde(batch, num_samples=5)
    k = policy.config.euler_steps
    assert s.actions_norm.shape == s.actions.shape == s.log_prob.shape == s.sigma.shape == (15, 8, 4)
    assert s.chain.shape == (15, k + 1, 8, 4)
    assert torch.equal(s.chain[:, -1], s.actions_norm)
    assert policy.log_prob_of(batch, s.chain).shape == (15, 8, 4)
    assert policy.entropy_of(batch, s.chain).shape == (15, 8, 4)
    loss = policy.flow_matching_loss(batch, torch.rand(3, 8, 4) * 2 - 1)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_deterministic_mode_repeats(policy):
    batch = make_batch(2)
    a, b = policy.act(batch), policy.act(batch)
    assert torch.equal(a, b)
    # …and depends on the observation
    assert not torch.allclose(a, policy.act(make_batch(2, seed=1)))


def test_sde_log_prob_equals_direct_computation(policy):
    batch = make_batch(2)
    s = policy.sample_sde(batch, num_samples=3, generator=torch.Generator().manual_seed(1))
    k_steps = policy.config.euler_steps
    with torch.no_grad():
        cond = policy.encode(batch).repeat_interleave(3, dim=0)
        direct = torch.zeros_like(s.log_prob)
        for k in range(k_steps):
            x, nxt = s.chain[:, k], s.chain[:, k + 1]
            t = torch.full((6,), k / k_steps)
            mean = x - policy.head(x, t, cond) / k_steps
            sigma = policy.sigma_net(x, t, cond)
            direct += torch.distributions.Normal(mean, sigma).log_prob(nxt)
    torch.testing.assert_close(s.log_prob, direct, rtol=1e-5, atol=1e-4)
    # recomputed under the same parameters, with gradients for the PPO ratio
    recomputed = policy.log_prob_of(batch, s.chain)
    torch.testing.assert_close(recomputed, s.log_prob, rtol=1e-5, atol=1e-4)
    recomputed.sum().backward()
    assert policy.head.out.weight.grad is not None and policy.sigma_net.net.out.weight.grad is not None


def test_sde_rows_are_grouped_row_major(policy):
    batch = make_batch(2)
    s = policy.sample_sde(batch, num_samples=4)
    # rows 0..3 belong to item 0, rows 4..7 to item 1: scoring each group against its own item alone agrees
    for b in range(2):
        single = {k: v[b : b + 1] for k, v in batch.items()}
        lp = policy.log_prob_of(single, s.chain[4 * b : 4 * b + 4])
        torch.testing.assert_close(lp, s.log_prob[4 * b : 4 * b + 4], rtol=1e-5, atol=1e-4)
    swapped = policy.log_prob_of({**batch, "instruction": batch["instruction"][::-1]}, s.chain)
    assert not torch.allclose(swapped, s.log_prob)


def test_sde_sample_statistics_match_sigma(policy):
    batch = make_batch(1)
    n = 4000
    s = policy.sample_sde(batch, num_samples=n, generator=torch.Generator().manual_seed(2))
    c = policy.config
    with torch.no_grad():
        cond = policy.encode(batch).expand(n, -1)
        for k in (0, c.euler_steps // 2, c.euler_steps - 1):
            x = s.chain[:, k]
            t = torch.full((n,), k / c.euler_steps)
            mean = x - policy.head(x, t, cond) / c.euler_steps
            sigma = policy.sigma_net(x, t, cond)
            z = (s.chain[:, k + 1] - mean) / sigma  # standardised step noise: N(0, 1) per dimension
            assert abs(float(z.mean())) < 0.02
            assert abs(float(z.std()) - 1.0) < 0.02
            assert abs(float(z.reshape(n, -1).std(0).mean()) - 1.0) < 0.03
    assert float(s.sigma.min()) >= c.sigma_min - 1e-6 and float(s.sigma.max()) <= c.sigma_max + 1e-6


def test_sigma_is_squashed_into_range(policy):
    c = policy.config
    with torch.no_grad():
        policy.sigma_net.net.out.bias.fill_(50.0)
        hi = policy.sample_sde(make_batch(1), 8).sigma
        policy.sigma_net.net.out.bias.fill_(-50.0)
        lo = policy.sample_sde(make_batch(1), 8).sigma
    assert torch.allclose(hi, torch.full_like(hi, c.sigma_max), rtol=1e-4)
    assert torch.allclose(lo, torch.full_like(lo, c.sigma_min), rtol=1e-4)
    fresh = VLAPolicy(tiny_config(), policy.text)
    mid = fresh.sample_sde(make_batch(1), 4).sigma
    assert torch.allclose(mid, torch.full_like(mid, math.sqrt(c.sigma_min * c.sigma_max)), rtol=1e-4)


def test_actions_leave_the_policy_unnormalised(policy):
    """The paper's released code fed normalised actions to a world model trained on raw ones."""
    batch = make_batch(2)
    s = policy.sample_sde(batch, num_samples=3)
    expected = (s.actions_norm * policy.action_norm.scale + policy.action_norm.center).clamp(-1, 1)
    torch.testing.assert_close(s.actions, expected)
    assert (s.actions - s.actions_norm).abs().mean() > 0.1
    raw = policy.act(batch)
    torch.testing.assert_close(raw, (policy.act_norm(batch) * policy.action_norm.scale
                                     + policy.action_norm.center).clamp(-1, 1))
    # the BC loss takes raw ground truth: feeding it normalised actions gives a different loss
    gt = s.actions[::3]  # one chunk per item
    torch.manual_seed(3)
    l_raw = policy.flow_matching_loss(batch, gt)
    torch.manual_seed(3)
    direct = policy.fm_loss_from_cond(policy.encode(batch), policy.action_norm.normalize(gt))
    torch.testing.assert_close(l_raw, direct)
    torch.manual_seed(3)
    assert not torch.allclose(policy.flow_matching_loss(batch, s.actions_norm[::3]), l_raw)


def test_normalisation_round_trips():
    x = torch.randn(500, 4) * torch.tensor([0.3, 2.0, 0.1, 0.0]) + torch.tensor([0.5, -1.0, 0.0, 1.0])
    for kind in ("meanstd", "quantile"):
        n = Normalizer(4).fit(x, kind)
        torch.testing.assert_close(n.unnormalize(n.normalize(x)), x, rtol=1e-5, atol=1e-5)
        assert float(n.scale[3]) == 1.0  # a constant dimension keeps unit scale
    n = Normalizer(4).fit(x, "meanstd")
    z = n.normalize(x)
    assert torch.allclose(z[:, :3].mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z[:, :3].std(0), torch.ones(3), atol=1e-3)
    # unnormalised outputs stay inside the range the training data covered
    assert float(n.unnormalize(torch.full((1, 4), 100.0)).sub(x.max(0).values).abs().max()) < 1e-5


def test_rft_parameter_groups(policy):
    groups = policy.rft_parameter_groups()
    head_ids, sigma_ids = {id(p) for p in groups["head"]}, {id(p) for p in groups["sigma"]}
    assert head_ids and sigma_ids and not head_ids & sigma_ids
    vision_ids = {id(p) for p in policy.vision.parameters()}
    assert not vision_ids & (head_ids | sigma_ids)
    assert {id(p) for p in policy.head.parameters()} <= head_ids
    assert {id(p) for p in policy.sigma_net.parameters()} == sigma_ids
    state_ids = {id(p) for p in policy.state_head.parameters()}  # a BC-time auxiliary, used by nothing else
    every = {id(p) for p in policy.parameters()}
    assert every == head_ids | sigma_ids | vision_ids | state_ids


def test_instruction_errors_and_unicode(text):
    assert check_instruction("  open the drawer ") == "open the drawer"
    for bad in ("", "   ", "x" * 513, None):
        with pytest.raises(InstructionError):
            check_instruction(bad)
    enc = InstructionEncoder(text.cache)
    e = enc.encode(["appuyez sur le bouton ✓", "ボタンを押す"])
    assert e.shape == (2, 384) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-4)
    assert "appuyez sur le bouton ✓" in enc.cache
    with pytest.raises(InstructionError):
        enc.encode(["open the drawer", ""])


def test_random_shift_moves_content():
    img = torch.zeros(2, 3, 16, 16)
    img[:, :, 8, 8] = 1.0
    out = random_shift(img, 3, torch.Generator().manual_seed(0))
    assert out.shape == img.shape
    assert torch.equal(random_shift(img, 0), img)
    ys, xs = torch.nonzero(out[0, 0] == 1.0, as_tuple=True)
    assert len(ys) == 1 and abs(int(ys[0]) - 8) <= 3 and abs(int(xs[0]) - 8) <= 3


def test_state_loss_skips_unknown_targets(policy):
    vision = torch.randn(3, policy.vision.out_dim)
    state = torch.randn(3, 6)
    full = policy.state_loss(vision, state)
    assert full > 0
    partial = state.clone()
    partial[1] = float("nan")  # an episode file without MetaWorld observations
    lp = policy.state_loss(vision, partial)
    assert torch.isfinite(lp)
    keep = torch.tensor([0, 2])
    torch.testing.assert_close(lp, policy.state_loss(vision[keep], state[keep]))
    assert float(policy.state_loss(vision, torch.full((3, 6), float("nan")))) == 0.0
