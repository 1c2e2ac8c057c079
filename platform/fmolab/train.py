"""Distributed training with Ray Train (DDP), tracked in MLflow (thesis 3.2.3-3.2.4).

Driver: ``train(cfg)`` starts/resumes the MLflow run, runs a ``TorchTrainer`` whose workers execute
``train_loop``, then logs the best weights as an MLflow model and registers it. Workers: build data,
model and losses by name, step, validate, checkpoint (with the best-metric state, so a resumed run
keeps tracking the same best), and rank 0 logs metrics and preview animations.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fmolab.config import Config, config_from_dict, to_dict
from fmolab.registry import Registry, SpecError, parse_spec

SCHEDULERS: Registry = Registry("scheduler")


@SCHEDULERS.register("none")
def _no_schedule(optimizer, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@SCHEDULERS.register("cosine")
def _cosine(optimizer, total_steps: int, warmup: int = 0, min_factor: float = 0.0):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@SCHEDULERS.register("step")
def _step(optimizer, total_steps: int, step_size: int = 1000, gamma: float = 0.5):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def build_optimizer(spec: str, params, lr: float) -> torch.optim.Optimizer:
    name, kwargs = parse_spec(spec)
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        known = [n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
                 and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n != "Optimizer"]
        raise SpecError(f"unknown optimizer {name!r}; torch.optim has: {', '.join(sorted(known))}")
    return cls(params, lr=lr, **kwargs)


# ---------------------------------------------------------------- metrics


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR over all remaining dims (one MSE per sample, as the FMO benchmark)."""
    mse = ((pred - target) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


def animation(renders: torch.Tensor) -> torch.Tensor:
    """How much renders differ across time: mean temporal std of alpha, per sample.

    Before the "animation point" every timestamp gets the same render (value ~0); after it the
    renders follow the object. Compared with the same number on the ground truth it gives a ratio.
    """
    return renders[:, :, 3].std(dim=1).flatten(1).mean(1)


@dataclass
class TrainState:
    step: int = 0
    best_metric: float = float("inf")
    best_step: int = -1
    animation_step: int = -1
    nan_skipped: int = 0
    history: dict[str, list] = field(default_factory=dict)


# ---------------------------------------------------------------- worker side


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _batches(dataset, batch_size: int, rank: int, world: int, seed: int, collate):
    """Endless stream of batches: a fresh permutation each epoch, strided over ranks."""
    epoch = 0
    n = len(dataset)
    if n < world:
        raise RuntimeError(f"training split has {n} items, fewer than {world} workers: render more sequences")
    while True:
        dataset.set_epoch(epoch)  # new backgrounds and augmentations every pass
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = torch.randperm(n, generator=g)[rank::world].tolist()
        order = order[: len(order) // batch_size * batch_size] or order  # tiny datasets: one short batch
        for i in range(0, len(order), batch_size):
            yield epoch, collate([dataset[j] for j in order[i:i + batch_size]])
        epoch += 1


def _quiet_ray_reports() -> None:
    """Ray Train V2 logs each report's whole metrics dict at INFO on every rank (two screenfuls per
    validation); the loop's own ``[train]``/``[val]`` lines say it shorter."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: leave its logging alone
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _ray_batches(shard, batch_size: int, seed: int):
    """Endless stream of batches from this worker's Ray Data shard (it holds many epochs: see
    :func:`torch_trainer`; should a run outlast them, the shard is read again)."""
    from fmolab.data.ray_pipeline import RayCollate

    collate_fn = RayCollate()
    epoch = 0
    while True:
        got = 0
        for batch in shard.iter_torch_batches(batch_size=batch_size, collate_fn=collate_fn, drop_last=True,
                                              local_shuffle_buffer_size=4 * batch_size,
                                              local_shuffle_seed=seed + epoch):
            got += 1
            yield epoch, batch
        if not got:
            raise RuntimeError(f"this worker's Ray Data shard holds fewer than batch_size={batch_size} items: "
                               "render more sequences or lower train.batch_size")
        epoch += 1


def torch_trainer(cfg: Config, loop_config: dict, run_config):
    """The ``TorchTrainer`` of :func:`train_loop` for ``cfg`` (plain runs and Tune trials alike)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    tc = cfg.train
    datasets = None
    if cfg.data.pipeline == "ray_data":
        from fmolab.data.ray_pipeline import ray_dataset

        # enough passes for the whole run in one Ray Data execution (each start costs seconds)
        samples = tc.steps * tc.batch_size * tc.grad_accum * tc.workers
        datasets = {"train": ray_dataset(cfg, "train", batch_size=tc.batch_size, samples=samples)}
    return TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=tc.workers, use_gpu=tc.use_gpu,
            resources_per_worker={"CPU": tc.cpus_per_worker, **({"GPU": 1} if tc.use_gpu else {})},
        ),
        run_config=run_config,
        datasets=datasets,
    )


