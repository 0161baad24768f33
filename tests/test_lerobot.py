"""LeRobot import / export and LIBERO import, on small datasets built locally with the package itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli.main import main
from sim.episodes import EpisodeFile, NoSimulatorError
from sim.lerobot_io import export_lerobot, import_lerobot
from sim.lerobot_pkg import lerobot

os.environ["HF_HUB_OFFLINE"] = "1"
TASKS = ["put the cube in the bowl", "open the drawer"]


def smooth_frame(t: int, ep: int, h: int, w: int) -> np.ndarray:
    """A blob moving over a gradient: compresses like a rendered scene, unlike noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = h / 2 + h / 4 * np.sin(0.3 * t + ep), w / 2 + w / 4 * np.cos(0.2 * t)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (h / 10) ** 2))
    img = np.stack([0.3 + 0.4 * yy / h, 0.2 + 0.5 * xx / w, 0.5 + 0.0 * yy], -1) * (1 - blob[..., None])
    img += blob[..., None] * np.array([0.9, 0.2, 0.1])
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_lerobot(root: Path, episodes: int = 3, steps: int = 12, h: int = 64, w: int = 64) -> None:
    pkg = lerobot()
    feats = {
        "observation.images.front": {"dtype": "video", "shape": (h, w, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (8,), "names": None},
        "action": {"dtype": "float32", "shape": (7,), "names": None},
    }
    ds = pkg.LeRobotDataset.create("local/test", fps=10, features=feats, root=root, use_videos=True, vcodec="h264")
    rng = np.random.default_rng(0)
    for e in range(episodes):
        for t in range(steps):
            ds.add_frame({"observation.images.front": smooth_frame(t, e, h, w),
                          "observation.state": rng.standard_normal(8).astype(np.float32),
                          "action": rng.standard_normal(7).astype(np.float32), "task": TASKS[e % 2]})
        ds.save_episode()
    ds.finalize()


@pytest.fixture(scope="module")
def lerobot_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lr") / "ds"
    make_lerobot(root)
    return root


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def test_import_maps_features(lerobot_root: Path, tmp_path: Path) -> None:
    rep = import_lerobot(lerobot_root, tmp_path / "a.h5", image_size=64)
    assert (rep.episodes, rep.steps, rep.action_dim, rep.proprio_dim) == (3, 36, 7, 8)
    ef = EpisodeFile(tmp_path / "a.h5")
    assert (len(ef), ef.action_dim, ef.image_size, ef.camera) == (3, 7, 64, "front")
    ep = ef.load(1)
    assert ep.frames.shape == (12, 64, 64, 3) and ep.proprio.shape == (12, 8)
    assert ep.instruction == TASKS[1] and ep.states is None
    assert psnr(ep.frames, np.stack([smooth_frame(t, 1, 64, 64) for t in range(12)])) >= 35
    assert not ef.has_sim_states
    with pytest.raises(NoSimulatorError, match="no simulator"):
        ef.require_sim_states("the simulator reward")


def test_round_trip(lerobot_root: Path, tmp_path: Path) -> None:
    import_lerobot(lerobot_root, tmp_path / "a.h5")
    out = export_lerobot(tmp_path / "a.h5", tmp_path / "exported", fps=10)
    assert out["episodes"] == 3 and not list(tmp_path.glob(".exported.tmp-*"))
    # the package's own reader loads what we wrote
    ds = lerobot().LeRobotDataset("local/x", root=tmp_path / "exported")
    assert ds.meta.total_episodes == 3 and ds.meta.total_frames == 36
    import_lerobot(tmp_path / "exported", tmp_path / "b.h5")
    a, b = EpisodeFile(tmp_path / "a.h5"), EpisodeFile(tmp_path / "b.h5")
    for i in range(3):
        x, y = a.load(i), b.load(i)
        assert psnr(x.frames, y.frames) >= 35
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.proprio, y.proprio)
        assert x.instruction == y.instruction


def test_non_square_and_larger_frames(tmp_path: Path) -> None:
    make_lerobot(tmp_path / "wide", episodes=1, steps=6, h=96, w=128)
    rep = import_lerobot(tmp_path / "wide", tmp_path / "w.h5", image_size=128)
    assert rep.source_size == [96, 128] and EpisodeFile(tmp_path / "w.h5").image_size == 128


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    return int(e.value.code), capsys.readouterr().err.strip().splitlines()[-1]


def copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_bad_input_is_one_line_and_leaves_nothing(lerobot_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o.h5"
    code, err = run_cli(["import-lerobot", str(tmp_path / "missing"), "--out", str(out)], capsys)
    assert code == 2 and "does not exist" in err

    bad = copy(lerobot_root, tmp_path / "trunc")
    part = next((bad / "data").rglob("*.parquet"))
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    code, err = run_cli(["import-lerobot", str(bad), "--out", str(out)], capsys)
    assert code == 2 and "truncated" in err

    bad = copy(lerobot_root, tmp_path / "vid")
    video = next((bad / "videos").rglob("*.mp4"))
    video.unlink()
    code, err = run_cli(["import-lerobot", str(bad), "--out", str(out)], capsys)
    assert code == 2 and "video" in err

    bad = copy(lerobot_root, tmp_path / "layout")
    info = json.loads((bad / "meta" / "info.json").read_text())
    info["features"].pop("action")
    (bad / "meta" / "info.json").write_text(json.dumps(info))
    code, err = run_cli(["import-lerobot", str(bad), "--out", str(out)], capsys)
    assert code == 2 and "unknown feature layout" in err and "'action'" in err

    assert not out.exists() and not list(tmp_path.glob(".o.h5.tmp-*"))

    code, err = run_cli(["export-lerobot", str(tmp_path / "nothing.h5"), "--out", str(tmp_path / "e")], capsys)
    assert code == 2 and "does not exist" in err and not (tmp_path / "e").exists()


def test_video_shorter_than_table(lerobot_root: Path, tmp_path: Path) -> None:
    bad = copy(lerobot_root, tmp_path / "cut")
    info = json.loads((bad / "meta" / "info.json").read_text())
    video = next((bad / "videos").rglob("*.mp4"))
    import av

    frames = []
    with av.open(str(video)) as box:
        frames = [f.to_ndarray(format="rgb24") for f in box.decode(video=0)]
    with av.open(str(video), "w") as box:  # the same clip without its last 10 frames
        s = box.add_stream("libx264", rate=int(info["fps"]))
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames[:-10]:
            box.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        box.mux(s.encode())
    with pytest.raises(Exception, match="videos do not match the table"):
        import_lerobot(bad, tmp_path / "c.h5")
    assert not (tmp_path / "c.h5").exists()


def write_libero(path: Path, episodes: int = 2, steps: int = 10, size: int = 128) -> None:
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"problem_name": "libero_tabletop", "domain_name": "kitchen",
                                                 "language_instruction": "open the top drawer"})
        data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "Libero_Kitchen_Tabletop_Manipulation"})
        data.attrs["bddl_file_name"] = "KITCHEN_SCENE1_open_the_top_drawer.bddl"
        for e in range(episodes):
            g = data.create_group(f"demo_{e}")
            obs = g.create_group("obs")
            obs.create_dataset("agentview_rgb", data=np.stack([smooth_frame(t, e, size, size) for t in range(steps)]))
            obs.create_dataset("eye_in_hand_rgb", data=np.zeros((steps, size, size, 3), np.uint8))
            obs.create_dataset("ee_states", data=rng.standard_normal((steps, 6)))
            obs.create_dataset("gripper_states", data=rng.standard_normal((steps, 2)))
            obs.create_dataset("joint_states", data=rng.standard_normal((steps, 7)))
            g.create_dataset("actions", data=rng.uniform(-1, 1, (steps, 7)))
            g.create_dataset("states", data=rng.standard_normal((steps, 47)))
            g.create_dataset("rewards", data=np.eye(1, steps, steps - 1)[0])
            g.create_dataset("dones", data=np.eye(1, steps, steps - 1, dtype=np.uint8)[0])
            g.attrs["num_samples"] = steps


def test_libero_import(tmp_path: Path, capsys) -> None:
    write_libero(tmp_path / "libero.hdf5")
    code = 0
    try:
        main(["import-libero", str(tmp_path / "libero.hdf5"), "--out", str(tmp_path / "l.h5"), "--image-size", "64"])
    except SystemExit as e:
        code = int(e.code or 0)
    assert code == 0
    ef = EpisodeFile(tmp_path / "l.h5")
    ep = ef.load(0)
    assert (ef.action_dim, ep.proprio.shape, ep.frames.shape) == (7, (10, 8), (10, 64, 64, 3))
    assert ep.instruction == "open the top drawer" and ep.successes[-1] and not ep.successes[0]
    assert not ef.has_sim_states  # LIBERO's states are not MetaWorld's
    with h5py.File(tmp_path / "libero.hdf5", "r") as f:
        raw = f["data/demo_0/obs/ee_states"][()]
    np.testing.assert_allclose(ep.proprio[:, :6], raw.astype(np.float32))


def test_libero_bad_input(tmp_path: Path, capsys) -> None:
    write_libero(tmp_path / "x.hdf5")
    with h5py.File(tmp_path / "x.hdf5", "a") as f:
        del f["data"].attrs["problem_info"]
    code, err = run_cli(["import-libero", str(tmp_path / "x.hdf5"), "--out", str(tmp_path / "y.h5")], capsys)
    assert code == 2 and "language_instruction" in err and not (tmp_path / "y.h5").exists()
    (tmp_path / "t.hdf5").write_bytes((tmp_path / "x.hdf5").read_bytes()[:5000])
    code, err = run_cli(["import-libero", str(tmp_path / "t.hdf5"), "--out", str(tmp_path / "y.h5")], capsys)
    assert code == 2 and not (tmp_path / "y.h5").exists()
