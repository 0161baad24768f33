"""Knowing when an instruction is not understood: the match against the policy's training phrasings, the
thresholds chosen on the held-out sets, the CLI, and the imagine / evaluate job results that carry it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import assert_one_line_error, run_cli

from models.hooks import Hooks
from models.policy.config import PRESETS, PolicyConfig
from models.policy.language import (
    LANGUAGE_FILE,
    choose_thresholds,
    instruction_match,
    match_policy,
    policy_language,
    policy_tasks,
    read_language,
)
from models.policy.model import VLAPolicy
from models.policy.text import InstructionEncoder
from models.policy_io import load_policy, save_policy
from sim.errors import InputError
from sim.instructions import heldout_phrasings, training_phrasings

TASKS = ["reach-v3", "push-v3", "drawer-open-v3", "button-press-topdown-v3"]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    """An untrained smoke-sized policy that says it was trained on TASKS, its text cache warm (MiniLM once)."""
    text = InstructionEncoder()
    text.warm([s for t in TASKS for s in training_phrasings(t)])
    torch.manual_seed(0)
    policy = VLAPolicy(PolicyConfig.from_json(PRESETS["smoke"].policy.to_json()), text)
    policy.action_norm.fit(torch.rand(64, 4) * 2 - 1)
    policy.proprio_norm.fit(torch.rand(64, 4))
    out = tmp_path_factory.mktemp("language") / "policy"
    save_policy(policy, out, {"tasks": TASKS, "datasets": []})
    return out


@pytest.fixture(scope="module")
def encoder(policy_dir) -> InstructionEncoder:
    return load_policy(policy_dir).text


def test_cross_task_instruction_warns_and_a_heldout_paraphrase_does_not(policy_dir, encoder):
    assert policy_tasks(policy_dir) == TASKS
    cross = match_policy(policy_dir, "press the button from the top", "reach-v3", encoder)
    assert cross["understood"] is False and cross["scene_task"] == "reach-v3"
    assert cross["nearest_task"] == "button-press-topdown-v3" and cross["similarity"] > 0.99
    assert cross["warning"] == "this instruction is closer to button-press-topdown-v3 than to reach-v3"
    assert cross["scene_similarity"] < cross["similarity"] and 0 < cross["margin"] <= cross["similarity"]
    assert cross["second_task"] in TASKS and cross["second_task"] != "button-press-topdown-v3"

    para = heldout_phrasings("reach-v3", "paraphrase")[0]
    assert para not in training_phrasings("reach-v3")
    ok = match_policy(policy_dir, para, "reach-v3", encoder)
    assert ok["understood"] is True and ok["warning"] is None, ok
    assert ok["nearest_task"] == "reach-v3" and ok["instruction"] == para
    assert 0 < ok["margin"] <= ok["similarity"] <= 1


def test_another_tasks_instruction_always_warns_and_nonsense_matches_nothing(encoder):
    # the scene rule fires whatever the thresholds
    window = instruction_match(encoder, [*TASKS, "window-open-v3"], "open the window", "drawer-open-v3",
                               threshold=0.0, margin=0.0)
    assert window["nearest_task"] == "window-open-v3" and not window["understood"]
    assert window["warning"] == "this instruction is closer to window-open-v3 than to drawer-open-v3"
    # on the drawer scene of a policy that never learnt windows: another task is nearest, and not by much
    drawer = instruction_match(encoder, TASKS, "open the window", "drawer-open-v3", threshold=0.6)
    assert not drawer["understood"]
    assert "than to drawer-open-v3" in drawer["warning"] or "matches no task" in drawer["warning"]
    odd = instruction_match(encoder, TASKS, "make me a cup of tea", threshold=0.6)
    assert not odd["understood"] and odd["scene_task"] is None
    sim = odd["similarity"]
    assert odd["warning"] == f"this instruction matches no task the policy knows well (similarity {sim:.2f})"
    unseen = instruction_match(encoder, TASKS, "push the puck to the goal", "window-open-v3")
    assert not unseen["understood"] and "not trained on window-open-v3" in unseen["warning"]
    for bad in ("", "   ", "x" * 600):
        with pytest.raises(InputError):
            instruction_match(encoder, TASKS, bad)
    with pytest.raises(InputError, match="unknown task"):
        instruction_match(encoder, TASKS, "reach", "no-such-task")


def test_choose_thresholds_reports_rates_per_heldout_set(encoder):
    r = choose_thresholds(encoder, TASKS)
    assert 0 <= r["similarity"] <= 1 and 0 <= r["margin"] <= 1
    assert set(r["false_alarm"]) == {"paraphrase", "question", "all"}
    assert {"training", "paraphrase", "question", "cross_task", "unknown_task"} <= set(r["miss"])
    for rate in [*r["false_alarm"].values(), *r["miss"].values()]:
        assert rate is not None and 0.0 <= rate <= 1.0
    if r["rule"].startswith("false alarms"):
        assert r["false_alarm"]["all"] <= 0.05
    assert [row["task"] for row in r["per_task"]] == TASKS
    assert all(row["closest_other"] in TASKS and row["closest_other"] != row["task"] for row in r["per_task"])
    assert r["counts"]["cross_task_negatives"] > 0 and r["counts"]["positives"] > 0


def test_cli_reports_saves_and_checks(policy_dir):
    res = run_cli("language-check", "--policy", str(policy_dir), "--json")
    assert res.code == 0, res.stderr[-2000:]
    report = json.loads(res.stdout)
    assert report["saved"] == str(policy_dir / LANGUAGE_FILE)
    assert read_language(policy_dir, TASKS)["similarity"] == report["similarity"]
    assert policy_language(policy_dir)["fingerprint"] == report["fingerprint"]  # read back, not recomputed

    res = run_cli("language-check", "--policy", str(policy_dir), "--instruction", "press the button from the top",
                  "--task", "reach")
    assert res.code == 0, res.stderr[-2000:]
    assert "⚠ this instruction is closer to button-press-topdown-v3 than to reach-v3" in res.stdout


def test_cli_bad_input_is_one_line(policy_dir, tmp_path):
    p = str(policy_dir)
    assert_one_line_error(run_cli("language-check", "--policy", str(tmp_path / "none")), "no checkpoint")
    assert_one_line_error(run_cli("language-check", "--policy", p, "--instruction", "  "), "empty")
    assert_one_line_error(run_cli("language-check", "--policy", p, "--instruction", "a" * 513), "limit")
    assert_one_line_error(run_cli("language-check", "--policy", p, "--instruction", "reach", "--task", "nope"),
                          "unknown task")
    assert_one_line_error(run_cli("language-check", "--policy", p, "--task", "reach-v3"), "--instruction")


class _Ctx(SimpleNamespace):
    """What run_imagine / run_evaluate use of a RunContext: refs → folders, the output folder, hooks."""

    def checkpoint(self, ref: str, want: str):
        return None if ref == "expert" else self.folder

    def artifact(self, kind: str, path) -> None:
        pass

    def log(self, message: str, level: str = "info") -> None:
        self.logs.append((level, message))


def test_imagine_and_evaluate_results_carry_the_match(policy_dir, tmp_path):
    from backend.params import EvaluateParams, ImagineParams
    from workers.jobs import _instruction_matches, run_imagine

    ctx = _Ctx(folder=policy_dir, out=tmp_path, hooks=Hooks(), logs=[])
    p = ImagineParams(policies={"base": "run:1", "rft": "expert"}, task="reach-v3",
                      instruction="press the button from the top", horizon=8, max_steps=4)
    result = run_imagine(p, ctx)
    assert result["instruction"] == "press the button from the top" and result["task"] == "reach-v3"
    assert set(result["instruction_match"]) == {"base"}  # the expert ignores language
    m = result["instruction_match"]["base"]
    assert m["scene_task"] == "reach-v3" and m["instruction"] == result["instruction"] and not m["understood"]
    assert {c["policy"] for c in result["cells"]} == {"base", "rft"}  # the existing keys are unchanged

    ev = EvaluateParams(policies=["run:1", "expert"], tasks=["reach-v3", "button-press-topdown-v3"],
                        instruction="press the button from the top")
    by_task = _instruction_matches(ev, ctx)["run:1"]
    assert not by_task["reach-v3"]["understood"] and by_task["button-press-topdown-v3"]["understood"]
    assert ctx.logs == [("warning", "run:1 on reach-v3: this instruction is closer to button-press-topdown-v3 "
                                    "than to reach-v3")]


def test_playground_shows_the_instruction_and_the_warning():
    from frontend.render import instruction_check

    res = {"instruction": "<b>press</b> the button", "task": "reach-v3", "instruction_match": {
        "base": {"understood": False, "warning": "this instruction is closer to push-v3 than to reach-v3"},
        "rft": {"understood": False, "warning": "this instruction is closer to push-v3 than to reach-v3"}}}
    html = instruction_check(res, {"base": "Base policy", "rft": "Fine-tuned policy"})
    assert "&lt;b&gt;press&lt;/b&gt; the button" in html and "<b>press</b>" not in html
    assert html.count("⚠ this instruction is closer to push-v3 than to reach-v3") == 1
    assert "Base policy, Fine-tuned policy" in html
    ok = instruction_check({"instruction": "reach", "task": "reach-v3", "instruction_match": {
        "base": {"understood": True, "similarity": 0.9, "nearest_task": "reach-v3"}}})
    assert "⚠" not in ok and "understood by base" in ok
