"""Runs: create each kind, list, get, cancel, resume, delete; metrics, logs, artifacts, evaluations.

Also /compare (two policies × a perturbation grid) and /imagine (a world-model rollout video),
which create runs of kind `evaluate` and `imagine`.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Union

from celery import Celery
from fastapi import APIRouter, Body, Header, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import crud
from backend.api import fast_json
from backend.api.deps import CeleryDep, SessionDep, SettingsDep, in_session
from backend.api.errors import invalid, responses
from backend.core.config import Settings
from backend.files import folder_files, forget_ui_files, inside, resolve_stored, safe_relative
from backend.kinds import ARTIFACT_KINDS, Kind, Status
from backend.limits import check_parent, check_run
from backend.models import Artifact, Evaluation, Run, RunLog
from backend.params import (
    MAX_ID,
    CollectParams,
    CompareParams,
    EvaluateParams,
    ImagineParams,
    Params,
    RFTParams,
    TrainRewardParams,
    TrainWMParams,
    WMEvalParams,
)
from backend.schemas import (
    BLOB_FIELDS,
    RUN_CREATE_TYPES,
    RUN_FIELDS,
    SUMMARY_FIELDS,
    ArtifactOut,
    EvaluationOut,
    LogLine,
    LogsOut,
    MetricSeries,
    MetricsOut,
    Page,
    RunItem,
    RunOut,
    RunPage,
)

router = APIRouter(tags=["runs"], responses=responses(401))
RunPath = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Run id.")]

RunCreate = Annotated[
    Union[RUN_CREATE_TYPES],  # noqa: UP007  one request body per kind, told apart by `kind`
    Body(
        discriminator="kind",
        openapi_examples={
            "collect": {"summary": "collect expert episodes", "value": {
                "kind": "collect", "params": {"tasks": "reach-v3", "episodes": 2}}},
            "train_wm": {"summary": "pretrain a world model", "value": {
                "kind": "train_wm", "params": {"dataset_id": 1, "preset": "smoke"}}},
            "train_policy": {"summary": "pretrain a VLA policy", "value": {
                "kind": "train_policy", "params": {"dataset_id": 1, "preset": "cpu-quick"}}},
            "rft": {"summary": "GRPO fine-tuning in the world model", "value": {
                "kind": "rft", "params": {"policy": "run:3", "world_model": "run:2", "dataset_id": 1,
                                          "steps": 50}}},
            "train_reward": {"summary": "the success reward model of a world model", "value": {
                "kind": "train_reward", "params": {"world_model": "run:2", "dataset_ids": [1, 4],
                                                   "preset": "cpu-quick"}}},
            "rl_in_world_model": {"summary": "closed-loop RL inside the world model, learned success reward",
                                  "value": {"kind": "rft", "params": {
                                      "policy": "run:3", "world": "wm", "reward": "success", "world_model": "run:2",
                                      "reward_model": "run:5", "preset": "cpu-quick"}}},
            "wm_eval": {"summary": "success in imagination next to the simulator", "value": {
                "kind": "wm_eval", "params": {"policies": ["run:3", "run:6"], "world_model": "run:2",
                                              "reward_model": "run:5", "tasks": "cpu-quick", "episodes": 10}}},
            "evaluate": {"summary": "success rate in the simulator", "value": {
                "kind": "evaluate", "params": {"policies": ["expert"], "tasks": "reach-v3",
                                               "perturbations": "all", "episodes": 5}}},
            "pipeline": {"summary": "the whole pipeline", "value": {
                "kind": "pipeline", "params": {"preset": "smoke"}}},
        },
    ),
]


def _default_parent(p: Params) -> int | None:
    refs = p.policies if isinstance(p, EvaluateParams | WMEvalParams) else (
        [p.policy] if isinstance(p, RFTParams | CollectParams) else
        [p.world_model] if isinstance(p, TrainRewardParams) else
        [p.init_world_model] if isinstance(p, TrainWMParams) else
        [p.world_model, p.policy, *p.policies.values()] if isinstance(p, ImagineParams) else [])
    for ref in refs:
        if ref and ref.startswith("run:"):
            return int(ref[4:])
    return None


def submit(s: Session, cfg: Settings, app: Celery, kind: str, params: Params, name: str | None,
           parent_id: int | None) -> Run:
    errors = check_parent(s, parent_id) + check_run(s, cfg, kind, params)
    if errors:
        raise invalid(errors)
    return crud.submit(s, app, kind, params, name, parent_id or _default_parent(params))


def get_run(s: Session, run_id: int) -> Run:
    run = s.get(Run, run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id}")
    return run


SUBMIT_ERRORS = responses(400, 413, 422, 503)  # 400 / 413: a body with a bad or too large Content-Length
ID_ERRORS = responses(404, 422)


@router.post("/runs", status_code=201, response_model=RunOut, summary="Create a run of any kind",
             responses=SUBMIT_ERRORS)
def create_run(body: RunCreate, s: SessionDep, cfg: SettingsDep, app: CeleryDep) -> Run:
    return submit(s, cfg, app, body.kind, body.params, body.name, body.parent_id)


@router.post("/compare", status_code=201, response_model=RunOut, tags=["jobs"], responses=SUBMIT_ERRORS,
             summary="Two policies × a perturbation grid, on the same seeded start states")
def compare(params: CompareParams, s: SessionDep, cfg: SettingsDep, app: CeleryDep,
            name: str | None = Query(None, max_length=200)) -> Run:
    """An `evaluate` run with two policies. Its result holds, per perturbation family and level and per
    policy, successes / episodes with a 95% Wilson interval, and side-by-side videos on shared seeds."""
    label = name or f"compare {params.policy_a} vs {params.policy_b}"
    return submit(s, cfg, app, "evaluate", params.to_evaluate(), label, None)


@router.post("/imagine", status_code=201, response_model=RunOut, tags=["jobs"], responses=SUBMIT_ERRORS,
             summary="A world-model rollout video for an instruction and a start state")
def imagine(params: ImagineParams, s: SessionDep, cfg: SettingsDep, app: CeleryDep,
            name: str | None = Query(None, max_length=200)) -> Run:
    return submit(s, cfg, app, "imagine", params, name, None)


FIELD_CHOICES = ("summary", "all", *RUN_FIELDS)
NOT_MODIFIED = {304: {"description": "Not modified: If-None-Match named the current ETag (no body)."}}
IfNoneMatch = Annotated[str | None, Header(max_length=2000, description="An ETag from an earlier answer: "
                                                                          "304 with no body while it is current.")]


def parse_fields(text: str) -> tuple[str, ...]:
    """`fields=` → the run fields to return, in RunOut's order, `id` always; unknown names are a 422."""
    wanted: set[str] = {"id"}
    for name in (n.strip() for n in text.split(",")):
        if name == "summary":
            wanted.update(SUMMARY_FIELDS)
        elif name == "all":
            wanted.update(RUN_FIELDS)
        elif name in RUN_FIELDS:
            wanted.add(name)
        elif name:
            raise invalid([{"loc": ("query", "fields"), "type": "value_error",
                            "msg": f"unknown field {name[:40]!r}: choose from {', '.join(FIELD_CHOICES)}"}])
    return tuple(f for f in RUN_FIELDS if f in wanted)


