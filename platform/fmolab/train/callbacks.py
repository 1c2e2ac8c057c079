"""What happens around the training loop, one concern a class: MLflow logging, progress lines, preview
animations, the NaN policy, the time limit, the FMO benchmark's validation scores.

Hooks run on every rank in the same order (a hook that needs rank 0 checks ``trainer.rank``);
collectives live in the trainer, so a callback never makes ranks disagree.
"""
from __future__ import annotations

import math
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch


class Callback:
    def on_start(self, trainer, resumed: bool) -> None: ...
    def on_log(self, trainer, means: dict[str, float]) -> None: ...  # every train.log_every steps
    def on_val_batch(self, trainer, batch: dict, outputs: dict, add) -> None: ...  # add(key, value)
    def on_validation(self, trainer, val: dict[str, float]) -> None: ...
    def on_nonfinite(self, trainer, values: dict[str, float]) -> None: ...  # raise to stop the run
    def should_stop(self, trainer) -> bool:
        return False
    def on_end(self, trainer, stopped: bool) -> None: ...
    def on_error(self, trainer, error: BaseException) -> None: ...  # fit raised: save what is held


def say(text: str) -> None:
    """A progress line from a worker. Ray Train patches print() into its logger and tees it again when
    another library wrapped sys.stdout (every line twice); the process's own stdout gets it once."""
    print(text, file=sys.__stdout__, flush=True)


def metric_name(name: str) -> str:
    """MLflow allows ``[\\w\\-. :/]`` in names; loss specs carry '=' and ',' ("RGBL1:mode=gt")."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("=", "_"))


def fmt_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class MLflowLogger(Callback):
    """Rank 0 logs through the client (no global active-run state inside Ray workers).

    Training logs are gathered and written together at most every :attr:`send_every_s`, and before
    each validation, at the end and on an error: a write to a SQLite store costs ~15 ms of CPU, and at
    ``train.log_every`` 10 the small scale's four writes a second took ~15% of its 1-worker rate on 2
    cores (``benchmarks/train.py``). Each metric keeps its own step and time."""

    send_every_s = 5.0

    def __init__(self, run_id: str, tracking_uri: str):
        self.run_id, self.uri, self._client = run_id, tracking_uri, None
        self.logged_until = -1  # resumed: steps up to here are on the record already (kept as logged)
        self.pending: list = []  # training logs on their way (MLflow's logging thread)
        self.gathered: list = []  # training logs not sent yet
        self.sent_at = time.monotonic()

    def enabled(self, trainer) -> bool:
        return trainer.rank == 0 and bool(self.run_id)

    def client(self):
        if self._client is None:
            import mlflow

            self._client = mlflow.MlflowClient(tracking_uri=self.uri)
        return self._client

    def log(self, trainer, values: dict[str, float], wait: bool = True) -> None:
        """Log ``values`` at this step; ``wait=False`` leaves the write to MLflow's logging thread (a
        SQLite write is ~15 ms of the training thread's time). A wait also waits for those before it."""
        if not self.enabled(trainer):
            return
        from mlflow.entities import Metric

        if trainer.state.step <= self.logged_until:
            return  # re-trained after a resume from an earlier checkpoint: each step is logged once
        ts = int(time.time() * 1000)
        metrics = [Metric(metric_name(k), float(v), ts, trainer.state.step) for k, v in values.items()
                   if math.isfinite(float(v))]
        if wait:
            self.flush()
            self.client().log_batch(self.run_id, metrics=metrics)
            return
        self.gathered += metrics
        if time.monotonic() - self.sent_at >= self.send_every_s or len(self.gathered) >= 500:  # MLflow: <= 1000 a batch
            self.send()

    def send(self) -> None:
        """Hand the gathered training logs to MLflow's logging thread."""
        if self.gathered:
            self.pending.append(self.client().log_batch(self.run_id, metrics=self.gathered, synchronous=False))
        self.gathered, self.sent_at = [], time.monotonic()

    def flush(self) -> None:
        """Wait until the logs gathered or sent ahead are on the record (an error in one is raised here).
        Those lost with a worker are logged again: a resume logs the steps after the last one on record."""
        self.send()
        pending, self.pending = self.pending, []
        for operation in pending:
            operation.wait()

    def artifact(self, trainer, path: str | Path, folder: str) -> None:
        if self.enabled(trainer):
            self.client().log_artifact(self.run_id, str(path), folder)

    def on_start(self, trainer, resumed):
        if not self.enabled(trainer):
            return
        # MLflow's import and its store's first query: ~1-2 s, which the first send made a stall of the
        # loop (a tenth of the demo's first 10 s) and part of its rate
        self.client().get_run(self.run_id)
        if not resumed:
            return
        # A resume or a recovery after a lost worker: on the record, not only in a log. The steps
        # between the checkpoint and the last logged one run again; their first values stay.
        client, step = self.client(), trainer.state.step
        self.logged_until = max((m.step for k in ("train/loss", "val/loss", "resumed_from_step")
                                 for m in client.get_metric_history(self.run_id, k)), default=-1)
        if not any(m.step == step for m in client.get_metric_history(self.run_id, "resumed_from_step")):
            from mlflow.entities import Metric

            client.log_batch(self.run_id, metrics=[Metric("resumed_from_step", float(step), int(time.time() * 1000),
                                                          step)])

    def on_log(self, trainer, means):
        self.log(trainer, means, wait=False)

    def on_validation(self, trainer, val):  # each checkpoint's validation: everything before it on record
        self.log(trainer, val)

    def on_end(self, trainer, stopped):
        self.flush()

    def on_error(self, trainer, error):  # the steps logged before the error stay on the record
        if not self.enabled(trainer):
            return
        if isinstance(error, Exception):  # a failure: wait until they are written
            self.flush()
        else:  # Ctrl-C or SIGTERM: hand them over only (the store may be away)
            self.send()


