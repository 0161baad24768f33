"""Closed-loop GRPO (models/rl.py) on toy worlds whose success is known, plus its bad-input paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from rl_toys import TASK, LineWorld, ode_mean_x, toy_policy

from models import worlds
from models.rl import (
    Actor,
    RLConfig,
    episode_rewards,
    group_advantages,
    make_config,
    rollout,
    start_requests,
    train_rl,
)
from sim.errors import InputError
from sim.perturb import Perturbation

ROOT = Path(__file__).resolve().parents[1]
TOY = {"tasks": TASK, "max_steps": 24, "workers": 1, "eval_every": 0, "checkpoint_every": 1}


@pytest.fixture
def policy(tmp_path) -> Path:
    return toy_policy(tmp_path / "policy")


@pytest.fixture
def toy_world(monkeypatch):
    def install(**kwargs):
        monkeypatch.setitem(worlds.WORLDS, "toy", partial(LineWorld, **kwargs))

    return install


def _rows(out: Path, split: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


@pytest.mark.parametrize("noise", ["gauss", "chunk"])
def test_grpo_raises_success_on_a_toy_world(noise, policy, toy_world, tmp_path):
    start = ode_mean_x(policy)
    toy_world(threshold=start + 0.05, chunks=1)  # one chunk per episode; the ODE alone just misses
    out = tmp_path / "rl"
    summary = train_rl(str(policy), str(out), world="toy", preset="smoke", steps=25, batch_size=4, group_size=8,
                       noise=noise, init_std=0.3 if noise == "gauss" else 0.1, lr_head=3e-3, lr_std=0.0,
                       kl_coef=0.0, update_epochs=4, minibatches=2,
                       **{**TOY, "eval_every": 25, "eval_episodes": 4})
    rows = _rows(out)
    assert summary["complete"] and len(rows) == 25
    first = rows[0]["train_success"]  # step 1's episodes come from the untrained policy
    last = np.mean([r["train_success"] for r in rows[-5:]])
    assert first < 0.6 and last > first + 0.3, (first, last)
    assert ode_mean_x(out) > start + 0.05  # the deterministic policy (what evaluation runs) now succeeds
    held = _rows(out, "heldout")
    assert held[0]["heldout_success"] == 0.0 and held[-1]["heldout_success"] == 1.0
    trained = [r for r in rows if r["rows"] > 0]
    assert trained and all(r["approx_kl"] > 0 and r["mixed_groups"] > 0 for r in trained), \
        "several passes per batch: the ratio must move"
    assert (out / "snapshots" / "step-25" / "config.json").exists()


def test_chunk_noise_is_one_offset_per_chunk(policy):
    from models.policy_io import load_policy

    model = load_policy(policy)
    actor = Actor(model, RLConfig(tasks=TASK, noise="chunk"), torch.full((4,), -1.0))
    cond = torch.randn(5, model.config.cond_dim)
    a, target, logp = actor.sample(cond, torch.Generator().manual_seed(0))
    offset = a - model.ode_from_cond(cond)
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-5)  # the same for all 8 actions
    assert logp.shape == (5, 4) and torch.allclose(actor.log_prob(cond, target), logp, atol=1e-5)


def test_rollout_records_only_chunks_of_live_episodes(policy):
    from models.policy_io import load_policy

    model = load_policy(policy)
    cfg = RLConfig(tasks=TASK, noise="gauss")
    actor = Actor(model, cfg, torch.full((4,), -1.0))
    lengths = {0: 1, 1: 3, 2: 2}
    world = LineWorld(lengths=lengths, always={1: True})
    reqs = start_requests((TASK,), [Perturbation()], 0, 3, 0, "rl")
    ro = rollout(world, actor, model, load_policy(policy), reqs, torch.Generator().manual_seed(0), 80)
    counts = torch.bincount(ro.episode, minlength=3).tolist()
    assert counts == [1, 3, 2]  # no decision (and so no loss) after an episode has ended
    assert ro.success.tolist() == [False, True, False]
    assert ro.log_prob.shape == (6, model.config.chunk, 4) and torch.isfinite(ro.log_prob).all()
    # exploring only chunk 1 of each episode: the others are deterministic and never recorded
    ro = rollout(world, actor, model, load_policy(policy), reqs, torch.Generator().manual_seed(0), 80,
                 explore=np.array([1, 1, 1]), explore_chunks=1)
    assert torch.bincount(ro.episode, minlength=3).tolist() == [0, 1, 1]


def test_group_advantages_are_zero_for_uniform_groups():
    rewards = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    adv, mixed = group_advantages(rewards)
    assert mixed.tolist() == [False, False, True]
    assert torch.equal(adv[:2], torch.zeros(2, 4))
    assert adv[2, 0] > 0 and (adv[2, 1:] < 0).all() and abs(float(adv[2].sum())) < 1e-5
    r = episode_rewards(np.array([True, True, False]), np.array([10, 100, 100]), RLConfig(max_steps=100,
                                                                                          speed_bonus=0.5))
    assert r.tolist() == pytest.approx([0.95, 0.5, 0.0])


def test_dynamic_sampling_drops_uniform_groups(policy, toy_world, tmp_path):
    # starts 0 and 1 of every round: one always succeeds, one always fails → no group is mixed
    always = {i: i % 2 == 0 for i in range(100)}
    toy_world(always=always, chunks=1)
    out = tmp_path / "rl"
    train_rl(str(policy), str(out), world="toy", preset="smoke", steps=2, batch_size=2, group_size=4,
             max_rounds=3, min_mixed=1, **TOY)
    rows = _rows(out)
    assert [r["groups"] for r in rows] == [6, 6]  # every round was sampled, looking for a mixed group
    assert all(r["mixed_fraction"] == 0.0 and r["rows"] == 0 for r in rows)  # and nothing was trained on
    before = ode_mean_x(policy)
    assert ode_mean_x(out) == pytest.approx(before)


def test_kl_to_the_base_policy_is_zero_at_start_and_pulls_back_after_drift(policy):
    from models.policy_io import load_policy
    from sim.tasks import get_task

    model, ref = load_policy(policy), load_policy(policy)
    cfg = RLConfig(tasks=TASK)
    actor = Actor(model, cfg, torch.full((4,), float(np.log(cfg.init_std))))
    batch = {"context": torch.zeros(8, 1, 3, 64, 64, dtype=torch.uint8), "proprio": torch.randn(8, 4),
             "instruction": [get_task(TASK).instruction] * 8}
    with torch.no_grad():
        parts = model.encode_parts(batch)
        cond = model.fuse_parts(*parts)
        _, target, logp = actor.sample(cond, torch.Generator().manual_seed(0))
        reference = actor.reference(ref.fuse_parts(*parts), ref, target)
        assert float(actor.kl_to_reference(cond, target, reference, logp).abs().max()) < 1e-6
        for p in model.head.parameters():  # drift: the head moves away from the base
            p.add_(0.02 * torch.randn_like(p))
    opt = torch.optim.SGD(list(model.head.parameters()), lr=0.02)
    kls = []
    for _ in range(30):
        c = model.fuse_parts(*parts)
        kl = actor.kl_to_reference(c, target, reference, actor.log_prob(c, target)).mean()
        kls.append(float(kl.detach()))
        opt.zero_grad()
        kl.backward()
        opt.step()
    assert kls[0] > 1e-3, "drift must show as KL to the base policy"
    assert kls[-1] < 0.5 * kls[0], kls  # the anchor alone pulls the policy back


RESUME_SCRIPT = """
import sys, functools
from models import worlds
from models.rl import train_rl
from rl_toys import LineWorld
worlds.WORLDS["toy"] = functools.partial(LineWorld, delay=0.15, chunks=2)
train_rl(sys.argv[1], sys.argv[2], world="toy", preset="smoke", steps=8, resume=True, tasks="reach-v3",
         max_steps=24, workers=1, eval_every=0, checkpoint_every=1, batch_size=2, group_size=4, init_std=0.5)
