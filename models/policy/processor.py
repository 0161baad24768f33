"""Pre- and post-processing around the network: action/proprio normalisation, image tensors, augmentation.

Normalisation statistics are buffers of the policy module, so they are saved in (and restored from)
the checkpoint with the weights. The network only ever sees normalised actions; everything that
leaves the policy (`act`, `sample_sde().actions`) is unnormalised to simulator units first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Normalizer(nn.Module):
    """x_norm = (x − center) / scale per dimension; `low`/`high` bound unnormalised outputs."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("low", torch.full((dim,), -torch.inf))
        self.register_buffer("high", torch.full((dim,), torch.inf))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, kind: str = "meanstd") -> Normalizer:
        """Statistics from samples x [N, dim]: "meanstd" or "quantile" (q01/q99 mapped to ±1)."""
        x = x.reshape(-1, x.shape[-1]).double()
        if kind == "quantile":
            lo, hi = torch.quantile(x, 0.01, dim=0), torch.quantile(x, 0.99, dim=0)
            center, scale = (hi + lo) / 2, (hi - lo) / 2
        else:
            center, scale = x.mean(0), x.std(0)
        # a constant dimension (a gripper that never moves) keeps unit scale instead of blowing up
        scale = torch.where(scale < 1e-4, torch.ones_like(scale), scale)
        self.center.copy_(center.float())
        self.scale.copy_(scale.float())
        self.low.copy_(x.min(0).values.float())
        self.high.copy_(x.max(0).values.float())
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) / self.scale

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Back to raw units, clipped to the range seen in training (the simulator's action box)."""
        return torch.maximum(torch.minimum(x * self.scale + self.center, self.high), self.low)

    def stats(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in ("center", "scale", "low", "high")}


def image_float(context: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, 3, H, W] (or [B, 3, H, W]) → float [B, 3C, H, W] in [-0.5, 0.5]."""
    if context.dim() == 4:
        context = context[:, None]
    if context.dim() != 5 or context.shape[2] != 3:
        raise ValueError(f"context must be uint8 [B, C, 3, H, W], got {tuple(context.shape)}")
    b, c, _, h, w = context.shape
    return context.reshape(b, 3 * c, h, w).float().div_(255.0).sub_(0.5)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by `pad` pixels, crop back at a random offset per image."""
    if pad <= 0:
        return images
    b, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(images.device)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device)[None]).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=images.device)[None]).view(b, 1, 1, w).expand(b, c, h, w)
    return out.gather(3, cols)
