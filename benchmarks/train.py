"""Training throughput: samples/s per encoder preset and worker count, and the 1 -> 2 worker scaling.

Runs fmolab's real Ray Train loop (DDP, gloo on CPU) on synthetic shards for a fixed wall time per
configuration, side by side in one process, and reads the loop's own ``samples_per_s`` metric (measured
inside the loop, so worker start-up is excluded). Writes ``benchmarks/results/train.json``.

    python benchmarks/train.py                      # tiny and resnet18, 1 and 2 workers, 320x240
    python benchmarks/train.py --presets tiny --seconds 20 --size 128x96
    python benchmarks/train.py --gpu --presets resnet50 --precision bf16   # on a GPU machine
    python benchmarks/train.py --presets tiny --workers 2 --size 128x96 --pipelines torch,ray_data

``--pipelines`` compares where items are made (``data.pipeline``: in the Train worker, or in Ray Data
actors streaming to it); ``data_wait_frac`` is the share of the loop spent waiting for batches.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,resnet18")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--seconds", type=float, default=40.0, help="training wall time per configuration")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8, help="sub-frames rendered per sample")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--pipelines", default="torch", help="data.pipeline values to compare: torch,ray_data")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = ap.parse_args()

    import mlflow

    from fmolab.config import load_config
    from fmolab.data.synthetic import write_synthetic_dataset
    from fmolab.runtime import init_ray
    from fmolab.train import train

    w, h = (int(x) for x in args.size.split("x"))
    home = Path(tempfile.mkdtemp(prefix="fmb-", dir="/tmp"))
    os.environ["FMOLAB_HOME"] = str(home)
    init_ray("", 0, home)
    data = write_synthetic_dataset(home / "data", num_sequences=32, width=w, height=h, num_frames=24,
                                   num_objects=8, seed=0)
    rows = []
    configs = [(p, int(w), pipe) for p in args.presets.split(",") for w in args.workers.split(",")
               for pipe in args.pipelines.split(",")]
    for preset, workers, pipeline in configs:
        cfg = load_config([], [
            f"runtime.work_dir={home}", f"data.train={data}", "data.val_fraction=0.2",
            f"data.frames_per_sample={args.frames}", f"model.encoder={preset}", "model.norm=group",
            "loss.train=[AlphaDice, 'RGBL1:mode=gt']", f"train.workers={workers}",
            f"train.batch_size={args.batch_size}", "train.steps=100000", f"train.time_limit={args.seconds}",
            "train.val_every=100000", "train.ckpt_every=100000", "train.log_every=5", "train.val_samples=2",
            "train.preview_samples=0", f"train.use_gpu={str(args.gpu).lower()}",
            f"train.precision={args.precision}", f"train.channels_last={str(args.gpu).lower()}",
            f"train.run_name=bench-{preset}-{workers}w-{pipeline}", "tracking.experiment=bench",
            f"data.pipeline={pipeline}",
        ])
        started = time.time()
        out = train(cfg, register=False)
        client = mlflow.MlflowClient()
        history = client.get_metric_history(out["run_id"], "samples_per_s")
        # the last report covers the whole timed loop (the first steps include warm-up)
        rate = history[-1].value if history else float("nan")
        waits = [m.value for m in client.get_metric_history(out["run_id"], "data_wait_frac")][1:]  # skip warm-up
        wait = sum(waits) / len(waits) if waits else float("nan")
        rows.append({"preset": preset, "workers": workers, "pipeline": pipeline, "samples_per_s": rate,
                     "data_wait_frac": wait, "steps": out["metrics"].get("step"), "wall_s": time.time() - started})
        print(f"{preset:10} workers={workers} {pipeline:9} {rate:7.2f} samples/s  data wait {100 * wait:.0f}%",
              flush=True)
    scaling = {}
    for preset in args.presets.split(","):
        by_w = {r["workers"]: r["samples_per_s"] for r in rows if r["preset"] == preset and r["pipeline"] == "torch"}
        if 1 in by_w and 2 in by_w:
            scaling[preset] = by_w[2] / by_w[1]
    result = {"size": args.size, "batch_size_per_worker": args.batch_size, "frames": args.frames,
              "seconds_per_config": args.seconds, "device": "gpu" if args.gpu else "cpu",
              "precision": args.precision, "cpus": os.cpu_count(), "machine": platform.machine(),
              "runs": rows, "scaling_1_to_2_workers": scaling}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({"scaling_1_to_2_workers": scaling}, indent=2))


if __name__ == "__main__":
    main()
