"""The training loop of every Ray Train worker: a small :class:`Trainer` (``step``, ``validate``,
``checkpoint``) whose ``fit`` reads as the thesis' training step; everything around it (logging,
previews, NaN policy, time limit, benchmark scores) is a callback (:mod:`fmolab.train.callbacks`).
"""
from __future__ import annotations

import gc
import logging
import math
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from fmolab.config import Config, config_from_dict, derive
from fmolab.train import checkpoint as ckpt
from fmolab.train.callbacks import Callback, default_callbacks
from fmolab.train.collective import Collective
from fmolab.train.state import Monitor, TrainState, animated

log = logging.getLogger("fmolab.train")


def preemptions() -> int:
    """This process's involuntary context switches so far (all its threads): a thread taken off its core
    for another. A step's threads work in lockstep, so one preempted thread stalls the others."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def animation(renders: torch.Tensor) -> torch.Tensor:
    """How much renders differ across time: mean temporal std of alpha, per sample.

    Before the "animation point" every timestamp gets the same render (value ~0); after it the
    renders follow the object. Compared with the same number on the ground truth it gives a ratio.
    """
    return renders[:, :, 3].std(dim=1).flatten(1).mean(1)


class Trainer:
    def __init__(self, cfg: Config, model, optimizer, scheduler, losses, val_ds, device, rank: int, world: int,
                 callbacks: list[Callback], train_ds=None):
        self.cfg, self.model, self.optimizer, self.scheduler, self.losses = cfg, model, optimizer, scheduler, losses
        self.val_ds, self.device, self.rank = val_ds, device, rank
        self.ranks, self.callbacks = Collective(world), callbacks
        self.monitor = Monitor(cfg.train.monitor.metric, cfg.train.monitor.mode, cfg.train.monitor.animated_first)
        self.state = TrainState(best_metric=self.monitor.worst)
        self.best_weights: dict | None = None
        self.started, self.start_step = time.time(), 0
        self.train_ds = train_ds  # its ``skipped`` rows are counted (None: rows come from Ray Data)

    def unreadable_rows(self) -> dict[str, str]:
        """``{"<shard>#<row>": reason}`` of the rows this rank skipped as unreadable (whole unreadable
        shards, keyed by their path, are the driver's to report)."""
        if self.train_ds is None:
            return {}
        skipped = dict(self.train_ds.skipped)  # a copy: the prefetch thread may be adding to it
        return {k: v for k, v in skipped.items() if "#" in k}

    def emit(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def forward(self, batch: dict) -> dict:
        bf16 = self.cfg.train.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            return self.model(batch["inputs"], batch["times"], batch.get("contrast_inputs"))

    def predict(self, indices: list[int]) -> tuple[dict, dict]:
        from fmolab.data import to_device

        batch = to_device(self.val_ds.batch(indices), self.device)
        return batch, self.forward(batch)

    def restore(self, folder: Path) -> None:
        self.state, self.best_weights = ckpt.restore(folder, self.model, self.optimizer, self.scheduler)

    # ---- the three things a trainer does
    def step(self, stream) -> tuple[dict[str, float] | None, float]:
        """One optimizer step over ``train.grad_accum`` batches: (mean losses or None if skipped, data wait s)."""
        from fmolab.data import to_device

        accum = self.cfg.train.grad_accum
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        values: dict[str, float] = {}
        waited = 0.0
        for _ in range(accum):
            t = time.perf_counter()
            _, batch = next(stream)
            waited += time.perf_counter() - t
            batch = to_device(batch, self.device)
            total, parts = self.losses(batch, self.forward(batch), self.state.step)
            if not self.ranks.all(bool(torch.isfinite(total))):  # ranks must agree, or DDP's all-reduce hangs
                self.emit("on_nonfinite", {k: float(v) for k, v in parts.items()})
                self.optimizer.zero_grad(set_to_none=True)
                values = None
                break
            (total / accum).backward()
            for k, v in {**parts, "loss": total.detach()}.items():
                values[k] = values.get(k, 0.0) + float(v) / accum
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.state.step += 1
        return values, waited

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Losses, PSNR, animation ratio and the callbacks' scores over the validation items (this
        rank's share; combined over ranks); updates the best checkpoint by the monitor."""
        from fmolab.compose import composite
        from fmolab.evaluation.metrics import psnr

        self.model.eval()
        n, bs = min(len(self.val_ds), self.cfg.train.val_samples), self.cfg.train.batch_size
        idx = list(range(n))[self.rank::self.ranks.world]
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}

        def add(key: str, value: float, weight: int = 1) -> None:
            if math.isfinite(value):  # e.g. TIoU of an empty predicted matte: left out, not averaged in
                sums[key] = sums.get(key, 0.0) + value * weight
                counts[key] = counts.get(key, 0) + weight

        for i in range(0, len(idx), bs):
            batch, outputs = self.predict(idx[i:i + bs])
            total, values = self.losses(batch, outputs, self.state.step)
            for k, v in {**values, "loss": total}.items():
                add(k, float(v), batch["inputs"].shape[0])
            renders, bg = outputs["renders"].float(), batch["backgrounds"][:, :1]  # every frame on the first bg
            pred, gt = composite(renders, bg).cpu().numpy(), composite(batch["frames"], bg).cpu().numpy()
            ratio = animation(renders) / animation(batch["frames"]).clamp_min(1e-4)
            for b in range(len(pred)):
                add("psnr", psnr(pred[b], gt[b]))
                add("animation_ratio", float(ratio[b]))
            self.emit("on_val_batch", batch, outputs, add)
        val = {f"val/{k}": v for k, v in self.ranks.weighted_mean(sums, counts).items()}
        s, moving = self.state, animated(val)
        if self.monitor.improved(val.get(self.monitor.metric), s.best_metric, moving, s.best_animated):
            s.best_metric, s.best_step, s.best_animated = val[self.monitor.metric], s.step, moving
            self.best_weights = ckpt.cpu_weights(self.model) if self.rank == 0 else None
        if s.animation_step < 0 and moving:
            s.animation_step = s.step
        return {**val, f"best/{self.monitor.metric}": s.best_metric, "val/animation_step": s.animation_step}

    def checkpoint(self, metrics: dict) -> None:
        """Every rank reports; rank 0 attaches the checkpoint (state + best weights + config)."""
        import ray.train

        metrics = {**metrics, "step": self.state.step, "best_metric": self.state.best_metric,
                   "best_step": self.state.best_step, "best_animated": float(self.state.best_animated),
                   "animation_step": self.state.animation_step}
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory() as d:
            ckpt.save(Path(d), self.model, self.optimizer, self.scheduler, self.state, self.best_weights, self.cfg)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    # ---- the loop
    def fit(self, stream, resumed: bool = False) -> None:
        try:
            self._fit(stream, resumed)
        except BaseException as exc:  # each callback saves what it holds; the error raised stays this one
            for cb in self.callbacks:
                try:
                    cb.on_error(self, exc)
                except Exception as inner:
                    log.warning("%s could not save after the error: %s", type(cb).__name__, inner)
            raise

    def _fit(self, stream, resumed: bool) -> None:
        train_cfg = self.cfg.train
        self.emit("on_start", resumed)  # set-up the callbacks need (MLflow's client): before the clock
        self.started, self.start_step = time.time(), self.state.step
        sums: dict[str, float] = {}
        count, waited, window_start, preempted = 0, 0.0, time.perf_counter(), preemptions()
        stopped = False
        while self.state.step < train_cfg.steps and not stopped:
            values, wait = self.step(stream)
            waited += wait
            for k, v in (values or {}).items():
                sums[k] = sums.get(k, 0.0) + v
            count += values is not None
            stopped = self.ranks.any(any(cb.should_stop(self) for cb in self.callbacks))
            step, last = self.state.step, self.state.step >= train_cfg.steps or stopped
            if step % train_cfg.log_every == 0 or last:
                window = max(time.perf_counter() - window_start, 1e-9)
                # data wait: the share of the window spent waiting for batches (> ~0.1: data-bound)
                skipped = len(self.unreadable_rows())
                # preempted_per_s: how often the step's threads lost their cores (to Ray's processes, to
                # other workers or jobs): a loop that is neither data-bound nor fast is often this
                means = self.ranks.mean({**{f"train/{k}": v / max(1, count) for k, v in sums.items()},
                                         "data_wait_frac": waited / window, "data/skipped_rows": skipped,
                                         "preempted_per_s": (preemptions() - preempted) / window})
                means["data/skipped_rows"] *= self.ranks.world  # each rank reads its own rows
                rate = (step - self.start_step) * train_cfg.batch_size * train_cfg.grad_accum * self.ranks.world
                means.update(lr=self.scheduler.get_last_lr()[0], nan_skipped=self.state.nan_skipped,
                             world_size=self.ranks.world,
                             global_batch=train_cfg.batch_size * train_cfg.grad_accum * self.ranks.world,
                             samples_per_s=rate / max(time.time() - self.started, 1e-9))
                self.emit("on_log", means)
                sums, count, waited, window_start, preempted = {}, 0, 0.0, time.perf_counter(), preemptions()
            validate = step % train_cfg.val_every == 0 or last
            if validate or step % train_cfg.ckpt_every == 0:
                val = self.validate() if validate else {}
                if validate:
                    self.emit("on_validation", val)
                self.checkpoint(val)
        self.emit("on_end", stopped)


def tuned(model: torch.nn.Module, train_cfg) -> torch.nn.Module:
    """The model in ``train.channels_last`` memory format and, with ``train.compile``, compiled in place
    (its state_dict keys stay those of the plain model, so checkpoints load either way)."""
    if train_cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if train_cfg.compile:
        model.compile()
    return model


def _quiet_ray_reports() -> None:
    """Ray Train V2 logs each report's whole metrics dict at INFO on every rank (two screenfuls per
    validation); the loop's own ``[train]``/``[val]`` lines say it shorter."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: leave its logging alone
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker: build data, model, losses and optimizer by name, restore the
    last checkpoint if there is one, and fit."""
    import ray.train

    from fmolab.data import build_dataset, build_format, to_device
    from fmolab.train.heap import keep_freed_memory
    from fmolab.losses import LossSet
    from fmolab.models import build_model
    from fmolab.data.child_stream import child_batches
    from fmolab.data.prefetch import in_runs, prefetched
    from fmolab.train.optim import build_optimizer, build_scheduler
    from fmolab.train.streams import batch_stream, ray_batch_stream

    _quiet_ray_reports()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = config_from_dict(loop_config["config"])
    # Fewer workers than asked (elastic training after a lost node): accumulate more, so a step keeps
    # the global batch and the learning rate of train.workers (rounded up when it does not divide).
    cfg = derive(cfg, {"train.grad_accum": cfg.train.grad_accum * math.ceil(cfg.train.workers / world)})
    train_cfg = cfg.train
    if train_cfg.keep_freed_memory:
        keep_freed_memory()
    torch.manual_seed(train_cfg.seed + rank)
    torch.set_num_threads(train_cfg.threads or max(1, (os.cpu_count() or 1) // max(1, ctx.get_local_world_size())))
    device = ray.train.torch.get_device()

    model = ray.train.torch.prepare_model(tuned(build_model(cfg.model, build_format(cfg.data.format).in_channels),
                                                train_cfg))
    optimizer = build_optimizer(train_cfg.optimizer, model.parameters(), train_cfg.lr)
    train_ds = build_dataset(cfg, "train") if cfg.data.pipeline != "ray_data" else None  # Ray Data: in its actors
    trainer = Trainer(cfg, model, optimizer, build_scheduler(train_cfg.scheduler, optimizer, train_cfg.steps),
                      LossSet(cfg.loss.train, cfg.loss.compare), build_dataset(cfg, "val"), device, rank, world,
                      default_callbacks(cfg, loop_config.get("run_id", ""), loop_config.get("tracking_uri", "")),
                      train_ds)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            trainer.restore(Path(d))
    seed = train_cfg.seed + trainer.state.step
    if cfg.data.pipeline == "ray_data":
        stream = ray_batch_stream(ray.train.get_dataset_shard("train"), train_cfg.batch_size, seed)
    else:
        stream = batch_stream(train_ds, train_cfg.batch_size, rank, world, seed)
        if cfg.data.prefetch:  # the same batches in the same order, made ahead
            if device.type == "cpu":  # uint8 -> float there too (a no-op when the step's to_device meets it)
                stream = ((epoch, to_device(batch, device)) for epoch, batch in stream)
            if cfg.data.prefetch_in == "process":  # rows skipped there are counted here
                stream = child_batches(stream, cfg.data.prefetch, lambda: train_ds.skipped,
                                       train_ds.skipped_elsewhere.update)
            elif cfg.data.prefetch_in == "loop":
                stream = in_runs(stream, cfg.data.prefetch)
            else:
                stream = prefetched(stream, cfg.data.prefetch)
    # A Ray worker holds ~420k Python objects; a full collection during the loop scanned them all (1.4-1.5%
    # of a 15 s window at the small scale: loop_parts.py's gc_frac). Set-up's objects live as long as the
    # loop: the collector leaves them out.
    gc.freeze()
    trainer.fit(stream, resumed=bool(checkpoint))
