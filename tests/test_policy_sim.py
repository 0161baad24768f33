"""A smoke-trained policy inside the real simulator: sim-eval runs it, and the simulator gets raw actions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from models.policy.text import InstructionError
from models.policy.train import train_policy
from models.policy_io import SimChunkPolicy, eval_spec
from sim.env import SimEnv
from sim.evaluate import EvalConfig, evaluate, run_episode


@pytest.fixture(scope="module")
def smoke_policy_dir(tiny_dataset, tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("simpolicy") / "smoke"
    train_policy(str(tiny_dataset), str(out), preset="smoke")
    torch.set_num_threads(before)
    return out


def test_eval_spec_describes_the_checkpoint(smoke_policy_dir, tiny_dataset):
    spec = eval_spec(str(smoke_policy_dir))
    assert spec.factory == "models.policy_io:build_sim_policy"
    assert (spec.camera, spec.image_size) == ("workspace", 64)
    assert spec.train_datasets == (str(Path(tiny_dataset).resolve()),)
    policy = spec.build()
    policy.reset("button-press-topdown-v3", "press the button from the top")
    with SimEnv("button-press-topdown-v3") as env:
        chunk = policy.act(env.reset(env.sample_start(stream="eval")))
    assert chunk.shape == (8, 4) and chunk.dtype == np.float32 and np.all(np.abs(chunk) <= 1.0)


def test_smoke_policy_runs_inside_sim_eval(smoke_policy_dir, tiny_dataset):
    spec = eval_spec(str(smoke_policy_dir))
    cfg = EvalConfig(tasks=("button-press-topdown-v3",), episodes=2, max_steps=24, workers=1)
    summary = evaluate(spec, cfg).summary
    (row,) = summary["rows"]
    assert row["episodes"] == 2 and 0 <= row["successes"] <= 2
    assert all(e["steps"] <= 24 for e in summary["episodes"])
    assert summary["starts_disjoint"] and str(Path(tiny_dataset).resolve()) in summary["disjoint_from_datasets"]
    # held-out paraphrases come from the checkpoint's instruction cache
    para = evaluate(spec, EvalConfig(tasks=("button-press-topdown-v3",), episodes=1, max_steps=8, workers=1,
                                     instruction_set="paraphrase")).summary
    assert para["episodes"][0]["instruction"] == "push the button down"


def test_sim_eval_cli_with_a_policy_folder(smoke_policy_dir, tmp_path):
    res = run_cli("sim-eval", "--policy", str(smoke_policy_dir), "--tasks", "drawer-open-v3", "--episodes", "1",
                  "--max-steps", "16", "--workers", "1", "--instruction", "tire le tiroir ✓", "--json")
    assert res.code == 0, res.stderr[-2000:]
    report = json.loads(res.stdout)
    assert report["rows"][0]["episodes"] == 1 and report["instruction_set"] == "custom"
    assert report["episodes"][0]["instruction"] == "tire le tiroir ✓"


class RecordingEnv:
    """Passes everything to a SimEnv and keeps the actions the simulator was given."""

    def __init__(self, env: SimEnv) -> None:
        self.env, self.actions = env, []
        self.spec = env.spec

    def reset(self, start):
        return self.env.reset(start)

    def step(self, action):
        self.actions.append(np.asarray(action, np.float32).copy())
        return self.env.step(action)

    def advance(self, action):
        self.actions.append(np.asarray(action, np.float32).copy())
        return self.env.advance(action)


class WatchingPolicy:
    """A chunk policy whose chunks depend on what it sees (the hand's position and the frame), and which keeps
    every observation it was shown."""

    def __init__(self) -> None:
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def reset(self, task: str, instruction: str) -> None:
        self.seen.clear()

    def act(self, obs) -> np.ndarray:
        self.seen.append((obs.frame.copy(), np.asarray(obs.proprio).copy()))
        toward = np.clip((np.array([0.0, 0.75, 0.2]) - obs.proprio[:3]) * 8.0, -1, 1)
        grip = 1.0 if obs.frame.mean() > 100 else -1.0
        return np.tile(np.append(toward, grip), (8, 1)).astype(np.float32)


def test_unrecorded_episodes_skip_renders_inside_a_chunk_with_the_same_outcome():
    """Physics-only steps inside a chunk: the policy sees the same observations and the episode ends the same
    as when every step is rendered (recorded)."""
    with SimEnv("reach-v3") as sim:
        start = sim.sample_start(stream="eval", index=3)
        outcomes, seen, renders = [], [], []
        for record in (True, False):
            policy, env = WatchingPolicy(), RecordingEnv(sim)
            calls = [0]
            render = sim.render

            def counted(render=render, calls=calls):
                calls[0] += 1
                return render()

            sim.render = counted
            try:
                success, steps, _ = run_episode(env, policy, start, "reach", max_steps=60, record=record)
            finally:
                del sim.render
            outcomes.append((success, steps, np.stack(env.actions).tobytes()))
            seen.append(policy.seen)
            renders.append(calls[0])
    assert outcomes[0] == outcomes[1]
    assert len(seen[0]) == len(seen[1]) > 1
    for (f0, p0), (f1, p1) in zip(*seen, strict=True):
        np.testing.assert_array_equal(f0, f1)
        np.testing.assert_array_equal(p0, p1)
    assert renders[1] * 4 < renders[0]  # one render per chunk instead of one per step


def test_simulator_receives_unnormalised_actions(smoke_policy_dir):
    """Would catch the released code's bug: normalised actions reaching a consumer trained on raw ones."""
    runner = SimChunkPolicy(smoke_policy_dir)
    norm = runner.policy.action_norm
    with torch.no_grad():  # a distinctive affine map, so raw and normalised chunks cannot be confused
        norm.center.copy_(torch.tensor([0.6, -0.4, 0.3, 0.8]))
        norm.scale.copy_(torch.tensor([0.05, 0.05, 0.05, 0.05]))
        norm.low.fill_(-1.0)
        norm.high.fill_(1.0)
    with SimEnv("drawer-open-v3") as sim:
        env = RecordingEnv(sim)
        start = sim.sample_start(stream="eval")
        obs = sim.reset(start)
        runner.reset("drawer-open-v3", "open the drawer")
        batch = runner.batch(obs)
        normalised = runner.policy.act_norm(batch)[0].numpy()
        run_episode(env, runner, start, "open the drawer", max_steps=8)
    executed = np.stack(env.actions)
    assert executed.shape == (8, 4)
    expected = np.clip(normalised * 0.05 + np.array([0.6, -0.4, 0.3, 0.8]), -1, 1)
    np.testing.assert_allclose(executed, expected, atol=1e-5)
    assert np.abs(executed - normalised).mean() > 0.2
    # the RL path hands the world model the same units
    s = runner.policy.sample_sde(batch, num_samples=4)
    np.testing.assert_allclose(s.actions.numpy(), np.clip(s.actions_norm.numpy() * 0.05
                                                          + np.array([0.6, -0.4, 0.3, 0.8]), -1, 1), atol=1e-5)


def test_runner_rejects_bad_instructions(smoke_policy_dir):
    runner = SimChunkPolicy(smoke_policy_dir)
    for bad in ("", "  ", "y" * 600):
        with pytest.raises(InstructionError):
            runner.reset("reach-v3", bad)
