"""Training throughput against a bare PyTorch loop, in alternating slices of one run (paired).

``train.py`` brackets fmolab's run with bare runs, minutes apart; this machine's rate drifts by up to
25% within minutes (its ``drift``), so its ratio moves by about as much from one run to the next. Here
both loops are alive at once and take turns: every ``--phase`` seconds one is stopped (SIGSTOP) and the
other continued (SIGCONT), so each of fmolab's slices has a bare slice just before and just after it,
under the same machine state, beside the same Ray processes (Ray Train's controller and the other
actors of the run keep running in both turns).

* **bare**: ``train.py``'s plain loop (same model, losses, optimizer, batch, precision, threads, batches
  made before the clock starts) in its own process, counting its steps in shared memory;
* **fmolab**: ``fmolab train`` at 1 worker (its Train worker process is the one stopped and continued),
  its steps and their times read back from MLflow's ``samples_per_s`` logs; a slice's rate counts from
  its first log to its last, so the step cut by a stop counts in neither turn.

Each fmolab slice is divided by the mean of the bare slices on either side; the figures are the
median of those ratios and their quartiles. Turns start after ``--warmup`` seconds of fmolab's loop
(the first epoch decodes what the row cache then holds). Writes ``benchmarks/results/train_paired.json``.

    python benchmarks/train_paired.py                           # demo + small double blur
    python benchmarks/train_paired.py --cases demo --pairs 20 --phase 4
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

from train import CASES, case_config, case_names, make_data, one_worker, plain_loop, premade


def bare_forever(cfg_dict: dict, threads: int, steps, ready) -> None:
    """The plain loop until killed, its step count in ``steps`` (shared memory: read while stopped)."""
    from fmolab.config import config_from_dict

    cfg = config_from_dict(cfg_dict)
    ds, step = plain_loop(cfg, threads)
    batches = premade(ds, cfg.train.batch_size)
    for k in range(3):  # warm-up
        step(batches[k % len(batches)], k)
    ready.set()
    k = 0
    while True:
        step(batches[k % len(batches)], k)
        k += 1
        steps.value = k


def train_worker_pid(runner: threading.Thread, timeout: float = 300.0) -> int:
    """The process of this job's Ray Train worker (one worker), from Ray's actor table, while ``runner``
    (the thread training) lives."""
    import ray
    from ray._private import state

    job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
    end = time.monotonic() + timeout
    while time.monotonic() < end and runner.is_alive():
        alive = state.actors(job_id=job, actor_state_name="ALIVE").values()
        pids = [a["Pid"] for a in alive if a["ActorClassName"] == "RayTrainWorker" and a["Pid"]]
        if pids:
            return pids[0]
        time.sleep(0.5)
    raise TimeoutError("no Ray Train worker came up (the run's error, if any, is above)")


def slice_rate(history: list, start: float, end: float, samples_per_step: int) -> float | None:
    """Samples a second between the first and the last log inside [start, end] (wall-clock seconds)."""
    inside = [m for m in history if start <= m.timestamp / 1000 <= end]
    if len(inside) < 2 or inside[-1].timestamp == inside[0].timestamp:
        return None
    return (inside[-1].step - inside[0].step) * samples_per_step / ((inside[-1].timestamp - inside[0].timestamp) / 1000)


def one_case(cfg, threads: int, pairs: int, phase: float, warmup: float, home: Path) -> dict:
    import mlflow

    from fmolab.config import to_dict
    from fmolab.runtime import init_ray
    from fmolab.train import train

    ctx = mp.get_context("spawn")
    steps, ready = ctx.Value("q", 0, lock=False), ctx.Event()
    plain = ctx.Process(target=bare_forever, args=(to_dict(cfg), threads, steps, ready), daemon=True)
    plain.start()
    if not ready.wait(600):
        raise RuntimeError("the bare loop did not start")
    os.kill(plain.pid, signal.SIGSTOP)  # before fmolab starts: a busy start-up makes Ray's requests time out
    init_ray("", 0, home)
    out: dict = {}

    def run() -> None:
        try:
            out.update(train(cfg, register=False))
        except BaseException as e:  # re-raised below, after the bare loop is gone
            out["error"] = e

    runner = threading.Thread(target=run)
    runner.start()
    worker = train_worker_pid(runner)
    time.sleep(warmup)
    turns = []  # (who, start, end, bare steps done in it)
    try:
        for who in ["bare", "fmolab"] * pairs + ["bare"]:  # each fmolab turn between two bare ones
            go, halt = (plain.pid, worker) if who == "bare" else (worker, plain.pid)
            os.kill(halt, signal.SIGSTOP)
            before, start = steps.value, time.time()
            os.kill(go, signal.SIGCONT)
            time.sleep(phase)
            os.kill(go, signal.SIGSTOP)
            turns.append((who, start, time.time(), steps.value - before))
    finally:
        plain.kill()
        try:
            os.kill(worker, signal.SIGCONT)  # the run goes on to its time limit
        except ProcessLookupError:
            pass
    runner.join()
    if "error" in out:
        raise out["error"]
    history = sorted(mlflow.MlflowClient().get_metric_history(out["run_id"], "samples_per_s"), key=lambda m: m.step)
    per_step = cfg.train.batch_size * cfg.train.grad_accum
    rates = [(who, n * per_step / (end - start) if who == "bare" else slice_rate(history, start, end, per_step))
             for who, start, end, n in turns]
    ratios = [mine / ((rates[i - 1][1] + rates[i + 1][1]) / 2)
              for i, (who, mine) in enumerate(rates) if who == "fmolab" and mine]
    if not ratios:
        raise RuntimeError(f"no fmolab turn had two logs inside it: raise --phase (now {phase} s) or lower "
                           "train.log_every")
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [float("nan")] * 3
    bare_rates = [r for who, r in rates if who == "bare"]
    mine_rates = [r for who, r in rates if who == "fmolab" and r]
    return {"efficiency": round(statistics.median(ratios), 3), "quartiles": [round(q[0], 3), round(q[2], 3)],
            "pairs": len(ratios), "bare_samples_per_s": statistics.median(bare_rates),
            "fmolab_samples_per_s": statistics.median(mine_rates), "turns": rates}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES), help=f"of {', '.join(CASES)}")
    ap.add_argument("--pairs", type=int, default=15, help="fmolab turns (each between two bare turns)")
    ap.add_argument("--phase", type=float, default=5.0, help="seconds a turn")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds of fmolab's loop before the turns")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (both loops)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every case")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_paired.json"))
    args = ap.parse_args()
    if args.pairs < 2 or args.phase < 1:
        ap.error("--pairs >= 2 and --phase >= 1 (a turn needs several of fmolab's log windows)")
    cases = case_names(ap, args.cases)

    from fmolab.runtime import quiet_third_party

    quiet_third_party()
    home = Path(tempfile.mkdtemp(prefix="fmp-", dir="/tmp"))
    os.environ["FMOLAB_HOME"] = str(home)
    os.environ.setdefault("FMOLAB_PROGRESS", "0")
    rows = []
    for name in cases:
        data = make_data(name, home, args.set)
        seconds = args.warmup + (2 * args.pairs + 1) * args.phase + 15  # the loop's time limit: past the turns
        cfg = case_config(name, home, data, seconds, [*args.set, *one_worker(args.threads), f"train.run_name=paired-{name}"])
        row = {"case": name, "batch_size": cfg.train.batch_size, "threads": args.threads,
               **one_case(cfg, args.threads, args.pairs, args.phase, args.warmup, home)}
        rows.append(row)
        print(f"{name:18} fmolab 1w {row['fmolab_samples_per_s']:6.1f}/s, bare {row['bare_samples_per_s']:6.1f}/s: "
              f"{row['efficiency']:.3f} of bare (median of {row['pairs']} paired turns, quartiles "
              f"{row['quartiles'][0]:.3f}-{row['quartiles'][1]:.3f})", flush=True)
    result = {"what": __doc__.split("\n\n")[0], "phase_s": args.phase, "pairs": args.pairs, "cpus": os.cpu_count(),
              "machine": platform.machine(), "python": platform.python_version(), "cases": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
