"""Training windows from an episode file as torch tensors.

A window at step t holds the context frame(s) up to t, the proprio at t, the instruction, the
action chunk a[t : t+H] and the frames that followed it, o[t+1 : t+H+1]. By default the file is
read lazily, one window at a time (one HDF5 handle per worker process); `in_memory=True` reads
the episodes once for fast repeated epochs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from sim.episodes import DatasetError, EpisodeFile


def split_episodes(path: str | os.PathLike, heldout_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Per-task split of episode indices into (train, held-out); at least one held out per task."""
    ef = EpisodeFile(path)
    try:
        by_task: dict[str, list[int]] = {}
        for i, info in enumerate(ef.infos()):
            by_task.setdefault(info.task, []).append(i)
    finally:
        ef.close()
    rng = np.random.default_rng(seed)
    train, held = [], []
    for idx in by_task.values():
        idx = list(rng.permutation(idx))
        k = max(1, round(len(idx) * heldout_fraction)) if heldout_fraction > 0 and len(idx) > 1 else 0
        held += idx[:k]
        train += idx[k:]
    return sorted(int(i) for i in train), sorted(int(i) for i in held)


class WindowDataset(Dataset):
    def __init__(
        self,
        path: str | os.PathLike,
        context: int = 1,
        horizon: int = 8,
        pad: bool = False,
        episodes: Sequence[int] | None = None,
        in_memory: bool = False,
        with_frames: bool = True,
        stride: int = 1,
    ) -> None:
        if context < 1 or horizon < 1 or stride < 1:
            raise DatasetError("context, horizon and stride must be at least 1")
        self.file = EpisodeFile(path)
        self.context, self.horizon, self.pad, self.with_frames = context, horizon, pad, with_frames
        self.episode_ids = list(range(len(self.file))) if episodes is None else [int(e) for e in episodes]
        if not self.episode_ids:
            raise DatasetError(f"{path}: no episodes selected")
        self.infos = [self.file.info(e) for e in self.episode_ids]
        self.index: list[tuple[int, int]] = []
        for j, info in enumerate(self.infos):
            # without padding the whole chunk and its H following frames must exist
            last = info.length - 1 if pad else info.length - 1 - horizon
            self.index += [(j, t) for t in range(0, last + 1, stride)]
        if not self.index:
            raise DatasetError(f"{path}: episodes are shorter than the horizon ({horizon}) so there are no windows")
        self._cache: list[dict[str, np.ndarray]] | None = None
        if in_memory:
            self._cache = [self._read_episode(e) for e in self.episode_ids]
            self.file.close()

    def _read_episode(self, e: int) -> dict[str, np.ndarray]:
        ep = self.file.load(e, frames=self.with_frames)
        return {"frames": ep.frames, "proprio": ep.proprio, "actions": ep.actions,
                "expert_actions": ep.expert_actions}

    def __len__(self) -> int:
        return len(self.index)

    @property
    def tasks(self) -> list[str]:
        return sorted({i.task for i in self.infos})

    def _slice(self, j: int, key: str, idx: np.ndarray) -> np.ndarray:
        if self._cache is not None:
            return self._cache[j][key][idx]
        e = self.episode_ids[j]
        g = self.file.h5["data"][self.file.keys[e]]
        if key == "frames":
            lo, hi = int(idx.min()), int(idx.max()) + 1
            return g["obs"][self.file.image_key][lo:hi][idx - lo]
        if key == "proprio":
            return self.file.proprio(g)[idx]
        ds = g[key] if key in g else g["actions"]
        return ds[()][idx]

    def __getitem__(self, i: int) -> dict:
        j, t = self.index[i]
        info = self.infos[j]
        n, h = info.length, self.horizon
        steps = np.arange(t, t + h)
        mask = steps < n
        steps_c = np.minimum(steps, n - 1)
        future = np.minimum(steps + 1, n - 1)
        ctx = np.maximum(np.arange(t - self.context + 1, t + 1), 0)
        actions = self._slice(j, "actions", steps_c).astype(np.float32)
        expert = self._slice(j, "expert_actions", steps_c).astype(np.float32)
        if not mask.all():  # past the end the arm holds still; the mask says which steps are real
            actions[~mask] = 0.0
            expert[~mask] = 0.0
        out = {
            "proprio": torch.from_numpy(self._slice(j, "proprio", np.array([t]))[0].astype(np.float32)),
            "future_proprio": torch.from_numpy(self._slice(j, "proprio", future).astype(np.float32)),
            "actions": torch.from_numpy(actions),
            "expert_actions": torch.from_numpy(expert),
            "mask": torch.from_numpy(mask),
            "instruction": info.instruction,
            "task": info.task,
            "episode": self.episode_ids[j],
            "t": t,
        }
        if self.with_frames:
            frames = self._slice(j, "frames", np.concatenate([ctx, future]))
            frames = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
            out["context"] = frames[: self.context]
            out["future"] = frames[self.context :]
        return out