def metric_name(name: str) -> str:
    """MLflow allows ``[\w\-. :/]`` in names; loss specs carry '=' and ',' ("RGBL1:mode=gt")."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("=", "_"))


class _Logger:
    """Rank-0 MLflow logging through the client (no global active-run state inside Ray workers)."""

    def __init__(self, run_id: str, tracking_uri: str, enabled: bool):
        self.run_id, self.enabled = run_id, enabled and bool(run_id)
        if self.enabled:
            import mlflow

            self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)

    def metrics(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        import mlflow

        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[mlflow.entities.Metric(metric_name(k), float(v), ts, step)
                                                    for k, v in values.items() if math.isfinite(float(v))])

    def artifact(self, path: str | Path, artifact_path: str) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


def train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import torch.distributed as dist

    from fmolab.data import build_dataset, collate, in_channels, to_device
    from fmolab.losses import LossSet
    from fmolab.models import build_model

    cfg = config_from_dict(loop_config["config"])
    tc = cfg.train
    _quiet_ray_reports()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(tc.seed + rank)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, ctx.get_local_world_size())))
    device = ray.train.torch.get_device()
    bf16 = tc.precision == "bf16"

    train_ds = build_dataset(cfg, "train") if cfg.data.pipeline == "torch" else None
    val_ds = build_dataset(cfg, "val")
    model = build_model(cfg.model, in_channels(cfg.data.format))
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    losses = LossSet(cfg.loss.train, cfg.loss.compare)
    optimizer = build_optimizer(tc.optimizer, model.parameters(), tc.lr)
    scheduler = SCHEDULERS.build(tc.scheduler, optimizer=optimizer, total_steps=tc.steps)
    state = TrainState()
    best_weights: dict | None = None

    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            saved = torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=True)
            _unwrap(model).load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            state = TrainState(**{k: saved["train_state"][k] for k in TrainState.__dataclass_fields__})
            best_weights = torch.load(Path(d) / "best_model.pt", map_location="cpu", weights_only=True)
        if rank == 0:
            _say(f"[train] resumed at step {state.step}, best {state.best_metric:.5f} at step {state.best_step}")

    log = _Logger(loop_config.get("run_id", ""), loop_config.get("tracking_uri", ""), rank == 0)
    if checkpoint:  # a resume or a recovery after a lost worker: on the record, not only in a log
        log.metrics({"resumed_from_step": state.step}, state.step)
    if cfg.data.pipeline == "ray_data":
        stream = _ray_batches(ray.train.get_dataset_shard("train"), tc.batch_size, tc.seed + state.step)
    else:
        stream = _batches(train_ds, tc.batch_size, rank, world, tc.seed + state.step, collate)
    start, start_step = time.time(), state.step
    sums: dict[str, float] = {}
    count = 0
    waited, window_start = 0.0, time.perf_counter()

    def gather(obj):
        if world == 1:
            return [obj]
        out = [None] * world
        dist.all_gather_object(out, obj)  # small dicts; ranks may differ in keys (no tensor shape to agree on)
        return out

    def all_mean(values: dict[str, float]) -> dict[str, float]:
        parts = gather(values)
        keys = sorted(set().union(*parts))
        return {k: sum(p[k] for p in parts if k in p) / sum(k in p for p in parts) for k in keys}

    def validate_all() -> dict[str, float]:
        parts = gather(_validate(model, val_ds, losses, cfg, rank, world, device, collate))
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for part_sums, part_counts in parts:
            for k, v in part_sums.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + part_counts[k]
        return {f"val/{k}": v / counts[k] for k, v in sums.items()}

    def all_true(flag: bool) -> bool:
        if world == 1:
            return flag
        t = torch.tensor([float(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t.item() > 0

    def should_stop() -> bool:
        over = float(tc.time_limit > 0 and time.time() - start > tc.time_limit)
        if world > 1:
            t = torch.tensor([over])
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            over = float(t.item())
        return over > 0

    while state.step < tc.steps:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        step_values: dict[str, float] = {}
        for micro in range(tc.grad_accum):
            t_wait = time.perf_counter()
            _, batch = next(stream)
            waited += time.perf_counter() - t_wait
            batch = to_device(batch, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                outputs = model(batch["inputs"], batch["times"], batch.get("contrast_inputs"))
                total, values = losses(batch, outputs)
            if not all_true(bool(torch.isfinite(total))):  # ranks must agree, or DDP's all-reduce hangs
                detail = ", ".join(f"{k}={float(v):.4g}" for k, v in values.items())
                if tc.nan_policy == "stop":
                    raise FloatingPointError(f"non-finite loss at step {state.step} ({detail}); "
                                             f"set train.nan_policy=skip to skip such steps")
                state.nan_skipped += 1
                optimizer.zero_grad(set_to_none=True)
                break
            (total / tc.grad_accum).backward()
            for k, v in values.items():
                step_values[k] = step_values.get(k, 0.0) + float(v) / tc.grad_accum
            step_values["loss"] = step_values.get("loss", 0.0) + float(total.detach()) / tc.grad_accum
        else:
            optimizer.step()
        scheduler.step()
        state.step += 1
        for k, v in step_values.items():
            sums[k] = sums.get(k, 0.0) + v
        count += 1

        stop = should_stop()
        last = state.step >= tc.steps or stop
        if state.step % tc.log_every == 0 or last:
            window = max(time.perf_counter() - window_start, 1e-9)
            # share of the time spent waiting for batches: > ~0.1 means training is data-bound
            means = all_mean({**{f"train/{k}": v / max(1, count) for k, v in sums.items()},
                              "data_wait_frac": waited / window})
            elapsed = time.time() - start
            rate = (state.step - start_step) * tc.batch_size * tc.grad_accum * world / max(elapsed, 1e-9)
            means.update({"lr": scheduler.get_last_lr()[0], "samples_per_s": rate, "nan_skipped": state.nan_skipped})
            log.metrics(means, state.step)
            if rank == 0:
                remaining = (tc.steps - state.step) / max((state.step - start_step) / max(elapsed, 1e-9), 1e-9)
                if tc.time_limit > 0:
                    remaining = min(remaining, max(0.0, tc.time_limit - elapsed))
                _say(f"[train] step {state.step}/{tc.steps} ({100 * state.step / tc.steps:.0f}%) "
                     f"loss {means.get('train/loss', float('nan')):.4f} | {rate:.1f} samples/s | "
                     f"data wait {100 * means['data_wait_frac']:.0f}% | ETA {_fmt_seconds(remaining)}")
            sums, count = {}, 0
            waited, window_start = 0.0, time.perf_counter()

        validate = state.step % tc.val_every == 0 or last
        if validate or state.step % tc.ckpt_every == 0:
            metrics: dict[str, Any] = {"step": state.step}
            if validate:
                val = validate_all()
                val_loss = val.get("val/loss", float("inf"))
                if val_loss < state.best_metric:
                    state.best_metric, state.best_step = val_loss, state.step
                    if rank == 0:
                        best_weights = copy.deepcopy({k: v.cpu() for k, v in _unwrap(model).state_dict().items()})
                if state.animation_step < 0 and val.get("val/animation_ratio", 0.0) > 0.5:
                    state.animation_step = state.step
                val.update({"val/best_loss": state.best_metric, "val/animation_step": state.animation_step})
                log.metrics(val, state.step)
                metrics.update(val)
                if rank == 0:
                    _log_previews(model, val_ds, cfg, state.step, device, collate, log)
                    _say(f"[val] step {state.step}: loss {val_loss:.4f} psnr {val.get('val/psnr', 0):.2f} dB "
                         f"animation {val.get('val/animation_ratio', 0):.2f} (best {state.best_metric:.4f} "
                         f"@ {state.best_step})")
            metrics["best_metric"] = state.best_metric
            _report(model, optimizer, scheduler, state, best_weights, cfg, metrics, rank)
        if stop:
            if rank == 0:
                _say(f"[train] time limit {tc.time_limit:.0f}s reached at step {state.step}")
            break


def _say(text: str) -> None:
    """Progress line from a worker. Ray Train patches print() into its logger and tees it again when
    another library wrapped sys.stdout (every line twice); the process's own stdout gets it once."""
    print(text, file=sys.__stdout__, flush=True)


