"""MLflow: clear failure for an unreachable server; a real server on 127.0.0.1 over HTTP."""
import os
import time

import numpy as np
import pytest
import torch

from fmolab.config import load_config
from fmolab.tracking.store import TrackingError, setup_tracking


def test_unreachable_server_fails_fast_and_says_what_to_do(work, free_port):
    port = free_port()  # nothing listens there
    cfg = load_config([], [f"runtime.work_dir={work}", f"tracking.uri=http://127.0.0.1:{port}", "tracking.timeout=2"])
    t0 = time.time()
    with pytest.raises(TrackingError) as err:
        setup_tracking(cfg)
    assert time.time() - t0 < 10
    assert f"127.0.0.1:{port}" in str(err.value) and "unreachable" in str(err.value)


def test_model_logged_registered_and_loaded_over_http(work, mlflow_server, monkeypatch):
    import mlflow

    from fmolab.data import in_channels
    from fmolab.models import build_model
    from fmolab.tracking import model_registry, store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config([], [f"runtime.work_dir={work}", f"tracking.uri={mlflow_server}", "model.encoder=tiny",
                           "tracking.experiment=http-test", "data.frames_per_sample=3"])
    assert setup_tracking(cfg) == mlflow_server
    run_id = store.start_or_resume_run(cfg, "http-run", {"variant": cfg.variant})
    assert store.start_or_resume_run(cfg, "http-run", {}) == run_id  # same name -> same run
    model = build_model(cfg.model, in_channels(cfg.data.format))
    weights = work / "w.pt"
    torch.save(model.state_dict(), weights)
    uri = model_registry.log_model(cfg, weights, run_id)
    v1 = model_registry.register(uri, "http-model", "candidate")
    v2 = model_registry.register(uri, "http-model", "candidate")
    assert (v1, v2) == (1, 2)
    assert model_registry.promote("http-model", "champion", from_alias="candidate") == 2
    assert model_registry.promote("http-model", "candidate", version=1) == 1
    loaded = mlflow.pyfunc.load_model("models:/http-model@champion")
    x = np.random.default_rng(0).random((2, in_channels(cfg.data.format), 32, 48), dtype=np.float32)
    out = loaded.predict(x)
    assert out.shape == (2, 3, 4, 32, 48)
    # the served model computes what the network computes
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x), torch.tensor([1 / 6, 3 / 6, 5 / 6]))["renders"].numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)
    params = mlflow.MlflowClient().get_run(run_id).data.params
    assert params["model.encoder"] == "tiny"


def test_setup_tracking_does_not_leak_into_later_configs(work, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    first = load_config([], [f"runtime.work_dir={work / 'a'}"])
    setup_tracking(first)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    second = load_config([], [f"runtime.work_dir={work / 'b'}"])
    assert second.tracking_uri == f"sqlite:///{work / 'b' / 'mlflow.db'}"
