"""Episode files -> one in-memory frame store with vectorised window sampling.

Training reads every frame once (uint8, ~12 KB per 64x64 frame) and then gathers whole batches of
windows with numpy indexing, which is far faster than one-window-at-a-time loading. Everything is
validated before training starts: a bad file fails with one line naming the file, the episode and
the problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from sim.episodes import DatasetError, EpisodeFile


class WMDataError(DatasetError):
    pass


def dataset_paths(dataset: str | os.PathLike | list) -> list[str]:
    """One path, a comma-separated list of paths, or a list."""
    if isinstance(dataset, list | tuple):
        items = [str(p) for p in dataset]
    else:
        items = [p.strip() for p in str(dataset).split(",") if p.strip()]
    if not items:
        raise WMDataError("no dataset given")
    return items


@dataclass
class FrameStore:
    frames: np.ndarray  # (N, H, W, 3) uint8, all episodes back to back
    actions: np.ndarray  # (N, A) float32: action taken at each frame
    proprio: np.ndarray  # (N, P) float32
    ep_start: np.ndarray  # (E,) index of each episode's first frame
    ep_len: np.ndarray  # (E,)
    ep_task: list[str]
    ep_file: list[tuple[str, int]]  # (path, episode index in that file)
    image_size: int
    camera: str

    @property
    def episodes(self) -> int:
        return len(self.ep_start)

    def window_starts(self, episodes: np.ndarray, horizon: int) -> np.ndarray:
        """Global frame indices t with frames t+1 .. t+horizon inside the same episode."""
        out = [self.ep_start[e] + np.arange(max(0, self.ep_len[e] - horizon)) for e in episodes]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def episode_of(self, t: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.ep_start, t, side="right") - 1

    def gather(self, t: np.ndarray, context: int, horizon: int) -> dict[str, torch.Tensor]:
        """Windows starting at global indices t: context frames (clamped to the episode start) + future."""
        e = self.episode_of(t)
        lo = self.ep_start[e]
        ctx_idx = np.maximum(t[:, None] + np.arange(-context + 1, 1)[None], lo[:, None])
        fut_idx = t[:, None] + np.arange(1, horizon + 1)[None]
        act_idx = t[:, None] + np.arange(horizon)[None]
        return {
            "context": torch.from_numpy(self.frames[ctx_idx]).permute(0, 1, 4, 2, 3),
            "future": torch.from_numpy(self.frames[fut_idx]).permute(0, 1, 4, 2, 3),
            "actions": torch.from_numpy(self.actions[act_idx]),
            "future_proprio": torch.from_numpy(self.proprio[fut_idx]),
            "ctx_index": torch.from_numpy(ctx_idx),
            "fut_index": torch.from_numpy(fut_idx),
        }


def load_store(dataset, image_size: int | None = None, action_dim: int | None = 4, progress=None,
               proprio_dim: int | None = 4) -> FrameStore:
    """Read and validate every episode of one or more files (same camera, image size and shapes).

    `action_dim` / `proprio_dim`: the sizes the model needs; None takes them from the first file."""
    paths = dataset_paths(dataset)
    frames, actions, proprio, starts, lens, tasks, where = [], [], [], [], [], [], []
    size = cam = None
    total = 0
    for path in paths:
        ef = EpisodeFile(path)
        try:
            if ef.image_size != ef.h5["data"][ef.keys[0]]["obs"][ef.image_key].shape[2]:
                raise WMDataError(f"{path}: frames are not square")
            if size is None:
                size, cam = ef.image_size, str(ef.camera)
            elif ef.image_size != size:
                raise WMDataError(f"{path}: images are {ef.image_size}px but {paths[0]} has {size}px")
            elif str(ef.camera) != cam:
                raise WMDataError(f"{path}: camera '{ef.camera}' but {paths[0]} uses '{cam}'")
            if image_size is not None and ef.image_size != image_size:
                raise WMDataError(f"{path}: images are {ef.image_size}px, the world model needs {image_size}px")
            if ef.image_size % 8:
                raise WMDataError(f"{path}: image size {ef.image_size} is not divisible by 8")
            if action_dim is None:
                action_dim = ef.action_dim
            if ef.action_dim != action_dim:
                raise WMDataError(f"{path}: actions are {ef.action_dim}-D, the world model needs {action_dim}-D")
            for i, key in enumerate(ef.keys):
                g = ef.h5["data"][key]
                for need in ("actions", "obs"):
                    if need not in g:
                        raise WMDataError(f"{path}: {key} has no '{need}'")
                if ef.image_key not in g["obs"]:
                    raise WMDataError(f"{path}: {key} has no obs/{ef.image_key}")
                try:
                    ep = ef.load(i)
                except (OSError, KeyError) as exc:
                    raise WMDataError(f"{path}: {key} is unreadable ({str(exc).splitlines()[0]})") from exc
                n = len(ep.actions)
                if ep.frames.shape != (n, size, size, 3) or ep.frames.dtype != np.uint8:
                    raise WMDataError(f"{path}: {key} frames have shape {ep.frames.shape} {ep.frames.dtype}, "
                                      f"expected ({n}, {size}, {size}, 3) uint8")
                if proprio_dim is None and ep.proprio.ndim == 2 and ep.proprio.shape[1] > 0:
                    proprio_dim = int(ep.proprio.shape[1])
                if ep.proprio.shape != (n, proprio_dim):
                    got = f"{ep.proprio.shape[1]}-D" if ep.proprio.ndim == 2 and ep.proprio.shape[1] else "no"
                    need = f"{proprio_dim}-D proprio" if proprio_dim else "proprio (the robot's state)"
                    raise WMDataError(f"{path}: {key} has {got} proprio per step, the world model needs {need}")
                for name, arr in (("actions", ep.actions), ("proprio", ep.proprio)):
                    if not np.all(np.isfinite(arr)):
                        raise WMDataError(f"{path}: {key}/{name} contains NaN or inf")
                if n < 2:
                    continue
                frames.append(ep.frames)
                actions.append(ep.actions.astype(np.float32))
                proprio.append(ep.proprio.astype(np.float32))
                starts.append(total)
                lens.append(n)
                tasks.append(ep.task)
                where.append((path, i))
                total += n
                if progress:
                    progress(len(starts), key)
        finally:
            ef.close()
    if not starts:
        raise WMDataError(f"{', '.join(paths)}: no episode with at least 2 steps")
    return FrameStore(
        frames=np.concatenate(frames), actions=np.concatenate(actions), proprio=np.concatenate(proprio),
        ep_start=np.asarray(starts, np.int64), ep_len=np.asarray(lens, np.int64), ep_task=tasks, ep_file=where,
        image_size=int(size), camera=str(cam),
    )


def split_by_task(store: FrameStore, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-task split of episodes into (train, held-out); at least one held out per task when asked for."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for task in sorted(set(store.ep_task)):
        idx = rng.permutation([i for i, t in enumerate(store.ep_task) if t == task])
        k = max(1, round(len(idx) * heldout_fraction)) if heldout_fraction > 0 and len(idx) > 1 else 0
        held += list(idx[:k])
        train += list(idx[k:])
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(held, np.int64))
