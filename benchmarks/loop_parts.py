"""Where the training loop's time goes without Ray: the bare loop (batches made before the clock
starts) against the same loop fed as ``fmolab train``'s worker feeds it (batches made in the loop,
or on a prefetch thread), one process each, side by side in one run. It splits fmolab's distance
from the bare loop (``benchmarks/train.py``) into the cost of making batches and the rest (Ray
Train's processes and the worker's own code). Writes benchmarks/results/loop_parts.json.

    python benchmarks/loop_parts.py [--case double_blur_small] [--seconds 30] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import train as bench_train  # benchmarks/train.py: the same cases and synthetic data


def loop(cfg_dict: dict, seconds: float, threads: int, feed: str, queue) -> None:
    import gc

    from fmolab.config import config_from_dict
    from fmolab.data import to_device
    from fmolab.data.prefetch import prefetched
    from fmolab.train.streams import batch_stream

    cfg = config_from_dict(cfg_dict)
    t = cfg.train
    ds, step = bench_train.plain_loop(cfg, threads)  # the bare loop's model, losses, optimizer and step
    stream = batch_stream(ds, t.batch_size, 0, 1, 0)
    feed, frozen = feed.removesuffix("+frozen"), feed.endswith("+frozen")
    if feed == "premade":
        made = [to_device(next(stream)[1], "cpu") for _ in range(8)]
        stream = ((0, made[k % len(made)]) for k in range(10 ** 9))
    elif feed == "prefetch":
        stream = prefetched(((e, to_device(b, "cpu")) for e, b in stream), 2)
    for _ in range(len(ds) // t.batch_size + 1):  # one epoch first: the row cache holds every row after it
        next(stream)
    if frozen:  # what set-up made (model, caches) is left out of the collector's passes
        gc.freeze()
    in_gc, since = [0.0], [0.0]

    def timed_gc(phase, info):  # the cyclic collector's own time in the loop
        if phase == "start":
            since[0] = time.perf_counter()
        else:
            in_gc[0] += time.perf_counter() - since[0]

    gc.callbacks.append(timed_gc)
    steps, waited, start = 0, 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        w = time.perf_counter()
        batch = to_device(next(stream)[1], "cpu")
        waited += time.perf_counter() - w
        step(batch, steps)
        steps += 1
    wall = time.perf_counter() - start
    queue.put({"samples_per_s": round(steps * t.batch_size / wall, 1), "data_wait_frac": round(waited / wall, 4),
               "gc_frac": round(in_gc[0] / wall, 4), "gc_collections": [s["collections"] for s in gc.get_stats()]})


def run(cfg, seconds: float, threads: int, feed: str) -> dict:
    from fmolab.config import to_dict

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=loop, args=(to_dict(cfg), seconds, threads, feed, queue))
    proc.start()
    out = queue.get(timeout=seconds + 600)
    proc.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="double_blur_small", choices=sorted(bench_train.CASES))
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="each feed measured this many times, alternated")
    ap.add_argument("--feeds", nargs="+", default=["premade", "inline", "prefetch"],
                    help="premade, inline, prefetch; +frozen: gc.freeze() after set-up")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "loop_parts.json"))
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fmb-", dir="/tmp"))
    data = bench_train.make_data(args.case, home)
    cfg = bench_train.case_config(args.case, home, data, args.seconds, [])
    feeds = args.feeds
    runs: dict[str, list] = {f: [] for f in feeds}
    for _ in range(args.rounds):
        for feed in feeds:
            runs[feed].append(run(cfg, args.seconds, args.threads, feed))
            print(feed, runs[feed][-1], flush=True)
    best = {f: max(r["samples_per_s"] for r in rs) for f, rs in runs.items()}
    result = {"what": __doc__.split("\n\n")[0], "case": args.case, "threads": args.threads,
              "seconds": args.seconds, "runs": runs, "best": best,
              "of_premade": {f: round(v / best["premade"], 3) for f, v in best.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
