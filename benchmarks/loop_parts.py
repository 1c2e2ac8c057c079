"""Where the training loop's time goes: one loop measured rung by rung, side by side in one run,
to split fmolab's distance from the bare loop (``benchmarks/train.py``) into its parts.

* ``--feeds``: batches made before the clock starts (``premade``), in the loop as ``fmolab train``'s
  worker makes them (``inline``), on its prefetch thread (``prefetch``), in its child process
  (``process``: ``data.prefetch_in=process``) or N in a row in the loop (``loopN``:
  ``data.prefetch_in=loop``, ``data.prefetch=N``; 16 when N is left out);
* ``--steps``: the bare loop's step (``bare``: model, losses, optimizer) or fmolab's own loop
  (``trainer``: ``Trainer.fit`` with its callbacks; MLflow logging, progress lines and the final
  checkpoint left out);
* ``--where``: a fresh plain process (``plain``) or a Ray Train worker of one CPU (``ray_train``:
  Ray's processes and the worker's threads around the same loop).

Each rung reports samples/s (from the 4th batch taken to the last), the share of that time spent
making batches (``data_frac``) and in Python's cyclic collector (``gc_frac``); fmolab's loop also
the data wait it logs itself (``logged_data_wait_frac``). Rungs alternate, each measured
``--rounds`` times. Writes benchmarks/results/loop_parts.json.

    python benchmarks/loop_parts.py [--case double_blur_small] [--seconds 30] [--threads 2]
    python benchmarks/loop_parts.py --case demo --feeds premade inline --steps bare trainer --where plain ray_train
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import train as bench_train  # benchmarks/train.py: the same cases and synthetic data


def feed_error(feed: str) -> str | None:
    """What is wrong with ``--feeds`` entry ``feed``; None when it names a feed."""
    name = feed.removesuffix("+frozen")
    if name in ("premade", "inline", "prefetch", "process") or (
            name.startswith("loop") and (name[4:] == "" or name[4:].isdigit() and int(name[4:]) > 0)):
        return None
    return f"--feeds {feed!r}: one of premade, inline, prefetch, process, loop[N] (+frozen)"


def measure(cfg_dict: dict, seconds: float, threads: int, feed: str, step_kind: str) -> dict:
    """One rung, in this process: ``seconds`` of training fed by ``feed`` with ``step_kind``'s step."""
    import gc
    import resource

    from fmolab.config import config_from_dict
    from fmolab.data import to_device
    from fmolab.data.prefetch import prefetched
    from fmolab.train.streams import batch_stream

    if error := feed_error(feed):  # before the model and data are built
        raise ValueError(error)
    cfg = config_from_dict(cfg_dict)
    t = cfg.train
    ds, step = bench_train.plain_loop(cfg, threads)  # the bare loop's model, losses, optimizer and step
    stream = batch_stream(ds, t.batch_size, 0, 1, 0)
    feed, frozen = feed.removesuffix("+frozen"), feed.endswith("+frozen")
    if feed == "premade":
        made = [to_device(next(stream)[1], "cpu") for _ in range(8)]
        stream = ((0, made[k % len(made)]) for k in range(10 ** 9))
    elif feed != "inline":  # made ahead, converted there as train_loop does
        from fmolab.data.child_stream import child_batches
        from fmolab.data.prefetch import in_runs

        converted = ((e, to_device(b, "cpu")) for e, b in stream)
        if feed == "prefetch":
            stream = prefetched(converted, 2)
        elif feed == "process":
            stream = child_batches(converted, 2)
        else:  # loop16: data.prefetch_in=loop, data.prefetch=16
            stream = in_runs(converted, int(feed[4:] or 16))
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

    taken, making = [], [0.0]

    def timed(source):  # when each batch was taken, and the time spent making it
        for _ in itertools.count():
            started = time.perf_counter()
            item = next(source)
            making[0] += time.perf_counter() - started
            taken.append(time.perf_counter())
            yield item

    gc.callbacks.append(timed_gc)
    fed = timed(((e, to_device(b, "cpu")) for e, b in stream))
    logged_wait = None
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    if step_kind == "trainer":
        logged_wait = round(trainer_fit(cfg, threads, ds, fed), 4)
    else:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            step(next(fed)[1], len(taken))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    gc.callbacks.remove(timed_gc)
    wall = taken[-1] - taken[3]
    return {"samples_per_s": round((len(taken) - 4) * t.batch_size / wall, 1),
            "data_frac": round(making[0] / (taken[-1] - taken[0]), 4), "gc_frac": round(in_gc[0] / wall, 4),
            "batches": len(taken), "page_faults_per_batch": round(faults / len(taken)), "gc_collections": [s["collections"] for s in gc.get_stats()],
            **({"logged_data_wait_frac": logged_wait} if logged_wait is not None else {})}


