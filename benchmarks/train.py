"""Training throughput against a bare PyTorch loop: how much of a step is fmolab's own cost.

For each case, side by side in one run:

* **bare**: the same model, losses, optimizer, batch size, precision and torch thread count in a plain
  ``for`` loop over batches made before the clock starts, in a fresh process (no Ray, no data), run
  for half the time just before fmolab's 1-worker run and half just after; its rate is the mean of
  the two, and ``drift`` (after / before, steady) says how far the machine moved meanwhile;
* **fmolab**: ``fmolab train`` itself (Ray Train, callbacks, compositing, collectives, data) at 1
  worker with the same thread count, its ``samples_per_s`` read back from MLflow;
* **as configured**: the case's own worker count (the demo: 2 workers of 1 thread), for its
  ``data_wait_frac`` (the share of the loop spent waiting for batches).

Both rates count from the first step (warm-up included, as the loop's own metric does), and each
has a steady rate: the bare loop's after 3 steps, fmolab's over the last two thirds of its logs (the
first epoch decodes what the row cache then holds; Ray's processes settle). ``efficiency = fmolab /
bare``; ``efficiency_steady`` divides the steady rates. ``preempted_per_s`` (both loops: their process's
involuntary context switches a second, the median of fmolab's logged windows) says how often the step's
threads lost their cores to other processes (Ray's among them). Synthetic shards at each
case's size stand in for rendered data (the loop cannot tell them apart). Writes
``benchmarks/results/train.json``. ``train_paired.py`` measures the 1-worker ratio in alternating turns
of one run instead, free of the machine's drift between brackets.

    python benchmarks/train.py                                  # demo + small double blur, 60 s each
    python benchmarks/train.py --cases demo --seconds 30
    python benchmarks/train.py --rounds 3      # three brackets a variant: each ratio's median and range
    python benchmarks/train.py --variants data.prefetch=0 data.prefetch=2   # options side by side
    python benchmarks/train.py --variants "" train.channels_last=true

Each variant (a space-free list of overrides joined by ``,``; "" = the defaults) is measured against
the same bare loop (which takes the variant's model and process options too: channels_last,
compile, keep_freed_memory).

    python benchmarks/train.py --variants "" train.keep_freed_memory=false,data.row_cache_mb=0
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

# name -> (preset files, extra overrides): the demo (background+blur at the small scale, 2 workers of
# 1 thread) and the learning studies' scale (double blur, small: 1 worker)
CASES = {
    "demo": (["demo"], []),
    "double_blur_small": (["double_blur", "small"], ["model.norm=group"]),
}
MEASURE = ["train.steps=1000000", "train.val_every=1000000", "train.ckpt_every=1000000", "train.log_every=10",
           "train.val_samples=2", "train.preview_samples=0", "tracking.register_as=", "data.val_fraction=0.1"]


def case_config(name: str, home: Path, data: Path, seconds: float, extra: list[str]):
    from fmolab.config import load_config, preset_path

    files, overrides = CASES[name]
    return load_config([preset_path(f) for f in files], [
        f"runtime.work_dir={home}", f"data.train={data}", *MEASURE, f"train.time_limit={seconds}",
        "tracking.experiment=bench-train", *overrides, *extra])


def one_worker(threads: int) -> list[str]:
    """The overrides of fmolab's 1-worker run, the one compared with the bare loop (one CPU of Ray's, so
    it never waits behind other work; ``threads`` torch threads, as the bare loop's)."""
    return ["train.workers=1", "train.cpus_per_worker=1", f"train.threads={threads}"]


def case_names(ap: argparse.ArgumentParser, text: str) -> list[str]:
    """``--cases``' names, each one of :data:`CASES` (else a usage error, before any work)."""
    names = text.split(",")
    if unknown := [n for n in names if n not in CASES]:
        ap.error(f"--cases {text}: no case {', '.join(unknown)} (cases: {', '.join(CASES)})")
    return names


def make_data(name: str, home: Path, extra: list[str] = ()) -> Path:
    """Synthetic shards at the case's size (the loop cannot tell them from rendered ones)."""
    from fmolab.data.synthetic import write_synthetic_dataset

    base = case_config(name, home, home / "none", 1.0, list(extra))
    return write_synthetic_dataset(home / f"data-{name}", num_sequences=128, width=base.render.width,
                                   height=base.render.height, num_frames=base.render.num_frames, num_objects=8,
                                   num_clips=8, clip_frames=base.render.backgrounds.frames_per_clip)


