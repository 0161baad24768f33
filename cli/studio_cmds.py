"""Studio commands: `vlarft studio` (everything on one machine), `vlarft api` and `vlarft worker`
(to scale out), `vlarft db upgrade|downgrade|current`.

`vlarft studio` starts the embedded Redis (unless VLARFT_BROKER_URL is set), migrates the database,
recovers what a killed studio left (runs whose worker is gone and queued runs whose message is lost
are queued again, orphan files removed), then runs the API (uvicorn) and one worker per queue as
child processes in their own sessions, so a Ctrl-C reaches only the studio, which stops them in
order: workers first (their runs stop at a checkpoint and go back to the queue), then the API, then
Redis (which flushes its append-only file). A worker or an embedded Redis that dies is restarted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import typer

from backend.kinds import QUEUES


def register(app: typer.Typer) -> None:
    app.command("studio")(studio)
    app.command("api")(api)
    app.command("worker")(worker)
    db = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)
    db.command("upgrade")(db_upgrade)
    db.command("downgrade")(db_downgrade)
    db.command("current")(db_current)
    app.add_typer(db, name="db")


def _settings():
    from pydantic import ValidationError

    from backend.core.config import Settings
    from backend.params import describe_errors
    from sim.errors import InputError

    try:
        return Settings()
    except ValidationError as exc:
        raise InputError(f"bad VLARFT_ setting: {describe_errors(exc.errors())}") from exc


def _check_port_free(host: str, port: int) -> None:
    from sim.errors import InputError

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}); pass --port") from exc


def _check_broker(url: str) -> None:
    from backend.broker import BrokerError, ping
    from sim.errors import InputError

    try:
        ping(url)
    except BrokerError as exc:
        hint = " (start `vlarft studio`, or set VLARFT_BROKER_URL=redis://host:6379/0)"
        raise InputError(f"{exc}{hint}") from exc


def _migrate(url: str) -> None:
    from backend import db
    from sim.errors import InputError

    try:
        db.upgrade(url)
    except Exception as exc:
        raise InputError(f"cannot migrate the database {url.split('@')[-1]}: {type(exc).__name__}: "
                         f"{(str(exc).splitlines() or [''])[0]}") from exc


# vlarft api --------------------------------------------------------------------------------------

def api(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8000, min=1, max=65535),
    ui: bool = typer.Option(True, help="Mount the Gradio UI at /ui when the frontend is installed."),
    migrate: bool = typer.Option(True, help="Upgrade the database schema first."),
    processes: int = typer.Option(1, min=1, max=64, help="uvicorn worker processes."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve the REST API (and the UI) with uvicorn."""
    import uvicorn

    settings = _settings()
    settings.ensure_dirs()
    if migrate:
        _migrate(settings.db_url)
    from backend.broker import BrokerError, ping

    try:
        ping(settings.broker)
    except BrokerError as exc:
        typer.echo(f"warning: {exc}; runs cannot be queued until it answers", err=True)
    os.environ["VLARFT_UI"] = "1" if ui else "0"
    os.environ.setdefault("VLARFT_API_URL", f"http://{host}:{port}")
    uvicorn.run("cli.studio_app:create_app", factory=True, host=host, port=port, workers=processes,
                log_level=log_level, timeout_graceful_shutdown=5)


# vlarft worker -----------------------------------------------------------------------------------

def worker(
    queues: str = typer.Option("train,sim", help="Comma-separated queues: train (GPU work), sim (simulator)."),
    concurrency: int = typer.Option(1, min=1, max=256, help="Jobs at once (prefork processes)."),
    hostname: str = typer.Option(None, help="Celery node name (default: QUEUES-PID@host)."),
    gpu: str = typer.Option(None, help="Pin to these GPUs (sets CUDA_VISIBLE_DEVICES), e.g. 0 or 2,3."),
    pool: str = typer.Option("prefork", help="prefork (cancel can terminate a job) or solo."),
    log_level: str = typer.Option("info"),
) -> None:
    """Run a Celery worker for the given queues."""
    from sim.errors import InputError

    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in names if q not in QUEUES]
    if not names or unknown:
        raise InputError(f"unknown queue(s) {', '.join(unknown) or repr(queues)}: choose from {', '.join(QUEUES)}")
    if pool not in ("prefork", "solo"):
        raise InputError(f"--pool must be prefork or solo, got {pool!r}")
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before any child process touches CUDA
    settings = _settings()
    settings.ensure_dirs()
    _check_broker(settings.broker)
    from workers.app import app as celery_app

    node = hostname or f"{'+'.join(names)}-{os.getpid()}@{socket.gethostname()}"
    celery_app.worker_main([
        "worker", "-Q", ",".join(names), "-c", str(concurrency), "-P", pool, "-n", node, "-l", log_level,
        "--without-gossip", "--without-mingle", "-E",
    ])


