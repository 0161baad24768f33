"""Policy checkpoints in and out, and the bridge to the simulator's evaluation (`vlarft sim-eval --policy DIR`).

A policy checkpoint (models.checkpoint format, kind "policy"):
    config.json        {"policy": PolicyConfig, "datasets": [...], "normalisation": {...}, "instruction_cache": [...],
                        "step", "complete", "train": TrainConfig, ...}
    model.safetensors  the weights (EMA), the action/proprio normalisation buffers, and
                       "text_cache.embeddings" [S, 384]: MiniLM vectors of the cached instructions
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import CheckpointError, load_checkpoint, load_into, read_config, save_checkpoint
from models.policy.config import PolicyConfig
from models.policy.model import VLAPolicy
from models.policy.text import InstructionEncoder, check_instruction
from sim.episodes import SIM_ACTION_DIM, SIM_PROPRIO_DIM, EpisodeFile, require_simulator
from sim.evaluate import PolicySpec

KIND = "policy"
TEXT_CACHE_KEY = "text_cache.embeddings"


def save_policy(policy: VLAPolicy, folder: str | os.PathLike, extra: dict[str, Any] | None = None,
                state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a policy checkpoint; `state` replaces the module's own weights (e.g. the EMA copy)."""
    keys, emb = policy.text.state()
    tensors = dict(state if state is not None else policy.state_dict())
    tensors[TEXT_CACHE_KEY] = emb
    config = {
        "policy": policy.config.to_json(),
        "normalisation": {"action": policy.action_norm.stats(), "proprio": policy.proprio_norm.stats()},
        "instruction_cache": keys,
        **(extra or {}),
    }
    return save_checkpoint(folder, KIND, config, tensors)


def load_policy(path: str | os.PathLike, device: str = "cpu") -> VLAPolicy:
    """The policy module in eval mode; any problem with the checkpoint is a one-line CheckpointError."""
    cfg, state = load_checkpoint(path, KIND)
    if not isinstance(cfg.get("policy"), dict):
        raise CheckpointError(f"{path}: config.json has no 'policy' section")
    try:
        config = PolicyConfig.from_json(cfg["policy"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad policy config ({exc})") from exc
    emb = state.pop(TEXT_CACHE_KEY, None)
    keys = cfg.get("instruction_cache", [])
    if emb is None or not isinstance(keys, list) or emb.dim() != 2 or len(keys) != emb.shape[0]:
        raise CheckpointError(f"{path}: instruction cache is missing or inconsistent")
    policy = VLAPolicy(config, InstructionEncoder.from_state(keys, emb))
    load_into(policy, state, f"policy {path}")
    try:
        return policy.to(torch.device(device)).eval()
    except (RuntimeError, AssertionError) as exc:
        raise CheckpointError(f"cannot move policy to device {device!r} ({exc})") from exc


def check_dataset_compat(config: PolicyConfig, dataset: str | os.PathLike, what: str = "policy") -> None:
    """Fail clearly when a dataset's actions, proprio or images do not fit the policy."""
    ef = EpisodeFile(dataset)
    try:
        pdim = int(ef.proprio(ef.h5["data"][ef.keys[0]]).shape[-1])
        problems = []
        if ef.action_dim != config.action_dim:
            problems.append(f"{ef.action_dim}-D actions (policy: {config.action_dim}-D)")
        if pdim != config.proprio_dim:
            problems.append(f"{pdim}-D proprio (policy: {config.proprio_dim}-D)")
        if ef.image_size != config.image_size:
            problems.append(f"{ef.image_size}px frames (policy: {config.image_size}px)")
        if ef.camera != config.camera:
            problems.append(f"camera {ef.camera!r} (policy: {config.camera!r})")
    finally:
        ef.close()
    if problems:
        raise CheckpointError(f"{what} does not match dataset {dataset}: it has {', '.join(problems)}")


def eval_spec(path: str | os.PathLike, noise_std: float = 0.0) -> PolicySpec:
    """How `sim.evaluate` (and `sim.collect`) build this policy in worker processes (checked here, in the caller).

    `noise_std` > 0: each chunk is the deterministic one plus N(0, noise_std²) per dimension in normalised
    action units, the closed-loop RL's exploration (models/rl.py, noise "gauss")."""
    if not 0.0 <= noise_std <= 2.0:
        raise CheckpointError(f"noise std must be in [0, 2], got {noise_std}")
    folder = Path(path).expanduser().resolve()
    load_policy(folder)  # fail now with one line, not later inside a worker
    cfg = read_config(folder, KIND)
    policy = cfg["policy"]
    require_simulator(int(policy.get("action_dim", SIM_ACTION_DIM)), int(policy.get("proprio_dim", SIM_PROPRIO_DIM)),
                      f"policy {folder.name}")
    return PolicySpec(
        name=f"policy:{folder.name}" + (f"+noise{noise_std:g}" if noise_std else ""),
        factory="models.policy_io:build_sim_policy",
        kwargs={"path": str(folder), **({"noise_std": float(noise_std)} if noise_std else {})},
        camera=policy.get("camera", "workspace"),
        image_size=int(policy.get("image_size", 64)),
        train_datasets=tuple(cfg.get("datasets", [])),
    )


class SimChunkPolicy:
    """sim.evaluate.ChunkPolicy over a checkpoint: one deterministic ODE chunk per observation, in simulator units."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", noise_std: float = 0.0) -> None:
        self.policy = load_policy(path, device)
        self.instruction: str | None = None
        self.noise_std = noise_std
        self.rng = np.random.default_rng(0)

    def seed(self, seed: np.random.SeedSequence | int) -> None:
        """Seed the exploration noise (one stream per episode keeps collection deterministic)."""
        self.rng = np.random.default_rng(seed)

    def reset(self, task: str, instruction: str) -> None:
        self.instruction = check_instruction(instruction)
        self.policy.text.warm([self.instruction])

    def batch(self, obs) -> dict:
        frame = torch.from_numpy(np.ascontiguousarray(obs.frame)).permute(2, 0, 1)
        return {
            "context": frame[None, None],
            "proprio": torch.from_numpy(np.asarray(obs.proprio, np.float32))[None],
            "instruction": [self.instruction],
        }

    def act(self, obs) -> np.ndarray:
        if self.instruction is None:
            raise RuntimeError("call reset(task, instruction) before act(obs)")
        if not self.noise_std:
            return self.policy.act(self.batch(obs))[0].cpu().numpy().astype(np.float32)
        mean = self.policy.act_norm(self.batch(obs))[0]
        noisy = mean + torch.from_numpy(self.rng.normal(0.0, self.noise_std, tuple(mean.shape))).float()
        return self.policy.action_norm.unnormalize(noisy).cpu().numpy().astype(np.float32)


def build_sim_policy(path: str, noise_std: float = 0.0) -> SimChunkPolicy:
    """The factory named in eval_spec's PolicySpec."""
    return SimChunkPolicy(path, noise_std=noise_std)
