"""World-model training: checkpoints, resume after a kill, cooperative stop, metrics schema, bad datasets, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import ROOT, assert_one_line_error, run_cli
from test_wm_synthetic import write_dot_dataset

from models.hooks import Hooks
from models.world_model import load_world_model
from models.world_model.data import WMDataError
from models.world_model.train import METRIC_SCHEMA, train_world_model

FAST = dict(ae_steps=6, dyn_steps=6, checkpoint_every=4, eval_every=6)


@pytest.fixture(scope="module")
def dots(tmp_path_factory) -> Path:
    return write_dot_dataset(tmp_path_factory.mktemp("dots") / "dots.h5", episodes=6, length=16)


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_smoke_training_writes_checkpoint_and_stable_metrics(dots, tmp_path):
    out = tmp_path / "wm"
    events = {"artifacts": [], "progress": []}
    hooks = Hooks(progress=lambda f, m: events["progress"].append(f),
                  artifact=lambda kind, path: events["artifacts"].append((kind, path)))
    s = train_world_model(str(dots), str(out), preset="smoke", hooks=hooks, heldout_fraction=0.2, **FAST)
    assert s["step"] == 12 and not s["stopped"]
    assert (out / "model.safetensors").exists() and (out / "train_state.pt").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "world_model" and cfg["config"]["image_size"] == 32 and cfg["config"]["camera"] == "workspace"
    assert events["progress"][-1] == 1.0 and ("checkpoint", str(out)) in events["artifacts"]
    rows = _rows(out)
    for r in rows:
        assert set(r) == {"step", "time", "split", *METRIC_SCHEMA[r["split"]]}, r
    assert {r["split"] for r in rows} == {"ae", "dyn", "heldout"}
    held = [r for r in rows if r["split"] == "heldout"]
    assert held[-1]["psnr_moving_h8"] is not None
    wm = load_world_model(out)
    assert wm.image_size == 32 and wm.context_frames == 1
    assert wm.rollout(torch.zeros(2, 1, 3, 32, 32), torch.zeros(2, 3, 4)).shape == (2, 3, 3, 32, 32)


def test_should_stop_saves_and_returns(dots, tmp_path):
    out = tmp_path / "wm"
    s = train_world_model(str(dots), str(out), preset="smoke", hooks=_stop_after(3), **FAST)
    assert s["stopped"] and s["step"] == 3
    assert json.loads((out / "config.json").read_text())["step"] == 3
    s2 = train_world_model(str(dots), str(out), preset="smoke", resume=True, **FAST)
    assert s2["resumed_from"] == 3 and s2["step"] == 12 and not s2["stopped"]


def _stop_after(n: int) -> Hooks:
    calls = [0]

    def stop() -> bool:
        calls[0] += 1
        return calls[0] > n

    return Hooks(should_stop=stop)


def test_resume_continues_exactly(dots, tmp_path):
    """Stopping at step 4 (autoencoder phase) and 8 (dynamics phase), then resuming, gives the weights of one run."""
    a, b = tmp_path / "a", tmp_path / "b"
    train_world_model(str(dots), str(a), preset="smoke", **FAST)
    assert train_world_model(str(dots), str(b), preset="smoke", hooks=_stop_after(4), **FAST)["step"] == 4
    s = train_world_model(str(dots), str(b), preset="smoke", resume=True, hooks=_stop_after(4), **FAST)
    assert s["resumed_from"] == 4 and s["step"] == 8 and s["stopped"]
    s = train_world_model(str(dots), str(b), preset="smoke", resume=True, **FAST)
    assert s["resumed_from"] == 8 and s["step"] == 12
    wa, wb = load_world_model(a), load_world_model(b)
    for (k, va), vb in zip(wa.state_dict().items(), wb.state_dict().values(), strict=True):
        assert torch.allclose(va, vb, atol=1e-5), k
    steps = [r["step"] for r in _rows(b) if r["split"] != "heldout"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


@pytest.mark.slow
def test_cli_train_killed_then_resumed(dots, tmp_path):
    """kill -9 in the middle of `vlarft train-wm`, then --resume finishes from the last checkpoint."""
    out = tmp_path / "wm"
    args = [sys.executable, "-m", "cli.main", "train-wm", "--dataset", str(dots), "--out", str(out),
            "--preset", "smoke", "--steps", "400"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "train_state.pt").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "train_state.pt").exists(), "no checkpoint before the kill"
    killed_at = torch.load(out / "train_state.pt", weights_only=False)["step"]
    assert 0 < killed_at < 400
    res = run_cli("train-wm", "--dataset", str(dots), "--out", str(out), "--preset", "smoke", "--steps", "400",
                  "--resume", "--json")
    assert res.code == 0, res.stderr[-2000:]
    s = json.loads(res.stdout.strip().splitlines()[-1])
    assert s["resumed_from"] >= killed_at and s["step"] == 400
    load_world_model(out)


# -- bad input: a clear error before any training -----------------------------------------------------
def _copy_with(src: Path, dst: Path, edit) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "a") as f:
        edit(f["data"])
    return dst


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda d: d["demo_2"]["actions"].__setitem__((3, 1), np.nan), "demo_2/actions contains NaN or inf"),
        (lambda d: d["demo_1"]["actions"].__setitem__((0, 0), np.inf), "demo_1/actions contains NaN or inf"),
        (lambda d: d["demo_3"].__delitem__("actions"), "demo_3 has no 'actions'"),
        (lambda d: d["demo_0"]["obs"].__delitem__("proprio"), "demo_0 has no proprio per step, the world model "
                                                                 r"needs proprio \(the robot's state\)"),
    ],
)
def test_bad_datasets_fail_before_training(dots, tmp_path, edit, needle):
    bad = _copy_with(dots, tmp_path / "bad.h5", edit)
    out = tmp_path / "wm"
    with pytest.raises(WMDataError, match=needle):
        train_world_model(str(bad), str(out), preset="smoke", **FAST)
    assert not out.exists()


def test_wrong_image_size_is_refused(dots, tmp_path):
    other = write_dot_dataset(tmp_path / "48.h5", episodes=2, size=48)
    with pytest.raises(WMDataError, match="images are 48px but"):
        train_world_model(f"{dots},{other}", str(tmp_path / "wm"), preset="smoke", **FAST)
    with pytest.raises(WMDataError, match="images are 32px, the world model needs 64px"):
        train_world_model(str(dots), str(tmp_path / "wm"), preset="smoke", image_size=64, **FAST)
    odd = write_dot_dataset(tmp_path / "36.h5", episodes=2, size=36)
    with pytest.raises(WMDataError, match="not divisible by 8"):
        train_world_model(str(odd), str(tmp_path / "wm"), preset="smoke", **FAST)


def test_cli_errors_are_one_line(dots, tmp_path):
    bad = _copy_with(dots, tmp_path / "nan.h5", lambda d: d["demo_2"]["actions"].__setitem__((3, 1), np.nan))
    assert_one_line_error(run_cli("train-wm", "--dataset", str(bad), "--out", str(tmp_path / "o")), "NaN or inf")
    assert_one_line_error(run_cli("train-wm", "--dataset", str(tmp_path / "missing.h5"), "--out",
                                  str(tmp_path / "o")), "does not exist")
    assert_one_line_error(run_cli("train-wm", "--dataset", str(dots), "--out", str(tmp_path / "o"),
                                  "--preset", "huge"), "unknown preset")
    assert_one_line_error(run_cli("eval-wm", "--wm", str(tmp_path / "nothing"), "--dataset", str(dots)),
                          "does not exist")
    # a checkpoint of another kind
    from models.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "pol", "policy", {"architecture": "x"}, {"w": torch.zeros(1)})
    assert_one_line_error(run_cli("eval-wm", "--wm", str(tmp_path / "pol"), "--dataset", str(dots)),
                          "'policy' checkpoint, expected 'world_model'")


def test_eval_refuses_a_dataset_of_another_image_size(dots, tmp_path):
    out = tmp_path / "wm"
    train_world_model(str(dots), str(out), preset="smoke", ae_steps=2, dyn_steps=2)
    other = write_dot_dataset(tmp_path / "64.h5", episodes=2, size=64)
    res = run_cli("eval-wm", "--wm", str(out), "--dataset", str(other), "--json")
    assert_one_line_error(res, "images are 64px, the world model needs 32px")
