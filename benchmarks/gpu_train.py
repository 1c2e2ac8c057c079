"""resnet50 DeFMO training throughput on one GPU: fp32, bf16 autocast, channels_last and both, side by
side in one process, for each norm and batch size asked for (forward + backward + Adam step at 320x240,
8 sub-frames, double-blur input). Writes benchmarks/results/gpu_train.json. Part of benchmarks/gpu.sh.

    python3 benchmarks/gpu_train.py [--batch 16 [64]] [--norm group batch] [--steps 20] [--profile N]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fmolab.models import DeFMO


def samples_per_s(model, batch: int, steps: int, size, bf16: bool, channels_last: bool, dev: str,
                  profile: int = 0):
    h, w = size
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.rand(batch, 6, h, w, device=dev).contiguous(memory_format=fmt)
    t = torch.rand(batch, 8, device=dev)
    opt = torch.optim.Adam(model.parameters(), 1e-4)

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
            loss = model(x, t)["renders"].float().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up: cuDNN picks its algorithms
        step()
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    rate = batch * steps / (time.perf_counter() - start)
    if not profile:
        return rate
    # Where a step's device time goes: the ops with the most self time over two profiled steps.
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(2):
            step()
        sync()
    key = "self_device_time_total" if dev == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) or 1
    top = {e.key: round(getattr(e, key) / total, 3) for e in events[:profile]}
    return rate, top


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[16])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--norm", nargs="+", default=["group", "batch"], help="model.norm values to compare")
    ap.add_argument("--profile", type=int, default=0, help="also give the N ops with most device time (fp32, bf16)")
    ap.add_argument("--cpu", action="store_true", help="smoke-run on the CPU (figures meaningless)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_train.json"))
    args = ap.parse_args()
    dev = "cpu" if args.cpu else "cuda"
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_train.py needs a CUDA GPU (--cpu to smoke-run it here)")
    w, h = (int(v) for v in args.size.split("x"))
    torch.backends.cudnn.benchmark = True
    combos = {"fp32": (False, False), "bf16": (True, False), "fp32_channels_last": (False, True),
              "bf16_channels_last": (True, True)}
    runs = {}
    for norm in args.norm:
        model = DeFMO(6, "resnet50", "defmo", norm).to(dev)
        for batch in args.batch:
            rates = {name: round(samples_per_s(model, batch, args.steps, (h, w), bf16, cl, dev), 1)
                     for name, (bf16, cl) in combos.items()}
            runs[f"{norm}/{batch}"] = {"samples_per_s": rates,
                                       "of_fp32": {k: round(v / rates["fp32"], 2) for k, v in rates.items()}}
            print(norm, batch, rates, flush=True)
    if args.profile:
        batch = args.batch[0]
        runs[f"profile {args.norm[-1]}/{batch}"] = {name: dict(zip(("samples_per_s", "self_time_share"), samples_per_s(
            model, batch, 3, (h, w), bf16, cl, dev, args.profile))) for name, (bf16, cl) in combos.items()}
    result = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__,
              "size": [h, w], "steps": args.steps, "runs": runs, "target_samples_per_s": 150}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
