"""Ray jobs: submit ``jobs/*.yaml`` specs through the job server, follow them, list/stop them.

A spec is YAML with ``entrypoint`` (required), ``runtime_env``, ``entrypoint_num_cpus``/``_gpus``/
``_memory``/``_resources``, ``metadata`` and ``config`` (an fmolab config tree, validated here before
anything is uploaded). The same file works with plain ``ray job submit``.
"""
from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from fmolab.config import ConfigError, load_config, read_yaml
from fmolab.runtime import use_auth_token_if_present, worker_env

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
SPEC_KEYS = {"entrypoint", "runtime_env", "entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory",
             "entrypoint_resources", "metadata", "config", "submission_id"}
# Never upload these with the working dir: environments, generated data, VCS.
EXCLUDES = [".venv", "fmolab-work", ".git", "benchmarks/results", "**/__pycache__", "*.parquet", "*.pt"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def load_spec(path: str | os.PathLike, overrides: list[str] = ()) -> dict:
    """Read and check a job spec; ``overrides`` (``a.b=c``) are appended to the entrypoint."""
    spec = read_yaml(path)
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown job spec keys {sorted(unknown)}; allowed: {', '.join(sorted(SPEC_KEYS))}")
    if not isinstance(spec.get("entrypoint"), str) or not spec["entrypoint"].strip():
        raise ConfigError(f"{path}: 'entrypoint' (the command to run on the cluster) is required")
    load_config([path], list(overrides))  # a typo in the config fails here, not minutes later on the cluster
    runtime_env = dict(spec.get("runtime_env") or {})
    if "working_dir" in runtime_env:
        runtime_env["working_dir"] = str(Path(runtime_env["working_dir"]).absolute())
        runtime_env.setdefault("excludes", EXCLUDES)
    env_vars = dict(runtime_env.get("env_vars") or {})
    env_vars.setdefault("PYTHONPATH", "platform:.")  # the job's own checkout, installed or not
    for k, v in worker_env().items():  # MLflow's URI, the object store's endpoint (no secret)
        env_vars.setdefault(k, v)
    runtime_env["env_vars"] = {k: str(v) for k, v in env_vars.items()}
    entrypoint = spec["entrypoint"].strip()
    if overrides:
        entrypoint += " " + " ".join(shlex.quote(o) for o in overrides)
    return {**spec, "entrypoint": entrypoint, "runtime_env": runtime_env}


def client(address: str = ""):
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    if address.startswith("ray://") or ":6379" in address:
        raise ConfigError(f"{address} is a Ray client/GCS address; jobs go to the dashboard, e.g. {DEFAULT_ADDRESS}")
    use_auth_token_if_present()
    try:
        return JobSubmissionClient(address if "://" in address else f"http://{address}")
    except Exception as exc:
        raise RuntimeError(f"no Ray job server at {address} ({exc}); start one with `ray start --head "
                           f"--dashboard-host 127.0.0.1` or pass --address") from exc


def submit(spec: dict, address: str = "") -> str:
    kwargs = {k: spec[k] for k in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory",
                                   "entrypoint_resources", "submission_id") if k in spec}
    c = client(address)
    metadata = {str(k): str(v) for k, v in (spec.get("metadata") or {}).items()}
    deadline = time.time() + 60
    while True:
        try:
            return c.submit_job(entrypoint=spec["entrypoint"], runtime_env=spec["runtime_env"], metadata=metadata,
                                **kwargs)
        except RuntimeError as exc:
            # A head that just started answers before its job agent is up: wait for it, briefly.
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2)


def follow(submission_id: str, address: str = "", poll: float = 2.0, timeout: float = 0, echo=print) -> str:
    """Print the job's log as it grows until it ends; returns the final status."""
    c = client(address)
    shown = 0
    started = time.time()
    while True:
        status = str(c.get_job_status(submission_id).value)
        logs = c.get_job_logs(submission_id)
        if len(logs) > shown:
            echo(logs[shown:].rstrip("\n"))
            shown = len(logs)
        if status in TERMINAL:
            return status
        if timeout and time.time() - started > timeout:
            return status
        time.sleep(poll)


def log_tail(submission_id: str, address: str = "", lines: int = 40) -> str:
    """The end of the job's log, plus Ray's own message (e.g. why its runtime env failed to build)."""
    c = client(address)
    tail = "\n".join(c.get_job_logs(submission_id).splitlines()[-lines:])
    message = c.get_job_info(submission_id).message or ""
    return f"{tail}\n{message}".strip()


def submit_and_follow(spec_path: str, overrides: list[str] = (), address: str = "", wait: bool = True) -> int:
    """``fmolab submit``: check and submit a spec, follow its log; 0 only if the job succeeded (else 1,
    with the log's last lines and Ray's reason on stderr)."""
    import sys

    from fmolab.runtime import secrets_not_sent

    spec = load_spec(spec_path, overrides)
    submission_id = submit(spec, address)
    print(f"submitted {spec_path} as {submission_id}", flush=True)
    kept = secrets_not_sent()
    if kept:  # say so: a job that needs them fails on the cluster otherwise, minutes later
        print(f"note: {', '.join(kept)} stay here (Ray logs a job's environment in plain text); the cluster's "
              "nodes use their own (render_cluster/clusters/README.md)", flush=True)
    if not wait:
        return 0
    status = follow(submission_id, address, echo=lambda text: print(text, flush=True))
    print(f"job {submission_id}: {status}", flush=True)
    if status != "SUCCEEDED":
        print(f"--- last lines of {submission_id} ---\n{log_tail(submission_id, address)}", file=sys.stderr)
        return 1
    return 0


def manage(command: str, job_id: str = "", address: str = "", follow_log: bool = False) -> int:
    """``fmolab jobs list|status|logs|stop``."""
    c = client(address)
    if command == "list":
        print(f"{'submission id':28} {'status':10} entrypoint")
        for j in c.list_jobs():
            print(f"{(j.submission_id or j.job_id or '')[:28]:28} {str(j.status.value):10} {j.entrypoint[:80]}")
    elif command == "status":
        print(c.get_job_status(job_id).value)
    elif command == "logs" and follow_log:
        return 0 if follow(job_id, address) == "SUCCEEDED" else 1
    elif command == "logs":
        print(c.get_job_logs(job_id))
    elif command == "stop":
        print("stopped" if c.stop_job(job_id) else "already finished")
    return 0
