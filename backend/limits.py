"""Checks of run parameters that need the database (referenced ids) or the machine (disk, memory).

Each problem comes back in pydantic's error shape (loc, msg, type), so the API answers them with
the same 422 as a schema error, naming the field.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.core.config import Settings
from backend.kinds import ACTIVE
from backend.models import Dataset, Run
from backend.params import (
    CollectParams,
    EvaluateParams,
    ImagineParams,
    ImportParams,
    Params,
    RFTParams,
    TrainParams,
    TrainRewardParams,
    TrainWMParams,
    WMEvalParams,
)
from backend.refs import RefError, resolve

Loc = tuple[str | int, ...]
# Per recorded step besides the frame: proprio, actions, env obs, rewards and the simulator state.
STEP_OVERHEAD_BYTES = 1024


def _err(loc: Loc, msg: str) -> dict:
    return {"loc": list(loc), "msg": msg, "type": "value_error"}


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown: do not refuse


def free_disk(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(folder).free


def _config(folder: Path | None) -> dict:
    import json

    if folder is None:
        return {}
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _policy_image_size(folder: Path | None) -> int:
    try:
        return int(_config(folder).get("policy", {}).get("image_size", 64))
    except (ValueError, TypeError, AttributeError):
        return 64


def _policy_view(folder: Path) -> tuple[str, int] | None:
    """(camera, image size) a policy checkpoint sees, or None when its config does not say."""
    policy = _config(folder).get("policy")
    if not isinstance(policy, dict):
        return None
    try:
        return str(policy.get("camera", "workspace")), int(policy.get("image_size", 64))
    except (ValueError, TypeError):
        return None


def _reward_tasks(folder: Path) -> list[str] | None:
    """The tasks a reward model has a success logit for, or None when its config does not say."""
    cfg = _config(folder).get("config")
    tasks = cfg.get("tasks") if isinstance(cfg, dict) else None
    return list(tasks) if isinstance(tasks, list) and tasks else None


def check_run(s: Session, settings: Settings, kind: str, p: Params, loc: Loc = ("body", "params")) -> list[dict]:
    errors: list[dict] = []
    art = settings.artifacts

    def dataset_exists(ds_id: int, where: Loc) -> None:
        if s.get(Dataset, ds_id) is None:
            errors.append(_err(where, f"no dataset {ds_id}"))

    def ref(value: str, want: str, where: Loc) -> Path | None:
        try:
            return resolve(s, art, value, want)
        except RefError as exc:
            errors.append(_err(where, str(exc)))
            return None

    def steps_limit(steps: int | None) -> None:
        if steps is not None and steps > settings.max_train_steps:
            errors.append(_err((*loc, "steps"), f"exceeds this studio's limit of {settings.max_train_steps}"))

    if isinstance(p, CollectParams):
        total = len(p.tasks) * p.episodes
        if total > settings.max_collect_episodes:
            errors.append(_err((*loc, "episodes"), f"{len(p.tasks)} tasks × {p.episodes} episodes = {total} "
                               f"exceeds this studio's limit of {settings.max_collect_episodes}"))
        worst = total * (p.max_steps + 1) * (p.image_size**2 * 3 + STEP_OVERHEAD_BYTES)
        free = free_disk(art / "datasets")
        if worst > free:
            errors.append(_err((*loc, "episodes"), f"too big for this machine: up to {human(worst)} of episodes, "
                               f"{human(free)} free for datasets"))
        if p.dataset_name and s.scalar(select(Dataset.id).where(Dataset.name == p.dataset_name)):
            errors.append(_err((*loc, "dataset_name"), f"a dataset named {p.dataset_name!r} exists"))
        if p.policy:
            folder = ref(p.policy, "policy", (*loc, "policy"))
            view = _policy_view(folder) if folder is not None else None
            if view is not None and view != (p.camera, p.image_size):
                errors.append(_err((*loc, "policy"), f"{p.policy} sees camera {view[0]} at {view[1]} px; set camera "
                                   f"{view[0]} and image_size {view[1]}"))
    elif isinstance(p, TrainParams):
        dataset_exists(p.dataset_id, (*loc, "dataset_id"))
        steps_limit(p.steps)
        if isinstance(p, TrainWMParams):
            for i, ds in enumerate(p.extra_dataset_ids):
                dataset_exists(ds, (*loc, "extra_dataset_ids", i))
            if p.init_world_model:
                ref(p.init_world_model, "world_model", (*loc, "init_world_model"))
    elif isinstance(p, TrainRewardParams):
        ref(p.world_model, "world_model", (*loc, "world_model"))
        for i, ds in enumerate(p.dataset_ids):
            dataset_exists(ds, (*loc, "dataset_ids", i))
        steps_limit(p.steps)
    elif isinstance(p, RFTParams):
        ref(p.policy, "policy", (*loc, "policy"))
        if p.world_model:
            ref(p.world_model, "world_model", (*loc, "world_model"))
        if p.reward_model:
            ref(p.reward_model, "reward_model", (*loc, "reward_model"))
        if p.dataset_id is not None:
            dataset_exists(p.dataset_id, (*loc, "dataset_id"))
        steps_limit(p.steps)
    elif isinstance(p, WMEvalParams):
        for i, r in enumerate(p.policies):
            ref(r, "policy", (*loc, "policies", i))
        ref(p.world_model, "world_model", (*loc, "world_model"))
        rm = ref(p.reward_model, "reward_model", (*loc, "reward_model"))
        known = _reward_tasks(rm) if rm is not None else None
        unknown = [t for t in p.tasks if known is not None and t not in known]
        if unknown:
            errors.append(_err((*loc, "tasks"), f"the reward model knows {', '.join(known)}; not {', '.join(unknown)}"))
        total = len(p.policies) * len(p.tasks) * len(p.perturbations) * p.episodes * (2 if p.real else 1)
        if total > settings.max_eval_episodes:
            where = "imagined and real" if p.real else "imagined"
            errors.append(_err((*loc, "episodes"), f"{total} episodes in all ({where}) exceeds this studio's limit "
                               f"of {settings.max_eval_episodes}"))
    elif isinstance(p, EvaluateParams):
        folders = [ref(r, "policy", (*loc, "policies", i)) for i, r in enumerate(p.policies)]
        for i, ds in enumerate(p.exclude_dataset_ids):
            dataset_exists(ds, (*loc, "exclude_dataset_ids", i))
        cells = len(p.tasks) * len(p.perturbations)
        total = len(p.policies) * cells * p.episodes
        if total > settings.max_eval_episodes:
            errors.append(_err((*loc, "episodes"), f"{total} episodes in all exceeds this studio's limit of "
                               f"{settings.max_eval_episodes}"))
        frames = sum(p.videos_per_cell * cells * (p.max_steps + 1) * _policy_image_size(f) ** 2 * 3 for f in folders)
        if frames > available_memory() // 2:
            errors.append(_err((*loc, "videos_per_cell"), f"too big for this machine: the recorded episodes need up "
                               f"to {human(frames)} of memory, {human(available_memory())} available"))
    elif isinstance(p, ImportParams):
        if not (art / "uploads" / p.upload).is_file():
            errors.append(_err((*loc, "upload"), "no such upload: send the file to POST /api/v1/datasets/import"))
        elif any((r.params or {}).get("upload") == p.upload for r in s.scalars(
                select(Run).where(Run.kind == "import", Run.status.in_(ACTIVE)))):
            errors.append(_err((*loc, "upload"), "another import run is converting this upload"))
        if p.dataset_name and s.scalar(select(Dataset.id).where(Dataset.name == p.dataset_name)):
            errors.append(_err((*loc, "dataset_name"), f"a dataset named {p.dataset_name!r} exists"))
    elif isinstance(p, ImagineParams):
        if p.world_model:
            ref(p.world_model, "world_model", (*loc, "world_model"))
        if p.reward_model:
            ref(p.reward_model, "reward_model", (*loc, "reward_model"))
        if p.policy:
            ref(p.policy, "policy", (*loc, "policy"))
        for label, r in p.policies.items():
            ref(r, "policy", (*loc, "policies", label))
    return errors


def check_parent(s: Session, parent_id: int | None, loc: Loc = ("body", "parent_id")) -> list[dict]:
    if parent_id is not None and s.get(Run, parent_id) is None:
        return [_err(loc, f"no run {parent_id}")]
    return []
