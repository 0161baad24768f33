"""Latent dynamics: one forward pass per frame, causal, with a recurrent state across frames.

Each step maps (current latent, context latent, recurrent state, action condition) to the latent
**change** for the next frame, a gated update of the recurrent state (the equivalent of a KV cache:
everything the model keeps from earlier frames) and a prediction of the next proprio state
(auxiliary target that makes the hand position explicit). Every block is FiLM-conditioned on an
embedding of the action, of the commanded displacement since the context (the running sum of
actions) and of a flag for frames whose action is unknown (extra context frames).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.world_model.autoencoder import Upsample
from models.world_model.config import WMConfig


class FiLMBlock(nn.Module):
    """Residual conv block whose input is scaled and shifted per channel by the condition."""

    def __init__(self, ch: int, cond_dim: int) -> None:
        super().__init__()
        self.film = nn.Linear(cond_dim, 2 * ch)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, 1)
        h = F.silu(x) * (1.0 + scale) + shift
        return x + self.conv2(F.silu(self.conv1(h)))


def cond_features(cfg: WMConfig) -> int:
    return cfg.action_dim * (2 if cfg.cumulative_actions else 1) + 1


class LatentDynamics(nn.Module):
    def __init__(self, cfg: WMConfig) -> None:
        super().__init__()
        lat, c_hi, c_lo, s, e = (cfg.latent_channels, cfg.dyn_channels, cfg.dyn_channels_low, cfg.state_channels,
                                 cfg.cond_dim)
        self.state_channels = s
        self.cond = nn.Sequential(nn.Linear(cond_features(cfg), e), nn.SiLU(), nn.Linear(e, e), nn.SiLU())
        self.inp = nn.Conv2d(lat + s, c_hi, 3, padding=1)
        self.inp_ctx = nn.Conv2d(lat, c_hi, 3, padding=1, bias=False)  # the context latent's share, once per rollout
        self.hi1 = FiLMBlock(c_hi, e)
        self.down = nn.Conv2d(c_hi, c_lo, 4, stride=2, padding=1)
        self.lo = nn.ModuleList([FiLMBlock(c_lo, e) for _ in range(cfg.dyn_blocks_low)])
        self.up = Upsample(c_lo, c_hi)
        self.merge = nn.Conv2d(2 * c_hi, c_hi, 1)
        self.hi2 = FiLMBlock(c_hi, e)
        self.out_z = nn.Conv2d(c_hi, lat, 3, padding=1)
        self.out_state = nn.Conv2d(c_hi, 2 * s, 1)
        self.hand = nn.Linear(c_lo, cfg.proprio_dim)
        nn.init.zeros_(self.out_z.weight)
        nn.init.zeros_(self.out_z.bias)

    def init_state(self, z: torch.Tensor) -> torch.Tensor:
        return z.new_zeros(z.shape[0], self.state_channels, *z.shape[2:])

    def context(self, z_ctx: torch.Tensor) -> torch.Tensor:
        return self.inp_ctx(z_ctx)

    def step(
        self, z: torch.Tensor, ctx: torch.Tensor, state: torch.Tensor, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latent (N, lat, h, w), context(z_ctx), state (N, S, h, w), condition (N, F)
        -> next latent, next state, next proprio (normalised)."""
        e = self.cond(cond)
        x = F.silu(self.inp(torch.cat([z, state], 1)) + ctx)
        x1 = self.hi1(x, e)
        y = F.silu(self.down(x1))
        for block in self.lo:
            y = block(y, e)
        hand = self.hand(y.mean((2, 3)))
        x2 = self.hi2(self.merge(torch.cat([F.silu(self.up(y)), x1], 1)), e)
        x2 = F.silu(x2)
        gate, cand = self.out_state(x2).chunk(2, 1)
        gate = torch.sigmoid(gate)
        state = (1.0 - gate) * state + gate * torch.tanh(cand)
        return z + self.out_z(x2), state, hand
