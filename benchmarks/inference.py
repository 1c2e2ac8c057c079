"""Inference of the official DeFMO network: fmolab's (``defmo_official``: the latent's share of the
stem conv computed once for all times, every time in one batched pass, optional channels_last) against
``kornia.feature.DeFMO`` (one pass per time), with the same weights and inputs, in one run: sub-frames/s,
alternated ``--repeats`` times, best of each. fp32 on the CPU; with ``--gpu`` also bf16 autocast.
Writes benchmarks/results/inference.json.

    .venv/bin/python benchmarks/inference.py [--size 320x240] [--batch 2] [--repeats 3] [--gpu]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    import kornia

    from fmolab.models import DeFMO
    from fmolab.models.official import load_official

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "inference.json"))
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    device = torch.device("cuda" if args.gpu and torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    reference = kornia.feature.DeFMO(pretrained=False).eval().to(device)
    ours = DeFMO(6, "resnet50", "defmo_official", "batch", "endpoints").eval()
    load_official(ours, reference.encoder.state_dict(), reference.rendering.state_dict())
    ours = ours.to(device)
    x = torch.rand(args.batch, 6, h, w, device=device)
    times = ours.times(args.frames).to(device)
    precisions = ["fp32"] + (["bf16"] if device.type == "cuda" else [])
    result = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "device": str(device),
                          "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                          "python": platform.python_version()},
              "size": [h, w], "batch": args.batch, "sub_frames": args.frames, "runs": {}}
    with torch.no_grad():
        same = (ours(x, times)["renders"] - reference(x)[..., :h, :w]).abs().max().item()
        result["max_abs_difference_fp32"] = same
        for precision in precisions:
            auto = dict(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
            runs = {}

            def kornia_run(auto=auto):
                with torch.autocast(**auto):
                    reference(x)

            def ours_run(channels_last: bool, auto=auto):
                model = ours.to(memory_format=torch.channels_last) if channels_last else ours
                inp = x.contiguous(memory_format=torch.channels_last) if channels_last else x
                with torch.autocast(**auto):
                    model(inp, times)

            kornia_run(), ours_run(False), ours_run(True)  # warm-up
            for _ in range(args.repeats):  # alternated: drift of a shared machine hits all three
                for name, fn in (("kornia", kornia_run), ("fmolab", lambda: ours_run(False)),
                                 ("fmolab_channels_last", lambda: ours_run(True))):
                    runs.setdefault(name, []).append(timed(fn, 1))
            rate = {k: args.batch * args.frames / min(v) for k, v in runs.items()}
            result["runs"][precision] = {
                "sub_frames_per_s": {k: round(v, 2) for k, v in rate.items()},
                "speedup_vs_kornia": round(max(rate["fmolab"], rate["fmolab_channels_last"]) / rate["kornia"], 3)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
