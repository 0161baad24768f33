"""POST /datasets/import end to end, on the embedded stack with a real worker: a LeRobot archive (.zip and
.tar.gz) and a LIBERO file become datasets made by an `import` run (lineage, no simulator states, episodes
readable); bad input is a 4xx naming the field at submit or a failed run with a one-line error, and leaves no
upload, extracted folder, partial output or row behind. Also backend.archives on its own."""

from __future__ import annotations

import io
import json
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from backend_helpers import stack_fixture, write_episode_file
from sqlalchemy import func, select
from test_lerobot import TASKS, make_lerobot, write_libero

from backend.archives import ArchiveError, extract
from backend.client import StudioClient, StudioError
from backend.db import session_scope
from backend.models import Dataset, Run
from sim.episodes import EpisodeFile

WAIT_S = 240


@pytest.fixture(scope="module")
def stack():
    for st in stack_fixture("embedded"):
        st.worker("sim")
        yield st


@pytest.fixture(scope="module")
def api(stack):
    with stack.client() as c:
        yield c


@pytest.fixture(scope="module")
def lerobot_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lr") / "pick_place"
    make_lerobot(root, episodes=2, steps=8)
    return root


def zip_folder(root: Path, out: Path, top: str | None = "ds", extra: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                rel = f.relative_to(root).as_posix()
                z.write(f, f"{top}/{rel}" if top else rel)
        for info, data in extra:
            z.writestr(info, data)
    return out


def tar_folder(root: Path, out: Path, extra: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(out, "w:gz") as t:
        t.add(root, arcname="ds")
        for info in extra:
            t.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return out


def _counts(stack) -> tuple[int, int]:
    with session_scope(stack.settings().db_url) as s:
        return (s.scalar(select(func.count()).select_from(Run)), s.scalar(select(func.count()).select_from(Dataset)))


def _leftovers(stack) -> list[str]:
    """Uploads, import outputs and extraction folders: none may outlive a run or a refused request."""
    art = stack.settings().artifacts
    found = [p.name for p in (art / "uploads").glob("*")]
    found += [p.name for p in (art / "datasets").glob("*import-run*")]
    found += [p.relative_to(art).as_posix() for p in (art / "runs").glob("*/.extract*")]
    return sorted(found)


def _registered(stack) -> set[str]:
    with session_scope(stack.settings().db_url) as s:
        return {Path(p).name for p in s.scalars(select(Dataset.path))}


def _finished(api: StudioClient, run_id: int):
    return api.wait(run_id, timeout=WAIT_S, poll=0.3)


def test_lerobot_zip_and_tar_gz_become_datasets_made_by_the_run(stack, api, lerobot_root, tmp_path):
    runs = {
        "lr-zip": api.import_dataset(zip_folder(lerobot_root, tmp_path / "a.zip"), name="lr-zip"),
        "lr-tgz": api.import_dataset(tar_folder(lerobot_root, tmp_path / "b.tar.gz"), name="lr-tgz", image_size=128),
    }
    for name, run in runs.items():
        assert run.kind == "import" and run.params["format"] == "lerobot"
        run = _finished(api, run.id)
        assert run.status == "succeeded", (run.error, api.logs(run.id).model_dump())
        assert run.result["sim_states"] is False and run.result["action_dim"] == 7
        ds = api.dataset(run.result["dataset_id"])
        listed = {d.id: d for d in api.datasets(limit=500).items}
        assert ds.id in listed and ds.name == name
        assert (ds.run_id, ds.source) == (run.id, "lerobot")  # lineage: the run that made it
        assert (ds.episodes, ds.steps, ds.action_dim, ds.camera) == (2, 16, 7, "front")
        assert ds.image_size == (128 if name == "lr-tgz" else 64)
        eps = api.episodes(ds.id)
        assert [e.instruction for e in eps] == TASKS[:2] and [e.length for e in eps] == [8, 8]
        local = api.download_dataset(ds.id, tmp_path / f"{name}.h5")
        ef = EpisodeFile(local)
        try:
            assert not ef.has_sim_states and ef.attrs["source_format"] == "lerobot-v3.0"
            assert ef.load(1).frames.shape == (8, ds.image_size, ds.image_size, 3)
        finally:
            ef.close()
    assert not [n for n in _leftovers(stack) if n not in _registered(stack)]


def test_libero_file_becomes_a_dataset(stack, api, tmp_path):
    write_libero(tmp_path / "open_drawer_demo.hdf5", episodes=2, steps=6, size=64)
    run = api.import_dataset(tmp_path / "open_drawer_demo.hdf5")
    assert run.params["format"] == "libero" and run.params["dataset_name"] == "open_drawer_demo"
    run = _finished(api, run.id)
    assert run.status == "succeeded", run.error
    ds = api.dataset(run.result["dataset_id"])
    assert (ds.name, ds.source, ds.run_id, ds.episodes, ds.action_dim) == ("open_drawer_demo", "libero", run.id, 2, 7)
    assert run.result["sim_states"] is False and run.result["instruction"] == "open the top drawer"
    assert [e.success for e in api.episodes(ds.id)] == [True, True]
    assert not [n for n in _leftovers(stack) if n not in _registered(stack)]


def _symlink_zip_entry() -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo("ds/meta/evil")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, b"/etc/passwd"


def test_bad_uploads_are_refused_at_submit_naming_the_field(stack, api, lerobot_root, tmp_path):
    write_episode_file(tmp_path / "taken.h5")
    api.upload_dataset(tmp_path / "taken.h5", "lr-zip-taken")
    write_libero(tmp_path / "cam.hdf5", episodes=1, steps=4, size=64)
    before = _counts(stack), _leftovers(stack)
    notes = tmp_path / "notes.zip"
    notes.write_text("not an archive\n" * 20)
    no_meta = tmp_path / "no_meta"
    shutil.copytree(lerobot_root, no_meta)
    shutil.rmtree(no_meta / "meta")
    cases = [
        (notes, {}, 422, ["file", "neither an archive"]),
        (zip_folder(lerobot_root, tmp_path / "up.zip", extra=[(zipfile.ZipInfo("../escape.txt"), b"x")]), {}, 422,
         ["file", "outside the archive"]),
        (zip_folder(lerobot_root, tmp_path / "abs.zip", extra=[(zipfile.ZipInfo("/tmp/abs.txt"), b"x")]), {}, 422,
         ["file", "absolute"]),
        (zip_folder(lerobot_root, tmp_path / "link.zip", extra=[_symlink_zip_entry()]), {}, 422, ["file", "link"]),
        (zip_folder(no_meta, tmp_path / "nometa.zip"), {}, 422, ["file", "meta/info.json"]),
        (zip_folder(lerobot_root, tmp_path / "size.zip"), {"image_size": 100}, 422, ["image_size"]),
        (zip_folder(lerobot_root, tmp_path / "name.zip"), {"name": "../x"}, 422, ["name"]),
        (zip_folder(lerobot_root, tmp_path / "taken.zip"), {"name": "lr-zip-taken"}, 409, ["name", "exists"]),
        (tmp_path / "cam.hdf5", {"camera": "front"}, 422, ["camera", "lerobot"]),
    ]
    for path, form, code, needles in cases:
        with pytest.raises(StudioError) as e:
            api.import_dataset(path, **form)
        assert e.value.status == code, (path.name, e.value)
        assert all(n in str(e.value) for n in needles), (path.name, str(e.value))
        assert "\n" not in str(e.value) and str(stack.settings().artifacts) not in str(e.value)
    assert (_counts(stack), _leftovers(stack)) == before


def test_import_runs_need_a_stored_upload(api):
    with pytest.raises(StudioError) as e:
        api.create_run("import", {"upload": f"import-{'0' * 32}.zip", "format": "lerobot"})
    assert e.value.status == 422 and "params.upload" in str(e.value) and "no such upload" in str(e.value)
    with pytest.raises(StudioError) as e:
        api.create_run("import", {"upload": "../../etc/passwd", "format": "lerobot"})
    assert e.value.status == 422 and "upload" in str(e.value)


def _broken(lerobot_root: Path, tmp_path: Path, name: str) -> Path:
    bad = tmp_path / name
    shutil.copytree(lerobot_root, bad)
    return bad


def test_bad_archives_fail_their_run_in_one_line_and_leave_nothing(stack, api, lerobot_root, tmp_path):
    trunc = _broken(lerobot_root, tmp_path, "trunc")
    part = next((trunc / "data").rglob("*.parquet"))
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    novideo = _broken(lerobot_root, tmp_path, "novideo")
    next((novideo / "videos").rglob("*.mp4")).unlink()
    layout = _broken(lerobot_root, tmp_path, "layout")
    info = json.loads((layout / "meta" / "info.json").read_text())
    info["features"].pop("action")
    (layout / "meta" / "info.json").write_text(json.dumps(info))
    up = tarfile.TarInfo("../up.txt")
    up.size = 1
    link = tarfile.TarInfo("ds/meta/evil")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    studio_file = write_episode_file(tmp_path / "studio.hdf5")  # HDF5, but not LIBERO's layout
    cases = [
        (zip_folder(trunc, tmp_path / "trunc.zip"), "truncated"),
        (zip_folder(novideo, tmp_path / "novideo.zip"), "videos do not match the table"),
        (zip_folder(layout, tmp_path / "layout.zip"), "unknown feature layout"),
        (tar_folder(lerobot_root, tmp_path / "up.tar.gz", extra=[up]), "outside the archive"),
        (tar_folder(lerobot_root, tmp_path / "link.tar.gz", extra=[link]), "link"),
        (studio_file, "LIBERO"),
    ]
    runs = [(api.import_dataset(path), needle) for path, needle in cases]
    for run, needle in runs:
        run = _finished(api, run.id)
        assert run.status == "failed", (run.params, run.result)
        assert needle in run.error and "\n" not in run.error, run.error
        assert str(stack.settings().artifacts) not in run.error and "Traceback" not in run.error, run.error
        assert not [d for d in api.datasets(limit=500).items if d.run_id == run.id]
    assert not [n for n in _leftovers(stack) if n not in _registered(stack)]


def _zip(tmp_path: Path, entries: dict[str, bytes]) -> Path:
    out = tmp_path / "t.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return out


def test_extraction_caps_bytes_and_entries_and_refuses_duplicates(tmp_path):
    bomb = _zip(tmp_path, {"meta/info.json": b"{}", "data/zeros.bin": b"\0" * (4 << 20)})  # ~4 KB compressed
    with pytest.raises(ArchiveError, match="extracts to more than 1048576 bytes"):
        extract(bomb, "zip", tmp_path / "x1", 1 << 20, "meta/info.json")
    many = _zip(tmp_path, {"meta/info.json": b"{}", **{f"data/{i}": b"" for i in range(20)}})
    with pytest.raises(ArchiveError, match="more than 10 entries"):
        extract(many, "zip", tmp_path / "x2", 1 << 20, "meta/info.json", max_entries=10)
    with tarfile.open(tmp_path / "dup.tar", "w") as t:
        for _ in range(2):
            info = tarfile.TarInfo("ds/meta/info.json")
            info.size = 2
            t.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(ArchiveError, match="appears twice"):
        extract(tmp_path / "dup.tar", "tar", tmp_path / "x3", 1 << 20, "meta/info.json")
    ok = _zip(tmp_path, {"./ds/meta/info.json": b"{}", "__MACOSX/ds/._x": b"", "ds/data/a": b"1"})
    root = extract(ok, "zip", tmp_path / "x4", 1 << 20, "meta/info.json")
    assert root == (tmp_path / "x4" / "ds").resolve() and (root / "data" / "a").read_bytes() == b"1"
    assert not (tmp_path / "x4" / "__MACOSX").exists()


def test_the_datasets_tab_imports_through_the_api(stack, api, tmp_path, monkeypatch):
    """The accordion's handler, driven as Gradio would call it: upload, follow the run, list the dataset."""
    from frontend import api as ui_api
    from frontend.app import build

    monkeypatch.setitem(ui_api._clients, (ui_api.api_url(), ""), api)  # the UI's client: this test's API
    fns = build().fns
    handler = next(f.fn for f in (fns.values() if isinstance(fns, dict) else fns) if f.name == "on_import")
    write_libero(tmp_path / "ui_demo.hdf5", episodes=1, steps=5, size=64)
    steps = list(handler(str(tmp_path / "ui_demo.hdf5"), "ui-libero", 64, "", None, None))
    _, notice, table = steps[-1]
    assert "Imported dataset" in notice and "ui-libero" in notice and "no simulator states" in notice, steps[-1]
    assert "ui-libero" in table and "libero" in table and "run #" in table
    assert not (tmp_path / "ui_demo.hdf5").exists()  # Gradio's copy is not kept
    steps = list(handler(str(tmp_path / "missing.hdf5"), "", 64, "", None, None))
    assert "Choose the file again" in steps[-1][1]