def _fmt_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _report(model, optimizer, scheduler, state, best_weights, cfg, metrics, rank) -> None:
    """Every rank reports; rank 0 attaches the checkpoint (state + best weights + config)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as d:
        weights = {k: v.cpu() for k, v in _unwrap(model).state_dict().items()}
        torch.save({"model": weights, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "train_state": state.__dict__}, Path(d) / "state.pt")
        torch.save(best_weights if best_weights is not None else weights, Path(d) / "best_model.pt")
        (Path(d) / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


@torch.no_grad()
def _validate(model, val_ds, losses, cfg, rank, world, device, collate) -> tuple[dict, dict]:
    """This rank's share of the validation items: (sum per metric, count per metric)."""
    from fmolab.compose import composite
    from fmolab.data import to_device

    model.eval()
    n = min(len(val_ds), cfg.train.val_samples)
    idx = list(range(n))[rank::world]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}

    def add(key: str, value: float, weight: int = 1) -> None:
        if math.isfinite(value):  # e.g. TIoU of an empty predicted matte: left out, not averaged in
            sums[key] = sums.get(key, 0.0) + value * weight
            counts[key] = counts.get(key, 0) + weight

    for i in range(0, len(idx), cfg.train.batch_size):
        batch = to_device(collate([val_ds[j] for j in idx[i:i + cfg.train.batch_size]]), device)
        outputs = _unwrap(model)(batch["inputs"], batch["times"], batch.get("contrast_inputs"))
        total, values = losses(batch, outputs)
        b = batch["inputs"].shape[0]
        bg = batch["backgrounds"][:, :1]  # composite every frame on the first background
        values = {**values, "loss": total,
                  "psnr": psnr(composite(outputs["renders"], bg), composite(batch["frames"], bg)).mean(),
                  "animation_ratio": (animation(outputs["renders"]) / animation(batch["frames"]).clamp_min(1e-4)).mean()}
        for k, v in values.items():
            add(k, float(v), b)
        for scores in _benchmark_scores(outputs["renders"].float().cpu(), batch["frames"].cpu(), bg.cpu()):
            for k, v in scores.items():
                add(k, v)
    return sums, counts  # combined over ranks by the caller (weighted by counts)


