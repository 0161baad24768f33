"""The closed-loop rollout interface: a batch of episodes that a policy drives one action chunk at a time.

A world has two operations, and the RL loop (models/rl.py) talks only to them:
    reset(starts)        → Observations of every slot (frame, proprio)
    step(chunks, live)   → each live slot executes its chunk; the next Observations, per-episode
                           success (at any step so far) and done (success or the step cap)

`WORLDS` maps a name to a builder. "sim" is the real MetaWorld simulator (sim/vector.py: persistent
processes over the cores, rendering only at chunk ends). A world-model implementation plugs in under
another name with the same two operations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from sim.errors import InputError
from sim.vector import ChunkResult, StartRequest, VectorSim


@dataclass
class Observations:
    frames: np.ndarray  # [N, H, W, 3] uint8
    proprio: np.ndarray  # [N, 4] float32

    def policy_batch(self, rows: np.ndarray, instructions: list[str]) -> dict:
        """The policy's input dict for the given slot rows (one context frame each)."""
        frames = torch.from_numpy(np.ascontiguousarray(self.frames[rows])).permute(0, 3, 1, 2)
        return {"context": frames[:, None], "proprio": torch.from_numpy(self.proprio[rows]),
                "instruction": [instructions[i] for i in rows]}


@dataclass
class StepResult:
    obs: Observations
    success: np.ndarray  # [N] bool
    done: np.ndarray  # [N] bool
    steps: np.ndarray  # [N] int, environment steps so far
    executed: int  # environment steps executed by this call


class World(Protocol):
    name: str
    starts: list[dict]  # the start state of every slot after reset (JSON), for logs and videos

    def reset(self, starts: list[StartRequest]) -> Observations: ...

    def step(self, chunks: np.ndarray, live: np.ndarray | None = None) -> StepResult: ...

    def close(self) -> None: ...


class SimWorld:
    """The real simulator behind the rollout interface."""

    name = "sim"

    def __init__(self, camera: str = "workspace", image_size: int = 64, max_steps: int = 200, workers: int = 0,
                 slots_hint: int = 64) -> None:
        self.vec = VectorSim(camera=camera, image_size=image_size, max_steps=max_steps, workers=workers,
                             slots_hint=slots_hint)
        self.starts: list[dict] = []

    def reset(self, starts: list[StartRequest]) -> Observations:
        frames, proprio = self.vec.reset(starts)
        self.starts = self.vec.starts
        return Observations(frames, proprio)

    def step(self, chunks: np.ndarray, live: np.ndarray | None = None) -> StepResult:
        r: ChunkResult = self.vec.step(chunks, live)
        return StepResult(Observations(r.frames, r.proprio), r.success, r.done, r.steps, r.executed)

    def close(self) -> None:
        self.vec.close()


WORLDS: dict[str, Callable[..., World]] = {"sim": SimWorld}


def make_world(name: str, **kwargs) -> World:
    if name not in WORLDS:
        raise InputError(f"unknown world {name!r}: choose from {', '.join(WORLDS)}")
    return WORLDS[name](**kwargs)
