"""Checkpoints: a folder with `config.json` (kind, format, architecture, extras) and
`model.safetensors`; training state for resume lives in `train_state.pt`. Every file is written to
a temporary name and renamed, so a kill never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sim.errors import InputError

FORMAT = "vlarft-checkpoint/1"


class CheckpointError(InputError):
    pass


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def output_folder(out: str | os.PathLike, create: bool = True) -> Path:
    """The run's output folder, checked before anything is written: a writable folder (created if missing)."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output {folder} exists and is not a folder")
    if create:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise InputError(f"output folder {folder} is not writable")
    return folder


def save_checkpoint(
    folder: str | os.PathLike, kind: str, config: dict[str, Any], state_dict: dict[str, torch.Tensor]
) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    _atomic(folder / "model.safetensors", lambda p: save_file(tensors, str(p)))
    meta = {"format": FORMAT, "kind": kind, **config}
    _atomic(folder / "config.json", lambda p: p.write_text(json.dumps(meta, indent=1, default=str)))
    return folder


def read_config(folder: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not folder.exists():
        raise CheckpointError(f"checkpoint {folder} does not exist")
    if not cfg_path.exists():
        raise CheckpointError(f"{folder} is not a checkpoint (no config.json)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path} is corrupt ({exc})") from exc
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path} is not a {FORMAT} checkpoint")
    if kind is not None and cfg.get("kind") != kind:
        raise CheckpointError(f"{folder} holds a {cfg.get('kind')!r} checkpoint, expected {kind!r}")
    return cfg


def load_checkpoint(folder: str | os.PathLike, kind: str | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    cfg = read_config(folder, kind)
    weights = Path(folder) / "model.safetensors"
    if not weights.exists():
        raise CheckpointError(f"{folder} has no model.safetensors")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is corrupt ({str(exc).splitlines()[0]})") from exc
    return cfg, state


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load weights, naming the first missing, unexpected or mis-shaped tensor on mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"shape mismatch {shapes[0]}" + (f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else ""))
        if missing:
            parts.append(f"missing {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
        if unexpected:
            parts.append(f"unexpected {unexpected[0]}" + (f" (+{len(unexpected) - 1})" if len(unexpected) > 1 else ""))
        raise CheckpointError(f"{what}: checkpoint does not match this architecture: {'; '.join(parts)}")
    model.load_state_dict(state)


def save_train_state(folder: str | os.PathLike, state: dict[str, Any]) -> None:
    path = Path(folder) / "train_state.pt"
    _atomic(path, lambda p: torch.save(state, p))


def load_train_state(folder: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(folder) / "train_state.pt"
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path} is corrupt ({str(exc).splitlines()[0]})") from exc


def device_for(preference: str = "auto") -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)