class Progress(Callback):
    """``[train]`` and ``[val]`` lines on rank 0, with throughput, data wait and ETA."""

    def on_start(self, trainer, resumed):
        s, train_cfg = trainer.state, trainer.cfg.train
        if resumed and trainer.rank == 0:
            say(f"[train] resumed at step {s.step}, best {trainer.monitor} {s.best_metric:.5f} at step {s.best_step}")
        if trainer.rank == 0 and (train_cfg.min_workers or trainer.ranks.world != train_cfg.workers):
            say(f"[train] {trainer.ranks.world} worker(s) of {train_cfg.min_workers or train_cfg.workers}.."
                f"{train_cfg.workers}: {train_cfg.grad_accum} accumulation step(s), global batch "
                f"{train_cfg.batch_size * train_cfg.grad_accum * trainer.ranks.world}")

    def on_log(self, trainer, means):
        if trainer.rank != 0:
            return
        train_cfg, step = trainer.cfg.train, trainer.state.step
        elapsed = time.time() - trainer.started
        remaining = (train_cfg.steps - step) / max((step - trainer.start_step) / max(elapsed, 1e-9), 1e-9)
        if train_cfg.time_limit > 0:
            remaining = min(remaining, max(0.0, train_cfg.time_limit - elapsed))
        say(f"[train] step {step}/{train_cfg.steps} ({100 * step / train_cfg.steps:.0f}%) loss {means.get('train/loss', math.nan):.4f}"
            f" | {means['samples_per_s']:.1f} samples/s | data wait {100 * means['data_wait_frac']:.0f}%"
            f" | ETA {fmt_seconds(remaining)}")

    def on_validation(self, trainer, val):
        if trainer.rank == 0:
            s = trainer.state
            say(f"[val] step {s.step}: loss {val.get('val/loss', math.nan):.4f} psnr {val.get('val/psnr', 0):.2f} dB "
                f"animation {val.get('val/animation_ratio', 0):.2f} (best {trainer.monitor} {s.best_metric:.4f} "
                f"@ {s.best_step})")

    def on_end(self, trainer, stopped):
        if stopped and trainer.rank == 0:
            say(f"[train] time limit {trainer.cfg.train.time_limit:.0f}s reached at step {trainer.state.step}")