def plain_loop(cfg, threads: int):
    """The plain loop's pieces, as this process's: its training dataset and a ``step(batch, k)`` of the
    same model, losses, optimizer, precision and process options (malloc, channels_last, compile) as
    ``fmolab train``'s (shared with ``loop_parts.py``)."""
    import torch

    from fmolab.data import build_dataset, build_format
    from fmolab.losses import LossSet
    from fmolab.models import build_model
    from fmolab.train.loop import tuned
    from fmolab.train.optim import build_optimizer

    if cfg.train.keep_freed_memory:  # the variant's malloc setting too: the ratio is fmolab's own cost
        from fmolab.train.heap import keep_freed_memory

        keep_freed_memory()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t = cfg.train
    model = tuned(build_model(cfg.model, build_format(cfg.data.format).in_channels), t)  # channels_last, compile
    optimizer = build_optimizer(t.optimizer, model.parameters(), t.lr)
    losses = LossSet(cfg.loss.train, cfg.loss.compare)
    bf16 = t.precision == "bf16"
    model.train()

    def step(batch: dict, k: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(batch["inputs"], batch["times"], batch.get("contrast_inputs"))
        total, _ = losses(batch, out, k)
        total.backward()
        optimizer.step()

    return build_dataset(cfg, "train"), step


def premade(ds, batch_size: int, count: int = 8) -> list[dict]:
    """``count`` batches made before the clock starts (uint8 frames become floats as to_device does)."""
    from fmolab.data import to_device

    return [to_device(ds.batch([(k * batch_size + i) % len(ds) for i in range(batch_size)]), "cpu")
            for k in range(count)]


def bare(cfg_dict: dict, seconds: float, threads: int, queue) -> None:
    """The plain loop (in its own process: thread count and memory are its own)."""
    from fmolab.config import config_from_dict
    from fmolab.train.loop import preemptions

    cfg = config_from_dict(cfg_dict)
    t = cfg.train
    ds, step = plain_loop(cfg, threads)
    batches = premade(ds, t.batch_size)
    preempted = preemptions()
    steps, start, steady = 0, time.perf_counter(), None
    while time.perf_counter() - start < seconds:
        step(batches[steps % len(batches)], steps)
        steps += 1
        if steps == 3:
            steady = (time.perf_counter(), steps)
    wall = time.perf_counter() - start
    rate = steps * t.batch_size / wall
    steady_rate = (steps - steady[1]) * t.batch_size / (start + wall - steady[0]) if steady else rate
    queue.put({"samples_per_s": rate, "steady_samples_per_s": steady_rate, "steps": steps, "threads": threads,
               "preempted_per_s": (preemptions() - preempted) / wall})


def run_bare(cfg, seconds: float, threads: int) -> dict:
    from fmolab.config import to_dict

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=bare, args=(to_dict(cfg), seconds, threads, queue))
    proc.start()
    out = queue.get(timeout=seconds + 600)
    proc.join()
    return out


