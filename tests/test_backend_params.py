"""Run parameters: every kind validates, names the field of a bad value, and stores normalised values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backend.params import (
    CAMERAS,
    IMAGE_SIZES,
    PARAMS,
    PIPELINE_PRESETS,
    QUEUE_OF,
    STAGE_PRESETS,
    WM_PRESETS,
    CollectParams,
    CompareParams,
    EvaluateParams,
    ImagineParams,
    RFTParams,
    TrainParams,
    TrainRewardParams,
    TrainWMParams,
    WMEvalParams,
    describe_errors,
    parse_params,
)
from backend.schemas import RUN_CREATE_TYPES


def test_camera_and_size_lists_match_the_simulator():
    from sim.env import CAMERAS as SIM_CAMERAS
    from sim.env import IMAGE_SIZES as SIM_SIZES

    assert tuple(CAMERAS) == tuple(SIM_CAMERAS)
    assert tuple(IMAGE_SIZES) == tuple(SIM_SIZES)


def test_every_kind_has_params_a_queue_and_a_create_type():
    from backend.kinds import KINDS

    assert set(PARAMS) == set(KINDS) == set(QUEUE_OF)
    assert {t.model_fields["kind"].annotation.__args__[0] for t in RUN_CREATE_TYPES} == set(KINDS)


def _loc(exc: ValidationError) -> list[tuple]:
    return [e["loc"] for e in exc.errors()]


@pytest.mark.parametrize(("model", "values", "field"), [
    (CollectParams, {"tasks": "no-such-task", "episodes": 1}, "tasks"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 0}, "episodes"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1001}, "episodes"),
    (CollectParams, {"tasks": "reach-v3", "episodes": "2"}, "episodes"),  # strict: no string numbers
    (CollectParams, {"tasks": "reach-v3", "episodes": 2.5}, "episodes"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "image_size": 100}, "image_size"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "camera": "fisheye"}, "camera"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "perturbation": "object:huge"}, "perturbation"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "perturbation": "all"}, "perturbation"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "action_noise": 2.0}, "action_noise"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "max_steps": 0}, "max_steps"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "dataset_name": "../x"}, "dataset_name"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "epsiodes": 3}, "epsiodes"),  # typo → unknown field
    (TrainParams, {"dataset_id": 0}, "dataset_id"),
    (TrainParams, {"dataset_id": 1, "preset": "huge"}, "preset"),
    (TrainParams, {"dataset_id": 1, "steps": 10**9}, "steps"),
    (RFTParams, {"policy": "expert", "world_model": "run:1", "dataset_id": 1, "steps": 5}, "policy"),
    (RFTParams, {"policy": "run:1", "world_model": "/etc/passwd", "dataset_id": 1, "steps": 5}, "world_model"),
    (RFTParams, {"policy": "run:1", "world_model": "run:2", "dataset_id": 1, "steps": 5,
                 "options": {"not an identifier": 1}}, "options"),
    (EvaluateParams, {"policies": []}, "policies"),
    (EvaluateParams, {"policies": ["expert", "expert"]}, "policies"),
    (EvaluateParams, {"policies": ["run:x"]}, "policies"),
    (EvaluateParams, {"perturbations": "goal:tiny"}, "perturbations"),
    (EvaluateParams, {"episodes": 2, "videos_per_cell": 3}, "videos_per_cell"),
    (EvaluateParams, {"instruction": ""}, "instruction"),
    (CompareParams, {"policy_a": "expert", "policy_b": "expert"}, "policy_b"),
    (ImagineParams, {"world_model": "run:1", "task": "reach-v3,push-v3"}, "task"),
    (ImagineParams, {"world_model": "run:1", "task": "reach-v3", "horizon": 0}, "horizon"),
    (ImagineParams, {"task": "reach-v3", "reward_model": "run:2"}, "reward_model"),
    (ImagineParams, {"world_model": "run:1", "task": "reach-v3", "reward_model": "rm"}, "reward_model"),
])
def test_bad_values_name_their_field(model, values, field):
    with pytest.raises(ValidationError) as info:
        model(**values)
    assert any(field in loc for loc in _loc(info.value)), info.value
    assert field in describe_errors(info.value.errors())


def test_values_are_normalised_and_round_trip():
    p = CollectParams(tasks="reach,push-v3", episodes=2, perturbation="Object:Minor")
    assert p.tasks == ["reach-v3", "push-v3"]
    assert p.perturbation == "object:minor"
    stored = p.model_dump(mode="json")
    assert parse_params("collect", stored) == p
    e = EvaluateParams(tasks="smoke", perturbations="all")
    assert len(e.perturbations) == 9 and e.perturbations[0] == "none"
    assert e.tasks == ["drawer-open-v3", "button-press-topdown-v3"]
    c = CompareParams(policy_a="expert", policy_b="run:3", tasks="reach-v3", episodes=2, videos_per_cell=5)
    assert c.to_evaluate().policies == ["expert", "run:3"]
    assert c.to_evaluate().videos_per_cell == 2


def test_rft_needs_a_world_model_only_for_the_world_model_reward():
    with pytest.raises(ValidationError) as info:
        RFTParams(policy="run:1", dataset_id=1)
    assert describe_errors(info.value.errors()).startswith("world_model: required with the world-model reward")
    p = RFTParams(policy="run:1", dataset_id=1, options={"reward_source": "sim"}, preset="smoke")
    assert p.world_model is None and p.steps is None


@pytest.mark.parametrize(("values", "needle"), [
    ({"options": {"group_sise": 8}}, "options.group_sise: Extra inputs are not permitted"),
    ({"options": {"group_size": 1}}, "options.group_size: Input should be greater than or equal to 2"),
    ({"options": {"reward_source": "pixels"}}, "options.reward_source"),
    ({"reward": "success", "world": "sim", "options": {"group_size": 1}}, "options.group_size"),
    ({"reward": "success", "world": "sim", "options": {"kl_coef": -1}}, "options.kl_coef"),
    ({"reward": "success", "world": "sim", "options": {"tasks": "no-such-task"}}, "no-such-task"),
    ({"reward": "success", "world": "sim", "options": {"init_std": 0.5, "std_max": 0.3}}, "init_std"),
    ({"reward": "success", "world": "sim", "options": {"lr_sigma": 0.1}}, "options.lr_sigma"),  # an RFT-only name
    ({"reward": "success", "world": "wm"}, "reward_model: required with world wm and the success reward"),
    ({"reward": "verified", "world": "sim"}, "dataset_id: required"),
])
def test_rft_options_are_typed(values, needle):
    base = {"policy": "run:1", "world_model": "run:2", "dataset_id": 1}
    if values.get("reward") == "success" or values.get("world") == "sim":
        base.pop("dataset_id")
    with pytest.raises(ValidationError) as info:
        RFTParams.model_validate({**base, **values})
    assert needle in describe_errors(info.value.errors())


def test_success_reward_options_reach_the_worker_typed():
    p = RFTParams.model_validate({"policy": "run:1", "world": "sim", "reward": "success",
                                  "options": {"group_size": 4, "tasks": "cpu-quick", "lr_head": 1}})
    assert p.train_kwargs() == {"group_size": 4, "lr_head": 1.0,
                                "tasks": "reach-v3,push-v3,drawer-open-v3,button-press-topdown-v3"}
    legacy = RFTParams.model_validate({"policy": "run:1", "dataset_id": 1, "world": "sim"})
    assert legacy.train_kwargs() == {"reward_source": "sim"}


# World-model RL: policy rollouts, alignment, the reward model, RL and evaluation in imagination -----------

WM_EVAL = {"policies": ["run:3"], "world_model": "run:2", "reward_model": "run:5"}


@pytest.mark.parametrize(("model", "values", "field", "needle"), [
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "noise_std": 0.3}, "noise_std", "applies only with a policy"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "policy": "run:3", "noise_std": 2.5}, "noise_std",
     "less than or equal to 2"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "policy": "expert"}, "policy", "run:<id>"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "after_success": 101}, "after_success", "100"),
    (CollectParams, {"tasks": "reach-v3", "episodes": 1, "after_success": -1}, "after_success", "0"),
    (TrainWMParams, {"dataset_id": 1, "preset": "align"}, "init_world_model", "required with preset align"),
    (TrainWMParams, {"dataset_id": 1, "init_world_model": "/tmp/wm"}, "init_world_model", "run:<id>"),
    (TrainWMParams, {"dataset_id": 1, "extra_dataset_ids": [1]}, "extra_dataset_ids", "already dataset_id"),
    (TrainWMParams, {"dataset_id": 1, "extra_dataset_ids": [2, 2]}, "extra_dataset_ids", "must differ"),
    (TrainWMParams, {"dataset_id": 1, "extra_dataset_ids": list(range(2, 13))}, "extra_dataset_ids", "at most 10"),
    (TrainParams, {"dataset_id": 1, "preset": "align"}, "preset", "preset"),  # align is the world model's only
    (TrainRewardParams, {"dataset_ids": [1]}, "world_model", "Field required"),
    (TrainRewardParams, {"world_model": "expert", "dataset_ids": [1]}, "world_model", "run:<id>"),
    (TrainRewardParams, {"world_model": "run:2", "dataset_ids": []}, "dataset_ids", "at least 1"),
    (TrainRewardParams, {"world_model": "run:2", "dataset_ids": list(range(1, 12))}, "dataset_ids", "at most 10"),
    (TrainRewardParams, {"world_model": "run:2", "dataset_ids": [1, 1]}, "dataset_ids", "must differ"),
    (TrainRewardParams, {"world_model": "run:2", "dataset_ids": [1], "preset": "align"}, "preset", "preset"),
    (TrainRewardParams, {"world_model": "run:2", "dataset_ids": [1], "steps": 0}, "steps", "greater than"),
    (WMEvalParams, {**WM_EVAL, "policies": []}, "policies", "at least 1"),
    (WMEvalParams, {**WM_EVAL, "policies": [f"run:{i}" for i in range(1, 10)]}, "policies", "at most 8"),
    (WMEvalParams, {**WM_EVAL, "policies": ["run:3", "run:3"]}, "policies", "must differ"),
    (WMEvalParams, {**WM_EVAL, "policies": ["expert"]}, "policies", "run:<id>"),
    (WMEvalParams, {**WM_EVAL, "world_model": None}, "world_model", "string"),
    (WMEvalParams, {"policies": ["run:3"], "world_model": "run:2"}, "reward_model", "Field required"),
    (WMEvalParams, {**WM_EVAL, "tasks": "levitate-v3"}, "tasks", "levitate-v3"),
    (WMEvalParams, {**WM_EVAL, "perturbations": "goal:tiny"}, "perturbations", "tiny"),
    (WMEvalParams, {**WM_EVAL, "episodes": 0}, "episodes", "greater than"),
    (WMEvalParams, {**WM_EVAL, "max_steps": 1001}, "max_steps", "less than"),
])
def test_world_model_rl_params_name_their_field(model, values, field, needle):
    with pytest.raises(ValidationError) as info:
        model(**values)
    assert any(field in loc for loc in _loc(info.value)), info.value
    message = describe_errors(info.value.errors())
    assert message.startswith(f"{field}: ") or f"; {field}: " in message, message
    assert needle in message, message


@pytest.mark.parametrize(("values", "field", "needle"), [
    ({"world": "wm", "reward": "success", "reward_model": "run:5"}, "world_model", "required with world wm"),
    ({"world": "wm", "reward": "success", "world_model": "run:2"}, "reward_model", "required with world wm"),
    ({"world": "wm", "reward": "success", "world_model": "run:2", "reward_model": "x"}, "reward_model", "run:<id>"),
    ({"world": "sim", "reward": "success", "world_model": "run:2"}, "world_model", "does not apply"),
    ({"world": "sim", "reward": "success", "reward_model": "run:5"}, "reward_model", "applies only to world wm"),
    ({"world": "wm", "reward": "verified", "world_model": "run:2", "dataset_id": 1, "reward_model": "run:5"},
     "reward_model", "not world wm with reward verified"),
    ({"world": "wm", "reward": "action_l1", "dataset_id": 1, "reward_model": "run:5"}, "reward_model",
     "applies only to world wm"),
])
def test_rft_world_model_and_reward_model_rules_name_the_field(values, field, needle):
    with pytest.raises(ValidationError) as info:
        RFTParams.model_validate({"policy": "run:1", **values})
    assert (field,) in _loc(info.value), info.value
    assert f"{field}: " in describe_errors(info.value.errors())
    assert needle in describe_errors(info.value.errors())


def test_world_model_rl_params_accept_and_round_trip():
    rl = RFTParams.model_validate({"policy": "run:1", "world": "wm", "reward": "success", "world_model": "run:2",
                                   "reward_model": "artifact:7", "preset": "smoke", "options": {"group_size": 4}})
    assert rl.train_kwargs() == {"group_size": 4} and rl.reward_model == "artifact:7"
    assert parse_params("rft", rl.model_dump(mode="json")) == rl
    sim = RFTParams.model_validate({"policy": "run:1", "world": "sim", "reward": "success"})
    assert sim.world_model is None and sim.reward_model is None
    col = CollectParams(tasks="reach-v3", episodes=2, policy="run:3", noise_std=0.2, after_success=8)
    assert (col.policy, col.noise_std, col.after_success, col.keep_failures) == ("run:3", 0.2, 8, False)
    assert parse_params("collect", col.model_dump(mode="json")) == col
    assert CollectParams(tasks="reach-v3", episodes=1).policy is None  # the expert, as before
    wm = TrainWMParams(dataset_id=1, preset="align", init_world_model="run:2", extra_dataset_ids=[4, 5])
    assert parse_params("train_wm", wm.model_dump(mode="json")) == wm
    assert TrainWMParams(dataset_id=1).extra_dataset_ids == [] and TrainWMParams(dataset_id=1).init_world_model is None
    rm = TrainRewardParams(world_model="run:2", dataset_ids=[1, 4], preset="smoke", steps=30)
    assert rm.imagined is True and parse_params("train_reward", rm.model_dump(mode="json")) == rm
    ev = WMEvalParams(**WM_EVAL, perturbations="all", tasks="smoke")
    assert (ev.episodes, ev.max_steps, ev.real, ev.seed) == (20, 200, True, 0)
    assert len(ev.perturbations) == 9 and ev.tasks == ["drawer-open-v3", "button-press-topdown-v3"]
    assert WMEvalParams(**WM_EVAL).tasks == ["reach-v3", "push-v3", "drawer-open-v3", "button-press-topdown-v3"]
    assert parse_params("wm_eval", ev.model_dump(mode="json")) == ev
    assert "cpu-quick-wm" in PIPELINE_PRESETS
    assert QUEUE_OF["train_reward"] == QUEUE_OF["wm_eval"] == "train"
    assert PARAMS["train_wm"] is TrainWMParams


def test_preset_lists_match_the_stages():
    """The API repeats the stages' preset names (it imports no torch); they must not drift apart."""
    from models.pipeline import PRESETS as PIPELINE
    from models.reward_model import PRESETS as REWARD
    from models.world_model.config import PRESETS as WORLD_MODEL

    assert set(PIPELINE_PRESETS) == set(PIPELINE)
    assert set(WM_PRESETS) == set(WORLD_MODEL)
    assert set(STAGE_PRESETS) == set(REWARD)
