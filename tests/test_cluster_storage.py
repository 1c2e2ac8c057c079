"""A real cluster whose nodes share no files: a Ray head and a worker node in its own mount namespace,
every output in an S3-protocol server (moto over HTTP), MLflow artifacts proxied by the tracking
server. Through the CLI: render to s3:// on both nodes, train one worker per node with checkpoints on
s3://, lose the second node's worker and resume from the S3 checkpoint, register and load the model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cluster_fakes import files_seen_by, mlflow_server, s3_server, same_files, share_nothing_cluster

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/unshare").exists(),
                                reason="share-nothing nodes need root and unshare (mount namespaces)")
N = 8
TINY_RENDER = ["render.name=multi", f"render.num_sequences={N}", "render.shard_rows=2", "render.width=64",
               "render.height=48", "render.num_frames=4", "render.samples=2", "render.motion_blur_steps=4",
               "render.backgrounds.num_clips=2", "render.backgrounds.frames_per_clip=3"]
TRAIN = ["data.train=s3://fmo/out/datasets/multi", "data.frames_per_sample=4", "data.val_fraction=0.25",
         "model.encoder=tiny", "train.workers=2", "train.cpus_per_worker=1", "train.batch_size=2",
         "train.steps=120", "train.val_every=20", "train.ckpt_every=20", "train.log_every=10", "train.val_samples=2",
         "train.preview_samples=1", "train.max_failures=2", "train.run_name=multi-run",
         "tracking.experiment=multi", "tracking.register_as=multi-model", "tracking.alias=cluster"]


def fmolab(args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "fmolab.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_render_train_resume_register_on_nodes_that_share_nothing(monkeypatch):
    import boto3
    import mlflow

    root = Path("/tmp") / f"fmc-{os.getpid()}"  # short: Ray's socket paths live below it
    root.mkdir()
    driver_home = root / "driver"
    with s3_server() as s3, mlflow_server(root / "mlflow", "s3://fmo/mlflow", s3) as tracking, \
            share_nothing_cluster(root, s3) as (address, node_pid):
        assert not same_files(node_pid)
        for k, v in s3.items():  # this process reads the bucket too
            monkeypatch.setenv(k, v)
        env = {**os.environ, **s3, "MLFLOW_TRACKING_URI": tracking, "FMOLAB_HOME": str(driver_home),
               "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "platform")}
        common = [f"runtime.address={address}", "runtime.storage=s3://fmo/out"]

        # 1. render on both nodes straight into the bucket
        done = fmolab(["render", *common, *TINY_RENDER], env)
        assert done.returncode == 0, done.stderr[-3000:]
        s3c = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], region_name="us-east-1")
        manifest = json.loads(s3c.get_object(Bucket="fmo", Key="out/datasets/multi/manifest.json")["Body"].read())
        assert manifest["num_rows"] == N and manifest["complete"] and len(manifest["nodes"]) == 2, manifest
        from fmolab import storage
        from fmolab.shards import open_parquet

        ids = [i for f in storage.list_files("s3://fmo/out/datasets/multi", ".parquet")
               for i in open_parquet(f).read(columns=["seq_id"]).column("seq_id").to_pylist()]
        assert len(ids) == len(set(ids)) == N
        # a lost shard (say, an upload that never completed) is rendered again, and only it
        def stamps():
            objs = s3c.list_objects_v2(Bucket="fmo", Prefix="out/datasets/multi/part-")["Contents"]
            return {o["Key"]: o["LastModified"] for o in objs}

        before = stamps()
        s3c.delete_object(Bucket="fmo", Key="out/datasets/multi/part-00001.parquet")
        again = fmolab(["render", *common, *TINY_RENDER], env)
        assert again.returncode == 0, again.stderr[-3000:]
        after = stamps()
        assert set(after) == set(before)
        assert [k for k in after if after[k] != before[k]] == ["out/datasets/multi/part-00001.parquet"]
        manifest = json.loads(s3c.get_object(Bucket="fmo", Key="out/datasets/multi/manifest.json")["Body"].read())
        assert manifest["timing"]["blocks_rendered_this_run"] == 1 and manifest["num_rows"] == N

        # 2. train one worker per node, checkpoints in the bucket; the second node's worker dies mid-run
        result: dict = {}
        trainer = threading.Thread(target=lambda: result.update(run=fmolab(["train", *common, *TRAIN], env, 400)))
        trainer.start()
        deadline = time.time() + 240
        checkpoints = []
        while time.time() < deadline and len(checkpoints) < 2:
            listed = s3c.list_objects_v2(Bucket="fmo", Prefix="out/ray_results/multi-run/").get("Contents", [])
            checkpoints = {o["Key"].split("/")[3] for o in listed if "/checkpoint_" in o["Key"]}
            time.sleep(1)
        assert len(checkpoints) >= 2, "no checkpoint reached the bucket"
        time.sleep(5)  # Ray Train registers a reported checkpoint a few reports late
        pids = subprocess.run(["pgrep", "-f", "ray::RayTrainWorker"], capture_output=True, text=True).stdout.split()
        remote = [int(p) for p in pids if not same_files(int(p))]
        assert remote, "no train worker runs on the share-nothing node"
        os.kill(remote[0], 9)
        trainer.join(timeout=400)
        run = result["run"]
        assert run.returncode == 0, run.stderr[-3000:]

        # 3. the run resumed from a checkpoint in the bucket, and its model is registered by alias
        mlflow.set_tracking_uri(tracking)
        client = mlflow.MlflowClient(tracking)
        exp = client.get_experiment_by_name("multi")
        (mlrun,) = client.search_runs([exp.experiment_id], "tags.`fmolab.run_name` = 'multi-run'")
        resumed = [m.value for m in client.get_metric_history(mlrun.info.run_id, "resumed_from_step")]
        assert resumed and 0 < resumed[-1] < 120 and resumed[-1] % 20 == 0, resumed
        assert max(m.step for m in client.get_metric_history(mlrun.info.run_id, "train/loss")) == 120
        assert mlrun.data.tags["dataset"] == "s3://fmo/out/datasets/multi"
        previews = client.list_artifacts(mlrun.info.run_id, "previews")
        assert previews, "rank 0 logged no preview through the server"
        arts = s3c.list_objects_v2(Bucket="fmo", Prefix="mlflow/").get("Contents", [])
        assert any(o["Key"].endswith(".webp") for o in arts) and any("MLmodel" in o["Key"] for o in arts)
        loader = ("import mlflow, numpy as np, sys; mlflow.set_tracking_uri(sys.argv[1]); "
                  "m = mlflow.pyfunc.load_model('models:/multi-model@cluster'); "
                  "print(m.predict(np.zeros((1, 6, 48, 64), np.float32), params={'num_frames': 3}).shape)")
        other = subprocess.run([sys.executable, "-c", loader, tracking], env={**env, "FMOLAB_HOME": str(root / "other")},
                               capture_output=True, text=True, timeout=120)
        assert other.returncode == 0 and "(1, 3, 4, 48, 64)" in other.stdout, other.stderr[-2000:]

        # 4. evaluate it on the cluster: Ray Data model actors on both nodes read the bucket, write Parquet rows
        done = fmolab(["evaluate", "--model", "models:/multi-model@cluster", "--data", "s3://fmo/out/datasets/multi",
                       "--out", "s3://fmo/out/eval/multi", "--workers", "2", "--address", address, "--max", "4",
                       "--num-frames", "4"], env)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(s3c.get_object(Bucket="fmo", Key="out/eval/multi/summary.json")["Body"].read())
        assert summary["num_samples"] == 4 and summary["workers"] == 2 and 0 <= summary["model"]["tiou"] <= 1
        rows = sum(open_parquet(f).metadata.num_rows for f in storage.list_files("s3://fmo/out/eval/multi/samples"))
        assert rows == 4

        # 5. outputs live in the bucket only: local work folders hold temporary files, caches and logs
        outputs = {k["Key"].split("/")[1] for k in s3c.list_objects_v2(Bucket="fmo", Prefix="out/")["Contents"]}
        assert {"datasets", "ray_results", "runs"} <= outputs
        local_kinds = {Path(p).parts[0] for p in files_seen_by(os.getpid(), driver_home)}
        assert local_kinds <= {"tmp", "cache", "ray", "config"}, local_kinds
        node_view = files_seen_by(node_pid, driver_home)
        assert {Path(p).parts[0] for p in node_view} <= {"tmp", "cache", "ray", "config"}, node_view
        assert not files_seen_by(node_pid, root / "mlflow")  # the head's files are not on the other node
