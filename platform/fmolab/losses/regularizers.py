"""Priors on the outputs alone: DeFMO's time consistency, latent and sharpness losses; thesis 4.5's
contiguity and cross-correlation trajectory smoothing."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fmolab.losses.base import EPS, LOSSES, RegularizerLoss, binarize_st, choice, need


@LOSSES.register()
class TimeConsistency(RegularizerLoss):
    """DeFMO's time consistency: 1 - the normalized cross-correlation of consecutive renders, the best
    over shifts up to ``max_shift`` of the height and width (10% in the paper), averaged over pairs.

    Each render (straight RGBA, all channels together) is mean-centred and divided by its standard
    deviation, so NCC(shift) = mean over the image of a(x) * b(x + shift), zero outside the image.
    An object that moves by less than the search window between frames scores ~0 however fast
    it moves, as a correct render must (only the strip the shift uncovers is lost). All shifts at once
    by FFT on a grid padded by the window (no wrap-around).
    """

    def __init__(self, weight: float = 1.0, max_shift: float = 0.1):  # the paper's weight is 5 (defmo losses)
        super().__init__(weight)
        if not 0 <= max_shift < 0.5:
            raise ValueError(f"TimeConsistency: max_shift {max_shift} is a fraction of the size, in [0, 0.5)")
        self.max_shift = float(max_shift)

    def per_sample(self, batch, outputs):
        r = need(outputs, "renders", self.name, "outputs")
        if r.shape[1] < 2:
            return r.new_zeros(r.shape[0])
        dims = (2, 3, 4)
        z = (r - r.mean(dims, keepdim=True)) / r.std(dims, unbiased=False, keepdim=True).clamp_min(EPS)
        a, b = z[:, :-1], z[:, 1:]
        h, w = r.shape[-2:]
        sy, sx = int(h * self.max_shift), int(w * self.max_shift)
        size = (h + sy, w + sx)
        corr = torch.fft.irfft2(torch.fft.rfft2(a, s=size).conj() * torch.fft.rfft2(b, s=size), s=size).sum(2)
        window = torch.roll(corr, (sy, sx), (-2, -1))[..., : 2 * sy + 1, : 2 * sx + 1]  # |dy| <= sy, |dx| <= sx
        ncc = window.flatten(-2).amax(-1) / (r.shape[2] * h * w)
        return 1 - ncc.mean(1)


@LOSSES.register()
class Latent(RegularizerLoss):
    """Distance between the latents of the same blur on two backgrounds (``contrast_latent``);
    0 (no gradient) when the batch has no contrast inputs."""

    def __init__(self, weight: float = 1.0, kind: str = "l1"):
        super().__init__(weight)
        choice("Latent", "kind", kind, ("l1", "l2", "cosine"))
        self.kind = kind

    def per_sample(self, batch, outputs):
        z = need(outputs, "latent", self.name, "outputs")
        if "contrast_latent" not in outputs:
            return z.new_zeros(z.shape[0]).detach()
        zc = outputs["contrast_latent"]
        if self.kind == "cosine":
            return 1 - F.cosine_similarity(z.flatten(1), zc.flatten(1), dim=1)
        d = z - zc
        return (d.abs() if self.kind == "l1" else d.square()).flatten(1).mean(1)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """In bits, so 1 at alpha 0.5 and 0 at alpha 0 or 1."""
    p = p.clamp(EPS, 1 - EPS)
    return -(p * p.log() + (1 - p) * (1 - p).log()) / math.log(2)


@LOSSES.register()
class Sharpness(RegularizerLoss):
    """Binary entropy of the rendered alpha: semi-transparent pixels cost, 0 and 1 are free. Mean over
    the pixels, then over the rendered frames; ``frames=N``: summed over them and divided by a fixed N
    (DeFMO's: 24, so fewer rendered frames cost less)."""

    def __init__(self, weight: float = 1.0, frames: int = 0):
        super().__init__(weight)
        if frames < 0:
            raise ValueError(f"Sharpness: frames {frames} must be >= 0 (0: the mean over rendered frames)")
        self.frames = int(frames)

    def per_sample(self, batch, outputs):
        entropy = binary_entropy(need(outputs, "renders", self.name, "outputs")[:, :, 3]).mean((2, 3))
        return entropy.sum(1) / self.frames if self.frames else entropy.mean(1)


@LOSSES.register()
class Contiguity(RegularizerLoss):
    """Neighbourhood-mean alpha pushed to 0 or 1 (4m(1-m)): removes dither/striping (thesis 4.5).
    ``binary=true`` applies it to the straight-through rounded alpha, as used with binarized renders."""

    def __init__(self, weight: float = 1.0, size: int = 5, binary: bool = False):
        super().__init__(weight)
        self.size, self.binary = int(size) | 1, bool(binary)

    def per_sample(self, batch, outputs):
        alpha = need(outputs, "renders", self.name, "outputs")[:, :, 3]
        if self.binary:
            alpha = binarize_st(alpha)
        m = F.avg_pool2d(alpha, self.size, 1, self.size // 2, count_include_pad=False)
        return (4 * m * (1 - m)).mean((1, 2, 3))


def alpha_offsets(alpha: torch.Tensor, scale: int = 4, temperature: float = 0.05) -> torch.Tensor:
    """Soft-argmax shift between consecutive alpha maps ``[B,T,H,W]`` -> ``[B,T-1,2]`` (dy, dx) as a
    fraction of the image size. Cross-correlation by FFT on a zero-padded grid (no wrap-around)."""
    a = F.avg_pool2d(alpha, scale) if scale > 1 else alpha
    h, w = a.shape[-2:]
    size = (2 * h, 2 * w)
    f1 = torch.fft.rfft2(a[:, :-1], s=size)
    f2 = torch.fft.rfft2(a[:, 1:], s=size)
    corr = torch.fft.irfft2(f1.conj() * f2, s=size)  # corr[d] = sum_p a_t(p) a_t+1(p + d)
    norm = torch.sqrt(a[:, :-1].square().sum((-2, -1)) * a[:, 1:].square().sum((-2, -1)) + EPS)
    prob = torch.softmax((corr / norm[..., None, None]).flatten(-2) / temperature, -1).unflatten(-1, size)
    dy = torch.fft.fftfreq(2 * h, 1 / (2 * h), device=a.device, dtype=a.dtype) / h
    dx = torch.fft.fftfreq(2 * w, 1 / (2 * w), device=a.device, dtype=a.dtype) / w
    return torch.stack([(prob.sum(-1) * dy).sum(-1), (prob.sum(-2) * dx).sum(-1)], -1)


@LOSSES.register()
class TrajectorySmoothness(RegularizerLoss):
    """Thesis 4.5: offsets between consecutive alpha maps (cross-correlation, soft-argmax) should be
    equal, i.e. a smooth, constant-velocity trajectory. L1 of consecutive offset differences."""

    def __init__(self, weight: float = 1.0, scale: int = 4, temperature: float = 0.05):
        super().__init__(weight)
        self.scale, self.temperature = int(scale), float(temperature)

    def per_sample(self, batch, outputs):
        alpha = need(outputs, "renders", self.name, "outputs")[:, :, 3]
        if alpha.shape[1] < 3:
            return alpha.new_zeros(alpha.shape[0])
        off = alpha_offsets(alpha, self.scale, self.temperature)
        return (off[:, 1:] - off[:, :-1]).abs().sum(-1).mean(1)
