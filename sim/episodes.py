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

`validate_file` checks a file from anywhere (an upload) without trusting it: every declared shape, dtype,
chunk size and filter is checked from metadata before any array is read, every compressed chunk is
inflated with a bound first, then arrays are read in slices, so validating any file needs less than
MEMORY_CEILING. `validate_isolated` runs it in a child process under that memory limit.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from h5py import h5d, h5z

from sim.errors import InputError
from sim.perturb import StartState

FORMAT_VERSION = "vlarft-episodes/1"

# What a file may declare; checked from metadata before any array is read.
MEMORY_CEILING = 256 << 20  # validating any file stays below this (validate_isolated enforces it)
MAX_EPISODES = 100_000  # entries in data/ (collect's limit is 50,000 episodes)
MAX_EPISODE_STEPS = 5_000  # studio episodes have at most 1,100 (max_steps 1000 + after_success 100)
MAX_IMAGE_SIZE = 1024
MAX_ROW_VALUES = 4096  # values per step of a non-image array (states, proprio, observations)
MAX_OBS_KEYS = 1000
MAX_ATTR_BYTES = 1 << 20
MAX_CHUNK_BYTES = 8 << 20  # one chunk, uncompressed (h5py's automatic chunks are at most 1 MB)
SLICE_BYTES = 16 << 20  # rows read at once (at least one chunk's rows, at most MAX_SLICE_BYTES)
MAX_SLICE_BYTES = 32 << 20
# Arrays may declare at most this many times the file's size (real episodes compress 2-10×; gzip at most ~1000×)
MAX_EXPANSION = 100
MIN_EXPANSION_BOUND = 256 << 20
# gzip, shuffle and fletcher32: HDF5's own filters, whose output size can be checked before HDF5 runs them
FILTERS = {h5z.FILTER_DEFLATE: "gzip", h5z.FILTER_SHUFFLE: "shuffle", h5z.FILTER_FLETCHER32: "fletcher32"}
DEMO_KEY = re.compile(r"^demo_(\d{1,9})$")


class DatasetError(InputError):
    """A dataset file is missing, unreadable, truncated, foreign or inconsistent."""


# The one simulator attached: MetaWorld, 4-D actions (hand xyz + gripper) and 4-D proprio.
SIM_ACTION_DIM = 4
SIM_PROPRIO_DIM = 4


class NoSimulatorError(InputError):
    """The data or model does not come from the attached simulator (imported data, other action shapes)."""


def require_simulator(action_dim: int, proprio_dim: int, what: str) -> None:
    """Refuse simulator work for a model whose shapes are not MetaWorld's."""
    if (action_dim, proprio_dim) != (SIM_ACTION_DIM, SIM_PROPRIO_DIM):
        raise NoSimulatorError(
            f"{what} has {action_dim}-D actions and {proprio_dim}-D proprio; no simulator is attached for that data "
            f"(the studio's simulator is MetaWorld: {SIM_ACTION_DIM}-D actions, {SIM_PROPRIO_DIM}-D proprio). "
            "Train and imagine with it, and measure its world model on held-out episodes of the same data (eval-wm)")


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


def _attr(attrs: h5py.AttributeManager, name: str, default=None):
    """One attribute, refused when it declares more than MAX_ATTR_BYTES."""
    if name not in attrs:
        return default
    aid = attrs.get_id(name)
    size = math.prod(aid.shape or ()) * aid.dtype.itemsize
    if size > MAX_ATTR_BYTES or aid.get_storage_size() > MAX_ATTR_BYTES:
        raise DatasetError(f"attribute {name!r} is {size} bytes; at most {MAX_ATTR_BYTES}")
    return _decode(attrs[name])