def _item(row, fields: tuple[str, ...]) -> dict:
    item = dict(zip(fields, row, strict=True))
    for f in BLOB_FIELDS:
        if f in item:
            item[f] = fast_json.stored(item[f])
    return item


def _page(s: Session, cols: tuple[str, ...], kind: str | None, statuses: list[str] | None, parent_id: int | None,
          limit: int, offset: int, count: bool) -> dict:
    rows = crud.run_rows(s, cols, kind, statuses, parent_id, limit + 1, offset)
    more = len(rows) > limit
    rows = rows[:limit]
    if count:
        total: int | None = crud.count_runs(s, kind, statuses, parent_id)
    else:  # known without a count when this page holds the last run (or there are none at all)
        total = offset + len(rows) if not more and (rows or offset == 0) else None
    return {"items": [_item(r, cols) for r in rows], "total": total, "more": more, "limit": limit, "offset": offset}


# The two routes the UI polls are async and touch the database in one trip to the thread pool (in_session).
@router.get("/runs", response_model=RunPage[RunItem], responses={**responses(422), **NOT_MODIFIED})
async def list_runs(
    request: Request,
    if_none_match: IfNoneMatch = None,
    kind: Kind | None = None,
    status_: list[Status] | None = Query(None, alias="status", description="Repeat to match several."),
    parent_id: int | None = Query(None, ge=1, le=MAX_ID),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),
    fields: str = Query("all", max_length=500, description="Comma-separated run fields to return (`id` always): "
                        "`summary` is every field but the `params` and `result` blobs, `all` every field "
                        "(as GET /runs/{id}); e.g. `summary,params`."),
    count: bool = Query(False, description="Count every matching run for `total` (one more query); without it "
                        "`total` is known only on the page that reaches the last run."),
) -> Response:
    """Newest first, with an ETag: send it back as If-None-Match and an unchanged page is a 304."""
    cols = parse_fields(fields)
    page = await in_session(request, _page, cols, kind, status_, parent_id, limit, offset, count)
    return fast_json.answer(page, if_none_match)


