"""World-model RL: success detection, the reward model, the imagined world, alignment fine-tuning, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from rl_toys import TASK, toy_policy
from test_wm_synthetic import SIZE, dot_frame, write_dot_dataset
from test_wm_train import _stop_after

from models.hooks import Hooks
from models.reward_model import (
    Detector,
    RewardConfig,
    SuccessClassifier,
    autoencoder_fingerprint,
    best_threshold,
    load_reward_model,
    prf,
    save_reward_model,
    train_reward_model,
)
from models.world_model import load_world_model
from models.world_model.config import WMConfig, make_config
from models.world_model.model import WorldModel
from models.world_model.train import train_world_model
from sim.episodes import Episode, EpisodeWriter
from sim.errors import InputError
from sim.vector import StartRequest

FAST = dict(ae_steps=6, dyn_steps=6, checkpoint_every=4, eval_every=6)


# -- detection ----------------------------------------------------------------------------------------------
def test_detector_needs_confirmation_and_respects_the_minimum_step_guard():
    d = Detector(threshold=0.8, confirm=2, min_steps=5)
    assert d.first([0.9, 0.9, 0.9, 0.1, 0.1, 0.1]) == 0  # above threshold only before the guard
    assert d.first([0.9, 0.9, 0.9, 0.9, 0.9, 0.1]) == 5  # the guard delays, not cancels, a held success
    assert d.first([0.1, 0.1, 0.1, 0.1, 0.95, 0.1, 0.9, 0.85, 0.2]) == 8  # a one-step spike is not confirmed
    assert d.first([0.1] * 10) == 0
    assert Detector(0.8, 1, 0).first([0.1, 0.81]) == 2


def test_streaming_detection_equals_whole_sequence_detection():
    rng = np.random.default_rng(0)
    d = Detector(threshold=0.6, confirm=3, min_steps=4)
    for _ in range(50):
        p = rng.uniform(0, 1, 24)
        run, steps, found = np.zeros(1, int), np.zeros(1, int), 0
        for c in range(3):  # three chunks of 8, as the imagined world sees them
            hit, run = d.update(run, steps, p[None, 8 * c : 8 * c + 8])
            if hit[0] >= 0 and not found:
                found = 8 * c + hit[0] + 1
            steps += 8
        assert found == d.first(p)


def test_threshold_choice_separates_held_success_from_spikes():
    rng = np.random.default_rng(1)
    probs, truth = [], []
    for i in range(40):
        p = rng.uniform(0.0, 0.55, 30)
        if i % 2:  # success: a plateau from a random step on
            p[rng.integers(10, 25):] = rng.uniform(0.72, 0.95)
        else:  # failure with a single bright step (a hallucination candidate)
            p[rng.integers(10, 25)] = 0.99
        probs.append(p)
        truth.append(bool(i % 2))
    thr, f1 = best_threshold(probs, np.array(truth), confirm=2, min_steps=8)
    assert 0.55 <= thr <= 0.72 and f1 == 1.0
    # without confirmation a spike at 0.99 is a success at every threshold: no threshold separates them
    _, f1_1 = best_threshold(probs, np.array(truth), confirm=1, min_steps=8)
    assert f1_1 < 0.9


def test_prf_counts_hallucinations():
    r = prf(np.array([1, 1, 0, 1, 0], bool), np.array([1, 0, 0, 1, 1], bool))
    assert (r["precision"], r["recall"], r["hallucinated"]) == (2 / 3, 2 / 3, 1)
    assert r["hallucination_rate"] == 0.5 and r["f1"] == pytest.approx(2 / 3)


# -- tiny world model + reward model ---------------------------------------------------------------------
def _random_wm(folder: Path, size: int = 64, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = make_config("smoke")
    cfg.image_size, cfg.camera = size, "workspace"
    WorldModel(cfg).save(folder)
    return folder


def _random_rm(folder: Path, wm_path: Path, tasks: list[str], **cfg) -> Path:
    wm = load_world_model(wm_path)
    model = SuccessClassifier(RewardConfig(tasks=tasks, channels=4, hidden=8, **cfg), wm.cfg.latent_channels)
    save_reward_model(model, folder, {"world_model": str(wm_path), "autoencoder": autoencoder_fingerprint(wm)})
    return folder


@pytest.fixture
def imagined(tmp_path, monkeypatch):
    """A WMWorld over a random world model whose classifier's probabilities the test dictates."""
    from models import reward_model
    from models.worlds import WMWorld

    wm = _random_wm(tmp_path / "wm")
    rm = _random_rm(tmp_path / "rm", wm, [TASK], min_steps=8, confirm=2)
    level = {"p": 0.0}
    monkeypatch.setattr(reward_model.SuccessClassifier, "probs",
                        lambda self, z, p, t: torch.full(z.shape[:2], level["p"]))

    def make(max_steps: int = 20) -> tuple[WMWorld, dict]:
        return WMWorld(str(wm), str(rm), max_steps=max_steps), level

    return make


