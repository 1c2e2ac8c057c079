"""Model benchmark: parameters and forward+backward time per sample for each encoder preset.

    python benchmarks/model.py [--presets tiny resnet18 resnet50] [--out benchmarks/results/model.json]

CPU: fp32 seconds per sample (forward + backward) at 320x240, batch 2, T=8 (double-blur input, 6
channels), contiguous and channels_last; the minimum over the timed steps is reported (and the mean).
CUDA (when available): also bf16 autocast + channels_last samples per second.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from fmolab.models import DeFMO

ITERS = {"tiny": 3, "resnet18": 2, "resnet50": 1}  # resnet50 is slow on CPU: one timed step


def step_seconds(model, x, t, iters, device, autocast=False):
    """(wall, process CPU) seconds of forward + backward for each of ``iters`` steps after a warm-up.

    Process CPU time (all threads) is the compute cost, robust to other jobs on a shared machine."""
    def once():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model(x, t)
        out["renders"].float().mean().backward()
        model.zero_grad(set_to_none=True)

    once()
    wall, cpu = [], []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        once()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def bench(preset, args):
    model = DeFMO(6, preset, args.renderer, args.norm).train()
    params = sum(p.numel() for p in model.parameters())
    enc_params = sum(p.numel() for p in model.encoder.parameters())
    x = torch.rand(args.batch, 6, args.height, args.width)
    t = torch.rand(args.batch, args.frames)
    cpu, iters = torch.device("cpu"), args.iters or ITERS.get(preset, 2)
    row = {"preset": preset, "params": params, "encoder_params": enc_params,
           "renderer_params": params - enc_params, "latent_channels": model.latent_channels}
    # min over steps: the least disturbed by other processes on a shared machine
    fp32, fp32_cpu = step_seconds(model, x, t, iters, cpu)
    row["cpu_fp32_s_per_sample"] = min(fp32) / args.batch
    row["cpu_fp32_s_per_sample_mean"] = sum(fp32) / len(fp32) / args.batch
    row["cpu_fp32_process_cpu_s_per_sample"] = min(fp32_cpu) / args.batch
    cl = torch.channels_last
    last, last_cpu = step_seconds(model.to(memory_format=cl), x.contiguous(memory_format=cl), t, iters, cpu)
    row["cpu_fp32_channels_last_s_per_sample"] = min(last) / args.batch
    row["cpu_fp32_channels_last_process_cpu_s_per_sample"] = min(last_cpu) / args.batch
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        model = model.to(dev, memory_format=cl)
        sec, _ = step_seconds(model, x.to(dev, memory_format=cl), t.to(dev), 10, dev, autocast=True)
        row["cuda_bf16_channels_last_samples_per_s"] = args.batch * len(sec) / sum(sec)
        row["cuda_device"] = torch.cuda.get_device_name()
    print(json.dumps(row))
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "resnet18", "resnet50"])
    p.add_argument("--renderer", default="defmo")
    p.add_argument("--norm", default="group")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--iters", type=int, default=0, help="timed iterations; 0 = per-preset default")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "model.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    result = {
        "setup": {k: getattr(args, k) for k in ("renderer", "norm", "batch", "frames", "height", "width")},
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "machine": platform.machine(),
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cuda": torch.cuda.is_available(),
        "presets": [bench(name, args) for name in args.presets],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