class Previews(Callback):
    """Rank 0: an animation (inputs | ground truth | prediction | alpha) of the first validation items
    at every validation, as MLflow artifacts ``previews/val_step<N>.webp`` and ``.gif`` (the GIF is what
    the artifact viewer displays), and at fixed names ``previews/latest.gif`` and, when the validation
    was the best so far, ``previews/best.gif``."""

    def __init__(self, logger: MLflowLogger):
        self.logger = logger

    @torch.no_grad()
    def on_validation(self, trainer, val):
        from fmolab.media import prediction_animation, save_animation, save_gif, stack_rows

        n = min(trainer.cfg.train.preview_samples, len(trainer.val_ds))
        if trainer.rank != 0 or n == 0 or not self.logger.enabled(trainer):
            return
        batch, outputs = trainer.predict(list(range(n)))
        renders = outputs["renders"].float().cpu()
        rows = [prediction_animation(list(batch["images"][b].cpu()), batch["frames"][b].cpu(), renders[b])
                for b in range(n)]
        frames, s = stack_rows(rows), trainer.state
        with tempfile.TemporaryDirectory() as d:
            stem = Path(d) / f"val_step{s.step:07d}"
            gif = save_gif(stem.with_suffix(".gif"), frames)
            names = [save_animation(stem.with_suffix(".webp"), frames), gif,
                     Path(shutil.copyfile(gif, Path(d) / "latest.gif"))]
            if s.best_step == s.step:
                names.append(Path(shutil.copyfile(gif, Path(d) / "best.gif")))
            for path in names:
                self.logger.artifact(trainer, path, "previews")


class NanPolicy(Callback):
    """``train.nan_policy``: stop naming the step and the losses, or skip the step (counted)."""

    def __init__(self, policy: str):
        self.policy = policy

    def on_nonfinite(self, trainer, values):
        if self.policy == "stop":
            detail = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            raise FloatingPointError(f"non-finite loss at step {trainer.state.step} ({detail}); "
                                     f"set train.nan_policy=skip to skip such steps")
        trainer.state.nan_skipped += 1


class DataHealth(Callback):
    """``train.max_skip_fraction``: stop when more of the training rows are unreadable than that (the
    count is the ranks' agreed one, so every rank stops together), naming a few and the fix."""

    def __init__(self, max_fraction: float):
        self.max_fraction = max_fraction

    def on_log(self, trainer, means):
        ds = trainer.train_ds
        skipped = means.get("data/skipped_rows", 0.0)
        if ds is None or not skipped or skipped <= self.max_fraction * len(ds):
            return
        from fmolab.shards import ShardError

        examples = "; ".join(f"{k}: {v[:120]}" for k, v in list(trainer.unreadable_rows().items())[:3])
        raise ShardError(f"{skipped:.0f} of {len(ds)} training rows are unreadable, more than "
                         f"train.max_skip_fraction={self.max_fraction} allows (e.g. {examples}); re-render or "
                         f"fix those shards (`fmolab dataset inspect`), or raise train.max_skip_fraction")


class TimeLimit(Callback):
    """``train.time_limit``: stop (with a checkpoint and a validation) once this many seconds passed."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def should_stop(self, trainer):
        return self.seconds > 0 and time.time() - trainer.started > self.seconds


class BenchmarkScores(Callback):
    """The FMO benchmark's crop PSNR, SSIM and TIoU of every validation item
    (:func:`fmolab.evaluation.metrics.score_renders`), and the crop PSNR of its static baselines
    ``val/im_crop_psnr`` and ``val/bg_crop_psnr`` (what a model must beat to be worth running)."""

    def on_val_batch(self, trainer, batch, outputs, add):
        from fmolab.compose import image_of_times
        from fmolab.evaluation.metrics import score_baselines, score_renders

        renders, frames = outputs["renders"].float().cpu().numpy(), batch["frames"].float().cpu().numpy()
        bgs, images = batch["backgrounds"].float().cpu().numpy(), batch["images"].float().cpu().numpy()
        times, spans = batch["times"].cpu().numpy(), batch["spans"].cpu().numpy()
        for b in range(renders.shape[0]):
            which = image_of_times(times[b], spans[b])  # each sub-frame on the background it was seen on
            for k, v in {**score_renders(renders[b], frames[b], bgs[b][which]),
                         **score_baselines(frames[b], images[b][which], bgs[b][which])}.items():
                add(k, v)


def default_callbacks(cfg, run_id: str, tracking_uri: str) -> list[Callback]:
    logger = MLflowLogger(run_id, tracking_uri)
    return [logger, Progress(), Previews(logger), NanPolicy(cfg.train.nan_policy), DataHealth(cfg.train.max_skip_fraction),
            TimeLimit(cfg.train.time_limit), BenchmarkScores()]
