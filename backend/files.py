"""Files on disk: checksums, safe relative names, and paths kept inside the artifact folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

CHUNK = 1 << 20


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
