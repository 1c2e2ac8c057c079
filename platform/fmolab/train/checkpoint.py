"""A Train checkpoint folder: ``state.pt`` (model, optimizer, scheduler, :class:`TrainState`),
``best_model.pt`` (the weights best by the run's monitor) and ``config.json`` (the whole tree)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from fmolab.config import Config, to_dict
from fmolab.train.state import TrainState


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DDP wrapper."""
    return model.module if hasattr(model, "module") else model


def cpu_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}


def save(folder: Path, model, optimizer, scheduler, state: TrainState, best_weights: dict | None, cfg: Config) -> None:
    weights = cpu_weights(model)
    torch.save({"model": weights, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "train_state": state.to_dict()}, folder / "state.pt")
    torch.save(best_weights if best_weights is not None else weights, folder / "best_model.pt")
    (folder / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))


def restore(folder: Path, model, optimizer, scheduler) -> tuple[TrainState, dict]:
    """Load ``folder`` into model, optimizer and scheduler; returns the state and the best weights."""
    saved = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    unwrap(model).load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    best = torch.load(folder / "best_model.pt", map_location="cpu", weights_only=True)
    return TrainState.from_dict(saved["train_state"]), best
