"""GRPO training end to end on smoke models: what trains, the reference rollout, a known-answer toy, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sim.loader import WindowDataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_policy(tiny_dataset, tmp_path_factory) -> Path:
    from models.policy.train import train_policy

    out = tmp_path_factory.mktemp("policy") / "p"
    train_policy(str(tiny_dataset), str(out), preset="smoke")
    return out


@pytest.fixture(scope="module")
def smoke_wm(tiny_dataset, tmp_path_factory) -> Path:
    from models.world_model.train import train_world_model

    out = tmp_path_factory.mktemp("wm") / "wm"
    train_world_model(str(tiny_dataset), str(out), preset="smoke")
    return out


def _state(path: Path) -> dict[str, torch.Tensor]:
    from models.policy_io import load_policy

    return {k: v.clone() for k, v in load_policy(path).state_dict().items()}


def test_only_the_head_its_projections_and_the_sigma_net_change(smoke_policy, smoke_wm, tiny_dataset, tmp_path):
    from models.rft import train_rft

    out = tmp_path / "rft"
    summary = train_rft(str(smoke_policy), str(smoke_wm), str(tiny_dataset), str(out), steps=2, preset="smoke",
                        lr_head=1e-2, lr_sigma=1e-2)
    assert summary["complete"] and summary["steps"] == 2
    before, after = _state(smoke_policy), _state(out)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    trainable_prefixes = ("head.", "fuse.", "text_proj.", "proprio_proj.", "sigma_net.")
    assert all(k.startswith(trainable_prefixes) for k in changed), sorted(changed)
    assert not any(k.startswith("vision.") for k in changed)
    assert any(k.startswith("sigma_net.") for k in changed) and any(k.startswith("head.") for k in changed)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward_mean", "reward_std", "adv_std", "clip_frac", "approx_kl", "entropy", "sigma_mean",
                "grad_norm", "step_time"):
        assert key in rows[-1], key


def test_the_reference_rollout_is_multi_step(smoke_wm, tiny_dataset):
    """ô^ref_t comes from the model's own ô^ref_{t-1}, not from a one-step prediction off the real frame."""
    from models.world_model import load_world_model

    wm = load_world_model(smoke_wm)
    item = WindowDataset(tiny_dataset, context=1, horizon=8)[3]
    ctx, gt, real = item["context"][None], item["actions"][None], item["future"]
    multi = wm.rollout(ctx, gt)[0]  # (8, 3, H, W)
    one_step = torch.stack([wm.rollout(real[t - 1][None, None], gt[:, t : t + 1])[0, 0] for t in range(1, 8)])
    assert torch.allclose(multi[0], wm.rollout(ctx, gt[:, :1])[0, 0], atol=1e-5)  # same first step
    gap = (multi[1:] - one_step).abs().mean(dim=(1, 2, 3))
    assert gap.min() > 1e-4, gap  # every later reference frame differs from the teacher-forced one


def test_grpo_raises_the_reward_on_a_toy_with_a_known_answer(smoke_policy, tiny_dataset, tmp_path):
    """Reward = −|a − a_gt| (the answer: copy the ground truth). GRPO must move the policy towards it."""
    from models.policy_io import load_policy
    from models.rft import _collate, train_rft

    data = WindowDataset(tiny_dataset, context=1, horizon=8)
    batch = _collate([data[i] for i in range(0, len(data), max(1, len(data) // 24))])

    def l1(path: Path) -> float:
        with torch.no_grad():
            return float((load_policy(path).act(batch) - batch["actions"]).abs().mean())

    out = tmp_path / "toy"
    summary = train_rft(str(smoke_policy), None, str(tiny_dataset), str(out), steps=40, preset="smoke",
                        reward_source="action_l1", batch_size=8, group_size=8, lr_head=3e-3, lr_sigma=1e-3,
                        checkpoint_every=40)
    assert summary["reward_last"] > summary["reward_first"], summary
    assert l1(out) < l1(smoke_policy), (l1(out), l1(smoke_policy))


def test_resume_after_kill(smoke_policy, tiny_dataset, tmp_path):
    out = tmp_path / "resume"
    cmd = [sys.executable, "-m", "cli.main", "rft", "--policy", str(smoke_policy), "--dataset", str(tiny_dataset),
           "--out", str(out), "--preset", "smoke", "--reward-source", "action_l1", "--checkpoint-every", "1", "--json"]
    proc = subprocess.Popen([*cmd, "--steps", "400"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    metrics = out / "metrics.jsonl"
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 6):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(metrics.read_text().splitlines())
    assert 6 <= killed_at < 400
    total = killed_at + 5
    res = subprocess.run([*cmd, "--steps", str(total), "--resume"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, total + 1)), steps  # no step lost, none logged twice
    assert json.loads(res.stdout)["steps"] == total
