"""Training phrasings and the held-out instruction sets (sim/instructions.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

from sim.errors import InputError
from sim.instructions import (
    HELDOUT_SETS,
    INSTRUCTION_SETS,
    MAX_TRAINING,
    all_known,
    heldout_phrasings,
    training_phrasings,
)
from sim.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


def _key(text: str) -> str:
    return " ".join(text.lower().split())


_DIGEST = """
import hashlib
from sim.instructions import all_known
from sim.tasks import TASKS
h = hashlib.sha256()
for task in sorted(TASKS):
    for text in all_known(task):
        h.update(f"{task}\\t{text}\\n".encode())
print(h.hexdigest())
"""


def _digest(hash_seed: str) -> str:
    """sha256 of every task's phrasings, computed in a fresh interpreter with this PYTHONHASHSEED."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run([sys.executable, "-c", _DIGEST], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=env)
    return out.stdout.strip()


def test_every_task_has_at_least_16_distinct_training_phrasings():
    for name, spec in TASKS.items():
        texts = training_phrasings(name)
        assert 16 <= len(texts) <= MAX_TRAINING, (name, len(texts))
        assert texts[0] == spec.instruction
        assert len({_key(s) for s in texts}) == len(texts), name
        assert all(s == s.strip() and "?" not in s and not s.lower().startswith(("could you", "would you"))
                   for s in texts), name
    assert training_phrasings("reach") == training_phrasings("reach-v3")


def test_generator_is_deterministic():
    first = {t: training_phrasings(t) for t in TASKS}
    training_phrasings.cache_clear()
    assert {t: training_phrasings(t) for t in TASKS} == first


def test_generator_is_the_same_in_fresh_interpreters():
    digest = _digest("1")
    assert len(digest) == 64 and _digest("12345") == digest


def test_training_and_held_out_sets_are_pairwise_disjoint():
    for name, spec in TASKS.items():
        sets = {"train": training_phrasings(name), **{h: heldout_phrasings(name, h) for h in HELDOUT_SETS}}
        assert sets["paraphrase"] == spec.paraphrases
        assert len(sets["question"]) >= 3
        keys = {k: {_key(s) for s in v} for k, v in sets.items()}
        assert all(len(keys[k]) == len(sets[k]) for k in sets), name
        names = list(sets)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                assert not keys[a] & keys[b], (name, a, b, keys[a] & keys[b])
        assert all_known(name) == (*sets["train"], *sets["paraphrase"], *sets["question"])


def test_held_out_sentences_are_never_training_sentences_of_any_task():
    all_training = {_key(s) for t in TASKS for s in training_phrasings(t)}
    for name in TASKS:
        for h in HELDOUT_SETS:
            leaked = {_key(s) for s in heldout_phrasings(name, h)} & all_training
            assert not leaked, (name, h, leaked)


def test_no_sentence_belongs_to_two_tasks():
    owner: dict[str, str] = {}
    for name in TASKS:
        for s in all_known(name):
            assert owner.setdefault(_key(s), name) == name, (s, owner[_key(s)], name)


def test_question_set_has_questions_and_distractor_clauses():
    for name in TASKS:
        qs = heldout_phrasings(name, "question")
        assert any(s.startswith("could you") and s.endswith("?") for s in qs), name
        assert any(s.startswith("would you mind") and s.endswith("?") for s in qs), name
        assert any(", but please " in s for s in qs), name


def test_unknown_set_or_task_is_a_clear_error():
    assert INSTRUCTION_SETS == ("train", "paraphrase", "question")
    with pytest.raises(InputError, match=r"held-out.*'train'.*paraphrase, question"):
        heldout_phrasings("reach-v3", "train")
    with pytest.raises(InputError, match="nope"):
        training_phrasings("nope")


def test_eval_config_cycles_the_chosen_set():
    from sim.evaluate import EvalConfig, instruction_for

    for set_name in HELDOUT_SETS:
        cfg = EvalConfig(tasks=("push-v3",), instruction_set=set_name)
        held = heldout_phrasings("push-v3", set_name)
        assert [instruction_for(cfg, "push-v3", i) for i in range(len(held) + 1)] == [*held, held[0]]
    assert instruction_for(EvalConfig(tasks=("push-v3",)), "push-v3", 3) == TASKS["push-v3"].instruction
    with pytest.raises(InputError, match="train, paraphrase, question"):
        EvalConfig(tasks=("push-v3",), instruction_set="questions")


def test_backend_params_accept_the_question_set():
    from pydantic import ValidationError

    from backend.params import EvaluateParams

    assert EvaluateParams(tasks="reach-v3", instruction_set="question").instruction_set == "question"
    with pytest.raises(ValidationError):
        EvaluateParams(tasks="reach-v3", instruction_set="questions")


def test_sim_eval_bad_instruction_set_is_one_line():
    assert_one_line_error(run_cli("sim-eval", "--tasks", "reach", "--instruction-set", "bogus"),
                          "instruction set", "bogus")
    assert_one_line_error(run_cli("sim-eval", "--tasks", "reach", "--paraphrases", "--instruction-set", "question"),
                          "--paraphrases", "question")


def test_sim_eval_runs_the_question_set():
    import json

    res = run_cli("sim-eval", "--tasks", "reach", "--episodes", "1", "--workers", "1", "--instruction-set", "question",
                  "--json")
    assert res.code == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["instruction_set"] == "question"
