"""Priors on the outputs alone: DeFMO's time consistency, latent and sharpness losses; thesis 4.5's
contiguity and cross-correlation trajectory smoothing."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fmolab.losses.base import EPS, LOSSES, RegularizerLoss, binarize_st, choice, need


@LOSSES.register()
class TimeConsistency(RegularizerLoss):
    """1 - normalized cross-correlation of consecutive renders, the best over shifts up to
    ``max_shift`` pixels (so a small move between frames is not penalized for moving).

    On premultiplied RGBA (invisible colour must not count), normalized by the norms, not
    mean-centred: a zero background then contributes nothing and a pure shift scores exactly 1.
    All shifts at once by FFT on a grid padded by ``max_shift`` (no wrap-around).
    """

    def __init__(self, weight: float = 1.0, max_shift: int = 2):
        super().__init__(weight)
        self.max_shift = int(max_shift)

    def per_sample(self, batch, outputs):
        r = need(outputs, "renders", self.name, "outputs")
        if r.shape[1] < 2:
            return r.new_zeros(r.shape[0])
        r = torch.cat([r[:, :, :3] * r[:, :, 3:], r[:, :, 3:]], 2)
        a, b = r[:, :-1], r[:, 1:]
        s, (h, w) = self.max_shift, r.shape[-2:]
        size = (h + s, w + s)
        corr = torch.fft.irfft2(torch.fft.rfft2(a, s=size).conj() * torch.fft.rfft2(b, s=size), s=size).sum(2)
        window = torch.roll(corr, (s, s), (-2, -1))[..., : 2 * s + 1, : 2 * s + 1]  # shifts |dy|, |dx| <= s
        best = window.flatten(-2).amax(-1)
        norm = torch.sqrt(a.square().sum((2, 3, 4)) * b.square().sum((2, 3, 4)) + EPS)
        return 1 - (best / norm).mean(1)


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
    """Binary entropy of the rendered alpha: semi-transparent pixels cost, 0 and 1 are free."""

    def per_sample(self, batch, outputs):
        return binary_entropy(need(outputs, "renders", self.name, "outputs")[:, :, 3]).mean((1, 2, 3))


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
