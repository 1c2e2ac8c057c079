"""Cluster definitions: valid YAML, the three roles, dashboards on loopback, references that exist.
(`ray up` and KubeRay need a cloud; this checks what can break here: structure and references.)"""
from pathlib import Path

import yaml

CLUSTERS = Path(__file__).resolve().parents[1] / "render_cluster" / "clusters"
REPO = CLUSTERS.parents[1]


def test_ray_up_cluster_has_head_cpu_render_and_gpu_workers():
    spec = yaml.safe_load((CLUSTERS / "ray-up.yaml").read_text())
    types = spec["available_node_types"]
    assert spec["head_node_type"] == "head" and {"head", "render_cpu", "gpu"} <= set(types)
    assert "--dashboard-host=127.0.0.1" in " ".join(spec["head_start_ray_commands"])
    setup = " ".join(spec["setup_commands"])
    assert "scripts/setup.sh" in setup and (REPO / "scripts" / "setup.sh").exists()
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in " ".join(spec["worker_start_ray_commands"])
    for role in ("head", "render_cpu", "gpu"):  # outputs in the bucket, credentials from the instance role
        assert types[role]["node_config"]["IamInstanceProfile"]["Name"] == "fmolab-node"
    assert "FMOLAB_STORAGE=s3://" in " ".join(spec["worker_start_ray_commands"] + spec["head_start_ray_commands"])
    assert ".venv" in spec["rsync_exclude"]
    head = " ".join(spec["head_start_ray_commands"])
    assert "0.0.0.0" not in (CLUSTERS / "ray-up.yaml").read_text()  # nothing listens on every interface by choice
    assert "HOST=$PRIVATE_IP" in head and "MLFLOW_TRACKING_URI=http://$PRIVATE_IP:5000" in head
    assert "--node-ip-address=$PRIVATE_IP" in head
    # MLflow with its basic-auth app; the password from SSM into the environment of every node, and a
    # failed read stops the start (an `export X=$(...)` would hide the failure)
    assert "AUTH=basic" in head and "MLFLOW_AUTH_ADMIN_PASSWORD=$MLFLOW_TRACKING_PASSWORD" in head
    for commands in (head, " ".join(spec["worker_start_ray_commands"])):
        assert "MLFLOW_TRACKING_PASSWORD=$(python scripts/ssm_secret.py /fmolab/mlflow-password) &&" in commands
        assert "export MLFLOW_TRACKING_PASSWORD=$(" not in commands
    assert (REPO / "scripts" / "ssm_secret.py").exists()


def test_kuberay_manifests():
    cluster = yaml.safe_load((CLUSTERS / "kuberay-raycluster.yaml").read_text())
    assert cluster["kind"] == "RayCluster"
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"render-cpu", "gpu"}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == 1
    job = yaml.safe_load((CLUSTERS / "kuberay-rayjob-render.yaml").read_text())
    assert job["kind"] == "RayJob"
    spec_file = job["spec"]["entrypoint"].split(" -c ")[1].split()[0]
    assert (REPO / spec_file).exists()  # the RayJob runs the same job spec as `fmolab submit`
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    env = {e["name"]: e for e in worker["containers"][0]["env"]}
    assert env["FMOLAB_STORAGE"]["value"].startswith("s3://")  # pods share no disk: shards go to the bucket
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # credentials from a Secret, none in the file
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "fmolab-s3" and "value" not in env[key]
    for group in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]:
        names = {e["name"] for e in group["template"]["spec"]["containers"][0]["env"]}
        assert {"FMOLAB_STORAGE", "MLFLOW_TRACKING_URI", "AWS_SECRET_ACCESS_KEY"} <= names
        env = {e["name"]: e for e in group["template"]["spec"]["containers"][0]["env"]}
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # MLflow's basic auth, from a Secret
            assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "fmolab-mlflow" and "value" not in env[key]


def test_no_secret_in_any_cluster_file_or_job_spec():
    import re

    for path in [*CLUSTERS.glob("*.yaml"), *(REPO / "jobs").glob("*.yaml")]:
        text = path.read_text()
        assert not re.search(r"(AWS_SECRET_ACCESS_KEY|password|token)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{16,}", text), path
