"""LIBERO's robomimic-layout HDF5 files into the studio's episode files.

    data/                      attrs: problem_info (JSON with "language_instruction"), env_args, bddl_file_name
      demo_K/                  actions (T, 7), dones (T,), rewards (T,), states (T, S) of LIBERO's simulator
        obs/agentview_rgb      (T, H, W, 3) uint8, stored upside down (rotated 180° here, as OpenVLA does)
        obs/ee_states          (T, 6) end-effector position + axis-angle
        obs/gripper_states     (T, 2) finger positions

Proprio becomes ee_states ‖ gripper_states (8-D). The file is checked by the bounded validator first
(`validate_isolated`), and LIBERO's simulator states are not ours, so the episodes are marked as having none.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from sim.episodes import DatasetError, Episode, EpisodeWriter, check_writable, validate_isolated

IMAGE_KEY = "agentview_rgb"
PROPRIO_KEYS = ("ee_states", "gripper_states")


def _instruction(data: h5py.Group, path: Path) -> str:
    raw = data.attrs.get("problem_info")
    try:
        text = json.loads(raw.decode() if isinstance(raw, bytes) else raw).get("language_instruction") if raw else None
    except (ValueError, AttributeError, TypeError):
        text = None
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{path}: data/ has no problem_info attribute with a language_instruction: not a LIBERO "
                           "file")
    return " ".join(text.split())


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    frames = frames[:, ::-1, ::-1]
    if frames.shape[1] == size and frames.shape[2] == size:
        return np.ascontiguousarray(frames)
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f)).resize((size, size), Image.Resampling.BOX))
                     for f in frames])


def import_libero(
    path: str | os.PathLike, out: str | os.PathLike, image_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Convert a LIBERO demo file into one episode file at `out` (written atomically)."""
    t0 = time.perf_counter()
    src = Path(path).expanduser()
    if not 8 <= image_size <= 512 or image_size % 8:
        raise DatasetError(f"image size must be a multiple of 8 from 8 to 512, got {image_size}")
    out_path = check_writable(out)
    summary = validate_isolated(src)  # bounded: shapes, chunks, filters, truncation, NaN
    with h5py.File(src, "r") as f:
        data = f["data"]
        instruction = _instruction(data, src)
        keys = sorted((k for k in data if k.startswith("demo_")), key=lambda k: int(k[5:]))
        for k in keys:
            obs = data[k]["obs"]
            missing = [n for n in (IMAGE_KEY, *PROPRIO_KEYS) if n not in obs]
            if missing:
                raise DatasetError(f"{src}: {k}/obs has no {', '.join(missing)}: not LIBERO's layout")
        writer = EpisodeWriter(out_path, "agentview", image_size,
                               meta={"env": "libero", "source": src.name, "source_format": "libero-hdf5",
                                     "sim_states": False, "problem_info": data.attrs.get("problem_info", "")})
        try:
            for i, k in enumerate(keys):
                g = data[k]
                obs = g["obs"]
                actions = g["actions"][()].astype(np.float32)
                n = len(actions)
                proprio = np.concatenate([obs[name][()].reshape(n, -1) for name in PROPRIO_KEYS], 1)
                dones = g["dones"][()].astype(bool) if "dones" in g else np.eye(1, n, n - 1, dtype=bool)[0]
                rewards = g["rewards"][()].astype(np.float32) if "rewards" in g else dones.astype(np.float32)
                writer.add(Episode(
                    task=instruction, instruction=instruction, frames=_resize(obs[IMAGE_KEY][()], image_size),
                    proprio=proprio.astype(np.float32), actions=actions, expert_actions=actions, rewards=rewards,
                    successes=dones, attrs={"source_episode": k},
                ))
                if progress:
                    progress(i + 1, len(keys))
            written = writer.close()
        except BaseException:
            writer.abort()
            raise
    return {"path": str(written), "episodes": len(keys), "steps": summary.steps, "instruction": instruction,
            "image_size": image_size, "source_size": summary.image_size, "action_dim": summary.action_dim,
            "proprio_dim": int(proprio.shape[1]), "seconds": time.perf_counter() - t0}
