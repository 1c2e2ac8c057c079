"""SSIM and MS-SSIM (Gaussian window) as differentiable per-sample similarities; used by losses."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003
C1, C2 = 0.01 ** 2, 0.03 ** 2


def _blur(x: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter, valid padding, per channel."""
    coords = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, size), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, size, 1), groups=c)


def _parts(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    size = min(size, x.shape[-2], x.shape[-1])
    size -= 1 - size % 2  # odd window that fits small images
    sigma = sigma * size / 11
    mx, my = _blur(x, size, sigma), _blur(y, size, sigma)
    sxx = _blur(x * x, size, sigma) - mx * mx
    syy = _blur(y * y, size, sigma) - my * my
    sxy = _blur(x * y, size, sigma) - mx * my
    cs = (2 * sxy + C2) / (sxx + syy + C2)
    lum = (2 * mx * my + C1) / (mx * mx + my * my + C1)
    return (lum * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[B,C,H,W]`` x2 -> ``[B]`` in [-1, 1], 1 for identical images."""
    return _parts(x, y)[0]


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Multi-scale SSIM; fewer than 5 scales for small images (weights renormalized)."""
    levels = max(1, min(len(MS_WEIGHTS), 1 + int(math.log2(max(min(x.shape[-2:]) / 4, 1)))))
    weights = torch.tensor(MS_WEIGHTS[:levels], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    out = x.new_ones(x.shape[0])
    for level in range(levels):
        full, cs = _parts(x, y)
        value = full if level == levels - 1 else cs
        out = out * value.clamp_min(1e-6) ** weights[level]  # negative cs would make the power NaN
        if level < levels - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return out