@router.get("/runs/{run_id}", response_model=RunOut, responses={**ID_ERRORS, **NOT_MODIFIED})
async def read_run(run_id: RunPath, request: Request, if_none_match: IfNoneMatch = None) -> Response:
    """One run with its parameters and result, with an ETag (If-None-Match → 304 while it is unchanged)."""
    row = await in_session(request, crud.run_row, run_id, RUN_FIELDS)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id}")
    return fast_json.answer(_item(row, RUN_FIELDS), if_none_match)


@router.post("/runs/{run_id}/cancel", response_model=RunOut, responses=responses(400, 404, 409, 413, 422))
def cancel_run(run_id: RunPath, s: SessionDep, cfg: SettingsDep, app: CeleryDep) -> Run:
    """A queued run is cancelled at once. A running one is asked to stop at its next check (it keeps
    its partial artifacts) and is terminated if it has not stopped after VLARFT_CANCEL_GRACE_S."""
    return crud.cancel(s, app, get_run(s, run_id), cfg.cancel_grace_s)


@router.post("/runs/{run_id}/resume", response_model=RunOut, responses=responses(400, 404, 409, 413, 422, 503))
def resume_run(run_id: RunPath, s: SessionDep, app: CeleryDep) -> Run:
    """Queue a failed or cancelled run again; it continues from its last checkpoint."""
    return crud.resume(s, app, get_run(s, run_id))


@router.delete("/runs/{run_id}", status_code=204, response_class=Response, responses=responses(404, 409, 422))
def delete_run(run_id: RunPath, s: SessionDep, cfg: SettingsDep) -> Response:
    """Delete a finished run with its metrics, logs, evaluations and files (not the datasets it made)."""
    crud.delete_run(s, get_run(s, run_id), cfg.artifacts)
    forget_ui_files(cfg, "runs", run_id)  # the UI's copies of its files go before the client hears of it
    return Response(status_code=204)


@router.get("/runs/{run_id}/metrics", response_model=MetricsOut, responses=ID_ERRORS)
def read_metrics(
    run_id: RunPath,
    s: SessionDep,
    since: int = Query(-1, ge=-1, le=2**62, description="Only steps after this one (pass the last_step you got)."),
    names: str | None = Query(None, max_length=2000, description="Comma-separated metric names."),
    limit: int = Query(20_000, ge=1, le=200_000, description="At most this many rows."),
    after_id: int | None = Query(None, ge=0, le=2**62, description="Instead of `since`: only rows written after "
                                 "this one (pass the last_id you got), in the order they were written."),
) -> MetricsOut:
    get_run(s, run_id)
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else None
    if after_id is not None:
        return _metrics_by_id(s, run_id, after_id, wanted, limit)
    rows = crud.metrics_since(s, run_id, since, wanted, limit + 1)
    if len(rows) > limit:
        # Truncated: never split a step between two answers (unless one step alone exceeds the limit).
        nxt, rows = rows[limit], rows[:limit]
        if nxt.step == rows[-1].step and rows[0].step != nxt.step:
            rows = [r for r in rows if r.step != nxt.step]
    series: dict[str, MetricSeries] = {}
    for m in rows:
        ser = series.setdefault(m.name, MetricSeries(steps=[], values=[]))
        ser.steps.append(m.step)
        ser.values.append(m.value)
        ser.times.append(m.time.timestamp())
    last = rows[-1].step if rows else None
    return MetricsOut(run_id=run_id, since=since, last_step=last if last is not None else (since if since >= 0
                      else None), series=series)


