"""MLflow: tracking setup (SQLite by default, HTTP server on a cluster), model logging and the registry.

Models are logged as a pyfunc "model from code" (``fmolab/mlflow_model.py``) with two artifacts: the
config tree (JSON) and a state dict. Loading rebuilds the network from the config and reads the
weights with ``torch.load(weights_only=True)``: no pickled Python objects, any batch size and
resolution (a torch.export-ed model would fix the input shape).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from fmolab.config import Config, flatten, to_dict

log = logging.getLogger("fmolab")

MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
RUN_NAME_TAG = "fmolab.run_name"


class TrackingError(RuntimeError):
    """The tracking server cannot be reached or refuses a request."""


def setup_tracking(cfg: Config) -> str:
    """Point MLflow at ``cfg.tracking_uri``; fail within ``tracking.timeout`` s if a server is down."""
    import mlflow

    uri = cfg.tracking_uri
    if uri.startswith(("http://", "https://")):
        check_server(uri, cfg.tracking.timeout)
        # Without these MLflow retries for minutes before giving up.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(cfg.tracking.timeout, 5))))
    elif uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which would outlive this config (later
    # configs in the process read it first, jobs submitted from it inherit it): put the variable back.
    # MLflow keeps the URI itself; Ray workers get it explicitly with their config.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous
    mlflow.set_registry_uri(uri)
    return uri


def check_server(uri: str, timeout: float) -> None:
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise TrackingError(f"MLflow server {uri} answered /health with HTTP {resp.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({exc}). Start it (see mlflow/README.md), "
            f"fix MLFLOW_TRACKING_URI / tracking.uri, or unset them to use the local SQLite store."
        ) from exc


def ensure_experiment(cfg: Config) -> str:
    """Experiment id; artifacts of a local store go below the work folder, not the current directory."""
    import mlflow

    exp = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not cfg.tracking_uri.startswith(("http://", "https://", "databricks")):
        location = (cfg.work_dir / "mlartifacts").absolute().as_uri()
    return mlflow.create_experiment(cfg.tracking.experiment, artifact_location=location)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def start_or_resume_run(cfg: Config, run_name: str, tags: dict[str, str]) -> str:
    """The MLflow run of training ``run_name``: the existing one when resuming, else a new one."""
    import mlflow

    exp_id = ensure_experiment(cfg)
    found = mlflow.search_runs([exp_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
                               output_format="list", max_results=1)
    if found:
        return found[0].info.run_id
    client = mlflow.MlflowClient()
    run = client.create_run(exp_id, run_name=run_name, tags={RUN_NAME_TAG: run_name, **tags})
    params = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in flatten(to_dict(cfg)).items()}
    items = list(params.items())
    for i in range(0, len(items), 90):  # MLflow caps a batch at 100 params
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in items[i:i + 90]])
    return run.info.run_id


# ---------------------------------------------------------------- models


def pip_requirements() -> list[str]:
    """Requirements of a logged model; torch pinned to the public version the user has (a +cpu build
    satisfies ``torch==X.Y.Z``), so serving never swaps the user's torch for a CUDA download."""
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", "pyyaml", "pillow"]


def log_model(cfg: Config, state_dict_path: str | os.PathLike, run_id: str, name: str = "model") -> str:
    """Log the model of ``run_id`` from a weights file; returns the model URI ``runs:/<id>/<name>``."""
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
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=str(MODEL_CODE),
                artifacts={"config": str(config_path), "weights": str(state_dict_path)},
                code_paths=[str(Path(__file__).parent)],  # the model carries the fmolab it was made with
                pip_requirements=pip_requirements(),
                signature=signature,
            )
    return info.model_uri


def register(model_uri: str, name: str, alias: str, tags: dict[str, str] | None = None) -> int:
    """Register ``model_uri`` under ``name`` and point ``alias`` at the new version."""
    import mlflow

    version = mlflow.register_model(model_uri, name, tags=tags or {})
    client = mlflow.MlflowClient()
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


def load_model(uri: str) -> Any:
    """Load a logged/registered model (``models:/name@alias``, ``runs:/...``) as an MLflow pyfunc."""
    import mlflow

    return mlflow.pyfunc.load_model(uri)
