"""The config tree: one dataclass per section, each with a ``check()`` for values that are well-typed
but impossible (the render sections: :mod:`fmolab.config.render`); :mod:`fmolab.config.loading`
builds it from YAML and overrides."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fmolab import storage
from fmolab.config.render import BackgroundRenderConfig, RenderConfig, TrajectoryConfig
from fmolab.config.rules import ConfigError, require
from fmolab.storage import resolve_work_dir

__all__ = ["BackgroundRenderConfig", "Config", "ConfigError", "DataConfig", "LossConfig", "ModelConfig",
           "MonitorConfig", "RenderConfig", "RuntimeConfig", "TrackingConfig", "TrainConfig", "TrajectoryConfig",
           "require", "resolve_work_dir"]


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class RuntimeConfig:
    """Where things run and where files go."""

    address: str = ""  # Ray address; "" starts a local Ray on this machine
    work_dir: str = ""  # this machine's temporary files and caches; "" = $FMOLAB_HOME or ./fmolab-work
    # Where outputs go (datasets, runs, checkpoints, searches, evaluations): a folder or an object-store
    # URI such as s3://bucket/fmolab that every node reaches; "" = $FMOLAB_STORAGE, else the work folder
    storage: str = ""
    num_cpus: int = 0  # logical CPUs for a local Ray; 0 = all cores
    # Bound of each node's cache of remote shards (GB); 0 = $FMOLAB_CACHE_GB, else half the free space
    cache_gb: float = 0.0

    def check(self) -> None:
        require(self.num_cpus >= 0, "runtime.num_cpus", self.num_cpus, "must be >= 0")
        require(self.cache_gb >= 0, "runtime.cache_gb", self.cache_gb, "must be >= 0 (0: half the free space)")
        require(not storage.is_remote(self.work_dir), "runtime.work_dir", self.work_dir,
                "must be a local folder (this machine's temporary files and caches); put outputs in object "
                f"storage with runtime.storage={self.work_dir}")
        env = os.environ.get("FMOLAB_CACHE_GB", "")  # the default of cache_gb: checked before any work too
        if not self.cache_gb and env:
            try:
                ok = float(env) >= 0
            except ValueError:
                ok = False
            require(ok, "FMOLAB_CACHE_GB (runtime.cache_gb)", env, "must be a number of GB >= 0 (0: half the free space)")


@dataclass(frozen=True)
class DataConfig:
    """What training reads and how an item is composed (thesis 3.2.1)."""

    train: str = ""  # sequence dataset folder; "" = the render section's output
    val: str = ""  # "" = split ``val_fraction`` of the objects off ``train``
    backgrounds: str = ""  # background dataset folder; "" = <train>/backgrounds
    val_backgrounds: str = ""  # validation background folder; "" = hold out bg_val_fraction of the clips
    bg_val_fraction: float = 0.1  # background clips (by clip id) held out for validation
    format: str = "double_blur"  # input format spec, see `fmolab list formats`
    # validation items in another format of the same input channels ("" = data.format), e.g. a model
    # trained on one object scored on multi_object (thesis 4.4)
    val_format: str = ""
    val_fraction: float = 0.1
    frames_per_sample: int = 8  # ground-truth sub-frames used per item (evenly spaced)
    min_contrast: float = 0.1
    max_tries: int = 5
    flip: bool = True
    time_reverse: bool = False
    noise: float = 0.0  # std of Gaussian sensor noise added to inputs
    jitter: float = 0.0  # brightness/contrast jitter amplitude
    objects_per_image: list[int] = field(default_factory=lambda: [1, 3])  # multi_object only
    seed: int = 0
    # Decoded background clips are cached per process (decoding a clip costs more than an item).
    bg_cache_mb: float = 512.0
    # Rows and their decoded images are cached per process up to this size (MB): a small dataset trained
    # for many epochs is read and decoded once; 0 = decode every item (benchmarks/train.py measures it)
    row_cache_mb: float = 512.0
    # "torch": each Train worker makes its own items; "ray_data": Ray Data actors make them (on any
    # node) and stream them to the workers (fmolab.data.ray_pipeline)
    pipeline: Literal["torch", "ray_data"] = "torch"
    # torch pipeline: up to this many batches made ahead; 0 = each batch made between two steps
    # (docs/architecture.md "Training speed on CPU")
    prefetch: int = 0
    # where those batches are made: "thread" (of the Train worker, while the network computes), "process"
    # (a forked child that hands them over in shared memory: no contention for Python's lock with the
    # step; fmolab.data.child_stream) or "loop" (by the training thread, data.prefetch in a row between
    # two steps: the caches a step leaves cold are warm again for all but the first)
    prefetch_in: Literal["thread", "process", "loop"] = "thread"
    loader_actors: int = 1  # ray_data: actors making items
    loader_cpus: float = 0.25  # ray_data: CPUs per actor/read task (fractional: Train must not starve)

    def check(self) -> None:
        require(0 <= self.val_fraction < 1, "data.val_fraction", self.val_fraction, "must be in [0, 1)")
        require(0 <= self.bg_val_fraction < 1, "data.bg_val_fraction", self.bg_val_fraction, "must be in [0, 1)")
        require(self.frames_per_sample >= 2, "data.frames_per_sample", self.frames_per_sample, "must be >= 2")
        require(len(self.objects_per_image) == 2 and 1 <= self.objects_per_image[0] <= self.objects_per_image[1],
                 "data.objects_per_image", self.objects_per_image, "must be [min, max] with 1 <= min <= max")
        require(self.noise >= 0 and self.jitter >= 0, "data.noise/jitter", (self.noise, self.jitter), "must be >= 0")
        require(self.bg_cache_mb >= 0, "data.bg_cache_mb", self.bg_cache_mb, "must be >= 0")
        require(self.row_cache_mb >= 0, "data.row_cache_mb", self.row_cache_mb, "must be >= 0 (0: no cache)")
        require(self.loader_actors >= 1, "data.loader_actors", self.loader_actors, "must be >= 1")
        require(self.prefetch >= 0, "data.prefetch", self.prefetch, "must be >= 0 (0: no batches made ahead)")
        require(self.loader_cpus > 0, "data.loader_cpus", self.loader_cpus, "must be > 0")


@dataclass(frozen=True)
class ModelConfig:
    """Encoder/renderer by name (thesis ch. 2, 4.1)."""

    encoder: str = "resnet50"  # spec, see `fmolab list encoders`
    renderer: str = "defmo"  # spec, see `fmolab list renderers`
    norm: Literal["batch", "syncbatch", "group", "instance", "layer", "none"] = "group"
    pretrained: str = ""  # local path to ImageNet ResNet weights; "" = random init
    # Where N sub-frames of an exposure are rendered: centers (i + 0.5) / N, as fmolab's data is made;
    # endpoints k / (N - 1), as the published DeFMO weights were trained (`fmolab import defmo` sets it)
    time_convention: Literal["centers", "endpoints"] = "centers"


@dataclass(frozen=True)
class LossConfig:
    """Loss specs ``"Name:weight=w,k=v"``; ``compare`` are logged, never back-propagated."""

    train: list[str] = field(default_factory=lambda: ["DeFMOSupervised:weight=1.0"])
    compare: list[str] = field(default_factory=list)

    def check(self) -> None:
        require(len(self.train) > 0, "loss.train", self.train, "needs at least one loss")


@dataclass(frozen=True)
class MonitorConfig:
    """The validation metric that picks a run's best checkpoint (and so the weights it registers)."""

    # any val/* metric, e.g. val/tiou, val/crop_psnr, val/loss. Default: the benchmark's TIoU, which a
    # static render cannot score well (val/loss can: docs/studies.md)
    metric: str = "val/tiou"
    mode: Literal["min", "max"] = "max"  # whether lower or higher is better
    # a validation before the animation point (val/animation_ratio <= 0.5) never beats one after it
    animated_first: bool = True

    def check(self) -> None:
        require(self.metric.startswith("val/"), "train.monitor.metric", self.metric,
                 "must be a validation metric, e.g. val/loss or val/crop_psnr")


