"""A toy world for the closed-loop RL tests: success is known in closed form, no simulator needed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from models.worlds import Observations, StepResult
from sim.tasks import get_task
from sim.vector import StartRequest

TASK = "reach-v3"


class LineWorld:
    """An episode succeeds when a chunk's mean first action exceeds `threshold`; it ends after `chunks` chunks.

    `always` maps a start index to a fixed outcome (True/False), whatever the actions.
    `lengths` maps a start index to the number of chunks its episodes last (success or not)."""

    name = "toy"
    real = True

    def __init__(self, threshold: float = 0.0, chunks: int = 3, always: dict[int, bool] | None = None,
                 lengths: dict[int, int] | None = None, delay: float = 0.0, image_size: int = 64, **_: object) -> None:
        self.threshold, self.chunks, self.always, self.lengths = threshold, chunks, always or {}, lengths or {}
        self.delay, self.image_size = delay, image_size
        self.starts: list[dict] = []

    def reset(self, starts: list[StartRequest]) -> Observations:
        self.req = starts
        n = len(starts)
        self.count = np.zeros(n, int)
        self.success = np.zeros(n, bool)
        self.steps = np.zeros(n, int)
        self.starts = [{"task": r.task, "index": r.index} for r in starts]
        return self._obs()

    def _obs(self) -> Observations:
        n = len(self.req)
        return Observations(np.zeros((n, self.image_size, self.image_size, 3), np.uint8), np.zeros((n, 4), np.float32))

    def step(self, chunks: np.ndarray, live: np.ndarray | None = None) -> StepResult:
        time.sleep(self.delay)
        live = np.ones(len(self.req), bool) if live is None else live
        executed = 0
        for i in np.flatnonzero(live & ~self.done()):
            self.count[i] += 1
            self.steps[i] += chunks.shape[1]
            executed += chunks.shape[1]
            index = self.req[i].index
            if index in self.lengths:
                if self.count[i] >= self.lengths[index]:
                    self.success[i] = self.always.get(index, False)
            elif self.always.get(index, float(chunks[i, :, 0].mean()) > self.threshold):
                self.success[i] = True
        return StepResult(self._obs(), self.success.copy(), self.done(), self.steps.copy(), executed)

    def done(self) -> np.ndarray:
        cap = np.array([self.lengths.get(r.index, self.chunks) for r in self.req])
        return self.success | (self.count >= cap)

    def close(self) -> None:
        pass


def toy_policy(folder: Path, seed: int = 0) -> Path:
    """A smoke-sized, untrained policy checkpoint that knows the toy task's instruction (no MiniLM load)."""
    from models.policy.config import PRESETS
    from models.policy.model import VLAPolicy
    from models.policy.text import InstructionEncoder
    from models.policy_io import save_policy

    torch.manual_seed(seed)
    text = InstructionEncoder.from_state([get_task(TASK).instruction], torch.nn.functional.normalize(
        torch.randn(1, 384), dim=1))
    policy = VLAPolicy(PRESETS["smoke"].policy, text)
    save_policy(policy, folder, extra={"datasets": []})
    return folder


def ode_mean_x(folder: Path) -> float:
    """The deterministic chunk's mean first action on the toy world's (blank) observation."""
    from models.policy_io import load_policy

    policy = load_policy(folder)
    batch = {"context": torch.zeros(1, 1, 3, 64, 64, dtype=torch.uint8), "proprio": torch.zeros(1, 4),
             "instruction": [get_task(TASK).instruction]}
    return float(policy.act(batch)[0, :, 0].mean())
