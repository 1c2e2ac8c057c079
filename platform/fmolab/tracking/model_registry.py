"""Models in MLflow: logging, the registry and its aliases, loading.

Models are logged as a pyfunc "model from code" (``fmolab/inference/mlflow_model.py``) with two
artifacts: the config tree (JSON) and a state dict. Loading rebuilds the network from the config and
reads the weights with ``torch.load(weights_only=True)``: no pickled Python objects, any batch size and
resolution (a torch.export-ed model would fix the input shape).
"""
from __future__ import annotations

import json
import os
import tempfile
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
                code_paths=[str(PACKAGE)],  # the model carries the fmolab it was made with
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
