"""Object storage against a local folder, side by side in one run (an S3-protocol server, moto over
HTTP on 127.0.0.1, stands in for the bucket):

* render throughput: the same sequences rendered by Blender actors into a local folder and into
  ``s3://`` (the render stage's own wall time, ``manifest.timing``), alternated ``--repeats`` times;
* loader throughput: items/s of the double-blur loader from the local folder and from ``s3://``, the
  first pass (remote shards fetched into the node-local cache) and a second one (cached);
* render scaling: one Ray node with 2 CPUs against two nodes with 1 CPU each (the second in its own
  mount namespace: it shares no files), same cores, both into ``s3://``. On one machine this measures
  the overhead of a second node, not a speed-up.

Writes benchmarks/results/storage.json.

    .venv/bin/python benchmarks/storage.py [--sequences 16] [--repeats 2] [--no-nodes]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the real servers the tests start

from cluster_fakes import s3_server, share_nothing_cluster  # noqa: E402

RENDER = ["render.width=320", "render.height=240", "render.num_frames=24", "render.shard_rows=4",
          "render.backgrounds.num_clips=4", "render.backgrounds.frames_per_clip=4", "render.min_coverage=0.0"]


def render(env: dict, where: list[str], n: int, home: Path, extra=()) -> float:
    """Wall seconds of the render stage (blocks only) of one fresh ``fmolab render``."""
    name = f"b{time.time_ns()}"
    cmd = [sys.executable, "-m", "fmolab.cli", "render", "--work-dir", str(home), *RENDER, f"render.name={name}",
           f"render.num_sequences={n}", *where, *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    from fmolab import storage
    from fmolab.shards import read_manifest

    root = where[0].split("=", 1)[1] if where else str(home)
    manifest = read_manifest(storage.join(root, "datasets", name))
    if manifest.get("num_rows") != n:
        raise RuntimeError(f"rendered {manifest.get('num_rows')} of {n}")
    return float(manifest["timing"]["wall_seconds_this_run"])


def loader(data: str, passes: int = 2) -> list[float]:
    """Items/s of each pass over the training split (one process, one torch thread)."""
    import torch

    from fmolab.config import load_config
    from fmolab.data import build_dataset

    torch.set_num_threads(1)
    ds = build_dataset(load_config([], [f"data.train={data}", "data.frames_per_sample=8", "data.val_fraction=0.1"]),
                       "train")
    rates = []
    for p in range(passes):
        ds.set_epoch(p)
        t = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        rates.append(len(ds) / (time.perf_counter() - t))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-nodes", action="store_true", help="skip the 1-node vs 2-node render")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "storage.json"))
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fbs-", dir="/tmp"))
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "sequences": args.sequences, "render": {"local_s": [], "s3_s": []}}
    with s3_server(buckets=("bench",)) as s3:
        os.environ.update(s3, FMOLAB_HOME=str(home / "driver"))
        env = {**os.environ, "PYTHONPATH": str(REPO / "platform")}
        for _ in range(args.repeats):  # alternated, so drift of the shared machine hits both
            result["render"]["local_s"].append(render(env, [], args.sequences, home / "local", ["runtime.num_cpus=2"]))
            result["render"]["s3_s"].append(render(env, ["runtime.storage=s3://bench/out"], args.sequences,
                                                   home / "s3", ["runtime.num_cpus=2"]))
        r = result["render"]
        r["s3_over_local_throughput"] = round(min(r["local_s"]) / min(r["s3_s"]), 3)

        from fmolab import storage
        from fmolab.data import write_synthetic_dataset

        local = write_synthetic_dataset(home / "toy", num_sequences=96, width=320, height=240, num_frames=24, seed=4)
        storage.upload_tree(local, "s3://bench/toy")
        here, there = loader(str(local)), loader("s3://bench/toy")
        result["loader"] = {"local_items_per_s": [round(x, 1) for x in here],
                            "s3_items_per_s": [round(x, 1) for x in there],
                            "s3_over_local_first_pass": round(there[0] / here[0], 3),
                            "s3_over_local_cached": round(there[1] / here[1], 3)}
        if not args.no_nodes and os.geteuid() == 0:
            one = render(env, ["runtime.storage=s3://bench/one"], args.sequences, home / "one", ["runtime.num_cpus=2"])
            with share_nothing_cluster(home / "c", s3) as (address, _):
                two = render(env, ["runtime.storage=s3://bench/two"], args.sequences, home / "c" / "driver",
                             [f"runtime.address={address}"])
            result["nodes"] = {"one_node_2cpus_s": one, "two_nodes_1cpu_each_s": two,
                               "two_over_one_throughput": round(one / two, 3)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
