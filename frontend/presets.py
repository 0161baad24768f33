"""What the launch form starts from: each job kind's parameters, filled in from a preset and from what
the studio already holds (the newest dataset and checkpoints). The fields and their defaults come from
the API's own parameter models, so the form never drifts from what the server validates."""

from __future__ import annotations

import json
from typing import Any, get_args

from backend.client import (
    CollectParams,
    EvaluateParams,
    Params,
    PipelineParams,
    RFTParams,
    StudioClient,
    TrainParams,
    TrainRewardParams,
    TrainWMParams,
    WMEvalParams,
)

KINDS: dict[str, type[Params]] = {
    "pipeline": PipelineParams,
    "collect": CollectParams,
    "train_wm": TrainWMParams,
    "train_policy": TrainParams,
    "train_reward": TrainRewardParams,
    "rl": RFTParams,
    "rl_wm": RFTParams,
    "rft": RFTParams,
    "evaluate": EvaluateParams,
    "wm_eval": WMEvalParams,
}
# launch-form entries that are another API kind with other defaults
API_KIND = {"rl": "rft", "rl_wm": "rft"}
KIND_LABELS = {
    "pipeline": "Whole pipeline: collect → world model → policy → RFT (→ closed-loop RL) → evaluate",
    "collect": "Collect expert episodes (a dataset)",
    "train_wm": "Train the world model (or align one: preset align)",
    "train_policy": "Train the base VLA policy",
    "train_reward": "Train the success reward model of a world model",
    "rl": "Closed-loop RL in the simulator: whole episodes, task-success reward (GRPO)",
    "rl_wm": "Closed-loop RL in the world model: imagined episodes, learned success reward (GRPO)",
    "rft": "GRPO with the paper's one-chunk verified reward (inside the world model)",
    "evaluate": "Evaluate in the simulator",
    "wm_eval": "Evaluate in imagination (world model + reward model), next to the simulator",
}
TASK_PRESET_NAMES = ("smoke", "cpu-quick", "mt10", "mt50")
# Episodes per task (collect) or per task × perturbation (evaluate) that each task preset starts from.
EPISODES = {"smoke": 2, "cpu-quick": 25, "mt10": 50, "mt50": 50}


def presets_for(kind: str) -> list[str]:
    if kind in ("collect", "evaluate", "wm_eval"):
        return list(TASK_PRESET_NAMES)
    return list(get_args(KINDS[kind].model_fields["preset"].annotation))


def _defaults(model: type[Params]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if field.is_required():
            out[name] = None
        else:
            out[name] = field.get_default(call_default_factory=True)
    return out


def _newest(c: StudioClient, kind: str) -> str | None:
    cps = c.checkpoints(kind=kind, limit=1)
    return cps[0].ref if cps else None


def _latest(c: StudioClient) -> tuple[int | None, str | None, str | None]:
    """The newest dataset id, policy checkpoint ref and world-model checkpoint ref (None if none)."""
    ds = c.datasets(limit=1).items
    return (ds[0].id if ds else None, _newest(c, "policy"), _newest(c, "world_model"))


# the kinds whose defaults reference what the studio holds
REFERENCING = ("train_wm", "train_policy", "train_reward", "rft", "rl", "rl_wm", "wm_eval")


def default_params(kind: str, preset: str, c: StudioClient | None) -> dict[str, Any]:
    model = KINDS[kind]
    p = _defaults(model)
    if kind == "pipeline":
        p["preset"] = preset
        return p
    dataset, policy, wm = _latest(c) if c is not None and kind in REFERENCING else (None, None, None)
    rm = _newest(c, "reward_model") if c is not None and kind in ("rl_wm", "wm_eval") else None
    if kind == "collect":
        p.update(tasks=preset, episodes=EPISODES.get(preset, 2))
    elif kind == "evaluate":
        p.update(tasks=preset, episodes=EPISODES.get(preset, 2), perturbations="none" if preset == "smoke" else "all")
    elif kind == "wm_eval":
        p.update(tasks=preset, episodes=EPISODES.get(preset, 2), policies=[policy] if policy else [], world_model=wm,
                 reward_model=rm)
    elif kind == "rl":
        p.update(policy=policy, world="sim", reward="success", preset=preset, dataset_id=None, world_model=None)
    elif kind == "rl_wm":
        p.update(policy=policy, world="wm", reward="success", preset=preset, dataset_id=None, world_model=wm,
                 reward_model=rm)
    elif kind == "train_reward":
        p.update(world_model=wm, dataset_ids=[dataset] if dataset else [], preset=preset)
    else:
        p.update(dataset_id=dataset, preset=preset)
        if kind == "rft":
            p.update(policy=policy, world_model=wm)
        if kind == "train_wm" and preset == "align":
            p.update(init_world_model=wm)
    return p


def params_json(kind: str, preset: str, c: StudioClient | None) -> str:
    return json.dumps(default_params(kind, preset, c), indent=2)


def fields_help(kind: str) -> str:
    model = KINDS[kind]
    lines = []
    for name, field in model.model_fields.items():
        req = " (required)" if field.is_required() else ""
        desc = field.description or ""
        choices = get_args(field.annotation) if str(field.annotation).startswith("typing.Literal") else ()
        if choices:
            desc = (desc + " " if desc else "") + "One of " + ", ".join(f"`{c}`" for c in choices) + "."
        lines.append(f"- `{name}`{req}{': ' + desc if desc else ''}")
    return "\n".join(lines)
