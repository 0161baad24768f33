"""Many MetaWorld episodes stepped together, chunk by chunk, spread over persistent worker processes.

Each episode lives in a slot with its own `SimEnv`, kept by the process that owns the slot (slot i
belongs to process i mod W) and re-used across resets, so the environments are built once per run.
A step executes a whole chunk of actions per live slot; the frame is rendered only at the chunk's
end, where the policy looks again, and an episode ends at its first success or at `max_steps`.

With one worker (or inside a daemon process such as a Celery prefork child, which may not start
processes) the slots run in the calling process.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.errors import InputError
from sim.parallel import _init_worker, resolve_workers
from sim.perturb import Perturbation


@dataclass(frozen=True)
class StartRequest:
    """Which start a slot begins from: the first valid candidate of (seed, index, stream) for the task."""

    task: str
    perturbation: Perturbation = field(default_factory=Perturbation)
    seed: int = 0
    index: int = 0
    stream: str = "rl"


@dataclass
class ChunkResult:
    frames: np.ndarray  # [N, H, W, 3] uint8: each slot's frame after its chunk (unchanged if it was done)
    proprio: np.ndarray  # [N, 4] float32
    success: np.ndarray  # [N] bool: the episode has succeeded (at any step so far)
    done: np.ndarray  # [N] bool: success, or the step cap reached
    steps: np.ndarray  # [N] int: environment steps taken so far in the episode
    executed: int  # environment steps executed by this call, over all slots


class _Slots:
    """The slots one process owns: environments pooled per task, re-used across resets."""

    def __init__(self, camera: str, image_size: int, max_steps: int) -> None:
        self.camera, self.image_size, self.max_steps = camera, image_size, max_steps
        self.free: dict[str, list[Any]] = {}
        self.envs: dict[int, Any] = {}
        self.renderers: dict[str, Any] = {}
        self.state: dict[int, list] = {}  # slot -> [steps, success, frame, proprio]

    def _env(self, task: str):
        from sim.env import SimEnv

        pool = self.free.setdefault(task, [])
        if pool:
            return pool.pop()
        env = SimEnv(task, camera=self.camera, image_size=self.image_size, max_steps=10**9,
                     renderer=self.renderers.get(task))
        self.renderers.setdefault(task, env.renderer)  # one GL context per task and process
        return env

    def reset(self, requests: dict[int, StartRequest]) -> dict[int, tuple]:
        for env in self.envs.values():
            self.free.setdefault(env.spec.name, []).append(env)
        self.envs, self.state = {}, {}
        out = {}
        for slot, req in requests.items():
            env = self._env(req.task)
            self.envs[slot] = env
            start = env.sample_start(req.perturbation, seed=req.seed, index=req.index, stream=req.stream)
            obs = env.reset(start)
            self.state[slot] = [0, False, obs.frame, obs.proprio]
            out[slot] = (obs.frame, obs.proprio, start.to_json())
        return out

    def step(self, chunks: dict[int, np.ndarray | None]) -> tuple[dict[int, tuple], int]:
        out, executed = {}, 0
        for slot, chunk in chunks.items():
            st = self.state[slot]
            env = self.envs[slot]
            if chunk is not None and not st[1] and st[0] < self.max_steps:
                for a in chunk:
                    success = env.advance(a)
                    st[0] += 1
                    executed += 1
                    if success:
                        st[1] = True
                        break
                    if st[0] >= self.max_steps:
                        break
                obs = env.observe()
                st[2], st[3] = obs.frame, obs.proprio
            out[slot] = (st[2], st[3], st[1], st[1] or st[0] >= self.max_steps, st[0])
        return out, executed

    def close(self) -> None:
        for env in [*self.envs.values(), *(e for pool in self.free.values() for e in pool)]:
            env.close()
        self.envs, self.free = {}, {}


class StartFrames:
    """The real first frame and proprio of start states, rendered in this process with one environment per
    task; no physics step is taken (an imagined world starts from these)."""

    def __init__(self, camera: str, image_size: int) -> None:
        self.camera, self.image_size = camera, image_size
        self.envs: dict[str, Any] = {}

    def __call__(self, requests: list[StartRequest]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        from sim.env import SimEnv

        if not requests:
            raise InputError("reset needs at least one start")
        frames, proprio, starts = [], [], []
        for req in requests:
            if req.task not in self.envs:
                self.envs[req.task] = SimEnv(req.task, camera=self.camera, image_size=self.image_size)
            env = self.envs[req.task]
            start = env.sample_start(req.perturbation, seed=req.seed, index=req.index, stream=req.stream)
            obs = env.reset(start)
            frames.append(obs.frame)
            proprio.append(obs.proprio)
            starts.append(start.to_json())
        return np.stack(frames), np.stack(proprio).astype(np.float32), starts

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs = {}


def _serve(conn, camera: str, image_size: int, max_steps: int) -> None:
    _init_worker()
    slots = _Slots(camera, image_size, max_steps)
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "close":
                break
            try:
                conn.send(("ok", getattr(slots, cmd)(arg)))
            except Exception as exc:  # sent back and raised in the caller
                conn.send(("error", exc))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        slots.close()


class VectorSim:
    """N slots over W processes; `reset` starts every slot, `step` executes one chunk per live slot."""

    def __init__(self, camera: str = "workspace", image_size: int = 64, max_steps: int = 200, workers: int = 0,
                 slots_hint: int = 64) -> None:
        if max_steps < 1:
            raise InputError(f"max steps must be at least 1, got {max_steps}")
        self.camera, self.image_size, self.max_steps = camera, image_size, max_steps
        self.workers = resolve_workers(workers, slots_hint)
        self._local: _Slots | None = None
        self._procs: list[tuple[Any, Any]] = []
        if self.workers == 1:
            self._local = _Slots(camera, image_size, max_steps)
        else:
            ctx = mp.get_context("spawn")
            for _ in range(self.workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(child, camera, image_size, max_steps), daemon=True)
                proc.start()
                child.close()
                self._procs.append((proc, parent))
        self.n = 0
        self.starts: list[dict] = []

    def _call(self, cmd: str, per_slot: dict[int, Any]) -> dict[int, Any]:
        if self._local is not None:
            return {0: getattr(self._local, cmd)(per_slot)}
        parts: list[dict[int, Any]] = [{} for _ in self._procs]
        for slot, value in per_slot.items():
            parts[slot % len(self._procs)][slot] = value
        for (_, conn), part in zip(self._procs, parts, strict=True):
            conn.send((cmd, part))
        out = {}
        for i, (proc, conn) in enumerate(self._procs):
            try:
                status, value = conn.recv()
            except EOFError as exc:
                raise RuntimeError(f"simulator worker {proc.pid} died") from exc
            if status == "error":
                raise value
            out[i] = value
        return out

    def reset(self, requests: list[StartRequest]) -> tuple[np.ndarray, np.ndarray]:
        """Start slot i from requests[i]; returns (frames [N, H, W, 3], proprio [N, 4])."""
        if not requests:
            raise InputError("reset needs at least one start")
        self.n = len(requests)
        merged: dict[int, tuple] = {}
        for part in self._call("reset", dict(enumerate(requests))).values():
            merged.update(part)
        self.starts = [merged[i][2] for i in range(self.n)]
        return (np.stack([merged[i][0] for i in range(self.n)]),
                np.stack([merged[i][1] for i in range(self.n)]).astype(np.float32))

    def step(self, chunks: np.ndarray, live: np.ndarray | None = None) -> ChunkResult:
        """Execute chunks [N, K, 4] in the live slots (default: all); done slots are left as they are."""
        chunks = np.asarray(chunks, dtype=np.float32)
        if chunks.ndim != 3 or chunks.shape[0] != self.n or chunks.shape[2] != 4:
            raise InputError(f"chunks must be [{self.n}, K, 4], got {tuple(chunks.shape)}")
        live = np.ones(self.n, bool) if live is None else np.asarray(live, bool)
        merged: dict[int, tuple] = {}
        executed = 0
        for part, n_exec in self._call("step", {i: chunks[i] if live[i] else None for i in range(self.n)}).values():
            merged.update(part)
            executed += n_exec
        rows = [merged[i] for i in range(self.n)]
        return ChunkResult(
            frames=np.stack([r[0] for r in rows]), proprio=np.stack([r[1] for r in rows]).astype(np.float32),
            success=np.array([r[2] for r in rows], bool), done=np.array([r[3] for r in rows], bool),
            steps=np.array([r[4] for r in rows], int), executed=executed,
        )

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
            self._local = None
        for proc, conn in self._procs:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", None))
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
        self._procs = []

    def __enter__(self) -> VectorSim:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
