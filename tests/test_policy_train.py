"""Policy training: behaviour cloning learns, checkpoints round-trip, training resumes, bad input fails clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, assert_one_line_error, run_cli
from safetensors.torch import load_file

from models.checkpoint import CheckpointError, save_checkpoint
from models.hooks import Hooks
from models.policy.config import PRESETS, PolicyConfig
from models.policy.data import WindowTensors
from models.policy.model import VLAPolicy
from models.policy.text import InstructionEncoder
from models.policy.train import train_policy
from models.policy_io import check_dataset_compat, load_policy, save_policy
from sim.episodes import Episode, EpisodeWriter
from sim.errors import InputError


@pytest.fixture(autouse=True)
def one_thread():
    """The CPU is shared: one thread is faster than two fighting over it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smoke_policy(text: InstructionEncoder | None = None) -> VLAPolicy:
    return VLAPolicy(PolicyConfig.from_json(PRESETS["smoke"].policy.to_json()), text)


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("policy") / "smoke"
    summary = train_policy(str(tiny_dataset), str(out), preset="smoke")
    return out, summary


def test_bc_on_one_episode_drives_loss_down(tiny_dataset):
    torch.manual_seed(0)
    data = WindowTensors([(str(tiny_dataset), [0])], context=1, chunk=8)
    policy = smoke_policy()
    policy.action_norm.fit(data.labels)
    policy.proprio_norm.fit(data.proprio)
    everything = data.batch(torch.arange(len(data)))

    def loss() -> float:
        with torch.no_grad():
            g = torch.Generator().manual_seed(123)  # same noise and t every time
            return float(policy.fm_loss_from_cond(policy.encode(everything),
                                                  policy.action_norm.normalize(everything["actions"]),
                                                  everything["mask"], samples=4, generator=g))

    def chunk_mse() -> float:
        err = ((policy.act(everything) - everything["actions"]) ** 2).mean(-1)
        return float((err * everything["mask"]).sum() / everything["mask"].sum())

    before, mse_before = loss(), chunk_mse()
    opt = torch.optim.AdamW(policy.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        b = data.batch(torch.randint(len(data), (16,), generator=g))
        l_ = policy.fm_loss_from_cond(policy.encode(b), policy.action_norm.normalize(b["actions"]), b["mask"], 4, g)
        opt.zero_grad()
        l_.backward()
        opt.step()
    after, mse_after = loss(), chunk_mse()
    assert after < 0.5 * before, (before, after)
    assert mse_after < 0.5 * mse_before, (mse_before, mse_after)


def test_train_policy_writes_full_base_and_metrics(trained, tiny_dataset):
    out, summary = trained
    assert summary["complete"] and summary["step"] == PRESETS["smoke"].steps
    assert summary["base"] == str(out / "base")
    for folder, role in ((out, "full"), (out / "base", "base")):
        cfg = json.loads((folder / "config.json").read_text())
        assert cfg["kind"] == "policy" and cfg["role"] == role
        assert cfg["datasets"] == [str(Path(tiny_dataset).resolve())]
        assert len(cfg["normalisation"]["action"]["center"]) == 4
        assert "press the button from the top" in cfg["instruction_cache"]
        assert "push the button down" in cfg["instruction_cache"]  # held-out paraphrases are cached too
    assert json.loads((out / "base" / "config.json").read_text())["step"] < summary["step"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in rows if r["split"] == "heldout"]
    assert held and all(r["action_mse"] >= 0 for r in held)
    train_rows = [r for r in rows if r["split"] == "train"]
    assert all(r["state_loss"] > 0 and r["fm_loss"] > 0 for r in train_rows)  # MetaWorld files feed the aux loss
    train_steps = [r["step"] for r in rows if r["split"] == "train"]
    assert train_steps == sorted(train_steps)
    assert summary["heldout"]["action_mse"] == held[-1]["action_mse"]


def test_checkpoint_round_trip(tmp_path, tiny_dataset):
    text = InstructionEncoder()
    text.warm(["press the button from the top"])
    p = smoke_policy(text)
    data = WindowTensors([(str(tiny_dataset), [0, 2])], context=1, chunk=8)
    p.action_norm.fit(data.labels)
    p.proprio_norm.fit(data.proprio)
    save_policy(p, tmp_path / "ck", {"datasets": [str(tiny_dataset)]})
    q = load_policy(tmp_path / "ck")
    b = data.batch(torch.arange(5))
    torch.testing.assert_close(p.eval().act(b), q.act(b))
    for name in ("center", "scale", "low", "high"):
        assert torch.equal(getattr(p.action_norm, name), getattr(q.action_norm, name))
    assert set(q.text.cache) == set(text.cache)
    assert not any(k.startswith("text_cache") for k in q.state_dict())


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_stop_and_resume_matches_an_uninterrupted_run(tiny_dataset, tmp_path):
    kw = dict(preset="smoke", steps=24, save_every=8, eval_every=8, log_every=4, base_at=0.0)
    straight = train_policy(str(tiny_dataset), str(tmp_path / "a"), snapshot_every=10, **kw)
    assert sorted(p.name for p in (tmp_path / "a" / "snapshots").iterdir()) == ["step-10", "step-20"]
    assert json.loads((tmp_path / "a" / "snapshots" / "step-10" / "config.json").read_text())["step"] == 10
    calls = [0]

    def stop_after_11() -> bool:
        calls[0] += 1
        return calls[0] > 11

    first = train_policy(str(tiny_dataset), str(tmp_path / "b"), hooks=Hooks(should_stop=stop_after_11), **kw)
    assert first["stopped"] and first["step"] == 11 and not first["complete"]
    assert json.loads((tmp_path / "b" / "config.json").read_text())["step"] == 11
    second = train_policy(str(tiny_dataset), str(tmp_path / "b"), preset="smoke", resume=True)
    assert second["complete"] and second["step"] == straight["step"] == 24
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_resume_after_kill_9(tiny_dataset, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "cli.main", "train-policy", "--dataset", str(tiny_dataset), "--out", str(out),
            "--preset", "smoke", "--steps", "400", "--set", "save_every=20", "--base-at", "0"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "train_state.pt").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((out / "config.json").read_text())["step"]
    assert 0 < killed_at < 400
    res = run_cli("train-policy", "--dataset", str(tiny_dataset), "--out", str(out), "--preset", "smoke",
                  "--resume", "--json")
    assert res.code == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout)
    assert summary["complete"] and summary["step"] == 400
    assert json.loads((out / "config.json").read_text())["role"] == "full"
    load_policy(out)


