"""What a training run would build first, built on the driver before Ray starts: the input format, the
loss set, the model (on the meta device: no memory, no weights), the optimizer and scheduler, and the
data's readiness (shards present and readable, rows there, the blurs the format reads, a size the model
takes). A mistake here costs a second and one line, not a minute of start-up, a 150-line worker
traceback and a retry by ``train.max_failures`` (a config error is not a worker fault).
"""
from __future__ import annotations

import logging

from fmolab.config import Config, ConfigError

log = logging.getLogger("fmolab.train")


def preflight(cfg: Config, data: bool = True) -> dict:
    """Raise :class:`ConfigError` (what, where, what to do) on the first problem; else a summary
    (rows, image size, the format's blurs). ``data=False``: the config only (``--print-config``, where
    the data may not exist yet)."""
    import torch

    from fmolab.data import build_format
    from fmolab.losses import LossSet
    from fmolab.models.defmo import DeFMO, check_size
    from fmolab.train.optim import build_optimizer, build_scheduler

    fmt = _built("data.format", lambda: build_format(cfg.data.format, cfg.data))
    if cfg.data.val_format:
        val_fmt = _built("data.val_format", lambda: build_format(cfg.data.val_format, cfg.data))
        if val_fmt.in_channels != fmt.in_channels:
            raise ConfigError(f"data.val_format = {cfg.data.val_format!r} makes {val_fmt.in_channels}-channel inputs, "
                              f"data.format {cfg.data.format!r} {fmt.in_channels}: the model takes one; pick formats "
                              f"of the same inputs (e.g. double_blur and multi_object)")
    _built("loss.train / loss.compare", lambda: LossSet(cfg.loss.train, cfg.loss.compare))
    m = cfg.model
    with torch.device("meta"):  # the structure only: shapes, no memory, no pretrained weights
        model = _built("model", lambda: DeFMO(fmt.in_channels, m.encoder, m.renderer, m.norm, m.time_convention))
    optimizer = _built("train.optimizer", lambda: build_optimizer(cfg.train.optimizer, model.parameters(), cfg.train.lr))
    _built("train.scheduler", lambda: build_scheduler(cfg.train.scheduler, optimizer, cfg.train.steps))
    for note in slow_settings(cfg):
        log.warning(note)
    if not data:
        return {"config": "format, losses, model, optimizer and scheduler build"}
    data = check_data(cfg, fmt)
    if not model.any_size:
        h, w = data["size"]
        try:
            check_size(h, w)
        except ValueError as exc:
            raise ConfigError(f"data.train={cfg.train_dir}: its images are {w}x{h} (WxH) and renderer "
                              f"{m.renderer!r} needs sizes divisible by 16 ({exc}); render the data at such a "
                              f"size (render.width/render.height) or use model.renderer=defmo_official, which "
                              f"takes any size") from None
    return data


def slow_settings(cfg: Config) -> list[str]:
    """GPU settings measured to cost time with this model (allowed: a user may have other reasons)."""
    t, notes = cfg.train, []
    if t.use_gpu and cfg.model.norm == "group":
        why = ("with model.norm=group, GroupNorm's kernels bound the step (docs/cluster.md, section 5); "
               "they pay with model.norm=batch")
        if t.channels_last:
            notes.append(f"train.channels_last=true trained at 0.63x the samples/s of NCHW on an H200 {why}")
        if t.precision == "bf16":
            notes.append(f"train.precision=bf16 trained at 0.98x the samples/s of fp32 on an H200 {why}")
    return notes


def _built(where: str, build):
    try:
        return build()
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError) as exc:  # SpecError and the builders' own checks
        raise ConfigError(f"{where}: {exc}") from None


def check_data(cfg: Config, fmt) -> dict:
    """Rows, size and blur names of ``data.train`` from the row index or the Parquet footers, and one
    row's small columns (a shard the index covers is not opened here: one unreadable is skipped and
    counted when its rows are read)."""
    from fmolab.data.loader import manifest_size
    from fmolab.shard_reader import ShardReader
    from fmolab.shards import ShardError

    where = f"data.train={cfg.train_dir}"
    try:
        reader = ShardReader(cfg.train_dir, columns=["width", "height", "blur_names"])
    except ShardError as exc:
        fix = "" if "fmolab render" in str(exc) else "; render one with `fmolab render` or point data.train at one"
        raise ConfigError(f"data.train: {exc}{fix}") from None
    if len(reader) == 0:
        raise ConfigError(f"{where}: its shards hold no rows; render some with `fmolab render`")
    row = reader.row(0)
    missing = [b for b in fmt.blur_names if b not in (row.get("blur_names") or [])]
    if missing:
        raise ConfigError(f"{where}: format {cfg.data.format!r} reads blurs {list(fmt.blur_names)}, the rows have "
                          f"{row.get('blur_names')}; render them (render.blurs) or pick another data.format")
    size = manifest_size(reader.manifest) or (int(row["height"]), int(row["width"]))
    return {"rows": len(reader), "size": size, "bad_shards": dict(reader.bad_shards),
            "blurs": list(row.get("blur_names") or [])}
