"""Uploaded archives (.zip, .tar, .tar.gz) of a dataset folder: what kind of file an upload is, a check of its
entries, and an extraction that trusts nothing in it.

Refused: names with '..', absolute names, backslashes or control characters; links (symbolic and hard) and
any entry that is neither a file nor a folder; encrypted zip entries; duplicates; more than `max_entries`
entries or more than `max_bytes` extracted (counted while writing, so a header that lies does not help).
Standard library only: the API checks an upload with it before queueing, the worker extracts with it.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sim.errors import InputError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_ENTRIES = 100_000
CHUNK = 1 << 20
IGNORED_TOP = ("__MACOSX",)  # macOS's resource forks beside the real folder
EXTENSIONS = {"zip": ".zip", "tar": ".tar", "gzip": ".tar.gz", "hdf5": ".hdf5"}


class ArchiveError(InputError):
    """An upload that is not an archive, or whose entries are unsafe or too big."""


def kind_of(head: bytes) -> str | None:
    """zip | tar | gzip (a .tar.gz) | hdf5, from a file's first 512 bytes; None for anything else."""
    if head.startswith(HDF5_SIGNATURE):
        return "hdf5"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def file_kind(path: str | os.PathLike) -> str | None:
    with open(path, "rb") as f:
        return kind_of(f.read(512))


def entry_name(name: str) -> PurePosixPath | None:
    """A safe relative name for an entry, or None for the archive's own top ('.', './')."""
    if not name or len(name) > 1000 or "\\" in name or any(ord(c) < 32 for c in name):
        raise ArchiveError(f"entry {name[:80]!r} has an invalid name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"entry {name[:80]!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"entry {name[:80]!r} points outside the archive ('..')")
    return PurePosixPath(*parts) if parts else None


class _Entry:
    """One archive member: its safe name, whether it is a folder, its declared size and a way to open it."""

    def __init__(self, name: PurePosixPath, is_dir: bool, size: int, opener) -> None:
        self.name, self.is_dir, self.size, self.open = name, is_dir, size, opener


def _zip_entries(z: zipfile.ZipFile) -> Iterator[_Entry]:
    for info in z.infolist():
        mode = info.external_attr >> 16
        name = entry_name(info.filename)
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise ArchiveError(f"entry {info.filename[:80]!r} is a link; links are refused")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise ArchiveError(f"entry {info.filename[:80]!r} is not a file or a folder")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"entry {info.filename[:80]!r} is encrypted")
        if name is None:
            continue
        yield _Entry(name, info.is_dir(), info.file_size, lambda info=info: z.open(info))


def _tar_entries(t: tarfile.TarFile) -> Iterator[_Entry]:
    for m in t:
        if m.issym() or m.islnk():
            raise ArchiveError(f"entry {m.name[:80]!r} is a link; links are refused")
        if not (m.isreg() or m.isdir()):
            raise ArchiveError(f"entry {m.name[:80]!r} is not a file or a folder")
        name = entry_name(m.name)
        if name is None:
            continue
        yield _Entry(name, m.isdir(), m.size, lambda m=m: t.extractfile(m))


def _open(path: Path, kind: str):
    try:
        if kind == "zip":
            return zipfile.ZipFile(path)
        return tarfile.open(path, mode="r:gz" if kind == "gzip" else "r:")
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(f"not a readable {EXTENSIONS[kind]} archive ({_first_line(exc)})") from exc


def _entries(box, kind: str) -> Iterator[_Entry]:
    return _zip_entries(box) if kind == "zip" else _tar_entries(box)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _top(names: list[PurePosixPath], marker: PurePosixPath) -> PurePosixPath:
    """The folder holding `marker`: the archive's top or its one top folder."""
    names = [n for n in names if n.parts[0] not in IGNORED_TOP]
    if marker in names:
        return PurePosixPath()
    tops = {n.parts[0] for n in names}
    if len(tops) == 1:
        top = PurePosixPath(next(iter(tops)))
        if top / marker in names:
            return top
    raise ArchiveError(f"the archive has no {marker} at its top or in its one top folder: not a LeRobot dataset "
                       "(archive the dataset's folder, with meta/, data/ and videos/)")


def check(path: str | os.PathLike, kind: str, max_bytes: int, marker: str, max_entries: int = MAX_ENTRIES) -> None:
    """Check the entries without extracting (the zip's directory, or a tar's headers): names, types, count,
    declared sizes, and that `marker` (e.g. meta/info.json) is at the top or in the one top folder."""
    names: list[PurePosixPath] = []
    total = 0
    with _open(Path(path), kind) as box:
        try:
            for e in _entries(box, kind):
                names.append(e.name)
                total += e.size
                if len(names) > max_entries:
                    raise ArchiveError(f"the archive has more than {max_entries} entries")
                if total > max_bytes:
                    raise ArchiveError(f"the archive holds more than {max_bytes} bytes (VLARFT_MAX_UPLOAD_BYTES)")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise ArchiveError(f"a damaged {EXTENSIONS[kind]} archive ({_first_line(exc)})") from exc
    _top(names, PurePosixPath(marker))


def _write(src: BinaryIO, target: Path, budget: int, max_bytes: int) -> int:
    """Copy one entry; refuse once the archive's total passes max_bytes. Returns the bytes written."""
    written = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > budget:
                raise ArchiveError(f"the archive extracts to more than {max_bytes} bytes (VLARFT_MAX_UPLOAD_BYTES)")
            out.write(chunk)
    return written


def extract(path: str | os.PathLike, kind: str, dest: str | os.PathLike, max_bytes: int, marker: str,
            max_entries: int = MAX_ENTRIES) -> Path:
    """Extract into the new folder `dest` (refusing everything the module's docstring lists) and return the
    folder that holds `marker`. On an error, what was extracted stays in `dest` for the caller to remove."""
    dest = Path(dest)
    dest.mkdir(parents=True)
    base = dest.resolve()
    names: list[PurePosixPath] = []
    total = 0
    with _open(Path(path), kind) as box:
        try:
            for e in _entries(box, kind):
                names.append(e.name)
                if len(names) > max_entries:
                    raise ArchiveError(f"the archive has more than {max_entries} entries")
                if e.name.parts[0] in IGNORED_TOP:
                    continue
                target = base.joinpath(*e.name.parts)
                if not target.parent.resolve().is_relative_to(base):  # no links exist, so this cannot happen
                    raise ArchiveError(f"entry {str(e.name)[:80]!r} points outside the archive")
                if e.is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with e.open() as src:
                    total += _write(src, target, max_bytes - total, max_bytes)
        except FileExistsError as exc:
            raise ArchiveError(f"entry {Path(exc.filename or '?').name!r} appears twice, as a file and a folder "
                               "or as two files") from exc
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"a damaged {EXTENSIONS[kind]} archive ({_first_line(exc)})") from exc
        except OSError as exc:
            raise ArchiveError(f"the archive could not be extracted ({exc.strerror or _first_line(exc)})") from exc
    return base / _top(names, PurePosixPath(marker))