def trainer_fit(cfg, threads: int, train_ds, stream) -> float:
    """fmolab's own loop (``Trainer.fit``: its step, callbacks and logging; stopped by
    ``train.time_limit``) over ``stream``, as :func:`fmolab.train.loop.train_loop` builds it; returns
    the mean of the data waits it logged."""
    import torch

    from fmolab.data import build_dataset, build_format
    from fmolab.losses import LossSet
    from fmolab.models import build_model
    from fmolab.train.callbacks import Callback, Progress, default_callbacks
    from fmolab.train.loop import Trainer, tuned
    from fmolab.train.optim import build_optimizer, build_scheduler

    torch.set_num_threads(threads)
    t = cfg.train
    model = tuned(build_model(cfg.model, build_format(cfg.data.format).in_channels), t)
    optimizer = build_optimizer(t.optimizer, model.parameters(), t.lr)
    trainer = Trainer(cfg, model, optimizer, build_scheduler(t.scheduler, optimizer, t.steps),
                      LossSet(cfg.loss.train, cfg.loss.compare), build_dataset(cfg, "val"), torch.device("cpu"), 0, 1,
                      [cb for cb in default_callbacks(cfg, "", "") if not isinstance(cb, Progress)], train_ds)
    trainer.checkpoint = lambda metrics: None  # the run's last checkpoint is not part of the rate
    waits: list[float] = []

    class Waits(Callback):  # the data wait that fmolab itself logs, to set beside data_frac
        def on_log(self, trainer, means):
            waits.append(means["data_wait_frac"])

    trainer.callbacks.append(Waits())
    trainer.fit(stream)
    return sum(waits[1:]) / max(1, len(waits) - 1)  # the first window holds the warm-up


def _in_process(args: tuple, queue) -> None:
    queue.put(measure(*args))


def _in_train_worker(config: dict) -> None:
    Path(config["out"]).write_text(json.dumps(measure(*config["args"])))  # this machine's driver reads it


def run(cfg, seconds: float, threads: int, feed: str, step_kind: str, where: str) -> dict:
    from fmolab.config import to_dict

    args = (to_dict(cfg), seconds, threads, feed, step_kind)
    if where == "ray_train":
        import ray.train
        from ray.train.torch import TorchTrainer

        from fmolab.train.heap import with_worker_env

        out = Path(tempfile.mkdtemp(dir=cfg.work_dir)) / "rung.json"
        env = with_worker_env(None) if cfg.train.keep_freed_memory else None  # as launch.torch_trainer sets it
        TorchTrainer(_in_train_worker, train_loop_config={"args": args, "out": str(out)},
                     scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                     run_config=ray.train.RunConfig(storage_path=str(cfg.work_dir / "loop_parts"),
                                                    worker_runtime_env=env)).fit()
        return json.loads(out.read_text())
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_in_process, args=(args, queue))
    proc.start()
    out = queue.get(timeout=seconds + 600)
    proc.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default="double_blur_small", choices=sorted(bench_train.CASES))
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="each rung measured this many times, alternated")
    ap.add_argument("--feeds", nargs="+", default=["premade", "inline", "prefetch"],
                    help="premade, inline, prefetch, process, loop[N]; +frozen: gc.freeze() after set-up")
    ap.add_argument("--steps", nargs="+", default=["bare"], choices=["bare", "trainer"])
    ap.add_argument("--where", nargs="+", default=["plain"], choices=["plain", "ray_train"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "loop_parts.json"))
    args = ap.parse_args()
    for feed in args.feeds:  # before any rung runs (an unknown one would fail in its own process)
        if error := feed_error(feed):
            ap.error(error)
    home = Path(tempfile.mkdtemp(prefix="fmb-", dir="/tmp"))
    data = bench_train.make_data(args.case, home)
    cfg = bench_train.case_config(args.case, home, data, args.seconds, bench_train.one_worker(args.threads))
    if "ray_train" in args.where:
        import os

        from fmolab.runtime import init_ray, quiet_third_party

        quiet_third_party()
        os.environ.setdefault("FMOLAB_PROGRESS", "0")
        init_ray("", 0, home)
    rungs = list(itertools.product(args.where, args.steps, args.feeds))
    runs: dict[str, list] = {"/".join(r): [] for r in rungs}
    for _ in range(args.rounds):
        for where, step_kind, feed in rungs:
            name = f"{where}/{step_kind}/{feed}"
            runs[name].append(run(cfg, args.seconds, args.threads, feed, step_kind, where))
            print(name, runs[name][-1], flush=True)
    mean = {r: round(sum(x["samples_per_s"] for x in xs) / len(xs), 1) for r, xs in runs.items()}
    base = mean[next(iter(mean))]
    result = {"what": __doc__.split("\n\n")[0], "case": args.case, "threads": args.threads,
              "seconds": args.seconds, "runs": runs, "mean": mean,
              "of_first": {r: round(v / base, 3) for r, v in mean.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("mean", "of_first")}, indent=2))


if __name__ == "__main__":
    main()