def test_imagined_world_obeys_the_rollout_interface(imagined):
    from models.worlds import SimWorld

    world, level = imagined(max_steps=20)
    starts = [StartRequest(task=TASK, index=i) for i in range(3)]
    try:
        obs = world.reset(starts)
        assert world.real is False and world.name == "wm"
        assert obs.frames.shape == (3, 64, 64, 3) and obs.frames.dtype == np.uint8 and obs.proprio.shape == (3, 4)
        sim = SimWorld(max_steps=20, workers=1)
        real = sim.reset(starts)  # the imagined world starts from the real start frames and proprio
        sim.close()
        assert np.array_equal(obs.frames, real.frames) and np.allclose(obs.proprio, real.proprio)
        assert [s["seed"] for s in world.starts] == [0, 0, 0]

        chunk = np.zeros((3, 8, 4), np.float32)
        r = world.step(chunk, live=np.array([True, False, True]))
        assert list(r.steps) == [8, 0, 8] and r.executed == 16 and not r.done.any()
        assert np.array_equal(r.obs.frames[1], obs.frames[1])  # an idle slot does not move
        x = torch.from_numpy(obs.frames[[0]]).permute(0, 3, 1, 2).float() / 255  # the others see imagined frames
        _, p, f = world.wm.imagine_chunk(x, torch.from_numpy(chunk[:1]))
        assert np.array_equal(r.obs.frames[0], (f[0] * 255).round().byte().permute(1, 2, 0).numpy())
        assert np.allclose(r.obs.proprio[0], p[0, -1].numpy())  # and the world model's predicted proprio
        level["p"] = 1.0  # the classifier now sees success everywhere: confirmed after 2 steps
        r = world.step(chunk)
        assert list(r.steps) == [10, 8, 10] and r.success.all() and r.done.all() and r.executed == 12
        r2 = world.step(chunk)  # done slots take no more steps
        assert r2.executed == 0 and list(r2.steps) == [10, 8, 10]

        level["p"] = 0.0
        world.reset(starts[:2])
        for _ in range(3):
            r = world.step(np.zeros((2, 8, 4), np.float32))
        assert list(r.steps) == [20, 20] and r.done.all() and not r.success.any()  # the cap ends episodes
    finally:
        world.close()


def test_rl_in_imagination_uses_no_real_steps_and_reports_both_curves(tmp_path, imagined):
    from models.rl import train_rl

    world, _ = imagined()
    world.close()
    policy = toy_policy(tmp_path / "policy")
    out = tmp_path / "rl"
    s = train_rl(str(policy), str(out), world="wm", preset="smoke", steps=2, tasks=TASK, max_steps=16,
                 eval_every=2, wm=str(tmp_path / "wm"), reward_model=str(tmp_path / "rm"))
    assert s["env_steps"] == 0 and s["world_steps"] > 0 and s["steps"] == 2
    held = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"heldout"' in x]
    assert {"heldout_success", "heldout_imagined_success"} <= set(held[-1])
    assert json.loads((out / "config.json").read_text())["world_model"].endswith("wm")


def test_reward_model_refuses_another_world_models_latents(tmp_path):
    a, b = _random_wm(tmp_path / "a", seed=0), _random_wm(tmp_path / "b", seed=1)
    rm = _random_rm(tmp_path / "rm", a, [TASK])
    load_reward_model(rm, load_world_model(a))
    with pytest.raises(InputError, match="another world model's autoencoder"):
        load_reward_model(rm, load_world_model(b))
    with pytest.raises(InputError, match="knows reach-v3; not push-v3"):
        load_reward_model(rm).task_index(["push-v3"])


