"""WorldModel: frame autoencoder + latent dynamics + the rollout API used by evaluation and RFT."""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.checkpoint import CheckpointError, load_checkpoint, load_into, save_checkpoint
from models.world_model.autoencoder import FrameAutoencoder, expand_context
from models.world_model.config import ROLLOUT_DTYPES, WMConfig
from models.world_model.dynamics import LatentDynamics
from sim.errors import InputError

KIND = "world_model"
ARCH = "latent-film-recurrent/2"


class RolloutInputError(InputError):
    pass


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AVX512-BF16 / AMX); elsewhere bf16 is emulated and slow."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def precision(dtype: str, device: torch.device):
    """The context a rollout or training step runs in: a bf16 autocast where `dtype` asks for it and the CPU runs
    bf16 natively; float32 everywhere else."""
    if dtype == "bfloat16" and device.type == "cpu" and native_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class RolloutState:
    """What a rollout carries from frame to frame (the recurrent equivalent of a KV cache)."""

    z: torch.Tensor  # latent of the last frame, (B, lat, h, w)
    hidden: torch.Tensor  # recurrent state, (B, S, h, w)
    z_ctx: torch.Tensor  # the dynamics' view of the last context frame's latent
    ctx: dict[str, torch.Tensor]  # decoder's view of the last context frame
    cum: torch.Tensor  # running sum of normalised actions since the context, (B, A)