@dataclass(frozen=True)
class TrainConfig:
    """Ray Train loop (thesis 3.2.3-3.2.4)."""

    run_name: str = ""  # "" = <variant>-<timestamp>; the same name resumes
    workers: int = 2
    min_workers: int = 0  # > 0: elastic, min_workers..workers as nodes come and go (fmolab.train.elastic)
    start_timeout_s: float = 300.0  # the longest a run may have no running worker group before it fails
    resize_check_s: float = 60.0  # elastic: how often a running group looks for room to grow (Ray's default)
    cpus_per_worker: float = 0.5  # fractional so Train never waits forever behind a Data stage
    threads: int = 0  # torch threads per worker; 0 = this node's cores / its workers (a study running two
    #                   trials at once on 2 cores sets 1)
    use_gpu: bool = False
    batch_size: int = 4  # per worker
    steps: int = 1000
    grad_accum: int = 1
    lr: float = 1e-3
    optimizer: str = "Adam"  # spec of a torch.optim class, e.g. "AdamW:weight_decay=0.01" (Adam, AdamW: fused)
    scheduler: str = "none"  # "none", "cosine", "step:step_size=1000,gamma=0.5"
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    # torch.compile the model in place: on 2 CPU cores ~60 s of compiling for no gain beyond the
    # machine's noise at the small scale (benchmarks/train.py, docs/architecture.md); off by default
    compile: bool = False
    # Freed memory stays in the worker between steps (fmolab.train.heap: glibc's malloc otherwise unmaps and
    # faults in a step's big blocks every step; the workers also start with one malloc arena, as the
    # training thread's own arena unmaps its emptied heaps; benchmarks/train.py measures it on and off)
    keep_freed_memory: bool = True
    val_every: int = 100
    ckpt_every: int = 100
    log_every: int = 10
    val_samples: int = 16
    preview_samples: int = 2
    nan_policy: Literal["stop", "skip"] = "stop"
    # Unreadable training rows are skipped and counted (data/skipped_rows); past this share of the
    # training rows the run stops naming them: its data is broken, not noisy (torch pipeline).
    max_skip_fraction: float = 0.05
    max_failures: int = 1
    time_limit: float = 0.0  # seconds; 0 = run all steps (the demo bounds its wall time with it)
    seed: int = 0
    monitor: MonitorConfig = field(default_factory=MonitorConfig)  # a search sets it to its metric

    def check(self) -> None:
        require(self.workers >= 1, "train.workers", self.workers, "must be >= 1")
        require(0 <= self.min_workers <= self.workers, "train.min_workers", self.min_workers,
                f"must be in [0, train.workers={self.workers}] (0: a fixed group of train.workers)")
        require(self.resize_check_s > 0, "train.resize_check_s", self.resize_check_s, "must be > 0 (seconds)")
        require(self.start_timeout_s >= 5, "train.start_timeout_s", self.start_timeout_s, "must be >= 5 (seconds)")
        require(self.cpus_per_worker > 0, "train.cpus_per_worker", self.cpus_per_worker, "must be > 0")
        require(self.threads >= 0, "train.threads", self.threads, "must be >= 0 (0 = cores / workers)")
        require(self.batch_size >= 1, "train.batch_size", self.batch_size, "must be >= 1")
        require(self.steps >= 1, "train.steps", self.steps, "must be >= 1")
        require(self.grad_accum >= 1, "train.grad_accum", self.grad_accum, "must be >= 1")
        require(self.lr > 0, "train.lr", self.lr, "must be > 0")
        for key in ("val_every", "ckpt_every", "log_every"):
            require(getattr(self, key) >= 1, f"train.{key}", getattr(self, key), "must be >= 1")
        require(0 <= self.max_skip_fraction <= 1, "train.max_skip_fraction", self.max_skip_fraction, "must be in [0, 1]")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow: where runs go and under which name models are registered."""

    uri: str = ""  # "" = $MLFLOW_TRACKING_URI, else sqlite:///<work_dir>/mlflow.db
    experiment: str = "fmolab"
    register_as: str = ""  # registered model name; "" = do not register
    alias: str = "newest"  # the alias set on each new version ("latest" is MLflow's reserved word)
    timeout: float = 10.0  # seconds to wait for a tracking server before failing

    def check(self) -> None:
        require(not self.alias or re.fullmatch(r"[\w-]+", self.alias) is not None, "tracking.alias", self.alias,
                "letters, digits, '_' and '-' only")
        require(self.alias.lower() != "latest" and not re.fullmatch(r"v\d+", self.alias.lower()), "tracking.alias",
                self.alias, "reserved by MLflow (models:/NAME/latest, vN name versions): choose another, e.g. newest")


@dataclass(frozen=True)
class Config:
    variant: str = "double_blur"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    # ---- derived paths (not config keys)
    @property
    def work_dir(self) -> Path:
        return resolve_work_dir(self.runtime.work_dir)

    @property
    def storage_root(self) -> str:
        """The root of every output: ``runtime.storage`` (a folder or a URI), else $FMOLAB_STORAGE, else
        the work folder."""
        return storage.normalize(self.runtime.storage or os.environ.get("FMOLAB_STORAGE") or self.work_dir)

    def output(self, *parts: str) -> str:
        """``<storage>/<parts...>``: where an output of this run goes (a path or a URI)."""
        return storage.join(self.storage_root, *parts)

    @property
    def dataset_dir(self) -> str:
        return storage.normalize(self.render.out) if self.render.out else self.output("datasets", self.render.name)

    @property
    def train_dir(self) -> str:
        return storage.normalize(self.data.train) if self.data.train else self.dataset_dir

    @property
    def backgrounds_dir(self) -> str:
        return storage.normalize(self.data.backgrounds) if self.data.backgrounds else storage.join(self.train_dir, "backgrounds")

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.work_dir / 'mlflow.db'}"