def _foreign_dataset(path: Path) -> Path:
    """A valid episode file with 7-D actions and 8-D proprio (a LIBERO-like robot)."""
    n = 12
    with EpisodeWriter(path, camera="workspace", image_size=64) as w:
        w.add(Episode(task="reach-v3", instruction="reach to the goal", frames=np.zeros((n, 64, 64, 3), np.uint8),
                      proprio=np.zeros((n, 8), np.float32), actions=np.zeros((n, 7), np.float32),
                      expert_actions=np.zeros((n, 7), np.float32), rewards=np.zeros(n, np.float32),
                      successes=np.zeros(n, bool)))
    return path


def test_checkpoint_errors(trained, tmp_path, tiny_dataset):
    out, _ = trained
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "nowhere")
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "config.json").write_text((out / "config.json").read_text())
    (bad / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_policy(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_policy(bad)
    other = save_checkpoint(tmp_path / "wm", "world_model", {}, {"w": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="expected 'policy'"):
        load_policy(other)
    # a checkpoint of another architecture size names the mismatch
    cfg = json.loads((out / "config.json").read_text())
    cfg["policy"]["head_width"] = 32
    mism = tmp_path / "mismatch"
    mism.mkdir()
    (mism / "config.json").write_text(json.dumps(cfg))
    (mism / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_policy(mism)


def test_dims_not_matching_the_dataset(trained, tmp_path, tiny_dataset):
    out, _ = trained
    policy = load_policy(out)
    check_dataset_compat(policy.config, tiny_dataset)  # the training data fits
    foreign = _foreign_dataset(tmp_path / "foreign.h5")
    with pytest.raises(CheckpointError, match=r"7-D actions .*8-D proprio"):
        check_dataset_compat(policy.config, foreign)


def test_training_input_errors(tiny_dataset, tmp_path, trained):
    with pytest.raises(InputError, match="does not exist"):
        train_policy(str(tmp_path / "missing.h5"), str(tmp_path / "o1"), preset="smoke")
    with pytest.raises(InputError, match="unknown preset"):
        train_policy(str(tiny_dataset), str(tmp_path / "o2"), preset="huge")
    with pytest.raises(InputError, match="unknown policy training option"):
        train_policy(str(tiny_dataset), str(tmp_path / "o3"), preset="smoke", bogus=1)
    with pytest.raises(InputError, match="already holds a checkpoint"):
        train_policy(str(tiny_dataset), str(trained[0]), preset="smoke")
    foreign = _foreign_dataset(tmp_path / "foreign.h5")
    with pytest.raises(InputError, match="differ in action dims"):
        train_policy(f"{tiny_dataset},{foreign}", str(tmp_path / "o4"), preset="smoke")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o4" / "config.json").exists()


def test_cli_errors_are_one_line(tiny_dataset, tmp_path, trained):
    assert_one_line_error(run_cli("train-policy", "--dataset", str(tmp_path / "no.h5"), "--out", str(tmp_path / "o"),
                                  "--preset", "smoke"), "does not exist")
    assert_one_line_error(run_cli("train-policy", "--dataset", str(tiny_dataset), "--out", str(tmp_path / "o"),
                                  "--preset", "smoke", "--set", "noequals"), "KEY=VALUE")
    assert_one_line_error(run_cli("sim-eval", "--policy", str(tmp_path / "none"), "--episodes", "1"), "does not exist")
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "config.json").write_text((trained[0] / "config.json").read_text())
    (bad / "model.safetensors").write_bytes(b"junk")
    assert_one_line_error(run_cli("sim-eval", "--policy", str(bad), "--episodes", "1"), "corrupt")


def test_windows_draw_their_tasks_training_phrasings(tiny_dataset):
    from models.policy.data import load_split
    from sim.instructions import heldout_phrasings, training_phrasings

    train, _ = load_split([str(tiny_dataset)], 0.0, 0, 2, 8, "expert")
    idx = torch.arange(len(train))
    own = train.batch(idx, torch.Generator().manual_seed(0))["instruction"]
    assert own == train.batch(idx)["instruction"]  # no phrasings in use: the episode's own instruction
    train.use_phrasings({t: training_phrasings(t) for t in train.tasks})
    drawn = train.batch(idx, torch.Generator().manual_seed(0))["instruction"]
    assert drawn == train.batch(idx, torch.Generator().manual_seed(0))["instruction"]  # seeded
    tasks = [train.tasks[t] for t in train.task_idx.tolist()]
    for task, text in zip(tasks, drawn, strict=True):
        assert text in training_phrasings(task)
        assert text not in heldout_phrasings(task, "paraphrase")
    assert len(set(drawn)) > 2 * len(train.tasks)  # many phrasings, not one sentence per task


def test_augmented_training_caches_every_phrasing(trained):
    from sim.instructions import all_known

    folder, _ = trained
    policy = load_policy(folder)
    for task in ("drawer-open-v3", "button-press-topdown-v3"):  # tiny_dataset's
        for text in all_known(task):
            assert text in policy.text.cache