# vlarft db ---------------------------------------------------------------------------------------

def _db(action: str, fn):
    from sim.errors import InputError

    url = _settings().db_url
    try:
        return url, fn(url)
    except Exception as exc:
        raise InputError(f"cannot {action} the database {url.split('@')[-1]}: {type(exc).__name__}: "
                         f"{(str(exc).splitlines() or [''])[0]}") from exc


def db_upgrade(revision: str = typer.Option("head")) -> None:
    """Upgrade the schema (idempotent)."""
    from backend import db

    url, _ = _db("upgrade", lambda u: db.upgrade(u, revision))
    typer.echo(f"database at revision {db.current_revision(url)}")


def db_downgrade(revision: str = typer.Option(..., help="Target revision; 'base' drops every table.")) -> None:
    """Downgrade the schema."""
    from backend import db

    url, _ = _db("downgrade", lambda u: db.downgrade(u, revision))
    typer.echo(f"database at revision {db.current_revision(url) or 'empty'}")


def db_current() -> None:
    """Print the schema revision."""
    from backend import db

    _, rev = _db("read", db.current_revision)
    typer.echo(rev or "empty")


# vlarft studio -----------------------------------------------------------------------------------

class Studio:
    """The API and one worker per queue as child processes; restarts a worker or the embedded Redis
    that dies (from the main thread: a child's PR_SET_PDEATHSIG follows the thread that started it)."""

    MAX_RESTARTS_PER_MIN = 5

    def __init__(self, settings, host: str, port: int, ui: bool, stop_timeout: float) -> None:
        self.settings = settings
        self.host, self.port, self.ui = host, port, ui
        self.stop_timeout = stop_timeout
        self.id = uuid.uuid4().hex[:6]
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, list[float]] = {}
        self.broker = None
        self.stopping = threading.Event()
        self.forced = threading.Event()

    def _spawn(self, name: str) -> None:
        cmd = [sys.executable, "-m", "cli.main"]
        if name == "api":
            cmd += ["api", "--host", self.host, "--port", str(self.port), "--no-migrate",
                    "--ui" if self.ui else "--no-ui"]
        else:
            cmd += ["worker", "--queues", name, "--concurrency", "1",
                    "--hostname", f"{name}-{self.id}@{socket.gethostname()}"]
        env = self.settings.child_env()
        env["VLARFT_API_URL"] = f"http://{self.host}:{self.port}"
        from backend.broker import die_with_parent

        self.procs[name] = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=die_with_parent)

    def start(self) -> None:
        from backend.broker import BrokerError, EmbeddedRedis
        from sim.errors import InputError

        if self.settings.embedded_broker:
            try:
                self.broker = EmbeddedRedis(self.settings.home_dir, self.settings.broker_socket).start()
            except BrokerError as exc:
                raise InputError(str(exc)) from exc
            typer.echo(f"broker: embedded redis on {self.settings.broker_socket}", err=True)
        else:
            _check_broker(self.settings.broker)
        _migrate(self.settings.db_url)
        self._recover()
        for name in ("api", *QUEUES):
            self._spawn(name)

    def _recover(self) -> None:
        """Before any worker runs: requeue what a killed studio left running, re-send lost messages,
        remove orphan files (all of them with the embedded broker: nothing else uses this folder)."""
        from backend.celery_app import make_celery
        from backend.reaper import recover

        celery = make_celery(self.settings)
        try:
            counts = recover(self.settings, celery, exclusive=self.settings.embedded_broker)
            if any(counts.values()):
                typer.echo("recovered after an unclean stop: " + ", ".join(
                    f"{n} {what}" for what, n in counts.items() if n), err=True)
        except Exception as exc:  # the API's reaper tries again
            typer.echo(f"warning: recovery at start failed ({type(exc).__name__}: {exc})", err=True)
        finally:
            celery.close()

    def _check_broker_alive(self) -> int:
        """Restart the embedded Redis if it died (it reloads its append-only file); 1 if it keeps dying."""
        from backend.broker import BrokerError

        b = self.broker
        if b is None or b.alive():
            return 0
        code = b.proc.returncode if b.proc is not None else None
        recent = [t for t in b.restarts if time.monotonic() - t < 60]
        if len(recent) >= self.MAX_RESTARTS_PER_MIN:
            typer.echo(f"error: the embedded redis keeps dying (code {code}); stopping", err=True)
            return 1
        typer.echo(f"warning: the embedded redis exited (code {code}); restarting it", err=True)
        try:
            b.restart()
            typer.echo(f"broker: embedded redis restarted on {b.socket}", err=True)
        except BrokerError as exc:
            typer.echo(f"warning: {exc}; trying again", err=True)
        return 0

    def wait_ready(self, timeout: float = 60.0) -> bool:
        import httpx

        url = f"http://{self.host}:{self.port}/api/v1/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if self.procs["api"].poll() is not None:
                return False
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return False

    def supervise(self) -> int:
        while not self.stopping.wait(0.5):
            if self._check_broker_alive():
                return 1
            for name, proc in list(self.procs.items()):
                if proc.poll() is None:
                    continue
                if name == "api":
                    typer.echo(f"error: the API exited with code {proc.returncode}; stopping", err=True)
                    return 1
                recent = [t for t in self.restarts.get(name, []) if time.monotonic() - t < 60]
                if len(recent) >= self.MAX_RESTARTS_PER_MIN:
                    typer.echo(f"error: the {name} worker keeps dying (code {proc.returncode}); stopping", err=True)
                    return 1
                typer.echo(f"warning: the {name} worker exited with code {proc.returncode}; restarting", err=True)
                self.restarts[name] = [*recent, time.monotonic()]
                self._spawn(name)
        return 0

    def _stop(self, names: list[str], sig: signal.Signals, timeout: float) -> None:
        for name in names:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        for name in names:
            proc = self.procs.get(name)
            if proc is None:
                continue
            while proc.poll() is None and time.monotonic() < deadline and not self.forced.is_set():
                time.sleep(0.1)
            if proc.poll() is None:
                typer.echo(f"warning: {name} did not stop in time; killing it", err=True)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop(self) -> None:
        typer.echo("stopping: workers first (running jobs stop at a checkpoint and are requeued)", err=True)
        self._stop(list(QUEUES), signal.SIGTERM, self.stop_timeout)
        self._stop(["api"], signal.SIGTERM, 10)
        if self.broker is not None:
            self.broker.stop()
        typer.echo("studio stopped", err=True)


def studio(
    host: str = typer.Option("127.0.0.1", help="Interface the API listens on."),
    port: int = typer.Option(8000, min=1, max=65535),
    ui: bool = typer.Option(True, help="Mount the Gradio UI at /ui when the frontend is installed."),
    stop_timeout: float = typer.Option(60.0, min=1, help="Seconds a worker gets to stop its job on Ctrl-C."),
) -> None:
    """Run the whole studio on this machine: broker, database, API + UI, one worker per queue."""
    settings = _settings()
    _check_port_free(host, port)
    settings.ensure_dirs()
    s = Studio(settings, host, port, ui, stop_timeout)

    def on_signal(signum, _frame) -> None:
        if s.stopping.is_set():
            s.forced.set()  # a second Ctrl-C: stop waiting
        s.stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        s.start()
        if s.wait_ready():
            typer.echo(f"studio ready: http://{host}:{port}  (API docs /docs, data in {settings.home_dir}); "
                       "Ctrl-C stops it", err=True)
            code = s.supervise()
        elif not s.stopping.is_set():
            typer.echo("error: the API did not come up", err=True)
            code = 1
    finally:
        s.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code:
        raise typer.Exit(code)
