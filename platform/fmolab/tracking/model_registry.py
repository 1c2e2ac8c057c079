"""Models in MLflow: logging, the registry and its aliases, loading.

Models are logged as a pyfunc "model from code" (``fmolab/inference/mlflow_model.py``) with two
artifacts: the config tree (JSON) and a state dict. Loading rebuilds the network from the config and
reads the weights with ``torch.load(weights_only=True)``: no pickled Python objects, any batch size and
resolution (a torch.export-ed model would fix the input shape).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fmolab.config import Config, to_dict

PACKAGE = Path(__file__).resolve().parents[1]  # the fmolab package a logged model carries
MODEL_CODE = PACKAGE / "inference" / "mlflow_model.py"


def pip_requirements() -> list[str]:
    """Requirements of a logged model; torch pinned to the public version the user has (a +cpu build
    satisfies ``torch==X.Y.Z``), so serving never swaps the user's torch for a CUDA download."""
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", "pyyaml", "pillow"]


def model_name(cfg: Config) -> str:
    """A logged model's name: variant and run (``double_blur-demo``), as the Models tab lists it."""
    name = f"{cfg.variant}-{cfg.train.run_name}" if cfg.train.run_name else cfg.variant
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:200]


def log_model(cfg: Config, state_dict_path: str | os.PathLike, run_id: str, name: str = "",
              step: int = 0, metrics: dict[str, float] | None = None) -> str:
    """Log the model of ``run_id`` from a weights file as ``name`` (default :func:`model_name`), made at
    training step ``step``, with ``metrics`` (the validation at that step) linked to it so models can
    be compared by them; returns the model URI (``models:/<model id>``)."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(to_dict(cfg), indent=2))
        signature = ModelSignature(
            # unnamed tensors: predict() receives and returns plain arrays (a named one becomes a dict)
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1, -1))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, 4, -1, -1))]),
            params=ParamSchema([ParamSpec("num_frames", "integer", cfg.data.frames_per_sample)]),
        )
        # Leaving start_run marks the run FINISHED: put back the status it had (a search's KILLED trial,
        # a training run its driver ends later with its end reason).
        status = mlflow.MlflowClient().get_run(run_id).info.status
        # MLflow warns on every log that predict() has no type hints and that no input example was given:
        # neither applies (arrays in and out, declared by the signature above).
        with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*(type hint|input example).*")
            info = mlflow.pyfunc.log_model(
                name=name or model_name(cfg),
                step=max(0, int(step)),
                params={"variant": cfg.variant, "dataset": cfg.train_dir, "monitor": cfg.train.monitor.metric,
                        "encoder": cfg.model.encoder, "renderer": cfg.model.renderer},
                python_model=str(MODEL_CODE),
                artifacts={"config": str(config_path), "weights": str(state_dict_path)},
                code_paths=[str(PACKAGE)],  # the model carries the fmolab it was made with
                pip_requirements=pip_requirements(),
                signature=signature,
            )
    if status != "FINISHED":
        mlflow.MlflowClient().update_run(run_id, status=status)
    # MLflow 3 links every metric the run logged at ``step`` to the model (as the same entries); only
    # those the run lacks are logged here (a metric logged again with a new time would be a second
    # entry at that step in the run's history).
    client, step = mlflow.MlflowClient(), max(0, int(step))
    linked = {m.key for m in client.get_logged_model(info.model_id).metrics or []}
    for k, v in (metrics or {}).items():
        if k not in linked:
            client.log_metric(run_id, k, float(v), timestamp=int(time.time() * 1000), step=step,
                              model_id=info.model_id)
    return info.model_uri


def validation_at(run_id: str, step: int) -> dict[str, float]:
    """Every ``val/*`` metric of ``run_id`` as logged at ``step`` (the best checkpoint's validation)."""
    import mlflow

    client = mlflow.MlflowClient()
    out = {}
    for key in client.get_run(run_id).data.metrics:
        if key.startswith("val/") and key != "val/animation_step":
            at = [m.value for m in client.get_metric_history(run_id, key) if m.step == step]
            if at:
                out[key] = at[-1]
    return out


def describe_version(cfg: Config, *, steps_done: int, best_step: int, best_value: float,
                     linked: dict[str, float], digest: str, metrics: dict | None = None) -> str:
    """A registered version's description: data, steps, the monitored metric and its value, whether and
    when it animated (``metrics``: the run's last report), the rest."""
    from fmolab.tracking.ending import animation_note

    monitor = cfg.train.monitor
    lines = [f"{cfg.variant} model of run {cfg.train.run_name}, trained on {cfg.train_dir} (manifest sha1 "
             f"{digest[:12]}) for {steps_done} of {cfg.train.steps} steps.",
             f"Best {monitor.metric} ({monitor.mode}) = {float(best_value):.5g} at step {best_step}."]
    if metrics is not None:
        lines.append(animation_note(metrics))
    others = {k: v for k, v in linked.items() if k != monitor.metric}
    if others:
        lines.append("At that step: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(others.items())) + ".")
    return "\n".join(lines)


def register(model_uri: str, name: str, alias: str, tags: dict[str, str] | None = None,
             description: str = "") -> int:
    """Register ``model_uri`` under ``name`` (the version described by ``description``) and point
    ``alias`` at the new version."""
    import mlflow

    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    shown, MLFLOW_LOGGING_STREAM.enabled = MLFLOW_LOGGING_STREAM.enabled, False  # its "Created version" prints:
    try:  # the caller says which version, under which alias
        version = mlflow.register_model(model_uri, name, tags=tags or {})
    finally:
        MLFLOW_LOGGING_STREAM.enabled = shown
    client = mlflow.MlflowClient()
    if description:
        client.update_model_version(name, version.version, description=description)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return int(version.version)


def promote(name: str, alias: str, version: int | None = None, from_alias: str = "") -> int:
    """Point ``alias`` at ``version`` (or at whatever ``from_alias`` points to); returns the version."""
    import mlflow

    client = mlflow.MlflowClient()
    if version is None:
        if not from_alias:
            raise ValueError("promote needs a version or another alias to copy")
        version = int(client.get_model_version_by_alias(name, from_alias).version)
    client.set_registered_model_alias(name, alias, str(version))
    return version


class ModelNotFound(ValueError):
    """A model URI that names nothing in the store (or no fmolab model); the message says where."""


def fetch_model_files(uri: str, folder: str | os.PathLike) -> tuple[str, str]:
    """The config and weights files of the logged/registered model ``uri``, downloaded into ``folder``
    without loading the model: fmolab rebuilds the network from the installed package, so code stored
    with a model (its ``mlflow_model.py`` and ``code/``) is never imported, whoever wrote the store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    store = mlflow.get_tracking_uri()
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///"):]).exists():
        raise ModelNotFound(f"{uri}: there is no MLflow store at {store} (nothing was trained with this work "
                            f"folder); give --work-dir / FMOLAB_HOME, or MLFLOW_TRACKING_URI of the store that has it")
    folder = str(folder)
    try:
        mlmodel = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{uri.rstrip('/')}/MLmodel", dst_path=folder))
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ModelNotFound(f"{uri}: not found in the MLflow store {store} ({first}); list runs with "
                            f"`fmolab runs list --experiment NAME`, registered models in the MLflow UI") from None
    import yaml

    spec = yaml.safe_load(mlmodel.read_text()) or {}
    artifacts = (spec.get("flavors", {}).get("python_function", {}).get("artifacts") or {})
    paths = {k: (artifacts.get(k) or {}).get("path") for k in ("config", "weights")}
    if not all(paths.values()):
        raise ModelNotFound(f"{uri}: an MLflow model, but not an fmolab one (no config and weights artifacts)")
    files = [mlflow.artifacts.download_artifacts(artifact_uri=f"{uri.rstrip('/')}/{p}", dst_path=folder)
             for p in (paths["config"], paths["weights"])]
    return files[0], files[1]


def load_model(uri: str) -> Any:
    """Load a logged/registered model (``models:/name@alias``, ``runs:/...``) as an MLflow pyfunc (for
    serving; it imports the ``code/`` stored with the model: fmolab's own commands use
    :func:`fetch_model_files` instead)."""
    import mlflow

    return mlflow.pyfunc.load_model(uri)
