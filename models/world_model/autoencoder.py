"""Frame autoencoder: a 64x64 frame <-> a continuous latent grid at 1/4 resolution, decoded
conditioned on the context frame.

Why continuous latents and a context-conditioned decoder (measured, see docs/world_model.md): an
8x8 FSQ grid erased the puck, the goal markers and the fingers, and a plain 16x16 autoencoder
capped the moving region at 18.6 dB. Here the decoder also sees features of the context frame
(as iVideoGPT decodes its dynamics tokens conditioned on the context), so the static scene is
copied at full resolution and the latent's capacity goes to what moves. The latent is bounded by
tanh and trained with additive noise, so the decoder tolerates the dynamics model's errors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.world_model.config import WMConfig


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class Upsample(nn.Module):
    """1x1 conv to 4x the channels, then pixel shuffle: cheaper than a transposed 4x4 conv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, 4 * cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.proj(x), 2)


class ContextFeatures(nn.Module):
    """Features of the context frame at half resolution, computed once per rollout: learned
    features plus the frame's own pixels (each 2x2 block as 12 channels), so the decoder can copy
    or cancel exact context pixels."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(12, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        px = F.pixel_unshuffle(x, 2)
        return torch.cat([F.silu(self.conv(px)), px], 1)


class FrameAutoencoder(nn.Module):
    def __init__(self, cfg: WMConfig) -> None:
        super().__init__()
        e1, e2 = cfg.enc_channels
        d1, d2 = cfg.dec_channels
        lat = cfg.latent_channels
        self.latent_channels = lat
        # full resolution enters as 2x2 pixel blocks: no convolution ever runs at 64x64
        self.encoder = nn.Sequential(
            nn.PixelUnshuffle(2), nn.Conv2d(12, e1, 3, padding=1),
            *[ResBlock(e1) for _ in range(cfg.enc_half_blocks)], nn.SiLU(),
            nn.Conv2d(e1, e2, 4, stride=2, padding=1),
            *[ResBlock(e2) for _ in range(cfg.enc_blocks)], nn.SiLU(),
            nn.Conv2d(e2, lat, 1),
        )
        self.context = ContextFeatures(cfg.ctx_channels)
        self.dec_in = nn.Conv2d(lat, d2, 3, padding=1)
        self.dec_in_ctx = nn.Conv2d(lat, d2, 3, padding=1, bias=False)
        self.dec_blocks = nn.Sequential(*[ResBlock(d2) for _ in range(cfg.dec_blocks)])
        self.up = Upsample(d2, d1)
        # fuse(cat[upsampled, context]) split in two: the context half is computed once per rollout
        self.fuse = nn.Conv2d(d1, d1, 3, padding=1)
        self.fuse_ctx = nn.Conv2d(cfg.ctx_channels + 12, d1, 3, padding=1, bias=False)
        self.half_blocks = nn.Sequential(*[ResBlock(d1) for _ in range(cfg.dec_half_blocks)])
        self.out = nn.Conv2d(d1, 12, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Frames in [0, 1], (N, 3, H, W) -> latents in [-1, 1], (N, lat, H/4, W/4)."""
        return torch.tanh(self.encoder(x * 2.0 - 1.0))

    def context_state(self, ctx: torch.Tensor, z: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Everything the decoder needs from the context frame (N, 3, H, W) in [0, 1]; `z`: its latent when the
        caller has already encoded it."""
        z = self.encode(ctx) if z is None else z
        return {"frame": ctx, "c1": self.fuse_ctx(self.context(ctx * 2.0 - 1.0)), "c2": self.dec_in_ctx(z), "z": z}

    def decode(self, z: torch.Tensor, ctx: dict[str, torch.Tensor]) -> torch.Tensor:
        """Latents (N, lat, h, w) + context state of the same N -> frames (N, 3, H, W), unclamped.

        The output is the context frame plus a predicted change, emitted at half resolution as
        2x2 pixel blocks."""
        h = F.silu(self.dec_in(z) + ctx["c2"])
        h = self.dec_blocks(h)
        h = F.silu(self.fuse(F.silu(self.up(h))) + ctx["c1"])
        h = F.silu(self.half_blocks(h))
        return ctx["frame"] + F.pixel_shuffle(self.out(h), 2)


def expand_context(ctx: dict[str, torch.Tensor], repeats: int) -> dict[str, torch.Tensor]:
    """Context state for N items -> for N*repeats items (item-major), without copying where possible."""
    out = {}
    for k, v in ctx.items():
        n = v.shape[0]
        out[k] = v.unsqueeze(1).expand(n, repeats, *v.shape[1:]).reshape(n * repeats, *v.shape[1:])
    return out
