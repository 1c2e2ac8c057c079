"""resnet50 DeFMO training throughput on one GPU: fp32 against bf16 autocast + channels_last, side by
side in one process (forward + backward + Adam step at 320x240, 8 sub-frames, double-blur input).
Writes benchmarks/results/gpu_train.json. Part of benchmarks/gpu.sh.

    python3 benchmarks/gpu_train.py [--batch 16] [--steps 20] [--size 320x240]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fmolab.models import DeFMO


def samples_per_s(model, batch: int, steps: int, size, bf16: bool, channels_last: bool, dev: str) -> float:
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
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--cpu", action="store_true", help="smoke-run on the CPU (figures meaningless)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_train.json"))
    args = ap.parse_args()
    dev = "cpu" if args.cpu else "cuda"
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_train.py needs a CUDA GPU (--cpu to smoke-run it here)")
    w, h = (int(v) for v in args.size.split("x"))
    torch.backends.cudnn.benchmark = True
    model = DeFMO(6, "resnet50", "defmo", "group").to(dev)
    fp32 = samples_per_s(model, args.batch, args.steps, (h, w), False, False, dev)
    fast = samples_per_s(model, args.batch, args.steps, (h, w), True, True, dev)
    result = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__, "batch": args.batch, "size": [h, w],
              "samples_per_s": {"fp32": round(fp32, 1), "bf16_channels_last": round(fast, 1)},
              "speedup": round(fast / fp32, 2), "target_bf16_channels_last": 150}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
