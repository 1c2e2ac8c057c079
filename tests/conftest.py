"""Shared fixtures: a short work folder (Ray's socket paths must stay short), one local Ray, and the one
way tests build configs."""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def session_home():
    """One work folder for the whole session: Ray's temp dir is fixed at its first start."""
    home = Path(tempfile.mkdtemp(prefix="fmt-", dir="/tmp"))
    old = os.environ.get("FMOLAB_HOME")
    os.environ["FMOLAB_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield home
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if old is None:
        os.environ.pop("FMOLAB_HOME", None)
    else:
        os.environ["FMOLAB_HOME"] = old
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def _tracking_env_restored():
    """``mlflow.set_tracking_uri`` / ``set_registry_uri`` export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI:
    a test that calls them must not hand its store to the tests (and the Ray jobs they submit) after it."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {k: os.environ.get(k) for k in keys}
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def work(session_home, request):
    """A fresh work folder per test, below the session's (so Ray keeps its temp dir)."""
    name = request.node.name
    if len(name) > 40:  # short, and distinct for each parameter of a long test name
        name = name[:33] + "-" + hashlib.sha1(name.encode()).hexdigest()[:6]
    d = session_home / name.replace("[", "_").replace("]", "_")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


@pytest.fixture(scope="session")
def make_config():
    """``make_config(*layers, files=())``: the defaults <- files <- layers ({dotted.key: value} or
    "dotted.key=value"), see fmo_fakes.make_config."""
    from fmo_fakes import make_config

    return make_config


@pytest.fixture
def ray_local(session_home):
    """The session's local Ray, started again where an earlier test shut it down (a test file's own
    cluster): a test must not depend on the order it runs in."""
    from fmolab.runtime import init_ray

    return init_ray("", 2, session_home)


@pytest.fixture(scope="session")
def free_port():
    """A function returning a port nothing listens on (127.0.0.1)."""
    import socket

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick


def start_mlflow_server(work: Path, port: int) -> subprocess.Popen:
    """A real ``mlflow server`` on 127.0.0.1:``port`` (SQLite store, local artifacts) in ``work``; the
    same folder and port give the same server back after a restart."""
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{work}/server.db", "--artifacts-destination", str(work / "art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no job-runner processes
    )
    if not wait_for_http(f"http://127.0.0.1:{port}/health", 90):
        proc.kill()
        pytest.fail("mlflow server did not start in 90 s")
    return proc


@pytest.fixture
def mlflow_server(work, free_port):
    """A real MLflow server for one test (:func:`start_mlflow_server`); its URL."""
    port = free_port()
    proc = start_mlflow_server(work, port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)


def checkpoint_registered(run_folder) -> int:
    """How many checkpoints Ray Train's controller has registered for a run (its snapshot file): a
    checkpoint folder on disk is not yet one a restart resumes from."""
    import json

    try:
        snapshot = json.loads((Path(run_folder) / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):  # not written yet, or being replaced
        return 0
    return len(snapshot.get("checkpoint_results") or [])


def wait_for_http(url: str, seconds: float) -> bool:
    """Poll ``url`` until a server answers at all (any status, 401 included) or ``seconds`` pass."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return True
        except urllib.error.HTTPError:  # e.g. 401 from Ray's token auth: the server is up
            return True
        except OSError:
            time.sleep(0.5)
    return False


# The suite's result is settled once pytest has printed its summary. Tearing down an interpreter that
# has loaded bpy, torch, Ray and MLflow together crashed once in CI after every test had passed (exit
# 139, no traceback: it is past faulthandler); leave with pytest's own status instead of running that
# teardown. Ray and the servers the fixtures started are stopped by then.
_EXIT = {}


def pytest_sessionfinish(session, exitstatus):
    _EXIT["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if "status" in _EXIT and not os.environ.get("FMOLAB_TEST_FULL_TEARDOWN"):
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT["status"])
