"""Several policies on the same seeded starts (sim.evaluate.compare), and one cached simulator per process."""

from __future__ import annotations

from sim.evaluate import EXPERT, STATS, EvalConfig, PolicySpec, compare, process_env, write_side_by_side


def test_one_simulator_per_process():
    env = process_env("reach-v3", "workspace", 64, 30)
    assert process_env("reach-v3", "workspace", 64, 30) is env
    other = process_env("reach-v3", "workspace", 64, 40)
    assert other is not env and other.max_steps == 40
    assert env._env is None  # the previous one was closed


def test_compare_evaluates_every_policy_on_the_same_starts(tmp_path):
    cfg = EvalConfig(tasks=("reach-v3",), perturbations=["none", "object:minor"], episodes=2, max_steps=20,
                     workers=1, keep_frames=1)
    specs = {"a": EXPERT, "b": PolicySpec(name="expert-again")}
    calls, done = [], []
    cmp = compare(specs, cfg, progress=lambda *args: calls.append(args), on_report=lambda n, r: done.append(n))
    assert list(cmp.reports) == done == ["a", "b"]
    assert [c[:3] for c in calls] == [(k, 8, "a") for k in range(1, 5)] + [(k, 8, "b") for k in range(5, 9)]
    assert cmp.same_start_states and cmp.starts_disjoint == {"a": True, "b": True}
    cond = cmp.by_policy("object:minor")
    assert set(cond) == {"a", "b"} and set(cond["a"]) == set(STATS) and cond["a"] == cond["b"]
    assert cond["a"]["episodes"] == 2
    assert set(cmp.by_policy("none", "reach-v3")) == {"a", "b"} and cmp.by_policy("goal:major") == {}
    recorded = cmp.recorded()
    assert list(recorded) == [("reach-v3", "none", 0), ("reach-v3", "object:minor", 0)]
    key, eps = next(iter(recorded.items()))
    assert list(eps) == ["a", "b"]
    path = write_side_by_side(tmp_path, key, eps, labelled=True)
    outcome = "ok" if eps["a"].success else "fail"
    assert path.name == f"reach-v3_none_0_a-{outcome}_b-{outcome}.mp4" and path.stat().st_size > 0
    alone = write_side_by_side(tmp_path, key, {"a": eps["a"]})
    assert alone.name == f"reach-v3_none_0_{outcome}.mp4"
    import imageio.v3 as iio

    labelled, plain = iio.imread(path, index=0), iio.imread(alone, index=0)
    assert labelled.shape[0] > plain.shape[0]  # the name and step bars burnt in above and below the tiles
