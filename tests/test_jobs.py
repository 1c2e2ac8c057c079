"""Ray jobs for real: a local head on 127.0.0.1 with its job server, `fmolab submit`, success and failure.
Only the cluster this test starts is stopped."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from fmolab.cli import main
from fmolab.config import ConfigError
from fmolab.jobs import load_spec

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_spec_is_checked_before_submitting(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("entrypoint: python -m fmolab.cli train\nconfig:\n  train:\n    stepz: 3\n")
    with pytest.raises(ConfigError, match="stepz"):
        load_spec(spec)
    spec.write_text("entrypoint: x\nruntime_env: {}\nresources: 3\n")
    with pytest.raises(ConfigError, match="unknown job spec keys"):
        load_spec(spec)
    good = load_spec(REPO / "jobs" / "train_double_blur.yaml", ["train.steps=5"])
    assert good["entrypoint"].endswith("train.steps=5")
    assert ".venv" in good["runtime_env"]["excludes"] and Path(good["runtime_env"]["working_dir"]).is_absolute()


@pytest.fixture(scope="module")
def ray_head():
    port, dash = _free_port(), _free_port()
    temp = tempfile.mkdtemp(prefix="fmh-", dir="/tmp")
    ray_bin = Path(sys.executable).with_name("ray")
    # as a user would: the head runs from the activated environment, so `python` in jobs is that one
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{ray_bin.parent}:{os.environ['PATH']}"}
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", f"--temp-dir={temp}",
         "--include-dashboard=true",
         # its own agent ports: another Ray on this machine (the test session's) holds the defaults
         f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
         f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(address + "/api/version", timeout=2)
            break
        except urllib.error.HTTPError:  # 401: up, and asking for Ray's auth token (clients send it)
            break
        except OSError:
            time.sleep(1)
    else:
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("Ray head did not start its job server in 120 s")
    yield address
    os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops its node's processes on SIGTERM
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    subprocess.run(["pkill", "-f", temp], check=False)  # leftovers of this cluster only


def test_submit_training_job_and_failing_job(ray_head, tmp_path, capsys, monkeypatch):
    from fmolab.data.synthetic import write_synthetic_dataset

    monkeypatch.chdir(REPO)  # working_dir "." is the checkout, as for a user
    toy = write_synthetic_dataset(tmp_path / "toy", num_sequences=8, num_objects=4)
    work = tmp_path / "w"
    spec = tmp_path / "train.yaml"
    spec.write_text(yaml.safe_dump({
        "entrypoint": f"python -m fmolab.cli train -c {spec}",
        "runtime_env": {"working_dir": "."},
        "entrypoint_num_cpus": 0.1,
        "config": {"runtime": {"work_dir": str(work)}, "data": {"train": str(toy), "frames_per_sample": 3},
                   "model": {"encoder": "tiny"}, "loss": {"train": ["AlphaDice"], "compare": []},
                   "train": {"workers": 2, "steps": 4, "val_every": 4, "ckpt_every": 4, "log_every": 2,
                             "val_samples": 2, "batch_size": 2, "run_name": "job-run"},
                   "tracking": {"experiment": "jobs-test"}},
    }))
    code = main(["submit", str(spec), "--address", ray_head])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out[-4000:] + captured.err[-4000:]
    assert "SUCCEEDED" in out and "[train] step 4/4" in out
    assert (work / "mlflow.db").exists() and (work / "runs" / "job-run" / "best_model.pt").exists()

    failing = tmp_path / "fail.yaml"
    failing.write_text('entrypoint: python -c "import sys; print(\'boom-marker\'); sys.exit(3)"\n')
    assert main(["submit", str(failing), "--address", ray_head]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "boom-marker" in captured.err

    assert main(["jobs", "--address", ray_head, "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("SUCCEEDED") >= 1 and "FAILED" in listing
