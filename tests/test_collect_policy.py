"""`vlarft collect --policy`: a policy's own closed-loop episodes as data, failures included, states exact."""

from __future__ import annotations

import numpy as np
from conftest import assert_one_line_error, run_cli
from rl_toys import TASK, toy_policy

from sim.env import SimEnv
from sim.episodes import EpisodeFile


def test_policy_episodes_keep_failures_and_their_states_restore_exactly(tmp_path):
    policy = toy_policy(tmp_path / "policy")
    out = tmp_path / "rollouts.h5"
    res = run_cli("collect", "--tasks", TASK, "--episodes", "2", "--max-steps", "20", "--policy", str(policy),
                  "--noise-std", "0.3", "--seed", "5", "--workers", "1", "--out", str(out))
    assert res.code == 0, res.stderr
    assert "succeeded in" in res.stdout
    ef = EpisodeFile(out)
    try:
        assert len(ef) == 2 and ef.h5["data"].attrs["policy"].startswith("policy:policy+noise0.3")
        ep = ef.load(1)
        assert not ep.success and len(ep) == 20  # an untrained policy fails; the failure is kept
        assert ep.start is not None and ep.start.stream == "collect" and ep.start.seed == 5
        assert np.abs(ep.expert_actions - ep.actions).max() > 0.05  # the labels are the expert's, not the policy's
        with SimEnv(TASK) as env:
            for t in (0, 7, 19):
                obs = env.restore(ep.start, ep.states[t])
                assert np.array_equal(obs.frame, ep.frames[t]), t
    finally:
        ef.close()
    again = tmp_path / "again.h5"
    assert run_cli("collect", "--tasks", TASK, "--episodes", "2", "--max-steps", "20", "--policy", str(policy),
                   "--noise-std", "0.3", "--seed", "5", "--workers", "1", "--out", str(again)).code == 0
    a, b = EpisodeFile(out), EpisodeFile(again)
    try:
        assert np.array_equal(a.load(0).actions, b.load(0).actions)  # noise is seeded per episode
    finally:
        a.close()
        b.close()


def test_bad_policy_collection_is_one_line(tmp_path):
    out = tmp_path / "x.h5"
    assert_one_line_error(run_cli("collect", "--tasks", TASK, "--episodes", "1", "--out", str(out),
                                  "--policy", str(tmp_path / "missing")), "does not exist")
    assert_one_line_error(run_cli("collect", "--tasks", TASK, "--episodes", "1", "--out", str(out),
                                  "--noise-std", "0.2"), "--policy")
    policy = toy_policy(tmp_path / "policy")
    assert_one_line_error(run_cli("collect", "--tasks", TASK, "--episodes", "1", "--out", str(out),
                                  "--policy", str(policy), "--image-size", "128"), "--image-size 64")
    assert_one_line_error(run_cli("collect", "--tasks", TASK, "--episodes", "1", "--out", str(out),
                                  "--policy", str(policy), "--noise-std", "5"), "noise-std")
    assert not out.exists()


def test_after_success_keeps_acting_and_labels_every_step(tmp_path):
    from sim.collect import CollectConfig, collect

    out, plain = tmp_path / "after.h5", tmp_path / "plain.h5"
    collect(CollectConfig(tasks=("button-press-topdown-v3",), episodes=1, workers=1, after_success=5), str(out))
    collect(CollectConfig(tasks=("button-press-topdown-v3",), episodes=1, workers=1), str(plain))
    a, b = EpisodeFile(out), EpisodeFile(plain)
    try:
        ea, eb = a.load(0), b.load(0)
        first = int(np.argmax(eb.successes))
        assert eb.successes[first] and len(eb) == first + 1  # without it, the episode stops at its first success
        assert len(ea) == first + 6 and ea.successes[first]  # with it, 5 more steps, each with its own label
        assert np.array_equal(ea.frames[: first + 1], eb.frames)
        assert ea.successes[first:].mean() > 0.5 and a.h5["data"].attrs["after_success"] == 5
    finally:
        a.close()
        b.close()
    res = run_cli("collect", "--tasks", TASK, "--episodes", "1", "--after-success", "-1", "--out",
                  str(tmp_path / "x.h5"))
    assert_one_line_error(res, "after-success")
