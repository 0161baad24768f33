"""Frame metrics: PSNR, SSIM, and PSNR over the moving region (pixels that differ from the context frame).

All take frames in [0, 1] shaped (N, 3, H, W). Whole-frame PSNR is averaged per frame; the moving
region is pooled (squared error summed over all moving pixels of all frames, then converted), so
frames where almost nothing moves do not dominate the average.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MOVING_THRESHOLD = 0.05


def psnr_from_mse(mse: float | torch.Tensor) -> float | torch.Tensor:
    if isinstance(mse, torch.Tensor):
        return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))
    return 10.0 * math.log10(1.0 / max(float(mse), 1e-10))


def frame_psnr(pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N,) PSNR in dB."""
    return psnr_from_mse(((pred - real) ** 2).flatten(1).mean(1))


def moving_mask(real: torch.Tensor, context: torch.Tensor, threshold: float = MOVING_THRESHOLD) -> torch.Tensor:
    """(N, 1, H, W) bool: pixels where the real frame differs from the context frame by more than threshold."""
    return (real - context).abs().amax(1, keepdim=True) > threshold


def moving_sums(pred: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Summed squared error over the masked pixels (all channels) and the number of values summed."""
    m = mask.to(pred.dtype)
    return float((((pred - real) ** 2) * m).sum()), float(m.sum() * pred.shape[1])


def _gauss_window(size: int = 7, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(pred: torch.Tensor, real: torch.Tensor, size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (N, 3, H', W') with a Gaussian window (7x7 suits 64x64 frames), valid region only."""
    c = pred.shape[1]
    w = _gauss_window(size, sigma, pred.device).expand(c, 1, size, size).to(pred.dtype)
    c1, c2 = 0.01**2, 0.03**2
    mu_x = F.conv2d(pred, w, groups=c)
    mu_y = F.conv2d(real, w, groups=c)
    sxx = F.conv2d(pred * pred, w, groups=c) - mu_x**2
    syy = F.conv2d(real * real, w, groups=c) - mu_y**2
    sxy = F.conv2d(pred * real, w, groups=c) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def frame_ssim(pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N,) mean SSIM."""
    return ssim_map(pred, real).flatten(1).mean(1)
