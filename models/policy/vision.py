"""Vision encoder trained from scratch: a small CNN down to a 16×16 map, then spatial-softmax keypoints.

Keypoints (the expected x, y of K learned feature maps) locate small things such as a goal marker
to sub-pixel precision, which an average-pooled feature would blur away.
"""

from __future__ import annotations

import torch
from torch import nn

FINAL_MAP = 16


def _block(cin: int, cout: int, stride: int, kernel: int = 3) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2),
        nn.GroupNorm(groups, cout),
        nn.SiLU(),
    )


class SpatialSoftmax(nn.Module):
    """[B, C, H, W] → [B, 2K]: the softmax-weighted mean (x, y) in [-1, 1] of K keypoint maps."""

    def __init__(self, channels: int, keypoints: int, height: int, width: int) -> None:
        super().__init__()
        self.to_maps = nn.Conv2d(channels, keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(1))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], 1), persistent=False)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        maps = self.to_maps(feat).flatten(2)  # [B, K, HW]
        attn = torch.softmax(maps / self.log_temperature.exp(), dim=-1)
        return (attn @ self.grid).flatten(1)  # [B, 2K]


class VisionEncoder(nn.Module):
    def __init__(self, image_size: int, in_frames: int, channels: tuple[int, ...], keypoints: int,
                 stem_stride: int = 2) -> None:
        super().__init__()
        layers, size, cin = [], image_size, 3 * in_frames
        for i, cout in enumerate(channels):
            stride = min(stem_stride if i == 0 else 2, max(1, size // FINAL_MAP))
            layers.append(_block(cin, cout, stride, kernel=stride + 3 if i == 0 and stride > 1 else 3))
            size = (size + stride - 1) // stride
            cin = cout
        while size > FINAL_MAP:  # large images: extra stride-2 layers until the map is 16×16
            layers.append(_block(cin, cin, 2))
            size = (size + 1) // 2
        self.net = nn.Sequential(*layers)
        self.keypoints = SpatialSoftmax(cin, keypoints, size, size)
        self.out_dim = 2 * keypoints + cin

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """float [B, 3C, H, W] in [-0.5, 0.5] → [B, out_dim]."""
        feat = self.net(images)
        return torch.cat([self.keypoints(feat), feat.mean(dim=(2, 3))], dim=1)
