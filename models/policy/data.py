"""Training windows held in memory as a few big tensors, so a batch is one gather (no per-item Python).

A window at step t of an episode gives the same things as sim.loader.WindowDataset: the context
frame(s) up to t, the proprio at t, the instruction, and the chunk of labels a[t : t+8]. Steps past
the end of an episode are masked out of the loss (episodes stop at success, so those steps never run).
It also carries `state`: the object and goal positions at t from the stored MetaWorld observation
(entries 4:7 and 36:39), the target of the optional auxiliary loss; NaN where a file has no env_obs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from sim.episodes import DatasetError, EpisodeFile
from sim.loader import split_episodes


@dataclass
class DatasetInfo:
    paths: list[str]
    camera: str
    image_size: int
    action_dim: int
    proprio_dim: int
    tasks: list[str]
    instructions: list[str]


def parse_datasets(dataset: str | os.PathLike | list) -> list[str]:
    """'a.h5' or 'a.h5,b.h5' (or a list) → absolute paths that exist."""
    items = dataset if isinstance(dataset, list | tuple) else str(dataset).split(",")
    paths = [os.path.abspath(os.path.expanduser(str(p).strip())) for p in items if str(p).strip()]
    if not paths:
        raise DatasetError("no dataset given")
    for p in paths:
        if not os.path.exists(p):
            raise DatasetError(f"dataset {p} does not exist")
    return paths


def inspect_datasets(paths: list[str]) -> DatasetInfo:
    """Check that the files agree on camera, image size and dimensions."""
    cams, sizes, adims, pdims, tasks, instr = set(), set(), set(), set(), [], []
    for p in paths:
        ef = EpisodeFile(p)
        try:
            cams.add(ef.camera)
            sizes.add(ef.image_size)
            adims.add(ef.action_dim)
            pdims.add(int(ef.proprio(ef.h5["data"][ef.keys[0]]).shape[-1]))
            for info in ef.infos():
                if info.task not in tasks:
                    tasks.append(info.task)
                if info.instruction not in instr:
                    instr.append(info.instruction)
        finally:
            ef.close()
    for what, vals in (("cameras", cams), ("image sizes", sizes), ("action dims", adims), ("proprio dims", pdims)):
        if len(vals) > 1:
            raise DatasetError(f"datasets differ in {what}: {sorted(vals)}")
    return DatasetInfo(paths, cams.pop(), sizes.pop(), adims.pop(), pdims.pop(), tasks, instr)


def object_goal(env_obs: np.ndarray | None, n: int) -> np.ndarray:
    """[n, 6] object and goal positions from MetaWorld's 39-D observation, or NaN without one."""
    if env_obs is None or env_obs.ndim != 2 or env_obs.shape[1] < 39:
        return np.full((n, 6), np.nan, np.float32)
    return np.concatenate([env_obs[:, 4:7], env_obs[:, 36:39]], 1).astype(np.float32)


class WindowTensors:
    """All frames, proprio and labels of the selected episodes of one or more files, plus a window index."""

    def __init__(self, parts: list[tuple[str, list[int]]], context: int, chunk: int, label: str = "expert") -> None:
        frames, proprio, labels, states, instructions, tasks = [], [], [], [], [], []
        frame_idx, chunk_idx, masks, instr_idx, task_idx = [], [], [], [], []
        offset = 0
        for path, episodes in parts:
            ef = EpisodeFile(path)
            try:
                for e in episodes:
                    ep = ef.load(e)
                    n = len(ep)
                    if n == 0:
                        continue
                    frames.append(torch.from_numpy(np.ascontiguousarray(ep.frames)).permute(0, 3, 1, 2))
                    proprio.append(torch.from_numpy(ep.proprio.astype(np.float32)))
                    lab = ep.expert_actions if label == "expert" else ep.actions
                    labels.append(torch.from_numpy(lab.astype(np.float32)))
                    states.append(torch.from_numpy(object_goal(ep.env_obs, n)))
                    if ep.instruction not in instructions:
                        instructions.append(ep.instruction)
                    if ep.task not in tasks:
                        tasks.append(ep.task)
                    t = np.arange(n)
                    ctx = np.maximum(t[:, None] + np.arange(-context + 1, 1)[None], 0)
                    steps = t[:, None] + np.arange(chunk)[None]
                    frame_idx.append(offset + ctx)
                    chunk_idx.append(offset + np.minimum(steps, n - 1))
                    masks.append(steps < n)
                    instr_idx.append(np.full(n, instructions.index(ep.instruction)))
                    task_idx.append(np.full(n, tasks.index(ep.task)))
                    offset += n
            finally:
                ef.close()
        if not frames:
            raise DatasetError("no training windows: the selected episodes are empty")
        self.frames = torch.cat(frames)  # uint8 [T, 3, H, W]
        self.proprio = torch.cat(proprio)  # [T, P]
        self.labels = torch.cat(labels)  # [T, A]
        self.states = torch.cat(states)  # [T, 6] object xyz, goal xyz (NaN: unknown)
        self.frame_idx = torch.from_numpy(np.concatenate(frame_idx))  # [W, C]
        self.chunk_idx = torch.from_numpy(np.concatenate(chunk_idx))  # [W, chunk]
        self.mask = torch.from_numpy(np.concatenate(masks))  # [W, chunk]
        self.instr_idx = np.concatenate(instr_idx)
        self.instructions = instructions
        self.task_idx = torch.from_numpy(np.concatenate(task_idx))
        self.tasks = tasks
        self.phrasings: list[tuple[str, ...]] | None = None  # per task: set by use_phrasings

    def use_phrasings(self, phrasings: dict[str, tuple[str, ...]]) -> None:
        """From now on `batch(idx, generator)` gives each window one of its task's phrasings, drawn anew
        every time (tasks without phrasings keep their episode's instruction)."""
        self.phrasings = [tuple(phrasings.get(t, ())) for t in self.tasks]

    def __len__(self) -> int:
        return int(self.frame_idx.shape[0])

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """A batch dict in the policy's format, with `actions` (labels, raw units) and `mask`. With phrasings
        in use and a generator, each window's instruction is drawn from its task's phrasings."""
        instructions = [self.instructions[i] for i in self.instr_idx[idx.numpy()]]
        if self.phrasings is not None and generator is not None:
            draws = torch.rand(len(idx), generator=generator).tolist()
            for j, t in enumerate(self.task_idx[idx].tolist()):
                options = self.phrasings[t]
                if options:
                    instructions[j] = options[min(int(draws[j] * len(options)), len(options) - 1)]
        return {
            "context": self.frames[self.frame_idx[idx]],
            "proprio": self.proprio[self.frame_idx[idx, -1]],
            "instruction": instructions,
            "actions": self.labels[self.chunk_idx[idx]],
            "mask": self.mask[idx],
            "state": self.states[self.frame_idx[idx, -1]],
        }


def load_split(
    paths: list[str], heldout_fraction: float, seed: int, context: int, chunk: int, label: str
) -> tuple[WindowTensors, WindowTensors | None]:
    """Per-task episode split of every file; returns (train, held-out) windows."""
    train_parts, held_parts = [], []
    for p in paths:
        tr, held = split_episodes(p, heldout_fraction, seed)
        train_parts.append((p, tr))
        if held:
            held_parts.append((p, held))
    train = WindowTensors(train_parts, context, chunk, label)
    held = WindowTensors(held_parts, context, chunk, "expert") if held_parts else None
    return train, held
