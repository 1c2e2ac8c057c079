"""``fmolab import defmo`` / ``fmolab export defmo``: the published DeFMO weight files in and out.

Import reads ``encoder_best.pt`` and ``rendering_best.pt`` with ``weights_only`` (nothing is unpickled),
maps every tensor strictly into the ``defmo`` preset's network (:mod:`fmolab.models.official`), logs it as
an MLflow model (time convention ``endpoints``, as the weights were trained) and points ``ALIAS`` at it.
Export writes the same two files from any model of that structure, so weights trained here run in the
official code and in ``kornia.feature.DeFMO``.
"""
from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import torch

from fmolab import storage
from fmolab.config import ConfigError

FILES = ("encoder_best.pt", "rendering_best.pt")


def _read(path: str) -> dict:
    try:
        state = torch.load(storage.local(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except Exception as exc:
        raise ConfigError(f"{path} is not a PyTorch state dict that loads with weights_only ({exc})") from exc
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    return state


def import_defmo(encoder: str, rendering: str, register: str, alias: str = "official", *,
                 work_dir: str = "", experiment: str = "fmolab-import") -> dict:
    """Load the official files into the official network, log it and register ``register@alias``."""
    from fmolab.config import load_config, preset_path
    from fmolab.models import build_model
    from fmolab.models.official import load_official
    from fmolab.runtime import work_config
    from fmolab.tracking import model_registry
    from fmolab.tracking.store import create_run, setup_tracking

    where = work_config(work_dir)
    if not register:
        raise ConfigError("--register NAME: the registered model name to import the weights as")
    states = _read(encoder), _read(rendering)  # before anything else: clear errors on bad files
    cfg = load_config([preset_path("defmo")], [f"runtime.work_dir={where.work_dir}", "model.time_convention=endpoints",
                                               "tracking.experiment=" + experiment])
    model = build_model(cfg.model, 6)
    load_official(model, *states, source=f"{encoder} + {rendering}")
    setup_tracking(cfg)
    digests = {name: hashlib.sha1(storage.read_bytes(p)).hexdigest() for name, p in zip(FILES, (encoder, rendering))}
    run_id = create_run(cfg, experiment, f"import-defmo-{time.strftime('%Y%m%d-%H%M%S')}",
                        {"fmolab.kind": "import", "source.encoder": storage.normalize(encoder),
                         "source.rendering": storage.normalize(rendering),
                         **{f"sha1.{k}": v for k, v in digests.items()}}, command="import defmo")
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "best_model.pt"
        torch.save(model.state_dict(), weights)
        uri = model_registry.log_model(cfg, weights, run_id)
    version = model_registry.register(uri, register, alias, tags={"source": "official DeFMO weights"})
    import mlflow

    mlflow.MlflowClient().set_terminated(run_id)
    return {"model_uri": uri, "registered": f"models:/{register}@{alias}", "version": version, "run_id": run_id}


def export_defmo(model_source: str, out: str, *, work_dir: str = "") -> dict:
    """Write the official two files of a model of the official structure into ``out`` (a folder or URI)."""
    from fmolab.inference.predictor import load_predictor
    from fmolab.models.official import official_state_dicts
    from fmolab.runtime import work_config
    from fmolab.tracking.store import setup_tracking

    setup_tracking(work_config(work_dir))
    encoder, rendering = official_state_dicts(load_predictor(model_source).model)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, state in zip(FILES, (encoder, rendering)):
            torch.save(state, Path(tmp) / name)
            written.append(storage.upload(Path(tmp) / name, storage.join(out, name)))
    return {"files": written, "tensors": len(encoder) + len(rendering)}