def _attrs(obj: h5py.Group, limit: int = 1000) -> dict:
    """Its attributes (at most `limit`), skipping any larger than MAX_ATTR_BYTES."""
    if len(obj.attrs) > limit:
        raise DatasetError(f"{obj.name} has {len(obj.attrs)} attributes; at most {limit}")
    out = {}
    for name in obj.attrs:
        try:
            out[name] = _attr(obj.attrs, name)
        except (DatasetError, OSError, TypeError, ValueError):
            continue
    return out


def _member(group: h5py.Group, name: str, kind: type, what: str):
    """group[name] when it is a hard link to a `kind`: soft and external links (which could open any file on the
    machine) and missing or wrong members are refused."""
    link = group.get(name, getlink=True)
    if link is None:
        raise DatasetError(f"{what} is missing")
    if not isinstance(link, h5py.HardLink):
        raise DatasetError(f"{what} is a link ({type(link).__name__}); only plain members are accepted")
    obj = group[name]
    if not isinstance(obj, kind):
        raise DatasetError(f"{what} is a {type(obj).__name__.lower()}, expected a {kind.__name__.lower()}")
    return obj


class EpisodeFile:
    """Read-only access to an episode file; opens lazily and reads one episode at a time."""

    def __init__(self, path: str | os.PathLike, action_dim: int | None = None) -> None:
        """`action_dim`: the action size expected (checked on the first episode)."""
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
        if not isinstance(f.get("data", getlink=True), h5py.HardLink) or not isinstance(f["data"], h5py.Group):
            raise DatasetError(f"{self.path} has no 'data' group: not a robomimic/LIBERO episode file")
        data = f["data"]
        if len(data) > MAX_EPISODES:
            raise DatasetError(f"{self.path}: data/ has {len(data)} entries; at most {MAX_EPISODES} episodes")
        self.keys = sorted((k for k in data if DEMO_KEY.match(k)), key=lambda k: int(k[5:]))
        if not self.keys:
            raise DatasetError(f"{self.path} contains no episodes (no data/demo_K groups)")
        self.attrs = _attrs(data)
        first = _member(data, self.keys[0], h5py.Group, f"{self.path}: {self.keys[0]}")
        obs = _member(first, "obs", h5py.Group, f"{self.path}: {self.keys[0]}/obs")
        actions = _member(first, "actions", h5py.Dataset, f"{self.path}: {self.keys[0]}/actions")
        self.image_key = self._find_image_key(obs)
        shape = _member(obs, self.image_key, h5py.Dataset, f"{self.path}: {self.keys[0]}/obs/{self.image_key}").shape
        if len(shape) != 4 or shape[-1] != 3:
            raise DatasetError(f"{self.path}: image key {self.image_key} has shape {shape}, expected (T,H,W,3)")
        self.image_size = int(shape[1])
        want = f"(steps, {action_dim})" if action_dim else "(steps, action_dim)"
        if len(actions.shape) != 2:
            raise DatasetError(f"{self.path}: {self.keys[0]}/actions has shape {actions.shape}, a "
                               f"{len(actions.shape)}-D array; expected {want}: one action vector per step")
        self.action_dim = int(actions.shape[1])
        if action_dim is not None and self.action_dim != action_dim:
            raise DatasetError(f"{self.path}: actions are {self.action_dim}-D (shape {actions.shape}); expected "
                               f"{action_dim}-D {want}")
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
        if len(obs) > MAX_OBS_KEYS:
            raise DatasetError(f"obs has {len(obs)} entries; at most {MAX_OBS_KEYS}")
        keys = sorted(obs.keys())
        for suffix in ("_rgb", "_image"):
            for k in keys:
                if k.endswith(suffix) and "eye_in_hand" not in k:
                    return k
        for k in keys:
            if k.endswith(("_rgb", "_image")):
                return k
        raise DatasetError(f"no camera images in obs (keys: {', '.join(keys)})")

    @property
    def has_sim_states(self) -> bool:
        """Episodes can be restored in the simulator: states stored, and not marked as imported data."""
        if not bool(self.attrs.get("sim_states", True)):
            return False
        return "states" in self.h5["data"][self.keys[0]]

    def require_sim_states(self, what: str) -> None:
        if not self.has_sim_states:
            source = self.attrs.get("source_format")
            origin = f" (imported from {source})" if source else ""
            raise NoSimulatorError(f"{what} needs simulator states, and {self.path}{origin} has none: no "
                                   "simulator can be restored for its episodes")

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
        try:
            start = StartState.from_json(json.loads(_attr(a, "start"))) if "start" in a else None
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{self.path}: {self.keys[i]} has an unreadable 'start' attribute ({exc})") from exc
        task = _attr(a, "task", self.attrs.get("env_name", "unknown"))
        instruction = _attr(a, "instruction", self.language or task)
        return EpisodeInfo(
            key=self.keys[i], task=str(task), instruction=str(instruction), length=int(g["actions"].shape[0]),
            success=bool(_attr(a, "success", True)), start=start, action_noise=float(_attr(a, "action_noise", 0.0)),
        )

    def infos(self) -> list[EpisodeInfo]:
        return [self.info(i) for i in range(len(self))]

    @staticmethod
    def proprio_keys(obs: h5py.Group) -> tuple[str, ...]:
        """The obs arrays proprio() reads: ours, or hand position + gripper (robomimic, LIBERO), or none."""
        if "proprio" in obs:
            return ("proprio",)
        for pos, grip in (("robot0_eef_pos", "robot0_gripper_qpos"), ("ee_pos", "gripper_states")):
            if pos in obs and grip in obs:
                return pos, grip
        return ()

    def proprio(self, g: h5py.Group) -> np.ndarray:
        obs = g["obs"]
        keys = self.proprio_keys(obs)
        if len(keys) == 1:
            return obs[keys[0]][()].astype(np.float32)
        if keys:
            return np.concatenate([obs[keys[0]][()], obs[keys[1]][()][:, :1]], 1).astype(np.float32)
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