def _benchmark_scores(renders: torch.Tensor, frames: torch.Tensor, bg: torch.Tensor) -> list[dict[str, float]]:
    """FMO benchmark metrics per sample (fmolab.metrics): PSNR and SSIM on the scoring crop around the
    ground-truth trajectory, TIoU from alpha centroids with the object's equivalent radius."""
    from fmolab import metrics as M
    from fmolab.compose import composite

    out = []
    for b in range(renders.shape[0]):
        gt_alpha, pred_alpha = frames[b, :, 3].numpy(), renders[b, :, 3].numpy()
        box = M.scoring_crop(gt_alpha)
        s = M.score_sample(composite(renders[b], bg[b]).numpy(), composite(frames[b], bg[b]).numpy(), box,
                           M.alpha_centroids(gt_alpha), M.alpha_centroids(pred_alpha), M.equivalent_radius(gt_alpha))
        out.append({"crop_psnr": s["psnr"], "ssim": s["ssim"], "tiou": s["tiou"]})
    return out


@torch.no_grad()
def _log_previews(model, val_ds, cfg, step, device, collate, log) -> None:
    from fmolab.data import to_device
    from fmolab.media import prediction_animation, save_animation, stack_rows

    n = min(cfg.train.preview_samples, len(val_ds))
    if n == 0:
        return
    batch = to_device(collate([val_ds[i] for i in range(n)]), device)
    renders = _unwrap(model)(batch["inputs"], batch["times"])["renders"].float().cpu()
    rows = [prediction_animation([im for im in batch["images"][b].cpu()], batch["frames"][b].cpu(), renders[b])
            for b in range(n)]
    with tempfile.TemporaryDirectory() as d:
        path = save_animation(Path(d) / f"val_step{step:07d}.webp", stack_rows(rows))
        log.artifact(path, "previews")


