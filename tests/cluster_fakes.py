"""Real servers for the storage tests: an S3-protocol server (moto, over HTTP on 127.0.0.1), an MLflow
tracking server that proxies artifacts into it, and a Ray cluster whose second node shares no files
with the first (its own mount namespace, a tmpfs over the test's folder)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from conftest import wait_for_http

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def s3_server(buckets=("fmo",), env: dict | None = None):
    """``moto_server`` in its own process on 127.0.0.1; yields the variables that point clients at it."""
    port = free_port()
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_http(endpoint, 60):
            raise RuntimeError("moto_server did not start in 60 s")
        variables = {"AWS_ENDPOINT_URL": endpoint, **KEYS}
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing")
        for b in buckets:
            client.create_bucket(Bucket=b)
        yield variables
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextmanager
def mlflow_server(folder: Path, artifacts: str, env: dict):
    """``mlflow/serve.sh`` on a free port: runs in SQLite below ``folder``, artifacts proxied to ``artifacts``."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["bash", str(REPO / "mlflow" / "serve.sh")], cwd=REPO, start_new_session=True,
                            env={**os.environ, **env, "PORT": str(port), "BACKEND": f"sqlite:///{folder}/mlflow.db",
                                 "ARTIFACTS": artifacts, "MLFLOW_S3_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
                                 "MLFLOW": str(BIN / "mlflow"), "FMOLAB_HOME": str(folder)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_http(uri + "/health", 90):
            raise RuntimeError("MLflow server did not start in 90 s")
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


_HANDED_OUT: set[int] = set()


def agent_port() -> int:
    """A free port below the kernel's ephemeral range (32768-60999) and above Ray's worker ports
    (10002-19999), never handed out twice here. A port of the ephemeral range, free when picked, can be
    taken by the node's own raylet binding port 0 before the agent binds it: the agent then fails, and
    the whole node with it, seconds after it joined."""
    import random
    import socket

    while True:
        port = random.randrange(20000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def _agent_ports() -> list[str]:
    # every node on this machine needs its own agent ports (another Ray here holds the defaults)
    return [f"--dashboard-agent-listen-port={agent_port()}", f"--dashboard-agent-grpc-port={agent_port()}",
            f"--runtime-env-agent-port={agent_port()}", f"--metrics-export-port={agent_port()}"]


@contextmanager
def share_nothing_cluster(hidden: Path, env: dict, cpus_per_node: int = 1):
    """A Ray head, and a worker node in its own mount namespace with a tmpfs over ``hidden``: the
    worker node's processes see an empty ``hidden`` whatever the head writes there, and the head never
    sees what they write. Yields ``(address, worker_node_pid)``."""
    port = free_port()
    head_temp = hidden / "rh"
    head_temp.mkdir(parents=True)
    base = {**os.environ, **env, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}:{os.environ['PATH']}"}
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():  # Ray's token auth: the worker node (and the probe) join with the cluster's token
        base.update(RAY_AUTH_TOKEN=token.read_text().strip(), RAY_AUTH_MODE="token")
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--port={port}",
                             "--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}", f"--temp-dir={head_temp}",
                             "--include-dashboard=false", *_agent_ports()],
                            env=base, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = None
    try:
        _wait_nodes(f"127.0.0.1:{port}", 1, base, 90)
        node = join_node(f"127.0.0.1:{port}", hidden, env, cpus_per_node)
        _wait_nodes(f"127.0.0.1:{port}", 2, base, 90)
        yield f"127.0.0.1:{port}", node.pid
    finally:
        for proc in (node, head):
            if proc is not None:
                os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops its node on SIGTERM
        for proc in (node, head):
            if proc is not None:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-f", str(hidden)], check=False)  # this cluster's leftovers only


def join_node(address: str, hidden: Path, env: dict, cpus: int = 1) -> subprocess.Popen:
    """One more worker node for the cluster at ``address``, in its own mount namespace with a tmpfs over
    ``hidden`` (as :func:`share_nothing_cluster`'s); the caller waits for it and ends it (its process
    group, or :func:`kill_node`)."""
    base = {**os.environ, **env, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}:{os.environ['PATH']}"}
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        base.update(RAY_AUTH_TOKEN=token.read_text().strip(), RAY_AUTH_MODE="token")
    node_temp = hidden / "rw"
    script = (f"mount -t tmpfs tmpfs {hidden} && mkdir -p {node_temp} && exec {BIN / 'ray'} start --block "
              f"--address={address} --node-ip-address=127.0.0.1 --num-cpus={cpus} "
              f"--temp-dir={node_temp} " + " ".join(_agent_ports()))
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                            env=base, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_nodes(address: str, n: int, env: dict, seconds: float) -> None:
    """Until the cluster at ``address`` has ``n`` live nodes (RuntimeError after ``seconds``)."""
    _wait_nodes(address, n, {**os.environ, **env}, seconds)


def _wait_nodes(address: str, n: int, env: dict, seconds: float) -> None:
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.time() + seconds
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", probe, address], env=env, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {n} node(s) in {seconds:.0f} s")


def same_files(pid: int) -> bool:
    """Whether process ``pid`` sees this process's files (the same mount namespace)."""
    return os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt")


def files_seen_by(pid: int, folder: Path) -> list[str]:
    """The files below ``folder`` as process ``pid`` (in its own mount namespace) sees them."""
    root = Path(f"/proc/{pid}/root") / folder.relative_to("/")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def kill_node(pid: int) -> int:
    """SIGKILL every process of the node whose ``ray start`` is ``pid`` (its whole mount namespace:
    raylet, workers, actors), as a lost machine; returns how many."""
    ns = os.readlink(f"/proc/{pid}/ns/mnt")
    killed = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.readlink(p / "ns" / "mnt") == ns:
                    os.kill(int(p.name), signal.SIGKILL)
                    killed += 1
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
    return killed


def processes_on(pid: int, pattern: str) -> list[int]:
    """The pids whose command line matches ``pattern`` in the node of ``pid`` (its mount namespace)."""
    ns = os.readlink(f"/proc/{pid}/ns/mnt")
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    found = []
    for p in out:
        try:
            if os.readlink(f"/proc/{p}/ns/mnt") == ns:
                found.append(int(p))
        except FileNotFoundError:
            pass
    return found
