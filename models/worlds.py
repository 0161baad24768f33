"""The closed-loop rollout interface: a batch of episodes that a policy drives one action chunk at a time.

A world has two operations, and the RL loop (models/rl.py) talks only to them:
    reset(starts)        → Observations of every slot (frame, proprio)
    step(chunks, live)   → each live slot executes its chunk; the next Observations, per-episode
                           success (at any step so far) and done (success or the step cap)

`WORLDS` maps a name to a builder. "sim" is the real MetaWorld simulator (sim/vector.py: persistent
processes over the cores, rendering only at chunk ends). "wm" is imagination: a frozen world model
rolls every episode forward from its real start frame, the policy sees decoded imagined frames and the
world model's predicted proprio, and a learned success classifier (models/reward_model.py) decides
when an episode has succeeded. `real` says whether a world's steps are real environment steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from models.world_model.model import to_uint8
from sim.errors import InputError
from sim.vector import ChunkResult, StartFrames, StartRequest, VectorSim


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
    real: bool  # its steps are real environment steps
    starts: list[dict]  # the start state of every slot after reset (JSON), for logs and videos

    def reset(self, starts: list[StartRequest]) -> Observations: ...

    def step(self, chunks: np.ndarray, live: np.ndarray | None = None) -> StepResult: ...

    def close(self) -> None: ...


class SimWorld:
    """The real simulator behind the rollout interface."""

    name = "sim"
    real = True

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


class WMWorld:
    """Imagination behind the rollout interface: all slots advance in one batched world-model call per chunk.

    Every chunk re-anchors on the frame it starts from (the world model's training distribution), predicts
    the latents and proprio after each of its actions, and decodes only the chunk's last frame (what the
    policy looks at). The success classifier scores every step's latent; an episode ends at the first
    detected success (threshold, confirmation and minimum-step guard of the reward model) or at the cap.
    """

    name = "wm"
    real = False

    def __init__(self, wm: str, reward_model: str, camera: str = "workspace", image_size: int = 64,
                 max_steps: int = 200, device: str = "cpu", **_unused) -> None:
        from models.reward_model import load_reward_model
        from models.world_model import load_world_model

        if not wm or not reward_model:
            raise InputError("the world-model world needs a world model (--wm) and a reward model (--reward-model)")
        self.wm = load_world_model(wm, device=device)
        if (self.wm.camera, self.wm.image_size) != (camera, image_size):
            raise InputError(f"the policy sees {image_size}px '{camera}' frames, the world model {wm} "
                             f"{self.wm.image_size}px '{self.wm.camera}'")
        self.rm = load_reward_model(reward_model, self.wm)
        self.detector = self.rm.detector()
        self.max_steps = max_steps
        self.start_frames = StartFrames(camera, image_size)
        self.starts: list[dict] = []
        self.probs: list[np.ndarray] = []  # per chunk call: [N, K] success probabilities (NaN for idle slots)

    def reset(self, starts: list[StartRequest]) -> Observations:
        frames, proprio, self.starts = self.start_frames(starts)
        n = len(starts)
        self.task = self.rm.task_index([r.task for r in starts])
        self.obs = Observations(frames.copy(), proprio.copy())
        self.anchor = torch.from_numpy(frames).permute(0, 3, 1, 2).float().to(self.wm.device) / 255.0
        self.steps, self.run = np.zeros(n, int), np.zeros(n, int)
        self.success, self.done = np.zeros(n, bool), np.zeros(n, bool)
        self.probs = []
        return Observations(frames, proprio)

    def step(self, chunks: np.ndarray, live: np.ndarray | None = None) -> StepResult:
        n = len(self.steps)
        chunks = np.asarray(chunks, np.float32)
        if chunks.ndim != 3 or chunks.shape[0] != n or chunks.shape[2] != self.wm.cfg.action_dim:
            raise InputError(f"chunks must be [{n}, K, {self.wm.cfg.action_dim}], got {tuple(chunks.shape)}")
        live = ~self.done if live is None else np.asarray(live, bool) & ~self.done
        rows = np.flatnonzero(live)
        executed = 0
        probs = np.full(chunks.shape[:2], np.nan)
        if len(rows):
            sel = torch.from_numpy(rows)
            z, proprio, frame = self.wm.imagine_chunk(self.anchor[sel],
                                                      torch.from_numpy(chunks[rows]).to(self.wm.device))
            p = self.rm.probs(z.cpu(), proprio.cpu(), self.task[sel]).numpy()
            probs[rows] = p
            hit, self.run[rows] = self.detector.update(self.run[rows], self.steps[rows], p)
            left = self.max_steps - self.steps[rows]
            taken = np.minimum(np.where(hit >= 0, hit + 1, chunks.shape[1]), left)
            self.success[rows] |= (hit >= 0) & (hit + 1 <= left)
            self.steps[rows] += taken
            executed = int(taken.sum())
            self.done[rows] = self.success[rows] | (self.steps[rows] >= self.max_steps)
            self.anchor[sel] = frame
            self.obs.frames[rows] = to_uint8(frame)
            self.obs.proprio[rows] = proprio[:, -1].cpu().numpy()
        self.probs.append(probs)
        return StepResult(Observations(self.obs.frames.copy(), self.obs.proprio.copy()), self.success.copy(),
                          self.done.copy(), self.steps.copy(), executed)

    def close(self) -> None:
        self.start_frames.close()


WORLDS: dict[str, Callable[..., World]] = {"sim": SimWorld, "wm": WMWorld}


def make_world(name: str, **kwargs) -> World:
    if name not in WORLDS:
        raise InputError(f"unknown world {name!r}: choose from {', '.join(WORLDS)}")
    return WORLDS[name](**kwargs)