# ---------------------------------------------------------------- driver side


def run_dir(cfg: Config, run_name: str) -> Path:
    return cfg.work_dir / "runs" / run_name


def resolve_run_name(cfg: Config) -> str:
    return cfg.train.run_name or f"{cfg.variant}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_run_config(work_dir: str | Path, run_name: str) -> Config:
    """The config a run was started with (for ``fmolab train --resume NAME``)."""
    path = Path(work_dir) / "runs" / run_name / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"no run {run_name!r} under {Path(work_dir) / 'runs'}: nothing to resume")
    return config_from_dict(json.loads(path.read_text()))


def train(cfg: Config, register: bool = True) -> dict:
    """Train (or resume) ``cfg``; returns run id, model URI, registered version and final metrics."""
    import ray.train

    from fmolab import tracking
    from fmolab.runtime import init_ray
    from fmolab.shards import read_manifest

    cfg.runtime.work_dir = str(cfg.work_dir)  # pinned before the config travels to workers
    uri = tracking.setup_tracking(cfg)  # first: fail fast on a dead server, before starting Ray
    init_ray(cfg.runtime.address, cfg.runtime.num_cpus, cfg.work_dir)
    run_name = resolve_run_name(cfg)
    cfg.train.run_name = run_name
    rdir = run_dir(cfg, run_name)
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))

    manifest = read_manifest(cfg.train_dir)
    tags = {"variant": cfg.variant, "git_commit": tracking.git_commit(),
            "dataset": str(cfg.train_dir), "dataset_manifest_sha1": manifest.get("sha1", _manifest_hash(cfg.train_dir))}
    run_id = tracking.start_or_resume_run(cfg, run_name, tags)
    print(f"[train] run {run_name} (MLflow run {run_id}) on {cfg.train.workers} worker(s)", flush=True)

    trainer = torch_trainer(
        cfg, {"config": to_dict(cfg), "run_id": run_id, "tracking_uri": uri},
        ray.train.RunConfig(
            name=run_name,
            storage_path=str(cfg.work_dir / "ray_results"),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    out = {"run_id": run_id, "run_name": run_name, "metrics": dict(result.metrics or {})}
    if result.checkpoint is None:
        return out
    with result.checkpoint.as_directory() as d:
        best = Path(d) / "best_model.pt"
        local_best = rdir / "best_model.pt"
        local_best.write_bytes(best.read_bytes())
    out["best_weights"] = str(local_best)
    _log_curves(cfg, run_id, rdir)
    out["model_uri"] = tracking.log_model(cfg, local_best, run_id)
    if register and cfg.tracking.register_as:
        out["version"] = tracking.register(out["model_uri"], cfg.tracking.register_as, cfg.tracking.alias,
                                           tags={"run_name": run_name, "variant": cfg.variant})
        out["registered"] = f"models:/{cfg.tracking.register_as}@{cfg.tracking.alias}"
    return out


def _manifest_hash(root: Path) -> str:
    import hashlib

    path = Path(root) / "manifest.json"
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.exists() else "none"


def _log_curves(cfg: Config, run_id: str, rdir: Path) -> None:
    """Loss curves of this run as a PNG artifact (train and validation overlaid)."""
    import mlflow

    from fmolab.media import plot_curves

    client = mlflow.MlflowClient()
    not_losses = ("val/psnr", "val/animation_ratio", "val/animation_step", "val/best_loss")
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith(("train/", "val/")) and k not in not_losses]
    series = {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in sorted(keys)}
    path = plot_curves(series, rdir / "loss_curves.png", title=f"{cfg.train.run_name} ({cfg.variant})")
    client.log_artifact(run_id, str(path), "plots")