"""


def test_resume_after_kill_9_loses_no_step(policy, tmp_path):
    out = tmp_path / "rl"
    cmd = [sys.executable, "-c", RESUME_SCRIPT, str(policy), str(out)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "metrics.jsonl").exists() and len(_rows(out)) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(_rows(out))
    assert 3 <= killed_at < 8
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=120)
    steps = [r["step"] for r in _rows(out)]
    assert steps == list(range(1, 9)), steps  # every step once: none lost, none repeated
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["step"] == 8 and cfg["complete"] is True
    assert cfg["env_steps"] == _rows(out)[-1]["env_steps"]


@pytest.mark.parametrize("overrides, needle", [
    ({"group_size": 1}, "group-size"),
    ({"noise": "uniform"}, "noise"),
    ({"init_std": 5.0}, "init-std"),
    ({"tasks": "no-such-task"}, "no-such-task"),
    ({"clip_low": 1.5}, "clip-low"),
    ({"group_sise": 8}, "group_sise"),
])
def test_bad_config_is_one_clear_error(overrides, needle):
    with pytest.raises(InputError, match=needle):
        make_config("smoke", **overrides)


def test_cli_refuses_bad_rl_options_before_anything_runs(policy, tmp_path):
    base = ["rft", "--policy", str(policy), "--out", str(tmp_path / "o"), "--world", "sim", "--reward", "success"]
    assert_one_line_error(run_cli(*base, "--group-size", "1"), "group-size")
    assert_one_line_error(run_cli(*base, "--noise", "wide"), "noise")
    assert_one_line_error(run_cli(*base, "--std-min", "0.5", "--std-max", "0.2"), "std_min")
    assert_one_line_error(run_cli(*base, "--lr-sigma", "0.1"), "--lr-sigma applies only to the one-chunk rewards")
    assert_one_line_error(run_cli(*base[:-2], "--reward", "verified", "--clip-low", "0.1"),
                          "--clip-low applies only to --reward success")
    assert_one_line_error(run_cli(*base[:-2], "--reward", "verified", "--clip-eps", "2"), "--clip-eps")
    assert_one_line_error(run_cli(*base, "--dataset", str(tmp_path / "x.h5")), "--dataset")
    assert_one_line_error(run_cli(*base[:-4], "--world", "wm", "--reward", "success"), "success")
    assert_one_line_error(run_cli(*base[:-4], "--world", "moon"), "--world")
    assert_one_line_error(run_cli("rft", "--policy", str(tmp_path / "none"), "--out", str(tmp_path / "o2"),
                                  "--world", "sim", "--reward", "success"), "does not exist")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()
