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
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)

    first = load_config([], [f"runtime.work_dir={work / 'a'}"])
    setup_tracking(first)
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    second = load_config([], [f"runtime.work_dir={work / 'b'}"])
    assert second.tracking_uri == f"sqlite:///{work / 'b' / 'mlflow.db'}"


def test_fmolab_loads_a_logged_model_without_its_stored_code(work, monkeypatch):
    """A model's stored ``mlflow_model.py`` is code from whoever wrote the store: MLflow's pyfunc loader
    runs it (the oracle below proves the tampering works), fmolab's loader must not."""
    import subprocess
    import sys

    import mlflow

    from fmo_fakes import registered_model

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = registered_model(work, "untrusted")
    (stored,) = list((work / "mlartifacts" / "models").glob("m-*/artifacts/mlflow_model.py"))
    marker = work / "code-ran"
    stored.write_text(stored.read_text() + f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    store = f"sqlite:///{work / 'mlflow.db'}"

    def load_with(code: str):
        env = {**os.environ, "MLFLOW_TRACKING_URI": store, "FMOLAB_HOME": str(work)}
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)

    out = load_with(f"from fmolab.inference.predictor import load_predictor; p = load_predictor({uri!r}); "
                    "print(type(p.model).__name__)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("DeFMO") and not marker.exists()
    out = load_with(f"import mlflow; mlflow.pyfunc.load_model({uri!r})")
    assert marker.exists(), out.stderr[-2000:]  # MLflow's own loader does run it
    assert mlflow.get_tracking_uri()  # the test process itself loaded nothing


def test_missing_models_and_stores_are_one_line_errors(work, capsys, monkeypatch):
    from fmo_fakes import registered_model
    from fmolab.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    empty = work / "fresh"
    code = main(["deblur", "--model", "models:/demo@demo", "--image", "x.png", "--background", "y.png",
                 "--out", str(work / "o"), "--work-dir", str(empty)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no MLflow store at" in err, err
    assert not (empty / "mlflow.db").exists()  # looking made no store
    registered_model(work, "known")
    capsys.readouterr()
    for uri, why in (("models:/unknown@x", "name=unknown not found"), ("models:/known@nope", "alias nope not found")):
        code = main(["deblur", "--model", uri, "--image", "x.png", "--background", "y.png",
                     "--out", str(work / "o"), "--work-dir", str(work)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and why in err and "not found in the MLflow store" in err, err


# slow (109 s): CI keeps under 30 minutes
@pytest.mark.slow
def test_basic_auth_server_refuses_strangers_and_a_training_logs_with_credentials_from_the_environment(
        work, free_port, capsys, monkeypatch):
    """mlflow/serve.sh AUTH=basic: MLflow's basic-auth app, the admin password from the environment
    only. No credentials or wrong ones: one clear line before any run or Ray; the right ones (from the
    environment, as from a secret) reach the Ray workers, and the password is in no file written."""
    import subprocess
    import sys
    from pathlib import Path

    import mlflow

    from conftest import wait_for_http
    from fmo_fakes import TRAIN_TINY
    from fmolab.cli import main
    from fmolab.data.synthetic import write_synthetic_dataset

    serve = Path(__file__).resolve().parents[1] / "mlflow" / "serve.sh"
    port, secret = free_port(), "pw-" + os.urandom(8).hex()
    env = {**os.environ, "FMOLAB_HOME": str(work / "server"), "PORT": str(port), "AUTH": "basic",
           "MLFLOW": str(Path(sys.executable).with_name("mlflow"))}
    refused = subprocess.run(["bash", str(serve)], env=env, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "needs MLFLOW_AUTH_ADMIN_PASSWORD" in refused.stderr
    server = subprocess.Popen(["bash", str(serve)], env={**env, "MLFLOW_AUTH_ADMIN_PASSWORD": secret},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        assert wait_for_http(uri + "/health", 90), "the basic-auth server did not start"
        data = write_synthetic_dataset(work / "toy", num_sequences=8, width=64, height=48, seed=2)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        args = ["train", "--work-dir", str(work), *TRAIN_TINY, f"data.train={data}", f"tracking.uri={uri}",
                "tracking.experiment=guarded", "train.run_name=guarded", "train.steps=2", "tracking.register_as=",
                "runtime.num_cpus=2"]
        for user, password, words in (("", "", "asks for a user"), ("admin", "wrong", "refused the credentials")):
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
            assert main(args) == 1
            (line,) = capsys.readouterr().err.strip().splitlines()
            assert words in line and uri in line and "MLFLOW_TRACKING_USERNAME" in line
        assert not (work / "ray_results").exists()  # refused before Ray started

        creds = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": secret}
        done = subprocess.run([sys.executable, "-m", "fmolab.cli", *args], env={**os.environ, **creds},
                              capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        for key, value in creds.items():
            monkeypatch.setenv(key, value)
        client = mlflow.MlflowClient(tracking_uri=uri)
        (run,) = client.search_runs([client.get_experiment_by_name("guarded").experiment_id])
        assert run.info.status == "FINISHED" and run.data.metrics["val/loss"] > 0  # logged by the worker
        written = [p for p in work.rglob("*") if p.is_file() and not p.is_socket() and p.stat().st_size < 50_000_000]
        assert written and not [p for p in written if secret.encode() in p.read_bytes()]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
