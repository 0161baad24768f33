import pytest

from sim.tasks import MT10, TASK_PRESETS, TASKS, UnknownTaskError, get_task, resolve_tasks, task_of_instruction


def test_registry_has_all_50_metaworld_v3_tasks():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    from metaworld.policies import ENV_POLICY_MAP

    assert set(TASKS) == set(ALL_V3_ENVIRONMENTS) == set(ENV_POLICY_MAP)
    assert len(TASKS) == 50


def test_every_task_has_an_instruction_and_three_distinct_held_out_paraphrases():
    seen = {}
    for t in TASKS.values():
        assert t.instruction and len(t.paraphrases) >= 3
        texts = [s.lower() for s in t.all_instructions]
        assert len(set(texts)) == len(texts), t.name
        for s in texts:
            assert s not in seen, f"{s!r} used by {seen.get(s)} and {t.name}"
            seen[s] = t.name


def test_presets_name_task_sets():
    assert 1 <= len(TASK_PRESETS["smoke"]) <= 2
    assert TASK_PRESETS["cpu-quick"] == ("reach-v3", "push-v3", "drawer-open-v3", "button-press-topdown-v3")
    assert TASK_PRESETS["mt10"] == MT10 and len(MT10) == 10
    assert {get_task(t).skill for t in TASK_PRESETS["cpu-quick"]} == {"reach", "push", "articulated", "press"}


def test_resolve_tasks_accepts_presets_lists_and_short_names():
    assert resolve_tasks("cpu-quick") == TASK_PRESETS["cpu-quick"]
    assert resolve_tasks("reach,push-v3,reach-v3") == ("reach-v3", "push-v3")
    with pytest.raises(UnknownTaskError, match="unknown task 'open-sesame'"):
        resolve_tasks("reach,open-sesame")
    with pytest.raises(UnknownTaskError):
        resolve_tasks("")


def test_instruction_lookup_finds_paraphrases():
    assert task_of_instruction("Pull the drawer open") == "drawer-open-v3"
    assert task_of_instruction("make me a sandwich") is None
