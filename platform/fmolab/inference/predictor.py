"""A trained model ready for inference: :class:`Predictor` and where it comes from (:func:`load_predictor`)."""
from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fmolab.config import Config, config_from_dict
from fmolab.data.formats import InputFormat, build_format
from fmolab.geometry import valid_size
from fmolab.inference.options import check_ensemble


class DeblurError(ValueError):
    """Bad input for deblurring; the message names the file and what to do."""


def _flip(dims):
    return lambda x: torch.flip(x, dims)


def _transposed(flip):
    return lambda x: flip(x).transpose(-1, -2), lambda y: flip(y.transpose(-1, -2))


_FLIPS = (lambda x: x, _flip((-1,)), _flip((-2,)), _flip((-2, -1)))
# The 8 symmetries of the square as (transform of the input, its inverse on the renders): identity,
# the flips, then the same after a transpose; --ensemble N takes the first N.
TRANSFORMS = [(f, f) for f in _FLIPS] + [_transposed(f) for f in _FLIPS]


@dataclass
class Predictor:
    """Anything that maps stacked inputs ``[B,C,H,W]`` to renders ``[B,T,4,H,W]``.

    ``ensemble`` > 1: test-time self-ensemble, the renders of the first ``ensemble`` flips/transposes
    of the input, each undone, averaged in premultiplied colour (time order unchanged)."""

    config: Config
    model: torch.nn.Module  # rebuilt from the config by the installed fmolab, wherever the weights came from
    source: str
    ensemble: int = 1

    @functools.cached_property
    def input_format(self) -> InputFormat:
        """The training input format: which frames (and background) the model takes."""
        return build_format(self.config.data.format, self.config.data)

    def times(self, n: int) -> torch.Tensor:
        """``n`` equally spaced times of the exposure in the model's own convention."""
        return self.model.times(n)

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        """The size to feed an ``h x w`` input at: itself for a network that takes any size (the
        official DeFMO), else the nearest multiple of 16."""
        return (h, w) if getattr(self.model, "any_size", False) else valid_size(h, w)

    def render(self, inputs: np.ndarray, times: int | np.ndarray) -> np.ndarray:
        """Renders ``[B,T,4,H,W]`` of the exposure: at ``times`` equally spaced instants in the model's
        own convention (an int: what still images and videos ask for), or at arbitrary ``times [T]``
        (or ``[B,T]``: what evaluation asks for, at the benchmark's instants)."""
        device = next(self.model.parameters()).device  # an evaluation actor may have moved it to a GPU
        times = self.times(times) if isinstance(times, (int, np.integer)) else np.asarray(times, dtype=np.float32)
        t = torch.as_tensor(times, dtype=torch.float32, device=device)
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).to(device)
        if t.dim() == 1:
            t = t[None].expand(x.shape[0], -1)
        check_ensemble(self.ensemble)
        if self.ensemble == 1:
            with torch.no_grad():
                return self.model(x, t)["renders"].float().cpu().numpy()
        premultiplied = alpha = None
        with torch.no_grad():
            for forward, inverse in TRANSFORMS[: self.ensemble]:
                r = inverse(self.model(forward(x), t)["renders"].float())
                rgb, a = r[:, :, :3] * r[:, :, 3:], r[:, :, 3:]
                premultiplied = rgb if premultiplied is None else premultiplied + rgb
                alpha = a if alpha is None else alpha + a
        alpha = alpha / self.ensemble
        rgb = premultiplied / self.ensemble / alpha.clamp_min(1e-6)
        return torch.cat([rgb.clamp(0, 1), alpha], 2).cpu().numpy()

    @property
    def size(self) -> tuple[int, int]:
        """``(h, w)`` the model was trained at: the training dataset's manifest, else ``render.height/width``."""
        from fmolab.shards import read_manifest

        try:
            m = read_manifest(self.config.train_dir)
            if m.get("height") and m.get("width"):
                return valid_size(int(m["height"]), int(m["width"]))
        except Exception:  # the training data need not be on this machine
            pass
        return valid_size(self.config.render.height, self.config.render.width)


def load_predictor(source: str, cache: Path | None = None, store: str = "", setup=None) -> Predictor:
    """``models:/name@alias`` / ``runs:/id/<model name>`` (MLflow), or a checkpoint folder / ``best_model.pt``
    with ``config.json`` beside it. With ``cache`` (a folder) and ``store`` (the tracking URI), a model
    fetched once is read from the cache while the registry still names the same version
    (:mod:`fmolab.tracking.model_cache`); ``setup`` is called before MLflow is needed (a cache hit never
    imports it)."""
    if "://" in source or source.startswith("models:/") or source.startswith("runs:/"):
        from fmolab.tracking import model_cache

        key = model_cache.version_key(source, store) if cache and store else None
        hit = model_cache.lookup(cache, key)
        if hit:
            cfg = config_from_dict(json.loads(hit[0].read_text()))
            return Predictor(cfg, load_network(cfg, hit[1]), source)
        if setup is not None:
            setup()
        from fmolab.tracking.model_registry import ModelNotFound, fetch_model_files

        with tempfile.TemporaryDirectory(prefix="model-") as tmp:
            try:
                config_file, weights = fetch_model_files(source, tmp)
            except ModelNotFound as exc:
                raise DeblurError(str(exc)) from None
            cfg = config_from_dict(json.loads(Path(config_file).read_text()))
            predictor = Predictor(cfg, load_network(cfg, weights), source)
            model_cache.keep(cache, key, config_file, weights)
            return predictor
    path = Path(source)
    weights = path / "best_model.pt" if path.is_dir() else path
    config_file = weights.parent / "config.json"
    if not weights.exists() or not config_file.exists():
        raise DeblurError(f"{source}: expected models:/NAME@ALIAS, runs:/ID/NAME, or a checkpoint "
                          f"folder holding best_model.pt and config.json")
    cfg = config_from_dict(json.loads(config_file.read_text()))
    return Predictor(cfg, load_network(cfg, weights), source)


def load_network(cfg: Config, weights: str | Path) -> torch.nn.Module:
    """The network of ``cfg`` with the state dict in ``weights`` (``weights_only``: nothing is unpickled)."""
    from fmolab.models import build_model

    model = build_model(cfg.model, build_format(cfg.data.format).in_channels)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


class ModelActor:
    """A Ray actor holding one model (evaluation's scorers, batch deblurring): the driver's tracking
    store and settings, the model loaded once, moved to the node's GPU when it has one."""

    def __init__(self, model: str, tracking_uri: str, env: dict, ensemble: int = 1):
        import os

        import mlflow

        os.environ.update(env)  # the object store's endpoint and region (worker_env)
        mlflow.set_tracking_uri(tracking_uri)  # the registry the driver loaded the model from
        mlflow.set_registry_uri(tracking_uri)
        self.predictor = load_predictor(model)
        self.predictor.ensemble = ensemble
        if torch.cuda.is_available():
            self.predictor.model.to("cuda")
