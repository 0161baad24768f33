"""Files on disk: checksums, safe relative names, paths kept inside the artifact folder, and the files
that may be orphans (partials of killed writers, outputs nobody registered, folders of deleted runs)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from backend.core.config import Settings

CHUNK = 1 << 20

# Names the studio writes (sim.episodes, sim.video, models.checkpoint, models.plots, the upload route).
TEMP_NAME = re.compile(r"^\.(?P<base>.+?)\.tmp(?:-(?P<pid>\d+))?(?:\.[A-Za-z0-9]+)?$")  # .x.h5.tmp-PID
COLLECT_OUTPUT = re.compile(r"^collect-run(?P<run>\d+)\.h5$")
UPLOAD_OUTPUT = re.compile(r"^upload-[0-9a-f]{12}\.h5$")
UPLOAD_TEMP = re.compile(r"^\.[0-9a-f]{32}\.h5$")


class UnsafePathError(ValueError):
    pass


def run_folder(artifacts: Path, run_id: int) -> Path:
    """Where a run's files go: $ARTIFACT_DIR/runs/<id>/."""
    return artifacts / "runs" / str(run_id)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def folder_files(folder: Path) -> list[str]:
    """Files below `folder` as sorted relative POSIX names, temporaries (dot files) left out."""
    names = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith("."):
                names.append((Path(root) / name).relative_to(folder).as_posix())
    return sorted(names)


def size_and_sha256(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file; for a folder, of its files (names and contents) in sorted order."""
    if path.is_file():
        return path.stat().st_size, sha256_file(path)
    h = hashlib.sha256()
    size = 0
    for name in folder_files(path):
        f = path / name
        size += f.stat().st_size
        h.update(name.encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return size, h.hexdigest()


def safe_relative(name: str) -> PurePosixPath:
    """A relative name without '..', absolute parts, backslashes or control characters."""
    if not name or len(name) > 500 or "\\" in name or any(ord(c) < 32 for c in name):
        raise UnsafePathError(f"invalid name {name[:80]!r}")
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("..", ".", "") for part in name.split("/")):
        raise UnsafePathError(f"invalid name {name[:80]!r}: no absolute paths, '.' or '..' parts")
    return p


def inside(base: Path, relative: str | PurePosixPath) -> Path:
    """`base / relative`, refusing anything (symlinks included) that resolves outside `base`."""
    base = base.resolve()
    target = (base / str(relative)).resolve()
    if not target.is_relative_to(base):
        raise UnsafePathError(f"{relative} points outside its folder")
    return target


def relative_to_artifacts(artifacts: Path, path: str | os.PathLike) -> str:
    """Store paths under the artifact folder relative to it; others stay absolute."""
    p = Path(path).resolve()
    try:
        return p.relative_to(artifacts.resolve()).as_posix()
    except ValueError:
        return str(p)


def resolve_stored(artifacts: Path, stored: str) -> Path:
    p = Path(stored)
    return p if p.is_absolute() else artifacts / p


@dataclass(frozen=True)
class Candidate:
    """A file or folder that is an orphan unless the database says otherwise."""

    path: Path
    what: str  # temp | output | run_folder
    run_id: int | None  # the run it belongs to, if its name says so
    pid: int | None = None  # the writer of a temp, if its name says so

    def age_s(self, now: float) -> float:
        """Seconds since it was last written or renamed (a rename updates ctime)."""
        try:
            st = self.path.stat()
        except OSError:
            return 0.0
        return now - max(st.st_mtime, st.st_ctime)


def orphan_candidates(artifacts: Path, run_id: int | None = None) -> list[Candidate]:
    """Temporaries, dataset outputs and run folders under the artifact folder, by name only; with
    `run_id`, only those of that run. Unknown names are never candidates."""
    found: list[Candidate] = []
    datasets, uploads, runs = artifacts / "datasets", artifacts / "uploads", artifacts / "runs"
    for f in _entries(datasets):
        if m := TEMP_NAME.match(f.name):
            owner = COLLECT_OUTPUT.match(m["base"])
            found.append(Candidate(f, "temp", int(owner["run"]) if owner else None, _int(m["pid"])))
        elif m := COLLECT_OUTPUT.match(f.name):
            found.append(Candidate(f, "output", int(m["run"])))
        elif UPLOAD_OUTPUT.match(f.name):
            found.append(Candidate(f, "output", None))
    for f in _entries(uploads):
        if m := TEMP_NAME.match(f.name):
            found.append(Candidate(f, "temp", None, _int(m["pid"])))
        elif UPLOAD_TEMP.match(f.name):
            found.append(Candidate(f, "temp", None))
    for folder in _entries(runs):
        if not (folder.is_dir() and folder.name.isdigit()) or (run_id is not None and int(folder.name) != run_id):
            continue
        found.append(Candidate(folder, "run_folder", int(folder.name)))
        for root, dirs, files in os.walk(folder):
            for name in files + dirs:
                if m := TEMP_NAME.match(name):
                    found.append(Candidate(Path(root) / name, "temp", int(folder.name), _int(m["pid"])))
    return [c for c in found if run_id is None or c.run_id == run_id]


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _int(text: str | None) -> int | None:
    return int(text) if text else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return True  # not a real writer's id: assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove(path: Path) -> bool:
    """Remove a file or folder; False if it was already gone."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    except FileNotFoundError:
        return False


def ui_files(settings: Settings, what: str, ident: int) -> Path:
    """The UI's cached files of one run or dataset (`what` is "runs" or "datasets")."""
    return settings.ui_cache_dir / what / str(int(ident))


def forget_ui_files(settings: Settings, what: str, ident: int) -> None:
    """Delete the UI's copies of a deleted run's (or dataset's) videos, reports and downloads."""
    shutil.rmtree(ui_files(settings, what, ident), ignore_errors=True)
