"""`vlarft collect`, `dataset-info` and `sim-eval` end to end, including every bad input."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

from sim.episodes import EpisodeFile


def test_collect_writes_a_dataset_and_a_seed_reproduces_it(tmp_path):
    args = ["collect", "--tasks", "button-press-topdown", "--episodes", "2", "--action-noise", "0.1",
            "--perturb", "object:minor", "--workers", "2", "--json"]
    a = run_cli(*args, "--out", str(tmp_path / "a.h5"))
    assert a.code == 0, a.stderr
    summary = json.loads(a.stdout)
    assert summary["episodes"] == 2 and summary["tasks"] == {"button-press-topdown-v3": 2}
    b = run_cli(*args, "--out", str(tmp_path / "b.h5"))
    assert b.code == 0, b.stderr
    ea, eb = EpisodeFile(tmp_path / "a.h5"), EpisodeFile(tmp_path / "b.h5")
    for i in range(2):
        x, y = ea.load(i), eb.load(i)
        assert x.start == y.start and x.start.perturbation == "object:minor"
        for k in ("frames", "actions", "expert_actions", "states"):
            np.testing.assert_array_equal(getattr(x, k), getattr(y, k))
        assert not np.allclose(x.actions, x.expert_actions)  # noise on the executed action only
    starts = {tuple(ea.info(i).start.rand_vec) for i in range(2)}
    assert len(starts) == 2
    info = run_cli("dataset-info", str(tmp_path / "a.h5"), "--json")
    assert info.code == 0 and json.loads(info.stdout)["steps"] > 10


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--tasks", "reach,open-sesame", "--episodes", "2"], ["open-sesame"]),
        (["--tasks", "reach", "--episodes", "0"], ["episodes"]),
        (["--tasks", "reach", "--episodes", "-3"], ["episodes"]),
        (["--tasks", "reach", "--episodes", "two"], ["--episodes"]),
        (["--tasks", "reach", "--episodes", "2", "--perturb", "wind:major"], ["wind:major"]),
        (["--tasks", "reach", "--episodes", "2", "--perturb", "goal"], ["goal"]),
        (["--tasks", "reach", "--episodes", "2", "--image-size", "100"], ["image-size"]),
        (["--tasks", "reach", "--episodes", "2", "--camera", "fisheye"], ["camera"]),
        (["--tasks", "reach", "--episodes", "2", "--action-noise", "5"], ["noise"]),
    ],
)
def test_collect_bad_input(tmp_path, args, needles):
    out = tmp_path / "x.h5"
    res = run_cli("collect", *args, "--out", str(out))
    assert_one_line_error(res, *needles)
    assert list(tmp_path.iterdir()) == []


def test_collect_unwritable_paths(tmp_path):
    assert_one_line_error(run_cli("collect", "--tasks", "reach", "--episodes", "1", "--out",
                                  str(tmp_path / "nope" / "x.h5")), "does not exist")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root can write anywhere
            assert_one_line_error(run_cli("collect", "--tasks", "reach", "--episodes", "1", "--out",
                                          str(locked / "x.h5")), "not writable")
    finally:
        locked.chmod(0o700)
    assert_one_line_error(run_cli("collect", "--tasks", "reach", "--episodes", "1", "--out", str(tmp_path)),
                          "directory")


def test_dataset_info_rejects_bad_files(tmp_path, tiny_dataset):
    raw = Path(tiny_dataset).read_bytes()
    (tmp_path / "trunc.h5").write_bytes(raw[: len(raw) // 3])
    (tmp_path / "junk.h5").write_bytes(b"\x00junk" * 50)
    assert_one_line_error(run_cli("dataset-info", str(tmp_path / "trunc.h5")), "trunc.h5")
    assert_one_line_error(run_cli("dataset-info", str(tmp_path / "junk.h5")), "not a readable hdf5")
    assert_one_line_error(run_cli("dataset-info", str(tmp_path / "none.h5")), "does not exist")


def test_sim_eval_expert_reports_rates_intervals_videos_and_disjointness(tmp_path, tiny_dataset):
    res = run_cli("sim-eval", "--policy", "expert", "--tasks", "drawer-open",
                  "--perturb", "none,goal:major,robot:minor", "--episodes", "2", "--video", str(tmp_path / "v"),
                  "--exclude-dataset", str(tiny_dataset), "--json")
    assert res.code == 0, res.stderr
    rep = json.loads(res.stdout)
    cells = {(r["task"], r["perturbation"]): r for r in rep["rows"]}
    assert set(cells) == {("drawer-open-v3", "none"), ("drawer-open-v3", "robot:minor")}  # drawer has no goal
    for r in cells.values():
        assert r["episodes"] == 2 and r["successes"] == 2 and r["ci95"][0] > 0.1 and r["ci95"][1] == 1.0
    assert rep["starts_disjoint"] is True
    assert rep["disjoint_from_datasets"][str(tiny_dataset)]["overlap"] == 0
    videos = [Path(v) for v in rep["videos"]]
    assert len(videos) == 2
    for v in videos:
        head = v.read_bytes()[:4096]
        assert b"ftyp" in head and b"avc1" in v.read_bytes()  # H.264 in an MP4 container


def test_sim_eval_detects_overlapping_starts(tmp_path):
    from sim.collect import CollectConfig, collect

    path = tmp_path / "evalstarts.h5"
    collect(CollectConfig(tasks=("button-press-topdown-v3",), episodes=1, stream="eval", workers=1), str(path))
    res = run_cli("sim-eval", "--tasks", "button-press-topdown", "--episodes", "1", "--exclude-dataset", str(path),
                  "--json")
    rep = json.loads(res.stdout)
    assert rep["starts_disjoint"] is False and rep["disjoint_from_datasets"][str(path)]["overlap"] == 1


def test_sim_eval_bad_input(tmp_path):
    assert_one_line_error(run_cli("sim-eval", "--tasks", "nope"), "nope")
    assert_one_line_error(run_cli("sim-eval", "--tasks", "reach", "--episodes", "0"), "episodes")
    assert_one_line_error(run_cli("sim-eval", "--tasks", "reach", "--perturb", "object:tiny"), "object:tiny")
    assert_one_line_error(run_cli("sim-eval", "--tasks", "reach", "--instruction", "  "), "instruction")
    assert_one_line_error(run_cli("sim-eval", "--policy", str(tmp_path / "nothing")), "nothing")
