"""What the UI picks from: tasks with their instructions, perturbation families, trained checkpoints,
and a dataset's episodes with an MP4 preview of each."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.api.deps import SessionDep, SettingsDep
from backend.api.errors import responses
from backend.api.routes.datasets import get_dataset
from backend.core.config import Settings
from backend.files import resolve_stored
from backend.models import Artifact, Run
from backend.params import MAX_ID
from backend.refs import checkpoint_kind
from backend.schemas import CheckpointOut, EpisodeOut, PerturbationsOut, TaskOut, TasksOut

router = APIRouter(tags=["catalog"], responses=responses(401))
DatasetPath = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Dataset id.")]
EpisodePath = Annotated[int, PathParam(ge=0, le=10**7, description="Episode index in the file.")]
PREVIEW_FRAMES = 400  # longer episodes are previewed from their start
_preview_lock = threading.Lock()


@router.get("/tasks", response_model=TasksOut)
def list_tasks() -> TasksOut:
    """Every MetaWorld task with its training instruction and held-out paraphrases, and the task presets."""
    from sim.tasks import TASK_PRESETS, TASKS

    tasks = [TaskOut(name=t.name, instruction=t.instruction, paraphrases=list(t.paraphrases), skill=t.skill,
                     has_object=t.obj_xy is not None, has_goal=t.goal_xy is not None) for t in TASKS.values()]
    return TasksOut(tasks=tasks, presets={k: list(v) for k, v in TASK_PRESETS.items()})


@router.get("/perturbations", response_model=PerturbationsOut)
def list_perturbations() -> PerturbationsOut:
    """The perturbation families and levels, the distance each moves (metres) and the full suite."""
    from sim.perturb import FAMILIES, LEVELS, MAGNITUDES, perturbation_suite

    return PerturbationsOut(families=list(FAMILIES), levels=list(LEVELS),
                            magnitudes={k: dict(v) for k, v in MAGNITUDES.items()},
                            suite=[p.name for p in perturbation_suite()])


@router.get("/checkpoints", response_model=list[CheckpointOut], responses=responses(422))
def list_checkpoints(
    s: SessionDep,
    cfg: SettingsDep,
    kind: Literal["policy", "world_model", "reward_model"] | None = Query(
        None, description="Only this kind of checkpoint."),
    limit: int = Query(200, ge=1, le=1000),
) -> list[CheckpointOut]:
    """Checkpoint artifacts of every run, newest first, with the kind their config.json names; pass
    `ref` (artifact:<id>) wherever a policy, world model or reward model is asked for."""
    q = (select(Artifact, Run).join(Run, Run.id == Artifact.run_id).where(Artifact.kind == "checkpoint")
         .order_by(Artifact.updated_at.desc(), Artifact.id.desc()))
    out = []
    for art, run in s.execute(q):
        what = checkpoint_kind(resolve_stored(cfg.artifacts, art.path))
        if what is None or (kind and what != kind):
            continue
        out.append(CheckpointOut(ref=f"artifact:{art.id}", artifact_id=art.id, name=art.name, kind=what,
                                 run_id=run.id, run_kind=run.kind, run_name=run.name, run_status=run.status,
                                 updated_at=art.updated_at))
        if len(out) >= limit:
            break
    return out


def _episode_file(cfg: Settings, s: Session, dataset_id: int):
    from sim.episodes import DatasetError, EpisodeFile

    ds = get_dataset(s, dataset_id)
    path = resolve_stored(cfg.artifacts, ds.path)
    try:
        return ds, EpisodeFile(path)
    except DatasetError as exc:
        why = str(exc).splitlines()[0].replace(str(path), "its file")  # no server path in the answer
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {dataset_id}'s file is unreadable: {why}") from exc


@router.get("/datasets/{dataset_id}/episodes", response_model=list[EpisodeOut], responses=responses(404, 422))
def list_episodes(dataset_id: DatasetPath, s: SessionDep, cfg: SettingsDep,
                  limit: int = Query(500, ge=1, le=10_000), offset: int = Query(0, ge=0, le=10**7)) -> list[EpisodeOut]:
    """Episodes of a dataset in file order: task, instruction, length, success."""
    _, f = _episode_file(cfg, s, dataset_id)
    try:
        return [EpisodeOut(index=i, task=info.task, instruction=info.instruction, length=info.length,
                           success=info.success, action_noise=info.action_noise)
                for i in range(offset, min(len(f), offset + limit)) for info in [f.info(i)]]
    finally:
        f.close()


def _write_preview(src, index: int, target: Path) -> None:
    from sim.video import write_mp4

    frames = src.frames(index, 0, PREVIEW_FRAMES)
    scale = max(1, 256 // max(1, frames.shape[1]))
    target.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(target, list(frames), scale=scale)


@router.get("/datasets/{dataset_id}/episodes/{index}/video", response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}}, **responses(404, 422)})
def episode_video(dataset_id: DatasetPath, index: EpisodePath, s: SessionDep, cfg: SettingsDep) -> FileResponse:
    """An H.264 MP4 of one episode's camera frames (rendered once, then cached beside the artifacts)."""
    ds, f = _episode_file(cfg, s, dataset_id)
    try:
        if index >= len(f):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {dataset_id} has {len(f)} episodes; "
                                f"no episode {index}")
        target = cfg.artifacts / "previews" / f"dataset-{ds.id}-{ds.sha256[:12]}" / f"episode-{index}.mp4"
        with _preview_lock:
            if not target.is_file():
                _write_preview(f, index, target)
    finally:
        f.close()
    return FileResponse(target, media_type="video/mp4", filename=f"{ds.name}-episode-{index}.mp4")