def _metrics_by_id(s: Session, run_id: int, after_id: int, names: list[str] | None, limit: int) -> MetricsOut:
    rows = crud.metrics_after_id(s, run_id, after_id, names, limit)
    series: dict[str, MetricSeries] = {}
    for m in rows:
        ser = series.setdefault(m.name, MetricSeries(steps=[], values=[]))
        ser.steps.append(m.step)
        ser.values.append(m.value)
        ser.times.append(m.time.timestamp())
    return MetricsOut(run_id=run_id, since=-1, last_step=max((m.step for m in rows), default=None), series=series,
                      last_id=rows[-1].id if rows else after_id)


@router.get("/runs/{run_id}/logs", response_model=LogsOut, responses=ID_ERRORS)
def read_logs(
    run_id: RunPath,
    s: SessionDep,
    since: int = Query(0, ge=0, le=2**62, description="Only lines with a larger id (pass last_id)."),
    limit: int = Query(1000, ge=1, le=10_000),
) -> LogsOut:
    get_run(s, run_id)
    rows = s.scalars(select(RunLog).where(RunLog.run_id == run_id, RunLog.id > since)
                     .order_by(RunLog.id).limit(limit)).all()
    return LogsOut(run_id=run_id, last_id=rows[-1].id if rows else (since or None),
                   lines=[LogLine.model_validate(r) for r in rows])


def artifact_out(a: Artifact, artifacts: Path) -> ArtifactOut:
    out = ArtifactOut.model_validate(a)
    if a.is_dir:
        folder = resolve_stored(artifacts, a.path)
        out.files = folder_files(folder) if folder.is_dir() else []
    else:
        out.url = f"/api/v1/runs/{a.run_id}/artifacts/{a.name}"
    return out


@router.get("/runs/{run_id}/artifacts", response_model=list[ArtifactOut], responses=ID_ERRORS)
def list_artifacts(run_id: RunPath, s: SessionDep, cfg: SettingsDep,
                   kind: str | None = Query(None, pattern=f"^({'|'.join(ARTIFACT_KINDS)})$")) -> list[ArtifactOut]:
    get_run(s, run_id)
    q = select(Artifact).where(Artifact.run_id == run_id)
    if kind:
        q = q.where(Artifact.kind == kind)
    return [artifact_out(a, cfg.artifacts) for a in s.scalars(q.order_by(Artifact.id))]


@router.get("/runs/{run_id}/artifacts/{name:path}", response_class=FileResponse,
            responses={200: {"content": {"*/*": {}}, "description": "The file, with the media type its name implies."},
                       **responses(400, 404, 422)})
def download_artifact(run_id: RunPath, name: str, s: SessionDep, cfg: SettingsDep) -> FileResponse:
    """Stream one artifact file, or one file of a folder artifact ('checkpoint/config.json')."""
    rel = safe_relative(name)
    get_run(s, run_id)
    target: Path | None = None
    for a in s.scalars(select(Artifact).where(Artifact.run_id == run_id)):
        base = resolve_stored(cfg.artifacts, a.path)
        if a.name == name and not a.is_dir:
            target = base
        elif a.is_dir and name.startswith(a.name + "/"):
            target = inside(base, str(rel)[len(a.name) + 1:])
        if target is not None:
            break
    if target is None or not target.is_file() or target.name.startswith("."):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id} has no artifact file {name!r}")
    media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media, filename=target.name)


@router.get("/runs/{run_id}/evaluations", response_model=list[EvaluationOut], responses=ID_ERRORS)
def run_evaluations(run_id: RunPath, s: SessionDep) -> list[Evaluation]:
    get_run(s, run_id)
    return list(s.scalars(select(Evaluation).where(Evaluation.run_id == run_id).order_by(Evaluation.id)))


@router.get("/evaluations", response_model=Page[EvaluationOut], tags=["evaluations"], responses=responses(422))
def list_evaluations(
    s: SessionDep,
    policy: str | None = Query(None, max_length=200),
    task: str | None = Query(None, max_length=64),
    perturbation: str | None = Query(None, max_length=32),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10**9),
) -> dict:
    """Every evaluation cell recorded so far (policy × task × perturbation), newest first."""
    q = select(Evaluation)
    for col, value in ((Evaluation.policy, policy), (Evaluation.task, task), (Evaluation.perturbation, perturbation)):
        if value:
            q = q.where(col == value)
    items = s.scalars(q.order_by(Evaluation.id.desc()).limit(limit).offset(offset)).all()
    return {"items": items, "total": crud.count(s, q), "limit": limit, "offset": offset}
