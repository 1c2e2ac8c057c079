"""One typed config tree for every stage: YAML files + ``a.b=c`` overrides, validated with clear errors.

The tree is a set of nested dataclasses. ``load_config(files, overrides)`` merges YAML files in
order, applies overrides, checks every key and type, then runs each section's ``check()`` for values
that are well-typed but impossible. The whole tree is saved with every run (``to_dict``).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fmolab.registry import parse_value


class ConfigError(ValueError):
    """A config file or override is wrong; the message says where, what, and what is allowed."""


# ---------------------------------------------------------------- sections


@dataclass
class RuntimeConfig:
    """Where things run and where files go."""

    address: str = ""  # Ray address; "" starts a local Ray on this machine
    work_dir: str = ""  # every generated and temp file goes below here; "" = $FMOLAB_HOME or ./fmolab-work
    num_cpus: int = 0  # logical CPUs for a local Ray; 0 = all cores

    def check(self) -> None:
        _require(self.num_cpus >= 0, "runtime.num_cpus", self.num_cpus, "must be >= 0")


@dataclass
class TrajectoryConfig:
    """Thesis 3.1 step 3: start/end inside the camera frustum, bounded travel."""

    depth: list[float] = field(default_factory=lambda: [3.0, 6.0])  # object distance from camera
    margin: float = 0.1  # fraction of the frustum kept free at the edges
    min_travel: float = 0.5  # XY travel, in object diameters
    max_travel: float = 3.0
    max_dz: float = 0.5  # change of depth during the exposure
    max_end_rotation: float = 30.0  # degrees: end rotation = start rotation + small random offset
    object_size: list[float] = field(default_factory=lambda: [0.6, 1.2])  # object diameter range

    def check(self) -> None:
        _require(len(self.depth) == 2 and 0 < self.depth[0] <= self.depth[1], "render.trajectory.depth",
                 self.depth, "must be [near, far] with 0 < near <= far")
        _require(0 <= self.margin < 0.5, "render.trajectory.margin", self.margin, "must be in [0, 0.5)")
        _require(0 <= self.min_travel <= self.max_travel, "render.trajectory.min_travel", self.min_travel,
                 f"must be >= 0 and <= max_travel ({self.max_travel})")
        _require(self.max_dz >= 0, "render.trajectory.max_dz", self.max_dz, "must be >= 0")
        _require(len(self.object_size) == 2 and 0 < self.object_size[0] <= self.object_size[1],
                 "render.trajectory.object_size", self.object_size, "must be [min, max] with 0 < min <= max")


@dataclass
class BackgroundRenderConfig:
    """Background clips: procedural videos, or frames read from a VOT/OTB-style folder."""

    source: str = "procedural"  # "procedural" or a folder of frame folders / videos
    num_clips: int = 32
    frames_per_clip: int = 8

    def check(self) -> None:
        _require(self.num_clips >= 1, "render.backgrounds.num_clips", self.num_clips, "must be >= 1")
        _require(self.frames_per_clip >= 2, "render.backgrounds.frames_per_clip", self.frames_per_clip,
                 "must be >= 2 (double blur needs consecutive frames)")


@dataclass
class RenderConfig:
    """Synthetic FMO dataset generation with Blender (thesis 3.1)."""

    out: str = ""  # dataset folder; "" = <work_dir>/datasets/<name>
    name: str = "fmo"
    num_sequences: int = 1000
    seed: int = 0
    width: int = 320
    height: int = 240
    num_frames: int = 24  # sharp sub-frames per sequence
    motion_blur_steps: int = 40
    blurs: dict[str, list[float]] = field(
        default_factory=lambda: {"full": [0.0, 1.0], "first": [0.0, 0.5], "second": [0.5, 1.0]}
    )
    # A blur whose span two other blurs partition (full = first + second) is their length-weighted
    # premultiplied mean instead of a third engine render (same integral, one render less); false =
    # every blur engine-rendered.
    full_from_halves: bool = True
    engine: Literal["cycles", "eevee"] = "cycles"
    device: Literal["cpu", "gpu"] = "cpu"
    # Render-cluster defaults measured on CPU (benchmarks/render.py, results/render.json): 4 samples
    # + OIDN denoising + 1 bounce (environment light only, nothing to inter-reflect) is the smallest
    # (~1.7 core-s and ~27 KB/sequence with the WebP settings below, full blur from the halves and
    # the TBB cap of render_cluster/scene.py); without denoising, 4 samples save ~0.3 core-s but
    # cost +30% bytes (noise compresses badly), and 8-16 samples cost more CPU and still more bytes.
    # Blurs always use max(samples, motion_blur_steps) samples (80 instead of 40: more bytes too).
    samples: int = 4
    max_bounces: int = 1
    denoise: bool = True
    objects: str = "procedural"  # "procedural" or a ShapeNetCore.v2-style OBJ folder
    textures: str = "procedural"  # "procedural" or a DTD-style image folder
    min_coverage: float = 0.01  # minimum mean alpha of every blur, else the sample is re-drawn
    max_tries: int = 5
    # WebP (benchmarks/render.py "webp"): quality 80; effort 5 for the animated frames (2% smaller
    # than 4 at the same speed; 6 saves 4% more for +0.7 core-s) and 6 for the blurs (lossless alpha
    # of the soft matte: 18% smaller than 4 for +0.5 core-s). Lossy alpha (alpha_quality < 100)
    # would save more but erases faint blur tails (alpha 1..12 -> 0), so it is not used.
    webp_quality: int = 80
    webp_method: int = 5  # WebP effort 0-6 for frames and background clips (size/speed trade-off)
    webp_blur_method: int = 6  # WebP effort 0-6 for the blurs
    shard_rows: int = 64  # rows per shard (bounds shard size)
    workers: int = 0  # render actors; 0 = one per CPU
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    backgrounds: BackgroundRenderConfig = field(default_factory=BackgroundRenderConfig)

    def check(self) -> None:
        _require(self.num_sequences >= 1, "render.num_sequences", self.num_sequences, "must be >= 1")
        _require(self.width >= 16 and self.height >= 16, "render.width/height", (self.width, self.height),
                 "must both be >= 16")
        _require(self.num_frames >= 2, "render.num_frames", self.num_frames, "must be >= 2")
        _require(self.motion_blur_steps >= 1, "render.motion_blur_steps", self.motion_blur_steps, "must be >= 1")
        for name, span in self.blurs.items():
            _require(len(span) == 2 and 0 <= span[0] < span[1] <= 1, f"render.blurs.{name}", span,
                     "must be [start, end] with 0 <= start < end <= 1")
        _require(self.samples >= 1, "render.samples", self.samples, "must be >= 1")
        _require(0 <= self.min_coverage < 1, "render.min_coverage", self.min_coverage, "must be in [0, 1)")
        _require(self.max_tries >= 1, "render.max_tries", self.max_tries, "must be >= 1")
        _require(1 <= self.webp_quality <= 101, "render.webp_quality", self.webp_quality,
                 "must be 1..100 (101 = lossless)")
        for key in ("webp_method", "webp_blur_method"):
            _require(0 <= getattr(self, key) <= 6, f"render.{key}", getattr(self, key), "must be 0..6")
        _require(self.shard_rows >= 1, "render.shard_rows", self.shard_rows, "must be >= 1")
        _require(self.workers >= 0, "render.workers", self.workers, "must be >= 0")


@dataclass
class DataConfig:
    """What training reads and how an item is composed (thesis 3.2.1)."""

    train: str = ""  # sequence dataset folder; "" = the render section's output
    val: str = ""  # "" = split ``val_fraction`` of the objects off ``train``
    backgrounds: str = ""  # background dataset folder; "" = <train>/backgrounds
    val_backgrounds: str = ""  # validation background folder; "" = hold out bg_val_fraction of the clips
    bg_val_fraction: float = 0.1  # background clips (by clip id) held out for validation
    format: str = "double_blur"  # input format spec, see `fmolab list formats`
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
    # "torch": each Train worker makes its own items; "ray_data": Ray Data actors make them (on any
    # node) and stream them to the workers (fmolab.data.ray_pipeline)
    pipeline: Literal["torch", "ray_data"] = "torch"
    loader_actors: int = 1  # ray_data: actors making items
    loader_cpus: float = 0.25  # ray_data: CPUs per actor/read task (fractional: Train must not starve)

    def check(self) -> None:
        _require(0 <= self.val_fraction < 1, "data.val_fraction", self.val_fraction, "must be in [0, 1)")
        _require(0 <= self.bg_val_fraction < 1, "data.bg_val_fraction", self.bg_val_fraction, "must be in [0, 1)")
        _require(self.frames_per_sample >= 2, "data.frames_per_sample", self.frames_per_sample, "must be >= 2")
        _require(len(self.objects_per_image) == 2 and 1 <= self.objects_per_image[0] <= self.objects_per_image[1],
                 "data.objects_per_image", self.objects_per_image, "must be [min, max] with 1 <= min <= max")
        _require(self.noise >= 0 and self.jitter >= 0, "data.noise/jitter", (self.noise, self.jitter), "must be >= 0")
        _require(self.bg_cache_mb >= 0, "data.bg_cache_mb", self.bg_cache_mb, "must be >= 0")
        _require(self.loader_actors >= 1, "data.loader_actors", self.loader_actors, "must be >= 1")
        _require(self.loader_cpus > 0, "data.loader_cpus", self.loader_cpus, "must be > 0")


@dataclass
class ModelConfig:
    """Encoder/renderer by name (thesis ch. 2, 4.1)."""

    encoder: str = "resnet50"  # spec, see `fmolab list encoders`
    renderer: str = "defmo"  # spec, see `fmolab list renderers`
    norm: Literal["batch", "syncbatch", "group", "instance", "layer", "none"] = "group"
    pretrained: str = ""  # local path to ImageNet ResNet weights; "" = random init


@dataclass
class LossConfig:
    """Loss specs ``"Name:weight=w,k=v"``; ``compare`` are logged, never back-propagated."""

    train: list[str] = field(default_factory=lambda: ["DeFMOSupervised:weight=1.0"])
    compare: list[str] = field(default_factory=list)

    def check(self) -> None:
        _require(len(self.train) > 0, "loss.train", self.train, "needs at least one loss")


@dataclass
class TrainConfig:
    """Ray Train loop (thesis 3.2.3-3.2.4)."""

    run_name: str = ""  # "" = <variant>-<timestamp>; the same name resumes
    workers: int = 2
    cpus_per_worker: float = 0.5  # fractional so Train never waits forever behind a Data stage
    use_gpu: bool = False
    batch_size: int = 4  # per worker
    steps: int = 1000
    grad_accum: int = 1
    lr: float = 1e-3
    optimizer: str = "Adam"  # spec of a torch.optim class, e.g. "AdamW:weight_decay=0.01"
    scheduler: str = "none"  # "none", "cosine", "step:step_size=1000,gamma=0.5"
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    val_every: int = 100
    ckpt_every: int = 100
    log_every: int = 10
    val_samples: int = 16
    preview_samples: int = 2
    nan_policy: Literal["stop", "skip"] = "stop"
    max_failures: int = 1
    time_limit: float = 0.0  # seconds; 0 = run all steps (the demo bounds its wall time with it)
    seed: int = 0

    def check(self) -> None:
        _require(self.workers >= 1, "train.workers", self.workers, "must be >= 1")
        _require(self.cpus_per_worker > 0, "train.cpus_per_worker", self.cpus_per_worker, "must be > 0")
        _require(self.batch_size >= 1, "train.batch_size", self.batch_size, "must be >= 1")
        _require(self.steps >= 1, "train.steps", self.steps, "must be >= 1")
        _require(self.grad_accum >= 1, "train.grad_accum", self.grad_accum, "must be >= 1")
        _require(self.lr > 0, "train.lr", self.lr, "must be > 0")
        for key in ("val_every", "ckpt_every", "log_every"):
            _require(getattr(self, key) >= 1, f"train.{key}", getattr(self, key), "must be >= 1")


@dataclass
class TrackingConfig:
    """MLflow: where runs go and under which name models are registered."""

    uri: str = ""  # "" = $MLFLOW_TRACKING_URI, else sqlite:///<work_dir>/mlflow.db
    experiment: str = "fmolab"
    register_as: str = ""  # registered model name; "" = do not register
    alias: str = "latest"
    timeout: float = 10.0  # seconds to wait for a tracking server before failing


@dataclass
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
        # An explicit value wins: Ray workers may carry a stale FMOLAB_HOME from an earlier ray.init.
        return Path(self.runtime.work_dir or os.environ.get("FMOLAB_HOME") or "fmolab-work").absolute()

    @property
    def dataset_dir(self) -> Path:
        return Path(self.render.out) if self.render.out else self.work_dir / "datasets" / self.render.name

    @property
    def train_dir(self) -> Path:
        return Path(self.data.train) if self.data.train else self.dataset_dir

    @property
    def backgrounds_dir(self) -> Path:
        return Path(self.data.backgrounds) if self.data.backgrounds else self.train_dir / "backgrounds"

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.work_dir / 'mlflow.db'}"


# ---------------------------------------------------------------- loading, merging, validating


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r}: {rule}")


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def flatten(d: dict, prefix: str = "", cls: type | None = None) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: sections (dataclasses of the tree) are opened, values
    such as the ``render.blurs`` table stay whole."""
    cls = cls or Config
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        sub = hints.get(k)
        if isinstance(v, dict) and sub is not None and dataclasses.is_dataclass(sub):
            out.update(flatten(v, key + ".", sub))
        else:
            out[key] = v
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only lossless cases (int -> float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section (mapping) for {_type_name(tp)}, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key} = {value!r}: must be one of {', '.join(map(repr, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key} = {value!r}: matches none of {tp} ({'; '.join(errors)})")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} = {value!r}: expected a list of {_type_name(item)}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key} = {value!r}: expected a mapping of {_type_name(kt)} -> {_type_name(vt)}")
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if tp in (int, float, bool, str) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{key} = {value!r}: expected {tp.__name__}, got {type(value).__name__}")
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = prefix or "the top level"
            raise ConfigError(f"unknown key {full!r}{hint}; allowed in {where}: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], full)
    default = cls()
    for name in names:
        if name in kwargs and dataclasses.is_dataclass(hints[name]):
            continue
        if name not in kwargs:
            kwargs[name] = getattr(default, name)
    return cls(**kwargs)


def _check_all(obj: Any) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_all(value)
    if hasattr(obj, "check"):
        obj.check()


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is a value, not a section")
    node[parts[-1]] = value


def _merge(base: dict, update: dict, cls: type | None = None) -> dict:
    """Merge ``update`` into ``base`` section by section; plain values (also dicts such as the blur
    table) are replaced whole, or a user could never drop a default blur span."""
    cls = cls or Config
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for k, v in update.items():
        sub = hints.get(k)
        if isinstance(v, dict) and isinstance(out.get(k), dict) and sub is not None and dataclasses.is_dataclass(sub):
            out[k] = _merge(out[k], v, sub)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[str, Any]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise ConfigError(f"override {text!r} is not of the form section.key=value (e.g. train.lr=1e-4)")
    try:
        parsed = yaml.safe_load(value) if value.strip()[:1] in "[{" else parse_value(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: cannot parse value: {exc}") from exc
    return key.strip(), parsed


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top, got {type(data).__name__}")
    return data


def load_config(files: list[str | os.PathLike] = (), overrides: list[str] = (), base: dict | None = None) -> Config:
    """Defaults <- ``base`` <- each YAML file <- each override, then validate the whole tree."""
    tree = to_dict(Config())
    if base:
        tree = _merge(tree, base)
    for f in files:
        data = read_yaml(f)
        data = (data.get("config") or {}) if "entrypoint" in data else data  # job specs embed a config
        try:
            _build(Config, data)  # report unknown keys against the file, before merging
        except ConfigError as exc:
            raise ConfigError(f"{f}: {exc}") from exc
        tree = _merge(tree, data)
    for o in overrides:
        key, value = parse_override(o)
        patch: dict = {}
        _set_path(patch, key, value)
        try:
            _build(Config, patch)
        except ConfigError as exc:
            raise ConfigError(f"override {o!r}: {exc}") from exc
        tree = _merge(tree, patch)
    cfg = _build(Config, tree)
    _check_all(cfg)
    return cfg


def config_from_dict(data: dict) -> Config:
    """Rebuild a saved tree (checkpoint, MLflow) exactly, with validation."""
    cfg = _build(Config, data)
    _check_all(cfg)
    return cfg


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
