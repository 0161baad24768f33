"""Episode storage: one HDF5 file in the robomimic / LIBERO layout.

    data/                         attrs: format_version, env, camera, image_size, tasks, total, ...
      demo_K/                     attrs: num_samples, task, instruction, success, start (json), ...
        obs/<camera>_rgb          (T, H, W, 3) uint8, upright
        obs/proprio               (T, 4) float32   hand xyz + gripper opening
        obs/env_obs               (T, 39) float32  MetaWorld observation
        actions                   (T, 4) float32   executed (possibly noisy) actions
        expert_actions            (T, 4) float32   the expert's clean action at the same state
        rewards, dones, success   (T,)
        states                    (T, S) float64   exact simulator state before each action

Writes go to a temporary file that is renamed on success. The reader also opens LIBERO and
robomimic files (image key `*_rgb` / `*_image`, language in `problem_info`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from sim.errors import InputError
from sim.perturb import StartState

FORMAT_VERSION = "vlarft-episodes/1"


class DatasetError(InputError):
    """A dataset file is missing, unreadable, truncated, foreign or inconsistent."""


@dataclass
class Episode:
    task: str
    instruction: str
    frames: np.ndarray
    proprio: np.ndarray
    actions: np.ndarray
    expert_actions: np.ndarray
    rewards: np.ndarray
    successes: np.ndarray
    states: np.ndarray | None = None
    env_obs: np.ndarray | None = None
    start: StartState | None = None
    action_noise: float = 0.0
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def success(self) -> bool:
        return bool(np.any(self.successes))


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early (before minutes of work) when the output cannot be written."""
    p = Path(path).expanduser()
    if p.exists() and p.is_dir():
        raise DatasetError(f"output path {p} is a directory; give a file name such as {p}/episodes.h5")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise DatasetError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DatasetError(f"output folder {parent} is not writable")
    return p


