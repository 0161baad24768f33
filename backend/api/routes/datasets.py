"""Datasets: upload an HDF5 episode file (validated in full first), collect one as a run, list, get,
download, delete."""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend import archives, crud
from backend.api.deps import CeleryDep, SessionDep, SettingsDep
from backend.api.errors import invalid, responses
from backend.api.routes.runs import submit
from backend.db import utcnow
from backend.files import CHUNK, forget_ui_files, resolve_stored
from backend.kinds import ACTIVE
from backend.models import Dataset, Run
from backend.params import IMAGE_SIZES, MAX_ID, NAME_PATTERN, CollectParams, ImportParams
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


# Import: a LeRobot dataset (an archive of its folder) or a LIBERO file, converted by an `import` run -------

IMPORT_UPLOAD_NAME = re.compile(r"^import-[0-9a-f]{32}\.(zip|tar|tar\.gz|hdf5)$")
LEROBOT_MARKER = "meta/info.json"
ABANDONED_S = 600.0  # an import upload no active run names, untouched this long, is removed
FORM_FIELDS = {"dataset_name": "name", "image_size": "image_size", "camera": "camera"}


def _sweep_imports(s: Session, uploads: Path) -> None:
    """Remove import uploads that no queued or running import run names (a run cancelled before it started,
    or a request that died); a run removes its own upload when it ends."""
    files = [f for f in uploads.iterdir() if IMPORT_UPLOAD_NAME.match(f.name)] if uploads.is_dir() else []
    if not files:
        return
    active = {(r.params or {}).get("upload") for r in s.scalars(
        select(Run).where(Run.kind == "import", Run.status.in_(ACTIVE)))}
    now = time.time()
    for f in files:
        try:
            if f.name not in active and now - f.stat().st_mtime > ABANDONED_S:
                f.unlink()
        except FileNotFoundError:
            pass


def _receive_import(upload: UploadFile, uploads: Path, limit: int) -> tuple[Path, str]:
    """Store the upload as uploads/import-<token>.<kind>; refuse what is neither an archive nor HDF5, and
    an oversized file, while reading. Returns the stored file and its kind."""
    upload.file.seek(0)
    head = upload.file.read(512)
    kind = archives.kind_of(head)
    if not head:
        raise _bad_file("empty upload")
    if kind is None:
        raise _bad_file("neither an archive of a LeRobot dataset (.zip, .tar, .tar.gz) nor a LIBERO HDF5 file")
    target = uploads / f"import-{uuid.uuid4().hex}{archives.EXTENSIONS[kind]}"
    size = 0
    try:
        with open(target, "xb") as out:
            chunk = head
            while chunk:
                size += len(chunk)
                if size > limit:
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"file: larger than {limit} bytes")
                out.write(chunk)
                chunk = upload.file.read(CHUNK)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target, kind


def _check_archive(path: Path, kind: str, limit: int) -> None:
    """The cheap checks of an archive's entries (the zip's directory, a plain tar's headers): a 422 on `file`.
    A .tar.gz is checked by the run while it extracts."""
    if kind not in ("zip", "tar"):
        return
    try:
        archives.check(path, kind, limit, LEROBOT_MARKER)
    except archives.ArchiveError as exc:
        raise _bad_file(str(exc)) from exc


def _default_name(s: Session, filename: str | None) -> str | None:
    """The upload's file name without its extensions, when it is a valid and unused dataset name."""
    stem = Path(filename or "").name
    for ext in (".tar.gz", ".tgz", ".zip", ".tar", ".hdf5", ".h5", ".hdf"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    if not re.fullmatch(NAME_PATTERN, stem) or s.scalar(select(Dataset.id).where(Dataset.name == stem)):
        return None
    return stem


def _import_params(values: dict) -> ImportParams:
    try:
        return ImportParams.model_validate(values, strict=False)
    except ValidationError as exc:
        raise invalid([{**e, "loc": ("body", FORM_FIELDS.get(str(e["loc"][0]), "file") if e["loc"] else "file")}
                       for e in exc.errors()]) from exc


@router.post("/datasets/import", status_code=201, response_model=RunOut,
             responses=responses(400, 409, 413, 422, 503))
async def import_dataset(
    file: Annotated[UploadFile, File(description="A LeRobot v3.0 dataset folder as a .zip, .tar or .tar.gz "
                                                 "archive, or a LIBERO demo file (.hdf5, robomimic layout).")],
    s: SessionDep,
    cfg: SettingsDep,
    app: CeleryDep,
    name: Annotated[str | None, Form(pattern=NAME_PATTERN, description=(
        "Unique name of the dataset (default: the file's name, when unused)."))] = None,
    image_size: Annotated[int, Form(description=f"Frame size in pixels: {', '.join(map(str, IMAGE_SIZES))}.")] = 64,
    camera: Annotated[str | None, Form(max_length=200, description=(
        "LeRobot: the image feature to import (default: the first, alphabetically)."))] = None,
) -> Run:
    """Store the upload and queue an `import` run that converts it (frames resized to `image_size`, no
    simulator states) and registers the dataset with the run as its origin; the run's result names the
    dataset. Refused here: a file that is neither an archive nor HDF5, an archive with unsafe entries
    (`..`, absolute paths, links) or without meta/info.json, a taken name. Whatever happens, the upload
    and the extracted files are removed when the run ends."""
    if name and s.scalar(select(Dataset.id).where(Dataset.name == name)):
        raise HTTPException(status.HTTP_409_CONFLICT, f"name: a dataset named {name!r} exists")
    uploads = cfg.artifacts / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    _sweep_imports(s, uploads)
    stored: Path | None = None
    try:
        stored, kind = await run_in_threadpool(_receive_import, file, uploads, cfg.max_upload_bytes)
        await run_in_threadpool(_check_archive, stored, kind, cfg.max_upload_bytes)
        params = _import_params({
            "upload": stored.name, "format": "libero" if kind == "hdf5" else "lerobot",
            "dataset_name": name or _default_name(s, file.filename), "image_size": image_size, "camera": camera})
        label = f"import {Path(file.filename or stored.name).name}"[:200]
        return submit(s, cfg, app, "import", params, label, None)
    except BaseException:
        if stored is not None:
            stored.unlink(missing_ok=True)
        raise
    finally:
        await file.close()
