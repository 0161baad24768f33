"""Datasets: upload an HDF5 episode file (validated in full first), collect one as a run, list, get,
download, delete."""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend import crud
from backend.api.deps import CeleryDep, SessionDep, SettingsDep
from backend.api.errors import invalid, responses
from backend.api.routes.runs import submit
from backend.db import utcnow
from backend.files import CHUNK, forget_ui_files, resolve_stored
from backend.models import Dataset, Run
from backend.params import IMAGE_SIZES, MAX_ID, NAME_PATTERN, CollectParams
from backend.schemas import DatasetOut, Page, RunOut

router = APIRouter(tags=["datasets"], responses=responses(401))
DatasetPath = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Dataset id.")]
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ACTION_DIM = 4  # MetaWorld's end-effector deltas + gripper


def get_dataset(s: Session, dataset_id: int) -> Dataset:
    ds = s.get(Dataset, dataset_id)
    if ds is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dataset {dataset_id}")
    return ds


def _bad_file(msg: str) -> RequestValidationError:
    """A 422 naming the form field `file`."""
    return invalid([{"loc": ("body", "file"), "msg": msg, "type": "value_error"}])


@router.get("/datasets", response_model=Page[DatasetOut], responses=responses(422))
def list_datasets(s: SessionDep, limit: int = Query(50, ge=1, le=500),
                  offset: int = Query(0, ge=0, le=10**9)) -> dict:
    q = select(Dataset)
    items = s.scalars(q.order_by(Dataset.id.desc()).limit(limit).offset(offset)).all()
    return {"items": items, "total": crud.count(s, q), "limit": limit, "offset": offset}


@router.get("/datasets/{dataset_id}", response_model=DatasetOut, responses=responses(404, 422))
def read_dataset(dataset_id: DatasetPath, s: SessionDep) -> Dataset:
    return get_dataset(s, dataset_id)


@router.get("/datasets/{dataset_id}/download", response_class=FileResponse,
            responses={200: {"content": {"application/x-hdf5": {}}}, **responses(404, 422)})
def download_dataset(dataset_id: DatasetPath, s: SessionDep, cfg: SettingsDep) -> FileResponse:
    ds = get_dataset(s, dataset_id)
    path = resolve_stored(cfg.artifacts, ds.path)
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {dataset_id}'s file is missing")
    return FileResponse(path, media_type="application/x-hdf5", filename=f"{ds.name}.h5")


@router.delete("/datasets/{dataset_id}", status_code=204, response_class=Response,
               responses=responses(404, 409, 422))
def delete_dataset(dataset_id: DatasetPath, s: SessionDep, cfg: SettingsDep) -> Response:
    """Delete a dataset and its file; refused while a queued or running run uses it."""
    crud.delete_dataset(s, get_dataset(s, dataset_id), cfg.artifacts)
    forget_ui_files(cfg, "datasets", dataset_id)  # the UI's copies of its files go before the client hears of it
    return Response(status_code=204)


@router.post("/datasets/collect", status_code=201, response_model=RunOut, responses=responses(400, 413, 422, 503))
def collect_dataset(params: CollectParams, s: SessionDep, cfg: SettingsDep, app: CeleryDep,
                    name: str | None = Query(None, max_length=200)) -> Run:
    """Collect scripted-expert episodes as a run; the dataset appears when the run succeeds."""
    return submit(s, cfg, app, "collect", params, name, None)


def _receive(upload: UploadFile, target: str, limit: int) -> tuple[int, str]:
    """Copy the upload to `target` while hashing it; refuse non-HDF5 and oversized files early."""
    h = hashlib.sha256()
    size = 0
    upload.file.seek(0)
    with open(target, "wb") as out:
        first = True
        while chunk := upload.file.read(CHUNK):
            if first:
                if not chunk.startswith(HDF5_SIGNATURE[: len(chunk)]) or len(chunk) < len(HDF5_SIGNATURE):
                    raise _bad_file("not an HDF5 file (wrong signature)")
                first = False
            size += len(chunk)
            if size > limit:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"file: larger than {limit} bytes")
            h.update(chunk)
            out.write(chunk)
    if size == 0:
        raise _bad_file("empty upload")
    return size, h.hexdigest()


def _validate(path: str) -> dict:
    """Check the whole file in a child process under sim.episodes.MEMORY_CEILING: shapes, dtypes, sizes,
    chunks and values; images of a size the models take and 4-D actions."""
    from sim.episodes import DatasetError, validate_isolated

    try:
        return validate_isolated(path, action_dim=ACTION_DIM, image_sizes=IMAGE_SIZES).to_json()
    except DatasetError as exc:
        raise _bad_file(str(exc).splitlines()[0].replace(path, "upload")) from exc


@router.post("/datasets", status_code=201, response_model=DatasetOut, responses=responses(400, 409, 413, 422))
async def upload_dataset(
    file: Annotated[UploadFile, File(description="An HDF5 episode file (vlarft, robomimic or LIBERO layout).")],
    name: Annotated[str, Form(pattern=NAME_PATTERN, description="Unique name.")],
    s: SessionDep,
    cfg: SettingsDep,
) -> Dataset:
    """Accepted only after every array of every episode was read and checked (shapes, NaNs, lengths)."""
    if s.scalar(select(Dataset.id).where(Dataset.name == name)):
        raise HTTPException(status.HTTP_409_CONFLICT, f"name: a dataset named {name!r} exists")
    uploads = cfg.artifacts / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    tmp = uploads / f".{uuid.uuid4().hex}.h5"
    final = cfg.artifacts / "datasets" / f"upload-{uuid.uuid4().hex[:12]}.h5"
    try:
        size, digest = await run_in_threadpool(_receive, file, str(tmp), cfg.max_upload_bytes)
        summary = await run_in_threadpool(_validate, str(tmp))
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        ds = Dataset.from_summary(summary, name=name, path=final.relative_to(cfg.artifacts).as_posix(),
                                  source="upload", run_id=None, size=size, sha256=digest, created_at=utcnow())
        s.add(ds)
        try:
            s.commit()
        except IntegrityError as exc:
            s.rollback()
            raise HTTPException(status.HTTP_409_CONFLICT, f"name: a dataset named {name!r} exists") from exc
        return ds
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    finally:
        tmp.unlink(missing_ok=True)
        await file.close()
