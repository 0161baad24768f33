"""The flow-matching action head and the σ-net: the same residual MLP over the flattened chunk.

Both read (x_t, t, cond): the noisy chunk, the flow time and the fused observation vector. Each
residual block is modulated by (cond, t) as in DiT's adaptive layer norm. The head outputs the
velocity; the σ-net outputs per-dimension log σ squashed by tanh into [log σ_min, log σ_max].
"""

from __future__ import annotations

import math

import torch
from torch import nn


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t ∈ [0, 1], [B] → [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, width: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation = nn.Linear(cond_dim, 3 * width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift, gate = self.modulation(c).chunk(3, dim=-1)
        y = self.norm(h) * (1 + scale) + shift
        return h + (1 + gate) * self.fc2(torch.nn.functional.silu(self.fc1(y)))


class ChunkMLP(nn.Module):
    """(x [B, chunk, A], t [B], cond [B, D]) → [B, chunk, A]."""

    def __init__(self, chunk: int, action_dim: int, cond_dim: int, width: int, depth: int, time_dim: int) -> None:
        super().__init__()
        self.chunk, self.action_dim, self.time_dim = chunk, action_dim, time_dim
        flat = chunk * action_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        self.inp = nn.Linear(flat + cond_dim, width)
        self.blocks = nn.ModuleList(ResBlock(width, cond_dim) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, flat)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = torch.nn.functional.silu(cond + self.time_mlp(time_embedding(t, self.time_dim)))
        h = self.inp(torch.cat([x.flatten(1), cond], dim=1))
        for block in self.blocks:
            h = block(h, c)
        return self.out(self.out_norm(h)).view(-1, self.chunk, self.action_dim)


class SigmaNet(nn.Module):
    """Per-dimension σ for the stochastic Euler steps, log σ = mid + half·tanh(raw) ∈ [log σ_min, log σ_max]."""

    def __init__(self, chunk: int, action_dim: int, cond_dim: int, width: int, depth: int, time_dim: int,
                 sigma_min: float, sigma_max: float) -> None:
        super().__init__()
        self.net = ChunkMLP(chunk, action_dim, cond_dim, width, depth, time_dim)
        nn.init.zeros_(self.net.out.weight)  # a fresh σ-net starts at the geometric middle of the range
        nn.init.zeros_(self.net.out.bias)
        lo, hi = math.log(sigma_min), math.log(sigma_max)
        self.mid, self.half = (hi + lo) / 2, (hi - lo) / 2

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.mid + self.half * torch.tanh(self.net(x, t, cond)))
