"""A training step's time with each optimizer implementation, side by side in one run: the bare loop's
step (``benchmarks/train.py``: model, losses, optimizer; batches made before the clock starts) of each
case, with ``train.optimizer`` set to each spec in turn, rounds alternated. Writes
benchmarks/results/optim.json.

    python benchmarks/optim.py [--cases demo,double_blur_small] [--specs Adam:fused=false Adam] [--steps 300]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import train as bench_train  # benchmarks/train.py: the same cases, data and step


def step_ms(cfg, threads: int, steps: int) -> float:
    ds, step = bench_train.plain_loop(cfg, threads)
    batches = bench_train.premade(ds, cfg.train.batch_size)
    for k in range(10):  # warm-up: first steps allocate the optimizer's state
        step(batches[k % 8], k)
    start = time.perf_counter()
    for k in range(steps):
        step(batches[k % 8], k)
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(bench_train.CASES))
    ap.add_argument("--specs", nargs="+", default=["Adam:fused=false", "Adam:foreach=true", "Adam"],
                    help="train.optimizer specs (Adam alone is fused: fmolab.train.optim)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "optim.json"))
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fmb-", dir="/tmp"))
    os.environ["FMOLAB_HOME"] = str(home)
    rows = []
    for name in args.cases.split(","):
        data = bench_train.make_data(name, home)
        times: dict[str, list[float]] = {s: [] for s in args.specs}
        for _ in range(args.rounds):
            for spec in args.specs:
                cfg = bench_train.case_config(name, home, data, 1.0, [f"train.optimizer={spec}"])
                times[spec].append(round(step_ms(cfg, args.threads, args.steps), 2))
                print(f"{name:18} {spec:20} {times[spec][-1]:7.2f} ms a step", flush=True)
        first = statistics.median(times[args.specs[0]])
        rows.append({"case": name, "ms_per_step": times,
                     "median_of_first": {s: round(statistics.median(t) / first, 3) for s, t in times.items()}})
        print(name, rows[-1]["median_of_first"], flush=True)
    result = {"what": __doc__.split("\n\n")[0], "threads": args.threads, "steps": args.steps, "cases": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
