"""`vlarft studio` as a user runs it: Ctrl-C stops everything without losing a run, and a restart keeps
runs, metrics and artifacts; an interrupted job resumes (a training run from its checkpoint)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from backend_helpers import FAST, ROOT, stack_fixture, wait_for

from backend.client import StudioClient

pytestmark = pytest.mark.slow
SERVICES = pytest.param("services", marks=[pytest.mark.postgres, pytest.mark.redis])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StudioProcess:
    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        full = {k: v for k, v in os.environ.items() if not k.startswith("VLARFT_")}
        full.update(env)
        full["PYTHONPATH"] = str(ROOT)
        cmd = [sys.executable, "-m", "cli.main", "studio", "--port", str(port), "--no-ui", "--stop-timeout", "60"]
        self.proc = subprocess.Popen(cmd, env=full, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.client = StudioClient(f"http://127.0.0.1:{port}")
        wait_for(self._healthy, 60, f"the studio on port {port}\n{self.output()}", poll=0.2)

    def _healthy(self) -> bool:
        assert self.proc.poll() is None, self.output()
        try:
            return self.client.health().status == "ok"
        except Exception:
            return False

    def ctrl_c(self, timeout: float = 90) -> int:
        """What a Ctrl-C in the terminal does: SIGINT to the studio (its children have their own sessions)."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        self.client.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@pytest.fixture(params=["embedded", SERVICES])
def studio_env(request):
    """Settings for a studio: the embedded default (the studio starts its own Redis), or the services."""
    if request.param == "embedded":
        home = Path(tempfile.mkdtemp(prefix="vrs-"))
        yield {"VLARFT_HOME": str(home), **FAST}
        shutil.rmtree(home, ignore_errors=True)
    else:
        for stack in stack_fixture("services"):
            yield stack.env