class EpisodeWriter:
    """Append episodes to a temporary file; `close()` renames it into place, `abort()` removes it."""

    def __init__(self, path: str | os.PathLike, camera: str, image_size: int, meta: dict | None = None) -> None:
        self.path = check_writable(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.camera = camera
        self.image_size = image_size
        self._f = h5py.File(self.tmp, "w")
        self._data = self._f.create_group("data")
        self._data.attrs["format_version"] = FORMAT_VERSION
        self._data.attrs["env"] = "metaworld-v3"
        self._data.attrs["camera"] = camera
        self._data.attrs["image_size"] = image_size
        self._data.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._data.attrs["env_args"] = json.dumps(
            {"env_name": "metaworld-v3", "type": "metaworld", "env_kwargs": {"camera": camera, "size": image_size}}
        )
        for k, v in (meta or {}).items():
            self._data.attrs[k] = v if isinstance(v, str | int | float | bool) else json.dumps(v)
        self.count = 0
        self.total = 0
        self.tasks: list[str] = []

    def add(self, ep: Episode) -> str:
        name = f"demo_{self.count}"
        g = self._data.create_group(name)
        n = len(ep.actions)
        frames = np.asarray(ep.frames, dtype=np.uint8)
        if frames.shape[0] != n or frames.shape[1:] != (self.image_size, self.image_size, 3):
            raise DatasetError(f"{name}: frames {frames.shape} do not match {n} steps at {self.image_size}px")
        obs = g.create_group("obs")
        obs.create_dataset(
            f"{self.camera}_rgb", data=frames, chunks=(1, *frames.shape[1:]), compression="gzip",
            compression_opts=1,
        )
        obs.create_dataset("proprio", data=np.asarray(ep.proprio, np.float32))
        if ep.env_obs is not None:
            obs.create_dataset("env_obs", data=np.asarray(ep.env_obs, np.float32))
        g.create_dataset("actions", data=np.asarray(ep.actions, np.float32))
        g.create_dataset("expert_actions", data=np.asarray(ep.expert_actions, np.float32))
        g.create_dataset("rewards", data=np.asarray(ep.rewards, np.float32))
        g.create_dataset("success", data=np.asarray(ep.successes, np.uint8))
        dones = np.zeros(n, np.uint8)
        dones[-1] = 1
        g.create_dataset("dones", data=dones)
        if ep.states is not None:
            g.create_dataset("states", data=np.asarray(ep.states, np.float64), compression="gzip", compression_opts=1)
        g.attrs["num_samples"] = n
        g.attrs["task"] = ep.task
        g.attrs["instruction"] = ep.instruction
        g.attrs["success"] = bool(ep.success)
        g.attrs["action_noise"] = float(ep.action_noise)
        if ep.start is not None:
            g.attrs["start"] = json.dumps(ep.start.to_json())
            g.attrs["seed"] = ep.start.seed
            g.attrs["perturbation"] = ep.start.perturbation
        for k, v in ep.attrs.items():
            g.attrs[k] = v if isinstance(v, str | int | float | bool) else json.dumps(v)
        self.count += 1
        self.total += n
        if ep.task not in self.tasks:
            self.tasks.append(ep.task)
        return name

    def close(self) -> Path:
        self._data.attrs["total"] = self.total
        self._data.attrs["num_demos"] = self.count
        self._data.attrs["tasks"] = json.dumps(self.tasks)
        self._f.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._f.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class EpisodeInfo:
    key: str
    task: str
    instruction: str
    length: int
    success: bool
    start: StartState | None
    action_noise: float


def _decode(v):
    return v.decode() if isinstance(v, bytes) else v


class EpisodeFile:
    """Read-only access to an episode file; opens lazily and reads one episode at a time."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise DatasetError(f"dataset {self.path} does not exist")
        if self.path.is_dir():
            raise DatasetError(f"dataset {self.path} is a directory, not an HDF5 file")
        self._f: h5py.File | None = None
        self._pid = -1
        try:
            f = self.h5
        except OSError as exc:
            raise DatasetError(f"{self.path} is not a readable HDF5 file ({_first_line(exc)})") from exc
        if "data" not in f or not isinstance(f["data"], h5py.Group):
            raise DatasetError(f"{self.path} has no 'data' group: not a robomimic/LIBERO episode file")
        self.keys = sorted((k for k in f["data"] if k.startswith("demo_")), key=lambda k: int(k.split("_")[1]))
        if not self.keys:
            raise DatasetError(f"{self.path} contains no episodes (no data/demo_K groups)")
        attrs = f["data"].attrs
        self.attrs = {k: _decode(attrs[k]) for k in attrs}
        first = f["data"][self.keys[0]]
        if "actions" not in first or "obs" not in first:
            raise DatasetError(f"{self.path}: {self.keys[0]} lacks 'actions' or 'obs'")
        self.image_key = self._find_image_key(first["obs"])
        shape = first["obs"][self.image_key].shape
        if len(shape) != 4 or shape[-1] != 3:
            raise DatasetError(f"{self.path}: image key {self.image_key} has shape {shape}, expected (T,H,W,3)")
        self.image_size = int(shape[1])
        self.action_dim = int(first["actions"].shape[-1])
        self.camera = self.attrs.get("camera") or self.image_key.rsplit("_", 1)[0]
        self.language = self._problem_language()

    # -- file handle (one per process: h5py handles do not survive fork) ---------------------
    @property
    def h5(self) -> h5py.File:
        if self._f is None or self._pid != os.getpid():
            self._f = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._f

    def close(self) -> None:
        if self._f is not None and self._pid == os.getpid():
            self._f.close()
        self._f = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_f"] = None
        return d

    def __len__(self) -> int:
        return len(self.keys)

    @staticmethod
    def _find_image_key(obs: h5py.Group) -> str:
        keys = sorted(obs.keys())
        for suffix in ("_rgb", "_image"):
            for k in keys:
                if k.endswith(suffix) and "eye_in_hand" not in k:
                    return k
        for k in keys:
            if k.endswith(("_rgb", "_image")):
                return k
        raise DatasetError(f"no camera images in obs (keys: {', '.join(keys)})")

    def _problem_language(self) -> str | None:
        info = self.attrs.get("problem_info")
        if info:
            try:
                return json.loads(info).get("language_instruction")
            except (ValueError, AttributeError):
                return None
        return None

    # -- reading -----------------------------------------------------------------------------
    def info(self, i: int) -> EpisodeInfo:
        g = self.h5["data"][self.keys[i]]
        a = g.attrs
        start = StartState.from_json(json.loads(_decode(a["start"]))) if "start" in a else None
        task = _decode(a.get("task", self.attrs.get("env_name", "unknown")))
        instruction = _decode(a.get("instruction", self.language or task))
        return EpisodeInfo(
            key=self.keys[i], task=str(task), instruction=str(instruction), length=int(g["actions"].shape[0]),
            success=bool(a.get("success", True)), start=start, action_noise=float(a.get("action_noise", 0.0)),
        )

    def infos(self) -> list[EpisodeInfo]:
        return [self.info(i) for i in range(len(self))]

    def proprio(self, g: h5py.Group) -> np.ndarray:
        obs = g["obs"]
        if "proprio" in obs:
            return obs["proprio"][()].astype(np.float32)
        for pos, grip in (("robot0_eef_pos", "robot0_gripper_qpos"), ("ee_pos", "gripper_states")):
            if pos in obs and grip in obs:
                return np.concatenate([obs[pos][()], obs[grip][()][:, :1]], 1).astype(np.float32)
        return np.zeros((g["actions"].shape[0], 0), np.float32)

    def load(self, i: int, frames: bool = True) -> Episode:
        info = self.info(i)
        g = self.h5["data"][info.key]
        actions = g["actions"][()].astype(np.float32)
        return Episode(
            task=info.task,
            instruction=info.instruction,
            frames=g["obs"][self.image_key][()] if frames else np.zeros((0,), np.uint8),
            proprio=self.proprio(g),
            actions=actions,
            expert_actions=g["expert_actions"][()].astype(np.float32) if "expert_actions" in g else actions,
            rewards=g["rewards"][()].astype(np.float32) if "rewards" in g else np.zeros(len(actions), np.float32),
            successes=g["success"][()].astype(bool) if "success" in g else np.zeros(len(actions), bool),
            states=g["states"][()] if "states" in g else None,
            env_obs=g["obs"]["env_obs"][()] if "env_obs" in g["obs"] else None,
            start=info.start,
            action_noise=info.action_noise,
        )

    def frames(self, i: int, t0: int, t1: int) -> np.ndarray:
        return self.h5["data"][self.keys[i]]["obs"][self.image_key][t0:t1]

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self.load(i)

    def starts(self) -> list[StartState]:
        return [s for s in (self.info(i).start for i in range(len(self))) if s is not None]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@dataclass(frozen=True)
class DatasetSummary:
    path: str
    episodes: int
    steps: int
    tasks: dict[str, int]
    image_size: int
    camera: str
    action_dim: int
    success_rate: float
    format_version: str | None

    def to_json(self) -> dict:
        return dict(self.__dict__)


def validate_file(
    path: str | os.PathLike, image_size: int | None = None, action_dim: int | None = None
) -> DatasetSummary:
    """Read every array of every episode; raise DatasetError naming the first problem found."""
    ef = EpisodeFile(path)
    try:
        if image_size is not None and ef.image_size != image_size:
            raise DatasetError(f"{ef.path}: images are {ef.image_size}px, expected {image_size}px")
        if action_dim is not None and ef.action_dim != action_dim:
            raise DatasetError(f"{ef.path}: actions are {ef.action_dim}-D, expected {action_dim}-D")
        tasks: dict[str, int] = {}
        steps = successes = 0
        for i, key in enumerate(ef.keys):
            try:
                g = ef.h5["data"][key]
                if "actions" not in g or "obs" not in g or ef.image_key not in g["obs"]:
                    raise DatasetError(f"{ef.path}: {key} lacks actions or {ef.image_key}")
                acts = g["actions"][()]
                imgs = g["obs"][ef.image_key][()]
                prop = ef.proprio(g)
                extra = [(k, g[k][()]) for k in ("expert_actions", "states") if k in g]
            except OSError as exc:
                raise DatasetError(f"{ef.path}: {key} is unreadable, the file is truncated or corrupt "
                                   f"({_first_line(exc)})") from exc
            n = len(acts)
            if acts.ndim != 2 or acts.shape[1] != ef.action_dim or n == 0:
                raise DatasetError(f"{ef.path}: {key}/actions has shape {acts.shape}")
            if imgs.shape != (n, ef.image_size, ef.image_size, 3) or imgs.dtype != np.uint8:
                raise DatasetError(f"{ef.path}: {key}/obs/{ef.image_key} has shape {imgs.shape} {imgs.dtype}, "
                                   f"expected ({n}, {ef.image_size}, {ef.image_size}, 3) uint8")
            if len(prop) != n:
                raise DatasetError(f"{ef.path}: {key}/obs/proprio has {len(prop)} rows for {n} actions")
            for name, arr in (("actions", acts), ("proprio", prop), *extra):
                if len(arr) != n:
                    raise DatasetError(f"{ef.path}: {key}/{name} has {len(arr)} rows for {n} actions")
                if not np.all(np.isfinite(arr)):
                    raise DatasetError(f"{ef.path}: {key}/{name} contains NaN or inf")
            info = ef.info(i)
            tasks[info.task] = tasks.get(info.task, 0) + 1
            steps += n
            successes += int(info.success)
        return DatasetSummary(
            path=str(ef.path), episodes=len(ef), steps=steps, tasks=tasks, image_size=ef.image_size,
            camera=str(ef.camera), action_dim=ef.action_dim, success_rate=successes / len(ef),
            format_version=ef.attrs.get("format_version"),
        )
    finally:
        ef.close()
