"""Ray jobs for real: a local head on 127.0.0.1 with its job server, `fmolab submit`, success and failure.
Only the cluster this test starts is stopped."""
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import wait_for_http
from fmolab.cli import main
from fmolab.config import ConfigError
from fmolab.jobs import load_spec

REPO = Path(__file__).resolve().parents[1]


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
def ray_head(free_port):
    port, dash = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="fmh-", dir="/tmp")
    ray_bin = Path(sys.executable).with_name("ray")
    # as a user would: the head runs from the activated environment, so `python` in jobs is that one
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{ray_bin.parent}:{os.environ['PATH']}"}
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", f"--temp-dir={temp}",
         "--include-dashboard=true",
         # its own agent ports: another Ray on this machine (the test session's) holds the defaults
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    if not wait_for_http(address + "/api/version", 120):  # 401 counts: it asks for Ray's token
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("Ray head did not start its job server in 120 s")
    yield address
    os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops its node's processes on SIGTERM
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    subprocess.run(["pkill", "-f", temp], check=False)  # leftovers of this cluster only


@pytest.mark.bpy
@pytest.mark.slow  # ~110 s in CI with its teardown: CI keeps under 30 minutes (make test-all runs it)
def test_submit_render_then_training_job_and_failing_job(ray_head, tmp_path, capsys, monkeypatch):
    pytest.importorskip("bpy")
    import mlflow

    monkeypatch.chdir(REPO)  # working_dir "." is the checkout, as for a user
    work = tmp_path / "w"
    data = work / "datasets" / "jobdata"
    common = {"runtime": {"work_dir": str(work)}, "tracking": {"experiment": "jobs-test"},
              "render": {"name": "jobdata", "num_sequences": 6, "width": 64, "height": 48, "num_frames": 4,
                         "samples": 2, "shard_rows": 3, "min_coverage": 0.0, "workers": 1,
                         "backgrounds": {"num_clips": 2, "frames_per_clip": 3}}}

    def run(name: str, command: str, config: dict) -> str:
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(yaml.safe_dump({"entrypoint": f"python -m fmolab.cli {command} -c {spec}",
                                        "runtime_env": {"working_dir": "."}, "entrypoint_num_cpus": 0.1,
                                        "config": config}))
        code = main(["submit", str(spec), "--address", ray_head])
        captured = capsys.readouterr()
        assert code == 0, captured.out[-4000:] + captured.err[-4000:]
        assert "SUCCEEDED" in captured.out
        return captured.out

    run("render", "render", common)
    assert len(list(data.glob("*.parquet"))) == 2 and (data / "manifest.json").exists()

    out = run("train", "train", {**common, "data": {"frames_per_sample": 2, "val_fraction": 0.3},
                                 "model": {"encoder": "tiny"}, "loss": {"train": ["AlphaDice"], "compare": []},
                                 "train": {"workers": 2, "steps": 4, "val_every": 4, "ckpt_every": 4,
                                           "log_every": 2, "val_samples": 2, "batch_size": 1,
                                           "run_name": "job-run"}})
    assert "[train] step 4/4" in out
    assert (work / "runs" / "job-run" / "best_model.pt").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    (run_,) = client.search_runs([client.get_experiment_by_name("jobs-test").experiment_id])
    assert run_.data.metrics["val/loss"] > 0 and run_.data.tags["dataset"] == str(data)

    failing = tmp_path / "fail.yaml"
    failing.write_text('entrypoint: python -c "import sys; print(\'boom-marker\'); sys.exit(3)"\n')
    assert main(["submit", str(failing), "--address", ray_head]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "boom-marker" in captured.err

    assert main(["jobs", "--address", ray_head, "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("SUCCEEDED") >= 1 and "FAILED" in listing


# slow (88 s): CI keeps under 30 minutes; one job at a time is covered by test_submit_render_then_training_job
@pytest.mark.slow
def test_two_jobs_submitted_at_once_to_one_head_both_finish(ray_head, tmp_path, monkeypatch):
    """Two training jobs at the same moment, one head, one work folder and MLflow store, one experiment
    (both create it): both succeed, each with its own run."""
    import mlflow

    from fmolab.data.synthetic import write_synthetic_dataset

    monkeypatch.chdir(REPO)
    work = tmp_path / "w"
    data = write_synthetic_dataset(work / "datasets" / "toy", num_sequences=8, width=64, height=48, seed=3)
    procs = {}
    for name in ("left", "right"):
        spec = tmp_path / f"{name}.yaml"
        config = {"runtime": {"work_dir": str(work)}, "tracking": {"experiment": "two-at-once", "register_as": ""},
                  "data": {"train": str(data), "format": "double_blur", "frames_per_sample": 2, "val_fraction": 0.25},
                  "model": {"encoder": "tiny", "norm": "group"},
                  "train": {"workers": 1, "cpus_per_worker": 0.5, "steps": 4, "val_every": 2, "ckpt_every": 2,
                            "log_every": 2, "val_samples": 2, "batch_size": 1, "preview_samples": 1,
                            "run_name": name}}
        spec.write_text(yaml.safe_dump({"entrypoint": f"python -m fmolab.cli train -c {spec}",
                                        "runtime_env": {"working_dir": "."}, "entrypoint_num_cpus": 0.1,
                                        "config": config}))
        procs[name] = subprocess.Popen([sys.executable, "-m", "fmolab.cli", "submit", str(spec), "--address", ray_head],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outs = {}
    for name, proc in procs.items():
        try:
            outs[name] = proc.communicate(timeout=420)[0]
        finally:
            proc.kill()
        assert proc.returncode == 0 and "SUCCEEDED" in outs[name], outs[name][-4000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("two-at-once").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["left", "right"]
    assert all(r.info.status == "FINISHED" and r.data.tags["fmolab.steps_done"] == "4/4" for r in runs)
