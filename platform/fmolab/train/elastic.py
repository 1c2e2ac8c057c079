"""How many Train workers, and for how long a run may wait for them (Ray Train V2).

``train.min_workers`` > 0 makes the group elastic: Ray Train starts it with what the cluster can
hold between ``min_workers`` and ``workers`` and restarts it, from the last checkpoint, at another
size as nodes come and go (it looks for room to grow every ``train.resize_check_s``). Ray Train itself waits forever for a group it cannot place (its startup
timeout is retried without limit; the elastic policy waits without even a timeout), so
:class:`StartBound` runs in its controller and fails the run once it has had no running group for
``train.start_timeout_s``.
"""
from __future__ import annotations

import os
import time

from fmolab.config import Config

# Ray Train's own wait for one placement attempt: short, so an abort (Ctrl-C) is not queued behind it
PLACEMENT_WAIT_S = 15.0


class TrainStartTimeout(RuntimeError):
    """No worker group could run for train.start_timeout_s."""


def unwrap(error: BaseException) -> BaseException:
    """Ray Train's ``ControllerError`` around :class:`TrainStartTimeout` as that error itself."""
    inner = getattr(error, "controller_failure", None)
    return TrainStartTimeout(str(inner)) if type(inner).__name__ == "TrainStartTimeout" else error


PLACEMENT_VAR = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
_USERS_PLACEMENT_WAIT = os.environ.get(PLACEMENT_VAR, "")  # as the user set it, before any run of this process


def scaling(cfg: Config) -> dict:
    """``ScalingConfig`` arguments for ``cfg.train``'s workers (a range when elastic, checked for room
    to grow every ``train.resize_check_s``)."""
    train_cfg = cfg.train
    # set for each run (a process may launch several, with different bounds), unless the user set it
    os.environ[PLACEMENT_VAR] = _USERS_PLACEMENT_WAIT or str(min(PLACEMENT_WAIT_S, train_cfg.start_timeout_s))
    if not train_cfg.min_workers:
        return {"num_workers": train_cfg.workers}
    return {"num_workers": (train_cfg.min_workers, train_cfg.workers),
            "elastic_resize_monitor_interval_s": train_cfg.resize_check_s}


def start_bound(cfg: Config):
    """The controller callback of ``cfg``'s start bound (Ray Train's internal callback interface; a
    Ray without it gets none, and waits as Ray Train does)."""
    try:
        from ray.train.v2._internal.execution.callback import ControllerCallback
    except ImportError:
        return None

    class StartBound(ControllerCallback):
        def __init__(self, seconds: float, need: str):
            self.seconds, self.need, self.since = seconds, need, time.monotonic()

        def after_controller_state_update(self, previous_state, current_state):
            name = type(current_state).__name__
            if name == "RunningState" or current_state.is_terminal():
                self.since = time.monotonic()
                return
            if name not in ("InitializingState", "SchedulingState", "ReschedulingState", "RestartingState",
                            "ResizingState"):
                return
            waited = time.monotonic() - self.since
            if waited > self.seconds:
                import logging

                import ray

                # the error reaches the driver's one line; Ray's traceback of a callback is noise here
                logging.getLogger("ray.train.v2._internal.execution.callback_manager").setLevel(logging.CRITICAL)

                cpus = sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive"))
                raise TrainStartTimeout(
                    f"no group of {self.need} could run for {waited:.0f} s (train.start_timeout_s="
                    f"{self.seconds:.0f}); the cluster has {cpus:g} CPU(s) on its live nodes. Add nodes, lower "
                    "train.min_workers or train.cpus_per_worker, or raise train.start_timeout_s; then resume "
                    "with `fmolab train --resume RUN_NAME`")

    t = cfg.train
    need = (f"{t.min_workers}..{t.workers}" if t.min_workers else f"{t.workers}") + \
        f" Train worker(s) of {t.cpus_per_worker:g} CPU{' + 1 GPU' if t.use_gpu else ''}"
    return StartBound(t.start_timeout_s, need)