class WorldModel(nn.Module):
    def __init__(self, cfg: WMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ae = FrameAutoencoder(cfg)
        self.dynamics = LatentDynamics(cfg)
        a, p = cfg.action_dim, cfg.proprio_dim
        low = torch.tensor(cfg.action_low or [-1.0] * a, dtype=torch.float32)
        high = torch.tensor(cfg.action_high or [1.0] * a, dtype=torch.float32)
        self.register_buffer("action_low", low, persistent=False)
        self.register_buffer("action_high", torch.maximum(high, low + 1e-6), persistent=False)
        self.register_buffer("proprio_mean", torch.tensor(cfg.proprio_mean or [0.0] * p), persistent=False)
        self.register_buffer("proprio_std", torch.tensor(cfg.proprio_std or [1.0] * p), persistent=False)
        self.rollout_dtype = "float32"
        self.set_rollout_dtype(cfg.rollout_dtype)

    def set_rollout_dtype(self, name: str) -> None:
        """Precision of rollouts (`rollout`, `imagine_chunk`): "float32", or "bfloat16" autocast of the
        convolutions and linear layers (latents, recurrent state and frames stay float32). Falls back to float32
        where the hardware has no native bf16 or the model is not on the CPU."""
        if name not in ROLLOUT_DTYPES:
            raise RolloutInputError(f"rollout dtype must be one of {', '.join(ROLLOUT_DTYPES)}, got {name!r}")
        self.rollout_dtype = name

    def _precision(self):
        return precision(self.rollout_dtype, self.device)

    # -- what callers need to know --------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return int(self.cfg.image_size or 64)

    @property
    def context_frames(self) -> int:
        return int(self.cfg.context_frames)

    @property
    def camera(self) -> str | None:
        return self.cfg.camera

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- inputs ---------------------------------------------------------------------------------
    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw simulator actions -> [-1, 1], clipped to the range seen in training (as the simulator clips)."""
        a = torch.maximum(torch.minimum(actions, self.action_high), self.action_low)
        return 2.0 * (a - self.action_low) / (self.action_high - self.action_low) - 1.0

    def conditions(self, actions_n: torch.Tensor, cum0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised actions (B, T, A) -> per-step condition (B, T, F) and the running sum after the last step."""
        cum = cum0[:, None] + torch.cumsum(actions_n, 1)
        known = actions_n.new_ones(*actions_n.shape[:2], 1)
        parts = [actions_n]
        if self.cfg.cumulative_actions:
            parts.append(cum / self.cfg.horizon)
        return torch.cat([*parts, known], -1), cum[:, -1]

    def unknown_condition(self, n: int, device: torch.device) -> torch.Tensor:
        f = self.cfg.action_dim * (2 if self.cfg.cumulative_actions else 1)
        return torch.zeros(n, f + 1, device=device)

    def _frames(self, context: torch.Tensor) -> torch.Tensor:
        if not isinstance(context, torch.Tensor):
            raise RolloutInputError(f"context must be a torch tensor, got {type(context).__name__}")
        if context.dim() == 4:
            context = context[:, None]
        if context.dim() != 5 or context.shape[2] != 3:
            raise RolloutInputError(f"context must be (B, C, 3, H, W) frames, got shape {tuple(context.shape)}")
        s = self.image_size
        if context.shape[-2:] != (s, s):
            raise RolloutInputError(
                f"context frames are {context.shape[-2]}x{context.shape[-1]}, this world model needs {s}x{s}")
        if context.dtype == torch.uint8:
            x = context.to(self.device, torch.float32) / 255.0
        elif context.is_floating_point():
            x = context.to(self.device, torch.float32)
            if not torch.isfinite(x).all():
                raise RolloutInputError("context frames contain NaN or inf")
        else:
            raise RolloutInputError(f"context must be uint8 or float frames, got {context.dtype}")
        c = self.context_frames
        if x.shape[1] < c:  # too few frames: repeat the first, as the loader does at an episode's start
            x = torch.cat([x[:, :1].expand(-1, c - x.shape[1], -1, -1, -1), x], 1)
        return x[:, -c:]

    def _actions(self, actions: torch.Tensor, batch: int) -> torch.Tensor:
        if not isinstance(actions, torch.Tensor):
            raise RolloutInputError(f"actions must be a torch tensor, got {type(actions).__name__}")
        if actions.dim() != 3 or actions.shape[-1] != self.cfg.action_dim or actions.shape[0] != batch:
            raise RolloutInputError(
                f"actions must be (B={batch}, T, {self.cfg.action_dim}), got shape {tuple(actions.shape)}")
        a = actions.to(self.device, torch.float32)
        if not torch.isfinite(a).all():
            raise RolloutInputError("actions contain NaN or inf")
        return a

    # -- rollout --------------------------------------------------------------------------------
    def begin(self, frames: torch.Tensor) -> RolloutState:
        """Context frames (B, C, 3, H, W) in [0, 1] -> the state before the first predicted frame."""
        z_all = self.ae.encode(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        return self.begin_from_latents(z_all, self.ae.context_state(frames[:, -1], z_all[:, -1]))  # encoded once

    def begin_from_latents(self, z_all: torch.Tensor, ctx: dict[str, torch.Tensor]) -> RolloutState:
        """Latents of the C context frames (B, C, lat, h, w) + decoder context state -> rollout state."""
        b, c = z_all.shape[:2]
        z_all = z_all.float()  # latents and the recurrent state stay float32 under a bf16 autocast
        z_ctx = self.dynamics.context(z_all[:, -1])
        hidden = self.dynamics.init_state(z_all[:, -1])
        z = z_all[:, 0]
        for j in range(1, c):  # extra context frames: no action known, teacher-forced latents
            _, hidden, _ = self.dynamics.step(z, z_ctx, hidden, self.unknown_condition(b, z.device))
            z = z_all[:, j]
        return RolloutState(z=z, hidden=hidden, z_ctx=z_ctx, ctx=ctx, cum=z.new_zeros(b, self.cfg.action_dim))

    def unroll(self, state: RolloutState, actions_n: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor,
                                                                           RolloutState]:
        """Normalised actions (B, T, A) -> latents [T x (B, lat, h, w)], proprio (B, T, 4) normalised, new state."""
        cond, cum = self.conditions(actions_n, state.cum)
        z, hidden = state.z, state.hidden
        zs, hands = [], []
        for t in range(actions_n.shape[1]):
            z, hidden, hand = self.dynamics.step(z, state.z_ctx, hidden, cond[:, t])
            zs.append(z)
            hands.append(hand)
        new = RolloutState(z=z, hidden=hidden, z_ctx=state.z_ctx, ctx=state.ctx, cum=cum)
        return zs, torch.stack(hands, 1), new

    def decode(self, zs: list[torch.Tensor], ctx: dict[str, torch.Tensor]) -> torch.Tensor:
        """Latents [T x (B, ...)] -> frames (B, T, 3, H, W) in [0, 1]; one batched decode per step, sharing
        the context state without copying it."""
        return torch.stack([self.ae.decode(z, ctx) for z in zs], 1).clamp_(0.0, 1.0)

    def rollout(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        state: RolloutState | None = None,
        return_state: bool = False,
        decode: bool = True,
        max_batch: int = 64,
    ):
        """Predict T frames from context frames and T raw actions, auto-regressively on the model's own output.

        context: (B, C, 3, H, W) uint8, or float in [0, 1]; ignored when continuing from `state`.
        actions: (B, T, A) in the dataset's raw units. Returns frames (B, T, 3, H, W) float in [0, 1]
        (latents when decode=False), and the state to continue from when return_state=True. The model
        is deterministic: the same inputs give the same frames. Large batches run in slices of
        `max_batch` (faster on CPU caches); the result does not depend on it.
        """
        with torch.inference_mode(), self._precision():
            frames = self._frames(context) if state is None else None
            b = frames.shape[0] if frames is not None else state.z.shape[0]
            a = self._actions(actions, b)
            if return_state or b <= max_batch:
                return self._rollout(frames, a, state, return_state, decode)
            return torch.cat([self._rollout(frames[i : i + max_batch], a[i : i + max_batch], None, False, decode)
                              for i in range(0, b, max_batch)])

    def _rollout(self, frames, actions, state, return_state, decode):
        if state is None:
            state = self.begin(frames)
        zs, _, state = self.unroll(state, self.normalize_actions(actions))
        out = self.decode(zs, state.ctx) if decode else torch.stack(zs, 1)
        return (out, state) if return_state else out

    def imagine_chunk(self, frames: torch.Tensor, actions: torch.Tensor, decode_all: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One closed-loop chunk, re-anchored on the frame it starts from (the training distribution: every
        unroll begins at a frame with no actions summed yet). frames (N, 3, H, W) float in [0, 1], actions
        (N, K, A) raw -> latents after every action (N, K, lat, h, w), proprio after every action (N, K, 4) in
        raw units, frames (N, K, 3, H, W) if `decode_all` else the last frame only (N, 3, H, W)."""
        with torch.inference_mode(), self._precision():
            state = self.begin(frames[:, None])
            zs, hands, state = self.unroll(state, self.normalize_actions(actions))
            proprio = hands.float() * self.proprio_std + self.proprio_mean
            out = self.decode(zs, state.ctx) if decode_all else self.decode(zs[-1:], state.ctx)[:, 0]
            return torch.stack(zs, 1), proprio, out

    def reconstruct(self, context: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The autoencoder's ceiling: encode the real frames (B, T, 3, H, W) and decode them against the context."""
        with torch.inference_mode():
            ctx_frames = self._frames(context)
            x = frames.to(self.device, torch.float32)
            if frames.dtype == torch.uint8:
                x = x / 255.0
            b, t = x.shape[:2]
            ctx = expand_context(self.ae.context_state(ctx_frames[:, -1]), t)
            return self.ae.decode(self.ae.encode(x.flatten(0, 1)), ctx).clamp_(0.0, 1.0).unflatten(0, (b, t))

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, extra: dict | None = None) -> None:
        config = {"architecture": ARCH, "config": self.cfg.to_json(), **(extra or {})}
        save_checkpoint(folder, KIND, config, self.state_dict())


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames (..., 3, H, W) float in [0, 1] -> (..., H, W, 3) uint8 on the CPU."""
    return (frames.clamp(0, 1) * 255).round().byte().movedim(-3, -1).cpu().numpy()


def load_world_model(path: str | os.PathLike, device: str | torch.device = "cpu",
                     rollout_dtype: str | None = None) -> WorldModel:
    """A checkpoint's world model in eval mode; `rollout_dtype` overrides the precision its config names."""
    meta, state = load_checkpoint(path, KIND)
    if meta.get("architecture") != ARCH:
        raise CheckpointError(
            f"{path}: world-model architecture {meta.get('architecture')!r} is not supported (expected {ARCH!r})")
    try:
        cfg = WMConfig.from_json(meta["config"])
        model = WorldModel(cfg)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: world-model config is invalid ({exc})") from exc
    load_into(model, state, f"world model {path}")
    if rollout_dtype is not None:
        model.set_rollout_dtype(rollout_dtype)
    return model.to(device, memory_format=torch.channels_last).eval()
