"""The verified reward of VLA-RFT: how closely a rollout under some actions follows the reference
rollout under the ground-truth actions.

    r = -mean_t [ MAE(pred_t, ref_t) + lam * perceptual(pred_t, ref_t) ]

Frames are in [0, 1], shaped (B, T, 3, H, W). The paper uses LPIPS as the perceptual term; its
VGG weights are not available offline, so the perceptual term here needs no downloaded weights:
`ssim_distance` (1 - SSIM) or any callable mapping two (N, 3, H, W) batches to (N,) distances.
DEFAULT_LAMBDA is what measured best for agreement with the simulator's own reward (see
docs/results.md, reward fidelity).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.world_model.metrics import frame_ssim
from sim.errors import InputError

Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULT_LAMBDA = 0.0


class RewardInputError(InputError):
    pass


def ssim_distance(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) x2 -> (N,) 1 - SSIM (7x7 Gaussian window)."""
    return 1.0 - frame_ssim(pred, ref)


PERCEPTUAL: dict[str, Perceptual] = {"ssim": ssim_distance}


def _check(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if pred.dim() != 5 or pred.shape[2] != 3:
        raise RewardInputError(f"pred must be (B, T, 3, H, W) frames, got shape {tuple(pred.shape)}")
    if ref.dim() != 5 or ref.shape[1:] != pred.shape[1:] or ref.shape[0] not in (1, pred.shape[0]):
        raise RewardInputError(f"ref {tuple(ref.shape)} does not match pred {tuple(pred.shape)}")
    return ref.expand_as(pred)


def per_frame_distance(
    pred: torch.Tensor, ref: torch.Tensor, lam: float = DEFAULT_LAMBDA, perceptual: Perceptual | str | None = None
) -> torch.Tensor:
    """(B, T) distances MAE + lam * perceptual. `ref` may have batch size 1 (one reference for all)."""
    ref = _check(pred, ref)
    pred, ref = pred.float(), ref.float()
    d = (pred - ref).abs().flatten(2).mean(2)
    if lam:
        fn = PERCEPTUAL["ssim"] if perceptual is None else perceptual
        if isinstance(fn, str):
            if fn not in PERCEPTUAL:
                raise RewardInputError(f"unknown perceptual term '{fn}': choose from {', '.join(PERCEPTUAL)}")
            fn = PERCEPTUAL[fn]
        b, t = pred.shape[:2]
        d = d + lam * fn(pred.flatten(0, 1), ref.flatten(0, 1)).reshape(b, t)
    return d


def verified_reward(
    pred: torch.Tensor, ref: torch.Tensor, lam: float = DEFAULT_LAMBDA, perceptual: Perceptual | str | None = None
) -> torch.Tensor:
    """(B, T, 3, H, W) rollouts vs reference -> (B,) reward = -mean over frames of the distance."""
    return -per_frame_distance(pred, ref, lam, perceptual).mean(1)
