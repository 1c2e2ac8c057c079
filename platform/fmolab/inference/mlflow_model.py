"""The MLflow pyfunc model of fmolab, logged "from code": nothing is unpickled when it loads.

``predict(inputs)`` takes stacked input images ``[B, C, H, W]`` float32 in [0, 1] (C and the layout as
the training input format: e.g. frame 1 + frame 2 for double blur) and returns RGBA renders
``[B, T, 4, H, W]`` at ``T = params["num_frames"]`` equally spaced times of the exposure.
"""
from __future__ import annotations

import json

import mlflow
import numpy as np
import torch
from mlflow.models import set_model


class FMOModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from fmolab.config import config_from_dict
        from fmolab.inference.predictor import load_network

        with open(context.artifacts["config"]) as f:
            self.config = config_from_dict(json.load(f))
        self.model = load_network(self.config, context.artifacts["weights"])

    # np.ndarray: a hint MLflow accepts without inferring a schema (the logged signature declares it);
    # without a hint MLflow warns on every import of this file
    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        num_frames = int((params or {}).get("num_frames", self.config.data.frames_per_sample))
        if isinstance(model_input, dict):  # a caller passing {"inputs": array}
            model_input = next(iter(model_input.values()))
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            out = self.model(x, self.model.times(num_frames))  # the model's own time convention
        return out["renders"].numpy()


set_model(FMOModel())