# -- learning success on synthetic episodes -----------------------------------------------------------------
def _goal_episode(rng: np.random.Generator, length: int = 24) -> Episode:
    """A dot pushed by its actions; success once it is in the right fifth of the frame (a drift to the right
    makes about half the episodes succeed)."""
    pos = rng.uniform(6, SIZE - 14, 2)
    drift = rng.choice([0.6, -0.3])
    frames, proprio, actions, success = [], [], [], []
    for _ in range(length):
        frames.append(dot_frame(pos))
        proprio.append([pos[0] / SIZE, pos[1] / SIZE, 0.0, 0.0])
        a = np.clip(np.r_[drift + rng.normal(0, 0.3), rng.normal(0, 0.3, 3)], -1, 1).astype(np.float32)
        pos = np.clip(pos + 2.0 * a[:2], 2, SIZE - 3)
        actions.append(a)
        success.append(pos[0] > 0.8 * SIZE)
    a = np.asarray(actions, np.float32)
    return Episode(task=TASK, instruction="move the dot", frames=np.stack(frames), proprio=np.asarray(proprio,
                   np.float32), actions=a, expert_actions=a, rewards=np.zeros(length, np.float32),
                   successes=np.asarray(success, bool))


def test_reward_model_learns_success_and_picks_its_threshold_on_validation(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "goal.h5"
    with EpisodeWriter(data, "workspace", SIZE) as w:
        for _ in range(40):
            w.add(_goal_episode(rng))
    wm = tmp_path / "wm"
    train_world_model(str(data), str(wm), preset="smoke", ae_steps=150, dyn_steps=100, horizon=4,
                      checkpoint_every=1000, eval_every=1000)
    events = []
    s = train_reward_model(str(wm), str(data), str(tmp_path / "rm"), preset="smoke", steps=300, min_steps=2,
                           confirm=1, hooks=Hooks(progress=lambda f, m: events.append(f)))
    assert s["positives"] > 0 and s["negatives"] > 0 and events[-1] == 1.0
    real = s["validation"]["real"]["all"]
    assert real["f1"] >= 0.8, s["validation"]
    assert 0.05 <= s["threshold"] <= 0.99
    rm = load_reward_model(tmp_path / "rm", load_world_model(wm))
    assert rm.cfg.threshold == s["threshold"] and rm.cfg.min_steps == 2


# -- alignment fine-tuning --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dots_wm(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("align")
    data = write_dot_dataset(d / "dots.h5", episodes=6, length=16)
    train_world_model(str(data), str(d / "wm"), preset="smoke", **FAST)
    return data, d / "wm"


def test_alignment_fine_tunes_the_dynamics_and_resumes_exactly(dots_wm, tmp_path):
    data, base = dots_wm
    more = write_dot_dataset(tmp_path / "more.h5", episodes=4, length=16, seed=5)
    both = f"{data},{more}"
    kw = dict(dyn_steps=6, checkpoint_every=2, eval_every=6, init_from=str(base))
    a, b = tmp_path / "a", tmp_path / "b"
    s = train_world_model(both, str(a), preset="align", **kw)
    assert s["step"] == 6 and s["total_steps"] == 6
    cfg = WMConfig.from_json(json.loads((a / "config.json").read_text())["config"])
    assert cfg.init_from == str(base) and cfg.image_size == SIZE and cfg.latent_channels == 4  # inherited
    w0, wa = load_world_model(base), load_world_model(a)
    assert autoencoder_fingerprint(w0) == autoencoder_fingerprint(wa)  # the reward model's latents stay valid
    assert any(not torch.equal(x, y) for x, y in zip(w0.dynamics.state_dict().values(),
                                                     wa.dynamics.state_dict().values(), strict=True))
    assert train_world_model(both, str(b), preset="align", hooks=_stop_after(3), **kw)["step"] == 3
    s = train_world_model(both, str(b), preset="align", resume=True, **kw)
    assert s["resumed_from"] == 2 or s["resumed_from"] == 3
    assert s["step"] == 6
    wb = load_world_model(b)
    for (k, va), vb in zip(wa.state_dict().items(), wb.state_dict().values(), strict=True):
        assert torch.allclose(va, vb, atol=1e-5), k


def test_align_preset_without_a_model_to_start_from_is_refused(dots_wm, tmp_path):
    data, _ = dots_wm
    res = run_cli("train-wm", "--dataset", str(data), "--out", str(tmp_path / "x"), "--preset", "align")
    assert_one_line_error(res, "--init")
    res = run_cli("train-wm", "--dataset", str(data), "--out", str(tmp_path / "x"), "--preset", "align", "--init",
                  str(tmp_path / "nothing"))
    assert_one_line_error(res, "no world-model checkpoint")


# -- bad inputs on the command line -------------------------------------------------------------------------
def test_cli_errors_of_world_model_rl_are_one_line(tmp_path):
    wm = _random_wm(tmp_path / "wm")
    rm = _random_rm(tmp_path / "rm", wm, [TASK])
    policy = toy_policy(tmp_path / "policy")
    res = run_cli("rft", "--policy", str(policy), "--out", str(tmp_path / "o"), "--world", "wm", "--reward", "success",
                  "--wm", str(wm))
    assert_one_line_error(res, "--reward-model is required")
    res = run_cli("rft", "--policy", str(policy), "--out", str(tmp_path / "o"), "--world", "sim", "--reward",
                  "success", "--reward-model", str(rm))
    assert_one_line_error(res, "--reward-model does not apply")
    res = run_cli("train-reward", "--wm", str(tmp_path / "missing"), "--dataset", "x.h5", "--out", str(tmp_path / "r"))
    assert_one_line_error(res, "--wm", "no checkpoint there")
    res = run_cli("train-reward", "--wm", str(wm), "--dataset", str(tmp_path / "none.h5"), "--out",
                  str(tmp_path / "r"))
    assert_one_line_error(res, "does not exist")
    res = run_cli("wm-eval", "--policy", str(policy), "--wm", str(wm), "--reward-model", str(rm), "--episodes", "0")
    assert_one_line_error(res, "episodes must be positive")
    res = run_cli("wm-eval", "--policy", str(policy), "--wm", str(wm), "--reward-model", str(rm), "--tasks", "nope")
    assert_one_line_error(res, "nope")
    other = _random_wm(tmp_path / "other", seed=3)
    res = run_cli("eval-reward", "--reward-model", str(rm), "--wm", str(other), "--dataset", "x.h5")
    assert res.code == 2
    assert not (tmp_path / "r").exists()


def test_playground_imagination_ends_at_the_detected_success(tmp_path, monkeypatch):
    """models.imagine re-anchors every chunk like the RL world, and with a reward model it stops at the first
    confirmed detection and reports it."""
    from models import reward_model
    from models.imagine import imagine

    wm = _random_wm(tmp_path / "wm")
    rm = _random_rm(tmp_path / "rm", wm, [TASK], min_steps=3, confirm=2)
    policy = toy_policy(tmp_path / "policy")
    monkeypatch.setattr(reward_model.SuccessClassifier, "probs", lambda self, z, p, t: torch.ones(z.shape[:2]))
    r = imagine(str(wm), TASK, policies={"p": str(policy)}, out=str(tmp_path / "o"), horizon=20, max_steps=10,
                reward_model=str(rm))
    cell = next(c for c in r["cells"] if c["source"] == "world_model")
    assert cell["success"] is True and cell["steps"] == 3  # steps 1..3 above threshold: confirmed at the guard
    r = imagine(str(wm), TASK, policies={"p": str(policy)}, out=str(tmp_path / "o2"), horizon=20, max_steps=10)
    cell = next(c for c in r["cells"] if c["source"] == "world_model")
    assert cell["success"] is None and cell["steps"] == 20


def test_wm_eval_reports_intervals_and_correlations():
    from models.wm_eval import _overall, correlations

    o = _overall(np.array([1, 0, 0, 1], bool))
    assert (o["successes"], o["episodes"], o["success"]) == (2, 4, 0.5) and 0 < o["ci95"][0] < 0.5 < o["ci95"][1]

    def rep(imagined: list[int], real: list[int]) -> dict:
        def cells(v):
            return {f"{t}/none": {"successes": k, "episodes": 10} for t, k in zip(("a", "b"), v, strict=True)}
        return {"imagined": {"success": sum(imagined) / 20, "cells": cells(imagined)},
                "real": {"success": sum(real) / 20, "cells": cells(real)}}

    c = correlations([rep([1, 2], [2, 2]), rep([5, 5], [6, 5]), rep([9, 8], [9, 9])])
    assert c["all"]["pearson"] > 0.95 and c["all"]["spearman"] == pytest.approx(1.0) and c["all"]["policies"] == 3
    assert np.isnan(c["b"]["pearson"]) or c["b"]["pearson"] > 0.9
    with pytest.raises(InputError, match="real success"):
        correlations([{"imagined": {"cells": {}}}])
