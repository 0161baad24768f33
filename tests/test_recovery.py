"""Recovery from a studio attacked on purpose: its whole process group killed, its Redis killed, lost
broker messages, orphan files, id reuse, concurrent deletes, a world-readable database. On the
embedded default and (where it applies) on PostgreSQL + Redis."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from backend_helpers import FAST, Stack, stack_fixture, wait_for, write_episode_file
from sqlalchemy import event, select
from test_workers_studio import StudioProcess, free_port, processes_of

from backend import crud, db, worker_store
from backend.broker import pending_task_ids
from backend.celery_app import make_celery, new_task_id, send
from backend.core.config import Settings
from backend.db import session_scope, utcnow
from backend.kinds import QUEUES
from backend.models import Dataset, Run
from backend.reaper import resend_lost, sweep_orphans

SERVICES = pytest.param("services", marks=[pytest.mark.postgres, pytest.mark.redis])


@pytest.fixture(params=["embedded", SERVICES])
def stack(request):
    yield from stack_fixture(request.param)


def _settings(env: dict[str, str]) -> Settings:
    return Settings(**{k[len("VLARFT_"):].lower(): v for k, v in env.items() if k.startswith("VLARFT_")})


def _insert_run(url: str, status: str = "succeeded", kind: str = "collect", params: dict | None = None) -> int:
    with session_scope(url) as s:
        run = Run(kind=kind, params=params or {}, status=status, queue="sim", task_id=new_task_id(), attempt=1,
                  progress=0.0, created_at=utcnow())
        s.add(run)
        s.flush()
        return run.id


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# The whole studio killed ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("how", ["group", "everything"])
def test_killed_studio_restarts_and_resumes_the_runs_in_flight(studio_env, tmp_path, how):
    """group: kill -9 -- -PGID, the issue's attack: the studio dies, its children (their own sessions) get
    SIGTERM from PR_SET_PDEATHSIG, so the workers stop their jobs while Redis dies with them.
    everything: kill -9 of every process of the studio, workers and Redis included.
    No run fails; the next start requeues them and they finish; nothing is left orphaned."""
    port, log = free_port(), tmp_path / "studio.log"
    first = StudioProcess(studio_env, port, log)
    try:
        c = first.client
        running = c.collect(tasks="reach-v3", episodes=12)
        waiting = c.collect(tasks="reach-v3", episodes=1)
        wait_for(lambda: (r := c.run(running.id)).status == "running" and r.progress > 0, 60, "the long run")
        if how == "everything":
            for pid in [first.proc.pid, *processes_of(studio_env["VLARFT_HOME"])]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        else:
            os.killpg(first.proc.pid, signal.SIGKILL)  # the studio's process group: the studio alone
        first.proc.wait()
    finally:
        first.kill()
    wait_for(lambda: processes_of(studio_env["VLARFT_HOME"]) == [], 60, "the studio's children to exit")
    url = _settings(studio_env).db_url
    with session_scope(url) as s:
        left = {r.id: (r.status, r.message) for r in s.query(Run)}
    print(f"after the kill ({how}):", left)
    assert left[running.id][0] in ("queued", "running") and left[waiting.id][0] == "queued", left

    second = StudioProcess(studio_env, port, log)
    try:
        c = second.client
        for run_id, episodes in ((running.id, 12), (waiting.id, 1)):
            done = c.wait(run_id, timeout=120)
            assert done.status == "succeeded", (done.error, second.output())
            assert c.dataset(done.result["dataset_id"]).episodes == episodes
        assert c.run(running.id).attempt == 2
        logs = " | ".join(line.message for line in c.logs(running.id).lines)
        assert "requeued" in logs and "failed" not in logs, logs
        art = _settings(studio_env).artifacts
        with session_scope(url) as s:
            registered = set(s.scalars(select(Dataset.path)))
        assert {f"datasets/{f}" for f in _files(art / "datasets")} == registered  # no partials, no strays
        assert not [f for f in _files(art) if ".tmp" in f]
    finally:
        second.ctrl_c()
        second.kill()


@pytest.fixture(params=["embedded", SERVICES])
def studio_env(request):
    if request.param == "embedded":
        home = Path(tempfile.mkdtemp(prefix="vrr-"))
        yield {"VLARFT_HOME": str(home), **FAST}
        shutil.rmtree(home, ignore_errors=True)
    else:
        for stack in stack_fixture("services"):
            yield stack.env


# The embedded Redis killed ----------------------------------------------------------------------

def _redis_pid(studio_pid: int) -> int:
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit():
                continue
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == studio_pid and b"redis-server" in (proc / "cmdline").read_bytes():
                return int(proc.name)
        except (OSError, ValueError, IndexError):
            continue
    raise AssertionError(f"no redis-server child of {studio_pid}")


@pytest.mark.slow
def test_killed_embedded_redis_is_restarted_and_queued_runs_finish(tmp_path):
    env = {"VLARFT_HOME": str(tmp_path / "home"), **FAST}
    port, log = free_port(), tmp_path / "studio.log"
    studio = StudioProcess(env, port, log)
    try:
        c = studio.client
        running = c.collect(tasks="reach-v3", episodes=8)
        waiting = c.collect(tasks="reach-v3", episodes=1)
        wait_for(lambda: (r := c.run(running.id)).status == "running" and r.progress > 0, 60, "the long run")
        old = _redis_pid(studio.proc.pid)
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        url = f"http://127.0.0.1:{port}/api/v1/health"
        codes = []

        def healthy_again() -> bool:
            codes.append(httpx.get(url, timeout=2).status_code)
            return codes[-1] == 200 and "embedded redis restarted" in studio.output()

        wait_for(healthy_again, 30, f"health 200\n{studio.output()}", poll=0.1)
        print(f"health back to 200 {time.monotonic() - killed:.1f} s after kill -9 of redis (codes {codes})")
        assert _redis_pid(studio.proc.pid) != old
        for run_id in (running.id, waiting.id):
            done = c.wait(run_id, timeout=120)
            assert done.status == "succeeded", (done.error, studio.output())
        # and a message sent after the restart is delivered
        after = c.wait(c.collect(tasks="reach-v3", episodes=1).id, timeout=60)
        assert after.status == "succeeded", (after.error, studio.output())
    finally:
        studio.ctrl_c()
        studio.kill()


# Lost messages ----------------------------------------------------------------------------------

def _queue_keys(stack: Stack) -> list[str]:
    return [stack.settings().broker_key_prefix + q for q in QUEUES]


@pytest.mark.slow
def test_a_queued_run_whose_message_was_lost_is_sent_again_once(stack):
    cfg = stack.settings()
    celery = make_celery(cfg)
    with stack.client(reaper=False) as c:
        run = c.collect(tasks="reach-v3", episodes=1)
    with session_scope(cfg.db_url) as s:
        old = s.get(Run, run.id).task_id
    assert old in pending_task_ids(cfg.broker, QUEUES, cfg.broker_key_prefix)
    suspects: dict[int, str] = {}
    assert resend_lost(cfg, celery, suspects) == 0 and suspects == {}  # its message is there

    from backend.broker import redis_client

    r = redis_client(cfg.broker)
    r.delete(*_queue_keys(stack))  # the message is lost (Redis killed before it synced)
    r.close()
    assert resend_lost(cfg, celery, suspects) == 0 and suspects == {run.id: old}  # missing once: suspect
    assert resend_lost(cfg, celery, suspects) == 1  # missing twice: sent again under a new id
    with session_scope(cfg.db_url) as s:
        new = s.get(Run, run.id).task_id
    assert new != old and new in pending_task_ids(cfg.broker, QUEUES, cfg.broker_key_prefix)
    assert resend_lost(cfg, celery, {}) == 0  # nothing more to do
    send(celery, run.id, "sim", old)  # the old message shows up after all: a duplicate
    w = stack.worker("sim")
    with stack.client(reaper=False) as c:
        done = c.wait(run.id, timeout=90)
        assert done.status == "succeeded" and done.attempt == 1, (done.error, w.output())
        wait_for(lambda: "a newer message owns the run" in w.output(), 30, "the duplicate to be dropped")


def test_a_shutdown_with_the_broker_gone_leaves_the_run_queued_not_failed(stack):
    cfg = stack.settings()
    run_id = _insert_run(cfg.db_url, status="queued")
    with session_scope(cfg.db_url) as s:
        task_id = s.get(Run, run_id).task_id
    claim, why = worker_store.claim(cfg.db_url, run_id, task_id, "sim-x@h/1", 0.5)
    assert claim is not None, why
    dead = make_celery(cfg.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    assert worker_store.requeue_interrupted(cfg.db_url, dead, claim, "sim") is True
    with session_scope(cfg.db_url) as s:
        run = s.get(Run, run_id)
        assert (run.status, run.error, run.worker) == ("queued", None, None)
        assert run.task_id != task_id and "broker is down" in run.message
    assert resend_lost(cfg, make_celery(cfg)) == 1  # the next start (no memory: at once)


# Orphans ----------------------------------------------------------------------------------------

def test_orphan_sweep_removes_partials_and_unregistered_outputs_never_a_live_runs_files(stack):
    cfg = stack.settings()
    art, url = cfg.artifacts, cfg.db_url
    live = _insert_run(url, status="running")
    failed = _insert_run(url, status="failed")
    done = _insert_run(url, status="succeeded")
    deleted = _insert_run(url)
    with session_scope(url) as s:
        s.delete(s.get(Run, deleted))
    cfg.ensure_dirs()
    ds_file = art / "datasets" / f"collect-run{done}.h5"
    with session_scope(url) as s:
        s.add(Dataset(name="kept", path=f"datasets/{ds_file.name}", source="collect", run_id=done, size=1,
                      sha256="0" * 64, episodes=2, steps=10, tasks={}, image_size=8, camera="c", action_dim=4,
                      success_rate=1.0))
    dead_pid = 2**22 + 17  # above pid_max: no such process
    keep = [
        f"datasets/collect-run{done}.h5",  # registered
        f"datasets/.collect-run{live}.h5.tmp-{dead_pid}",  # the live run's partial
        f"datasets/collect-run{live}.h5",  # written, not yet registered by the live run
        f"runs/{live}/checkpoint/.model.safetensors.tmp-{dead_pid}",
        f"runs/{failed}/checkpoint/model.safetensors",  # a failed run's checkpoint: it can be resumed
        "datasets/notes.txt",  # not a name the studio writes
        f"uploads/.{'a' * 32}.h5",  # an upload in progress (recent)
    ]
    gone = [
        f"datasets/.collect-run{failed}.h5.tmp-{dead_pid}",  # partial of a killed collect
        f"datasets/collect-run{failed}.h5",  # output of a failed collect, no row
        f"runs/{failed}/videos/.clip.tmp-{dead_pid}.mp4",
        f"runs/{deleted}/report.json",  # folder of a deleted run
        f"datasets/collect-run{deleted}.h5",
    ]
    for name in keep + gone:
        if not (art / name).exists():
            (art / name).parent.mkdir(parents=True, exist_ok=True)
            (art / name).write_bytes(b"x" * 100)
    removed = sweep_orphans(url, art)
    left = _files(art)
    assert set(keep) <= left and not set(gone) & left, (sorted(left), removed)
    assert not (art / "runs" / str(deleted)).exists()
    # at a start with the embedded broker nothing else can be writing: unregistered uploads go too
    sweep_orphans(url, art, exclusive=True)
    assert f"uploads/.{'a' * 32}.h5" not in _files(art) and set(keep[:5]) <= _files(art)


# Ids, deletes, file modes -----------------------------------------------------------------------

def test_ids_are_never_reused_after_a_delete(stack, tmp_path):
    with stack.client(reaper=False) as c:
        run = c.collect(tasks="reach-v3", episodes=1)
        c.cancel(run.id)
        c.delete_run(run.id)
        again = c.collect(tasks="reach-v3", episodes=1)
        assert again.id > run.id
        f = write_episode_file(tmp_path / "ep.h5")
        ds = c.upload_dataset(f, name=f"up-{stack.tag}")
        c.delete_dataset(ds.id)
        assert c.upload_dataset(f, name=f"up2-{stack.tag}").id > ds.id


def _race(n: int, fn) -> list:
    """Call fn() from n threads released together; their results."""
    gate, out = threading.Barrier(n), []

    def one() -> None:
        gate.wait()
        out.append(fn())

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


@contextlib.contextmanager
def _deletes_meet(url: str, table: str, n: int):
    """Hold each DELETE on `table` until n of them are ready: every request has read the row before any
    deletes it, the interleaving that gave every request a 204."""
    gate = threading.Barrier(n, timeout=10)

    def hold(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith(f"DELETE FROM {table.upper()}"):
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait()

    engine = db.get_engine(url)
    event.listen(engine, "before_cursor_execute", hold)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", hold)


def _dataset_row(cfg: Settings, name: str) -> tuple[int, Path]:
    cfg.ensure_dirs()
    f = write_episode_file(cfg.artifacts / "datasets" / "upload-0123456789ab.h5")
    with session_scope(cfg.db_url) as s:
        ds = Dataset(name=name, path="datasets/upload-0123456789ab.h5", source="upload", size=1,
                     sha256="0" * 64, episodes=2, steps=10, tasks={}, image_size=8, camera="c", action_dim=4,
                     success_rate=1.0)
        s.add(ds)
        s.flush()
        return ds.id, f


def test_concurrent_deletes_of_a_run_one_204_then_404(stack):
    url = stack.settings().db_url
    run_id = _insert_run(url)
    from fastapi.testclient import TestClient

    with TestClient(stack.app(reaper=False)) as http, _deletes_meet(url, "runs", 4):
        codes = _race(4, lambda: http.delete(f"/api/v1/runs/{run_id}").status_code)
        assert sorted(codes) == [204, 404, 404, 404], codes
        assert http.delete(f"/api/v1/runs/{run_id}").status_code == 404


def test_two_sessions_deleting_one_row_one_wins(stack):
    """The same interleaving without threads: both read the row, then both delete it."""
    cfg = stack.settings()
    run_id = _insert_run(cfg.db_url)
    ds_id, f = _dataset_row(cfg, f"d-{stack.tag}")
    for get, remove in ((lambda s: s.get(Run, run_id), crud.delete_run),
                        (lambda s: s.get(Dataset, ds_id), crud.delete_dataset)):
        with session_scope(cfg.db_url) as s1, session_scope(cfg.db_url) as s2:
            first, second = get(s1), get(s2)
            assert first is not None and second is not None
            remove(s1, first, cfg.artifacts)
            with pytest.raises(crud.NotFound):
                remove(s2, second, cfg.artifacts)
    assert not f.exists()
    # an active run is still a 409, a dataset in use by one too
    busy = _insert_run(cfg.db_url, status="running", params={"dataset_id": 5})
    with session_scope(cfg.db_url) as s:
        with pytest.raises(crud.Conflict):
            crud.delete_run(s, s.get(Run, busy), cfg.artifacts)
        assert [r.id for r in crud.runs_using_dataset(s, 5)] == [busy]


def test_concurrent_deletes_of_a_dataset_over_http_one_204(stack):
    cfg = stack.settings()
    ds_id, f = _dataset_row(cfg, f"h-{stack.tag}")
    from fastapi.testclient import TestClient

    with TestClient(stack.app(reaper=False)) as http, _deletes_meet(cfg.db_url, "datasets", 4):
        codes = _race(4, lambda: http.delete(f"/api/v1/datasets/{ds_id}").status_code)
    assert sorted(codes) == [204, 404, 404, 404], codes
    assert not f.exists()


def test_the_sqlite_database_is_private(tmp_path):
    path = tmp_path / "studio.db"
    old = os.umask(0o022)
    try:
        url = f"sqlite:///{path}"
        db.upgrade(url)
        _insert_run(url)
        for p in (path, path.with_name("studio.db-wal"), path.with_name("studio.db-shm")):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, (p, oct(p.stat().st_mode))
        db.dispose_all()
        path.chmod(0o644)  # a database made before this fix is tightened when opened
        db.get_engine(url).connect().close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)
        db.dispose_all()
