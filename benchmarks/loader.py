"""Loader throughput per core for every input format at 320x240 (24 sub-frames, 8 per sample).

Time per item is split into shard read (Parquet row), WebP decode (blurs + needed frames) and
composite (uint8 -> float, backgrounds, augmentation, compositing). One process, one torch thread:
the figure is samples/s per core. The ground-truth frames leave the loader as uint8 and become float
on the training device (``fmolab.data.to_device``); what batching and that conversion would cost if
the device were this CPU is reported beside it (``collate_ms``, ``to_float_on_cpu_ms``).
Writes benchmarks/results/loader.json.

    .venv/bin/python benchmarks/loader.py [--items 200]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from fmolab.config import load_config
from fmolab.data import build_dataset, collate, write_synthetic_dataset
from fmolab.data import loader as loader_mod

FORMATS = ["double_blur", "background_blur", "single_blur", "multi_object", "double_blur:contrastive=true"]
TIMES: dict[str, float] = defaultdict(float)


def timed(cls, name: str, bucket: str) -> None:
    fn = getattr(cls, name)

    def wrapper(*args, **kwargs):
        t = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[bucket] += time.process_time() - t

    setattr(cls, name, wrapper)


def to_cpu(batch: dict) -> dict:
    try:
        from fmolab.data import to_device
    except ImportError:  # code before uint8 frames: nothing left to convert
        return batch
    return to_device(batch, "cpu")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--sequences", type=int, default=48)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "loader.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    timed(loader_mod.Sequence, "blur", "decode")
    timed(loader_mod.Sequence, "frames", "decode")
    timed(loader_mod.FMOLoader, "get", "read")
    # Buckets use process time too, so read + decode + composite add up to the CPU total.
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        root = write_synthetic_dataset(Path(tmp) / "ds", num_sequences=args.sequences, width=320, height=240,
                                       num_frames=24, num_objects=8, num_clips=8, clip_frames=8)
        make_s = time.perf_counter() - t
        for spec in FORMATS:
            cfg = load_config(overrides=[f"data.train={root}", f"data.format={spec}", "data.frames_per_sample=8",
                                         "data.val_fraction=0"])
            ds = build_dataset(cfg, "train")
            for i in range(min(len(ds), 16)):  # warm-up: background clips decoded into the cache
                ds[i]
            TIMES.clear()
            t, wall = time.process_time(), time.perf_counter()
            for k in range(args.items):
                ds[k % len(ds)]
            total = time.process_time() - t  # CPU time: per-core figure even on a shared machine
            wall = time.perf_counter() - wall
            n = args.items
            items = [ds[k % len(ds)] for k in range(8)]
            t = time.process_time()
            for _ in range(4):
                batch = collate(items)
            collate_s = (time.process_time() - t) / 32
            t = time.process_time()
            for _ in range(4):
                to_cpu(batch)
            convert_s = (time.process_time() - t) / 32
            read, decode = TIMES["read"], TIMES["decode"]
            results[spec] = dict(
                samples_per_s_per_core=round(n / total, 1),
                wall_samples_per_s=round(n / wall, 1),
                ms_per_sample=round(1000 * total / n, 3),
                read_ms=round(1000 * read / n, 3),
                decode_ms=round(1000 * decode / n, 3),
                composite_ms=round(1000 * (total - read - decode) / n, 3),
                collate_ms=round(1000 * collate_s, 3),
                to_float_on_cpu_ms=round(1000 * convert_s, 3),
            )
            print(f"{spec:32s} {results[spec]}")
    report = dict(
        resolution=[320, 240], num_frames=24, frames_per_sample=8, items=args.items, torch_threads=1,
        dataset_write_s=round(make_s, 2), python=platform.python_version(), torch=torch.__version__,
        machine=platform.machine(), formats=results,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