class _Checker:
    """Checks the arrays of one open file without trusting it: metadata first (shape, dtype, layout, chunk size,
    filters), then every compressed chunk inflated with a bound, then the values read in slices."""

    def __init__(self, ef: EpisodeFile) -> None:
        self.ef = ef
        self.fd = os.open(ef.path, os.O_RDONLY)
        self.file_size = os.fstat(self.fd).st_size
        self.base = ef.h5.userblock_size
        self.read = False  # first pass: metadata only
        self.declared = 0  # bytes of the arrays checked so far, uncompressed

    def close(self) -> None:
        os.close(self.fd)

    def fail(self, where: str, msg: str):
        raise DatasetError(f"{self.ef.path}: {where} {msg}")

    def episode(self, key: str) -> int:
        """Check one episode's arrays (their values too when self.read); returns its number of steps."""
        ef, what = self.ef, f"{self.ef.path}: {key}"
        g = _member(ef.h5["data"], key, h5py.Group, what)
        obs = _member(g, "obs", h5py.Group, f"{what}/obs")
        acts = _member(g, "actions", h5py.Dataset, f"{what}/actions")
        dim = ef.action_dim
        if len(acts.shape) != 2 or acts.shape[1] != dim:
            found = f"a {len(acts.shape)}-D array" if len(acts.shape) != 2 else f"{acts.shape[1]}-D actions"
            self.fail(f"{key}/actions", f"has shape {acts.shape} ({found}); expected (steps, {dim}) like the "
                      f"first episode: one {dim}-D action per step")
        n = acts.shape[0]
        if not 1 <= n <= MAX_EPISODE_STEPS:
            self.fail(f"{key}/actions", f"has {n} steps; an episode has 1 to {MAX_EPISODE_STEPS}")
        self.array(acts, f"{key}/actions", (n, dim))
        size = ef.image_size
        img = _member(obs, ef.image_key, h5py.Dataset, f"{what}/obs/{ef.image_key}")
        self.array(img, f"{key}/obs/{ef.image_key}", (n, size, size, 3), dtype=np.dtype(np.uint8))
        for name in (*ef.proprio_keys(obs), *(["env_obs"] if "env_obs" in obs else [])):
            self.array(_member(obs, name, h5py.Dataset, f"{what}/obs/{name}"), f"{key}/obs/{name}", (n, None))
        for name, shape in (("expert_actions", (n, dim)), ("states", (n, None)), ("rewards", (n,)),
                            ("success", (n,))):
            if name in g:
                self.array(_member(g, name, h5py.Dataset, f"{what}/{name}"), f"{key}/{name}", shape)
        return n

    def array(self, d: h5py.Dataset, where: str, shape: tuple, dtype: np.dtype | None = None) -> None:
        """`shape`: the sizes expected, None for any row size up to MAX_ROW_VALUES values."""
        dt = d.dtype
        if dtype is not None and dt != dtype:
            self.fail(where, f"has shape {d.shape} {dt}, expected {_shape(shape)} {dtype}")
        if dt.kind not in "biuf" or dt.itemsize > 8:
            self.fail(where, f"has dtype {dt}; expected numbers")
        if len(d.shape) != len(shape):
            self.fail(where, f"has shape {d.shape}, expected {_shape(shape)}")
        if d.shape[0] != shape[0]:
            self.fail(where, f"has {d.shape[0]} rows for {shape[0]} actions")
        if any(w is not None and w != got for w, got in zip(shape, d.shape, strict=True)):
            self.fail(where, f"has shape {d.shape}, expected {_shape(shape)}")
        if None in shape and math.prod(d.shape[1:]) > MAX_ROW_VALUES:
            self.fail(where, f"has shape {d.shape}: more than {MAX_ROW_VALUES} values per step")
        self.declared += d.size * dt.itemsize
        checked = self.storage(d, where)
        if self.read and (dt.kind == "f" or not checked):  # floats for NaN; anything whose bytes were not seen
            self.values(d, where, finite=dt.kind == "f")

    def storage(self, d: h5py.Dataset, where: str) -> bool:
        """Layout, chunks and filters; with self.read, every chunk too. True when that proved every byte
        readable (what is left is to look at the values)."""
        dcpl = d.id.get_create_plist()
        layout = dcpl.get_layout()
        if layout == h5d.VIRTUAL or dcpl.get_external_count():
            self.fail(where, "is stored outside the file (a virtual or external dataset); only data inside it "
                      "is accepted")
        item = d.dtype.itemsize
        nbytes = d.size * item
        if layout != h5d.CHUNKED:  # compact or contiguous: a slice reads only its own bytes
            stored = d.id.get_storage_size()
            if stored != nbytes:
                self.fail(where, f"declares {nbytes} bytes but stores {stored}: unwritten or truncated")
            offset = d.id.get_offset() if layout == h5d.CONTIGUOUS and nbytes else None
            if offset is not None and self.base + offset + nbytes > self.file_size:
                self.fail(where, "is truncated: its data lies past the end of the file")
            return True
        chunk_bytes = math.prod(d.chunks) * item
        if chunk_bytes > MAX_CHUNK_BYTES:
            self.fail(where, f"has chunks {d.chunks} of {chunk_bytes} bytes; at most {MAX_CHUNK_BYTES}")
        if d.chunks[0] * (nbytes // d.shape[0]) > MAX_SLICE_BYTES:
            self.fail(where, f"has chunks of {d.chunks[0]} steps: reading whole steps would need more than "
                      f"{MAX_SLICE_BYTES} bytes")
        filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        unknown = [f for f in filters if f not in FILTERS]
        if unknown:
            self.fail(where, f"uses HDF5 filter {unknown[0]}; accepted: {', '.join(FILTERS.values())} or none")
        deflate = h5z.FILTER_DEFLATE
        after = filters[filters.index(deflate):] if deflate in filters else []
        if filters.count(deflate) > 1 or h5z.FILTER_SHUFFLE in after:
            self.fail(where, f"applies its filters in an unusual order ({', '.join(FILTERS[f] for f in filters)})")
        expected = math.prod(math.ceil(size / c) for size, c in zip(d.shape, d.chunks, strict=True))
        if d.id.get_num_chunks() != expected:  # the missing ones would read as fill values
            self.fail(where, f"has {d.id.get_num_chunks()} of its {expected} chunks written")
        if self.read:
            d.id.chunk_iter(lambda info: self.chunk(info, filters, chunk_bytes, where))
        return h5z.FILTER_FLETCHER32 not in filters  # HDF5 itself checks the checksums

    def chunk(self, info, filters: list[int], chunk_bytes: int, where: str) -> None:
        """A chunk lies inside the file, and its gzip stream inflates to exactly the chunk's size (HDF5 itself
        would inflate any amount: a small chunk can be a bomb)."""
        active = [f for i, f in enumerate(filters) if not info.filter_mask >> i & 1]
        fletcher = h5z.FILTER_FLETCHER32 in active
        at = f"its chunk at {tuple(info.chunk_offset)}"
        if info.byte_offset is None or self.base + info.byte_offset + info.size > self.file_size:
            self.fail(where, f"is truncated: {at} lies past the end of the file")
        deflate = h5z.FILTER_DEFLATE
        if deflate not in active:
            if info.size != chunk_bytes + 4 * fletcher:
                self.fail(where, f"is corrupt: {at} has {info.size} bytes for {chunk_bytes}")
            return
        if info.size > chunk_bytes + chunk_bytes // 100 + 1024:  # deflate never grows data by that much
            self.fail(where, f"is corrupt: {at} has {info.size} compressed bytes for {chunk_bytes}")
        checksum_after = fletcher and active.index(h5z.FILTER_FLETCHER32) > active.index(deflate)
        raw = os.pread(self.fd, info.size, self.base + info.byte_offset)
        want = chunk_bytes + 4 * (fletcher and not checksum_after)
        z = zlib.decompressobj()
        try:
            out = len(z.decompress(raw[:-4] if checksum_after else raw, want + 1))
        except zlib.error as exc:
            self.fail(where, f"is corrupt: {at} does not decompress ({exc})")
        if out > want or z.unconsumed_tail:
            self.fail(where, f"is a decompression bomb: {at} inflates to more than its {want} bytes")
        if out != want or not z.eof:
            self.fail(where, f"is corrupt: {at} inflates to {out} bytes, not {want}")

    def values(self, d: h5py.Dataset, where: str, finite: bool) -> None:
        """Read every row, a slice of about SLICE_BYTES (whole chunks) at a time."""
        n = d.shape[0]
        step = max(1, SLICE_BYTES // max(1, d.size // n * d.dtype.itemsize))
        if d.chunks:
            step = max(d.chunks[0], step // d.chunks[0] * d.chunks[0])
        for lo in range(0, n, step):
            part = d[lo: lo + step]
            if finite and not np.all(np.isfinite(part)):
                self.fail(where, "contains NaN or inf")


def _shape(shape: tuple) -> str:
    """The expected shape in words: (steps, 64, 64, 3), (steps, K), (steps,)."""
    parts = ["steps", *("K" if s is None else str(s) for s in shape[1:])]
    return f"({', '.join(parts)}{',' if len(parts) == 1 else ''})"


def validate_file(
    path: str | os.PathLike, image_size: int | None = None, action_dim: int | None = None,
    image_sizes: Sequence[int] | None = None,
) -> DatasetSummary:
    """Check every array of every episode (see _Checker; memory stays under MEMORY_CEILING for any file);
    raise DatasetError naming the first problem. `image_sizes`: the frame sizes accepted."""
    ef = EpisodeFile(path, action_dim=action_dim)
    check: _Checker | None = None
    try:
        if image_size is not None and ef.image_size != image_size:
            raise DatasetError(f"{ef.path}: images are {ef.image_size}px, expected {image_size}px")
        if image_sizes is not None and ef.image_size not in image_sizes:
            raise DatasetError(f"{ef.path}: images are {ef.image_size}×{ef.image_size} px; the models take "
                               f"{', '.join(map(str, image_sizes))} px")
        if not 1 <= ef.image_size <= MAX_IMAGE_SIZE:
            raise DatasetError(f"{ef.path}: images are {ef.image_size} px; at most {MAX_IMAGE_SIZE}")
        check = _Checker(ef)
        tasks: dict[str, int] = {}
        steps = successes = 0
        for read in (False, True):  # every episode's metadata first, then the values
            check.read = read
            for i, key in enumerate(ef.keys):
                try:
                    n = check.episode(key)
                    info = ef.info(i) if read else None
                except OSError as exc:
                    raise DatasetError(f"{ef.path}: {key} is unreadable, the file is truncated or corrupt "
                                       f"({_first_line(exc)})") from exc
                if info is not None:
                    tasks[info.task] = tasks.get(info.task, 0) + 1
                    steps += n
                    successes += int(info.success)
            bound = max(MIN_EXPANSION_BOUND, MAX_EXPANSION * check.file_size)
            if not read and check.declared > bound:
                raise DatasetError(f"{ef.path}: declares {check.declared / 2**30:.1f} GB of arrays in a "
                                   f"{check.file_size / 2**20:.1f} MB file, more than {MAX_EXPANSION}× its size "
                                   "(a decompression bomb, or unwritten data)")
        return DatasetSummary(
            path=str(ef.path), episodes=len(ef), steps=steps, tasks=tasks, image_size=ef.image_size,
            camera=str(ef.camera), action_dim=ef.action_dim, success_rate=successes / len(ef),
            format_version=ef.attrs.get("format_version"),
        )
    finally:
        if check is not None:
            check.close()
        ef.close()


_CHILD = "import sys; from sim.episodes import _validate_main; sys.exit(_validate_main(sys.argv[1]))"


def validate_isolated(
    path: str | os.PathLike, image_size: int | None = None, action_dim: int | None = None,
    image_sizes: Sequence[int] | None = None, memory: int = MEMORY_CEILING, timeout: float = 1800.0,
) -> DatasetSummary:
    """validate_file in a child process whose memory is limited to `memory` bytes (RLIMIT_DATA), so that no
    file, nor a bug of the HDF5 library it triggers, can take the caller's memory or bring it down."""
    args = {"path": str(path), "image_size": image_size, "action_dim": action_dim,
            "image_sizes": list(image_sizes) if image_sizes is not None else None, "memory": memory}
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DatasetError(f"{path}: checking the file took more than {timeout:g} s") from exc
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1]) if lines else {}
    except ValueError:
        out = {}
    if proc.returncode == 0 and "summary" in out:
        return DatasetSummary(**out["summary"])
    if "error" in out:
        raise DatasetError(out["error"])
    why = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    raise DatasetError(f"{path}: checking the file failed ({why}) within its {memory >> 20} MB memory limit: "
                       "it is corrupt or needs too much memory")


def _validate_main(arg: str) -> int:
    """The child of validate_isolated: one JSON line on stdout, {"summary": ...} or {"error": ...}."""
    import resource

    args = json.loads(arg)
    memory = int(args.pop("memory"))
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    memory = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (memory, hard))
    try:
        out = {"summary": validate_file(**args).to_json()}
    except DatasetError as exc:
        out = {"error": _first_line(exc)}
    except MemoryError:
        out = {"error": f"{args['path']}: checking the file needs more than {memory >> 20} MB"}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError) as exc:
        out = {"error": f"{args['path']}: not a readable episode file ({_first_line(exc)})"}
    print(json.dumps(out), flush=True)
    return 0 if "summary" in out else 2