def run_fmolab(cfg) -> dict:
    import mlflow

    from fmolab.train import train

    started = time.time()
    out = train(cfg, register=False)
    client = mlflow.MlflowClient()

    def logged(key: str) -> list:  # the run's logs of ``key`` in step order
        return sorted(client.get_metric_history(out["run_id"], key), key=lambda m: m.step)

    history = logged("samples_per_s")
    waits = [m.value for m in logged("data_wait_frac")]
    preempted = [m.value for m in logged("preempted_per_s")][1:]  # the first window holds the start
    steady = float("nan")
    if len(history) >= 3:  # the last two thirds of the run, from the logs' own steps and times
        first, last = history[len(history) // 3], history[-1]
        global_batch = cfg.train.batch_size * cfg.train.grad_accum * cfg.train.workers
        steady = (last.step - first.step) * global_batch / max((last.timestamp - first.timestamp) / 1000, 1e-9)
    tail = waits[len(waits) // 3:]
    return {"samples_per_s": history[-1].value if history else float("nan"),  # the last covers the whole loop
            "steady_samples_per_s": steady,
            "data_wait_frac": sum(waits[1:]) / len(waits[1:]) if len(waits) > 1 else float("nan"),  # warm-up left out
            "steady_data_wait_frac": sum(tail) / len(tail) if tail else float("nan"),
            "preempted_per_s": statistics.median(preempted) if preempted else float("nan"),
            "steps": out["metrics"].get("step"), "wall_s": round(time.time() - started, 1)}


RATIOS = ("efficiency", "efficiency_vs_steady", "efficiency_steady")


def one_round(one, seconds: float, threads: int, home: Path) -> dict:
    """fmolab at 1 worker bracketed by the bare loop (half of ``seconds`` before it, half after)."""
    from fmolab.runtime import init_ray

    before = run_bare(one, seconds / 2, threads)
    init_ray("", 0, home)
    mine = run_fmolab(one)
    after = run_bare(one, seconds / 2, threads)
    plain = {k: (before[k] + after[k]) / 2 for k in ("samples_per_s", "steady_samples_per_s")}
    plain.update(threads=threads, runs=[before, after],
                 preempted_per_s=(before["preempted_per_s"] + after["preempted_per_s"]) / 2,
                 drift=round(after["steady_samples_per_s"] / before["steady_samples_per_s"], 3))
    return {"bare": plain, "fmolab_1_worker": mine,
            "efficiency": round(mine["samples_per_s"] / plain["samples_per_s"], 3),
            "efficiency_vs_steady": round(mine["samples_per_s"] / plain["steady_samples_per_s"], 3),
            "efficiency_steady": round(mine["steady_samples_per_s"] / plain["steady_samples_per_s"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES), help=f"of {', '.join(CASES)}")
    ap.add_argument("--seconds", type=float, default=60.0, help="training wall time per measurement")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads at 1 worker (both loops)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every case")
    ap.add_argument("--variants", nargs="*", default=[""], metavar="K=V[,K=V]",
                    help="override sets measured side by side (\"\" = defaults)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="brackets (bare, fmolab 1 worker, bare) per variant; each ratio is their median "
                         "(odd: one round's)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds {args.rounds}: at least 1")
    cases = case_names(ap, args.cases)

    from fmolab.runtime import quiet_third_party

    quiet_third_party()  # our lines in the log, as the CLI's
    home = Path(tempfile.mkdtemp(prefix="fmb-", dir="/tmp"))
    os.environ["FMOLAB_HOME"] = str(home)
    os.environ.setdefault("FMOLAB_PROGRESS", "0")
    rows = []
    for name in cases:
        base = case_config(name, home, home / "none", args.seconds, args.set)
        data = make_data(name, home, args.set)
        for v, variant in enumerate(args.variants):
            extra = [*args.set, *[o for o in variant.split(",") if o]]
            ones = [case_config(name, home, data, args.seconds, [*extra, *one_worker(args.threads),
                                                                 f"train.run_name=bench-{name}-{v}-1w-{k}"])
                    for k in range(args.rounds)]  # a run each (the same name would resume the last)
            one = ones[0]
            # the bare loop brackets fmolab's run (half the time before, half after): this machine's rates
            # drift by up to 25% within minutes, so one bare run beside it made ratios drift with it;
            # --rounds repeats the bracket and gives each ratio's median (and its range)
            rounds = [one_round(cfg, args.seconds, args.threads, home) for cfg in ones]
            configured = case_config(name, home, data, args.seconds, [*extra, f"train.run_name=bench-{name}-{v}"])
            as_configured = run_fmolab(configured)
            ratios = {k: [r[k] for r in rounds] for k in RATIOS}
            mid = sorted(rounds, key=lambda r: r["efficiency_steady"])[(len(rounds) - 1) // 2]  # the median round
            plain, mine = mid["bare"], mid["fmolab_1_worker"]
            row = {"case": name, "variant": variant, "size": [base.render.width, base.render.height],
                   "batch_size": one.train.batch_size, "encoder": one.model.encoder, "format": one.data.format,
                   "precision": one.train.precision, "overrides": extra, "bare": plain, "fmolab_1_worker": mine,
                   **{k: statistics.median(v) for k, v in ratios.items()},
                   **{f"{k}_range": [min(v), max(v)] for k, v in ratios.items()}, "rounds": rounds,
                   "as_configured": {"workers": configured.train.workers, "threads": configured.train.threads,
                                     "cpus_per_worker": configured.train.cpus_per_worker, **as_configured}}
            rows.append(row)
            spread = "" if len(rounds) == 1 else (
                f" [median of {len(rounds)} rounds; whole {row['efficiency_range'][0]:.2f}-"
                f"{row['efficiency_range'][1]:.2f}, steady {row['efficiency_steady_range'][0]:.2f}-"
                f"{row['efficiency_steady_range'][1]:.2f}]")
            print(f"{name:18} {variant or 'defaults':24} bare {plain['samples_per_s']:6.1f}/s (after/before "
                  f"{plain['drift']:.2f})  fmolab 1w "
                  f"{mine['samples_per_s']:6.1f}/s = {row['efficiency']:.2f} of bare (steady "
                  f"{mine['steady_samples_per_s']:.1f}/s = {row['efficiency_steady']:.2f}){spread}, data wait "
                  f"{100 * mine['steady_data_wait_frac']:.1f}%, preempted {mine['preempted_per_s']:.0f}/s (bare "
                  f"{plain['preempted_per_s']:.0f}/s)  |  as configured ({configured.train.workers} "
                  f"workers): {as_configured['samples_per_s']:.1f}/s (steady "
                  f"{as_configured['steady_samples_per_s']:.1f}), data wait "
                  f"{100 * as_configured['steady_data_wait_frac']:.1f}%", flush=True)
    result = {"what": __doc__.split("\n\n")[0], "seconds_per_measurement": args.seconds, "threads": args.threads,
              "cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
              "cases": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