def processes_of(home: str) -> list[int]:
    """Processes started for the studio with this VLARFT_HOME (API, workers, their children, Redis)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"VLARFT_HOME={home}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_ctrl_c_and_restart_keep_runs_and_artifacts_and_resume_the_interrupted_run(studio_env, tmp_path):
    port = free_port()
    log = tmp_path / "studio.log"
    first = StudioProcess(studio_env, port, log)
    try:
        c = first.client
        col = c.wait(c.collect(tasks="reach-v3", episodes=1).id, timeout=120)
        assert col.status == "succeeded", (col.error, first.output())
        ev = c.wait(c.evaluate(tasks="reach-v3", episodes=1, max_steps=40, videos_per_cell=1).id, timeout=120)
        assert ev.status == "succeeded", (ev.error, first.output())
        video = c.artifacts(ev.id, kind="video")[0]
        video_sha = _sha(c.artifact_bytes(ev.id, video.name))
        assert video_sha == video.sha256
        long = c.collect(tasks="reach-v3", episodes=12)
        wait_for(lambda: (r := c.run(long.id)).status == "running" and r.progress > 0, 60, "the long run")
        assert first.ctrl_c() == 0, first.output()
    finally:
        first.kill()
    assert "studio stopped" in first.output()
    assert processes_of(studio_env["VLARFT_HOME"]) == []  # API, workers and their pools are gone

    second = StudioProcess(studio_env, port, log)
    try:
        c = second.client
        runs = {r.id: r for r in c.runs().items}
        assert runs[col.id].status == runs[ev.id].status == "succeeded"
        assert c.dataset(col.result["dataset_id"]).episodes == 1
        assert _sha(c.artifact_bytes(ev.id, video.name)) == video_sha
        assert [e.perturbation for e in c.evaluations(ev.id)] == ["none"]
        logs = [line.message for line in c.logs(long.id).lines]
        assert "interrupted by a worker shutdown; requeued" in logs, logs
        done = c.wait(long.id, timeout=120)
        assert done.status == "succeeded" and done.attempt == 2, (done.error, second.output())
        assert c.dataset(done.result["dataset_id"]).episodes == 12
    finally:
        second.ctrl_c()
        second.kill()


def test_training_survives_a_studio_restart_then_rft_compare_and_cancel_keep_checkpoints(tmp_path):
    """Real model stages (smoke): train_policy writes metrics and checkpoints; a Ctrl-C stops it at a
    checkpoint and after a restart it resumes from there; a world model and GRPO fine-tuning follow;
    /compare runs the expert against the fine-tuned policy; a cancelled training keeps its checkpoint."""
    env = {"VLARFT_HOME": str(tmp_path / "home"), **FAST}  # pytest removes it
    port = free_port()
    log = tmp_path / "studio.log"
    first = StudioProcess(env, port, log)
    try:
        c = first.client
        col = c.wait(c.collect(tasks="reach-v3", episodes=2).id, timeout=120)
        assert col.status == "succeeded", col.error
        train = c.train_policy(col.result["dataset_id"], preset="smoke", steps=120)
        # Ctrl-C once it has logged a few steps: the stage saves a checkpoint where it stops
        wait_for(lambda: c.metrics(train.id).last_step is not None, 240, f"training metrics\n{first.output()}",
                 poll=0.5)
        before = c.metrics(train.id)
        assert first.ctrl_c() == 0, first.output()
    finally:
        first.kill()
    second = StudioProcess(env, port, log)
    try:
        c = second.client
        assert c.run(train.id).status in ("queued", "running", "succeeded")
        done = c.wait(train.id, timeout=300)
        assert done.status == "succeeded", (done.error, second.output())
        assert done.attempt == 2 and done.result["complete"] and done.result["step"] == 120
        after = c.metrics(train.id)
        kept = before.series["loss"]
        assert after.series["loss"].steps[: len(kept.steps)] == kept.steps  # nothing lost
        assert after.series["loss"].steps[-1] == 120
        logs = " | ".join(line.message for line in c.logs(train.id).lines)
        assert "interrupted by a worker shutdown; requeued" in logs and "resumed (attempt 2)" in logs
        ckpt = {a.name: a for a in c.artifacts(train.id, kind="checkpoint")}
        assert {"checkpoint", "base"} <= set(ckpt) and "config.json" in ckpt["checkpoint"].files
        assert c.artifact_bytes(train.id, "checkpoint/config.json")

        # world model, then GRPO fine-tuning of the policy inside it (smoke presets)
        wm = c.wait(c.train_world_model(col.result["dataset_id"], preset="smoke").id, timeout=300)
        assert wm.status == "succeeded", (wm.error, second.output())
        assert c.metrics(wm.id).series and c.artifacts(wm.id, kind="checkpoint")
        rft = c.wait(c.rft(f"run:{train.id}", f"run:{wm.id}", col.result["dataset_id"], preset="smoke").id,
                     timeout=300)
        assert rft.status == "succeeded", (rft.error, second.output())
        assert rft.parent_id == train.id and c.artifacts(rft.id, kind="checkpoint")

        # closed-loop RL on task success in the simulator (inside the prefork child: one in-process simulator)
        rl = c.wait(c.rl(f"run:{train.id}", preset="smoke", tasks="drawer-open-v3").id, timeout=300)
        assert rl.status == "succeeded", (rl.error, second.output())
        assert {"train_success", "mixed_fraction", "heldout_success", "approx_kl"} <= set(c.metrics(rl.id).series)
        assert rl.result["reward"] == "success" and rl.result["env_steps"] > 0
        assert c.artifacts(rl.id, kind="checkpoint") and c.artifacts(rl.id, kind="plot")

        cmp = c.wait(c.compare("expert", f"run:{rft.id}", tasks="reach-v3", perturbations=["none", "goal:minor"],
                               episodes=2, max_steps=30, videos_per_cell=1).id, timeout=300)
        assert cmp.status == "succeeded", (cmp.error, second.output())
        assert cmp.parent_id == rft.id and cmp.result["same_start_states"] is True
        fams = {f["perturbation"]: f for f in cmp.result["families"]}
        assert set(fams) == {"none", "goal:minor"}
        for fam in fams.values():
            assert set(fam["by_policy"]) == {"expert", f"run:{rft.id}"}
            for stats in fam["by_policy"].values():
                lo, hi = stats["ci95"]
                assert stats["episodes"] == 2 and 0 <= lo <= stats["success_rate"] <= hi <= 1
        assert len(cmp.result["videos"]) == 2 and all(len(v["policies"]) == 2 for v in cmp.result["videos"])

        cancelled = c.train_policy(col.result["dataset_id"], preset="smoke", steps=120)
        wait_for(lambda: c.metrics(cancelled.id).last_step is not None, 240, "training metrics", poll=0.5)
        c.cancel(cancelled.id)
        gone = c.wait(cancelled.id, timeout=60)
        assert gone.status == "cancelled" and gone.result and gone.result["stopped"] is True
        assert "checkpoint" in {a.name for a in c.artifacts(cancelled.id, kind="checkpoint")}
    finally:
        second.ctrl_c()
        second.kill()


def test_studio_refuses_a_busy_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "cli.main", "studio", "--port", str(port)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "VLARFT_HOME": str(tmp_path / "home")})
    assert res.returncode == 2 and res.stderr.strip().startswith("error: cannot listen on 127.0.0.1:")
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "home").exists()  # nothing created for a studio that did not start


def test_worker_refuses_unknown_queues_and_a_dead_broker():
    res = subprocess.run([sys.executable, "-m", "cli.main", "worker", "--queues", "gpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "unknown queue(s) gpu" in res.stderr
    res = subprocess.run([sys.executable, "-m", "cli.main", "worker", "--queues", "sim"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "VLARFT_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert res.returncode == 2 and "does not answer" in res.stderr and "Traceback" not in res.stderr
