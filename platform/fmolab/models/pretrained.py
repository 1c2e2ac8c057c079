"""Load torchvision-style ImageNet ResNet weights into an encoder, adapting the input channels."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("fmolab.models")

_PREFIXES = ("module.", "encoder.", "backbone.", "model.")
_UNUSED = ("fc.",)  # the classifier is removed from our encoder
_RUNNING = ("running_mean", "running_var", "num_batches_tracked")


def _read(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ImportError(f"{path} is a safetensors file but the safetensors package is not installed") from exc
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return state


def map_name(name: str) -> str:
    """Torchvision names are ours; only wrapper prefixes (DDP ``module.`` ...) are stripped."""
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if name.startswith(p):
                name, changed = name[len(p):], True
    return name


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB filters ``[O,3,k,k]`` -> ``[O,in_channels,k,k]``: repeated per stacked image and divided by
    the number of stacks, so a stack of identical images gives the ImageNet response."""
    if weight.shape[1] == in_channels:
        return weight
    stacks = in_channels / weight.shape[1]
    reps = -(-in_channels // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] / stacks


def load_pretrained(encoder: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Copy matching tensors from ``path``; returns ``{loaded, adapted, missing, unexpected, skipped, ignored}``.

    ``missing``: encoder tensors the file lacks; ``unexpected``: file tensors the encoder lacks (the
    classifier is expected there); ``skipped``: on both sides but with different shapes; ``ignored``:
    BatchNorm running statistics where our norm keeps none (GroupNorm takes only the affine weights).
    """
    if not path:
        log.debug("no pretrained weights given: random init")
        return {k: [] for k in ("loaded", "adapted", "missing", "unexpected", "skipped", "ignored")}
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pretrained weights {path} do not exist")
    source = {map_name(k): v for k, v in _read(path).items()}
    target = encoder.state_dict()
    report: dict[str, list[str]] = {k: [] for k in ("loaded", "adapted", "missing", "unexpected", "skipped", "ignored")}
    new_state = {}
    for name, value in source.items():
        if name not in target:
            leaf = name.rsplit(".", 1)[-1]
            kind = "ignored" if leaf in _RUNNING and name.rsplit(".", 1)[0] + ".weight" in target else "unexpected"
            report[kind].append(name)
            continue
        want = target[name]
        if name == "conv1.weight" and value.ndim == 4 and value.shape[1] != want.shape[1]:
            value = adapt_first_conv(value, want.shape[1])
            report["adapted"].append(name)
        if value.shape != want.shape:
            report["skipped"].append(f"{name} {tuple(value.shape)} != {tuple(want.shape)}")
            continue
        new_state[name] = value.to(want.dtype)
        report["loaded"].append(name)
    report["missing"] = [k for k in target if k not in source]
    if not new_state:
        raise ValueError(f"{path}: no tensor matches the encoder; is this a ResNet state dict? "
                         f"first keys: {list(source)[:5]}")
    encoder.load_state_dict(new_state, strict=False)
    unexpected = [k for k in report["unexpected"] if not k.startswith(_UNUSED)]
    log.info("pretrained %s: loaded %d tensors (%s adapted to %d input channels), missing %d, "
             "skipped %d, unexpected %d (+%d classifier), ignored %d running statistics", path, len(report["loaded"]),
             ", ".join(report["adapted"]) or "none", getattr(encoder, "in_channels", -1),
             len(report["missing"]), len(report["skipped"]), len(unexpected),
             len(report["unexpected"]) - len(unexpected), len(report["ignored"]))
    for kind in ("missing", "skipped"):
        if report[kind]:
            log.warning("pretrained %s: %s: %s", path, kind, ", ".join(report[kind][:20]))
    if unexpected:
        log.warning("pretrained %s: unexpected: %s", path, ", ".join(unexpected[:20]))
    return report
