"""The Ray Data path: shards streamed through :func:`fmolab.data.dataset.make_batch` into Train workers.

shard row groups -> ``map_batches(read_row_groups)`` -> ``map_batches(RayItems)`` on an actor pool; a Train worker reads its
share with ``get_dataset_shard("train").iter_torch_batches(collate_fn=RayCollate())``. Items are the
very same as the torch path's (one per-sample function, the same seeds). Set ``data.pipeline=ray_data``
to train this way: decoding and compositing then run in Ray Data actors, on any node, and overlap the
training step instead of running inside the Train worker.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from fmolab.data.augment import Augment
from fmolab.data.background_adder import build_adder
from fmolab.data.dataset import gather_item, item_rng, make_batch, split_args
from fmolab.data.formats import UINT8_LAYERS, build_format
from fmolab.data.loader import COLUMNS, OPTIONAL, FMOLoader, RowError, Sequence
from fmolab import storage
from fmolab.shards import SEQUENCE_SCHEMA, open_parquet

log = logging.getLogger("fmolab.data")


class RayItems:
    """``map_batches`` callable: a batch of shard rows (pyarrow) -> a batch of items (numpy columns).

    Extra objects for ``multi_object`` come from the same batch (the torch path draws from the split).
    An item is seeded by ``(data.seed, epoch_seed + the row's epoch, seq_id)`` like the torch path's,
    so every pass over the data draws new augmentations and backgrounds.
    """

    def __init__(self, cfg_dict: dict, split: str, epoch_seed: int = 0):
        from fmolab.config import config_from_dict

        cfg = config_from_dict(cfg_dict)
        d = cfg.data
        self.fmt = build_format(d.format, d)
        self.adder = build_adder(cfg, split) if self.fmt.uses_background else None
        self.augment = Augment.from_config(d, train=split == "train")
        self.count, self.seed, self.epoch = d.frames_per_sample, d.seed, epoch_seed
        self.skipped: dict[str, str] = {}

    def __call__(self, batch) -> dict:
        seqs, epochs = [], []
        for r in batch.to_pylist():
            source = f"{storage.basename(r.get('path') or '?')}:{r.get('seq_id')}"
            try:
                seqs.append(Sequence(r, source))
                epochs.append(int(r.get("epoch") or 0))
            except RowError as exc:
                self._skip(exc)
        gathered = []
        for k, row in enumerate(seqs):
            rng = item_rng(self.seed, self.epoch + epochs[k], row.seq_id)
            others = [s for j, s in enumerate(seqs) if j != k]
            n_extra = min(self.fmt.rows_needed(rng) - 1, len(others))
            extras = [others[j] for j in rng.choice(len(others), n_extra, replace=False)] if n_extra > 0 else []
            try:
                gathered.append(gather_item(self.fmt, [row] + extras, self.adder, self.augment, self.count, rng))
            except RowError as exc:
                self._skip(exc)
        if not gathered:
            return {}
        out = make_batch(self.fmt, gathered, self.augment)
        # uint8 layers travel channels-last (their memory order: no copy); RayCollate turns them back
        return {k: (v.movedim(-3, -1).numpy() if k in UINT8_LAYERS else v.numpy()) if isinstance(v, torch.Tensor)
                else np.array(v, dtype=object) for k, v in out.items()}

    def _skip(self, exc: RowError) -> None:
        log.warning("skipping row %s: %s", exc.source, exc.reason)
        self.skipped[exc.source] = exc.reason


class RayCollate(NumpyBatchCollateFn):
    """``iter_torch_batches`` collate_fn: numpy columns -> the same dict as :func:`fmolab.data.collate`."""

    def __call__(self, batch: dict) -> dict:
        out = {}
        for k, v in batch.items():
            if v.dtype == object:
                out[k] = list(v)
            else:
                t = torch.from_numpy(np.ascontiguousarray(v))
                out[k] = t.movedim(-1, -3) if k in UINT8_LAYERS else t
        return out


def read_row_groups(batch: dict, columns: list[str], held_out: frozenset, keep: str) -> pa.Table:
    """``map_batches`` fn: ``(path, size, row_group, epoch)`` units -> their rows (``columns`` + ``path``
    + ``epoch``) of split ``keep`` (``size``: the shard's bytes as listed, -1 unknown).

    A shard that cannot be read is skipped with a warning (its rows are simply not produced).
    """
    tables = []
    for path, size, group, epoch in zip(batch["path"], batch["size"], batch["row_group"], batch["epoch"]):
        try:  # a remote shard is read by range: each row group once per epoch
            pf = open_parquet(path, size=int(size) if size >= 0 else None)
            have = set(pf.schema_arrow.names)
            t = pf.read_row_group(int(group), columns=[c for c in columns if c in have])
        except Exception as exc:
            log.warning("skipping row group %s of %s: %s", group, path, exc)
            continue
        for c in columns:  # optional columns an older shard lacks: nulls
            if c not in t.column_names:
                t = t.append_column(c, pa.nulls(len(t), SEQUENCE_SCHEMA.field(c).type))
        t = t.select(columns).append_column("path", pa.array([str(path)] * len(t)))
        t = t.append_column("epoch", pa.array([int(epoch)] * len(t), pa.int64()))
        if keep != "all":
            held = pa.array([o in held_out for o in t.column("object_id").to_pylist()])
            t = t.filter(held if keep == "val" else pa.compute.invert(held))
        tables.append(t)
    return pa.concat_tables(tables) if tables else pa.table({c: [] for c in [*columns, "path", "epoch"]})


def ray_dataset(cfg, split: str, epoch_seed: int = 0, batch_size: int = 16, epochs: int = 1, samples: int = 0):
    """Row groups of the shards -> ``map_batches(read_row_groups)`` -> ``map_batches(RayItems)``.

    One dataset covers ``epochs`` passes, or as many as yield ``samples`` items plus one (at most
    10,000), with the row groups in a fresh seeded order each pass: starting a Ray Data execution
    costs seconds (actors, scheduling), far more than an epoch of a small dataset.

    Every stage runs in tasks/actors of ``data.loader_cpus`` CPUs (``data.loader_actors`` item
    makers). The shards are read by fmolab's own stage rather than ``read_parquet``: Ray 2.60 lists
    files in a task of one whole CPU that cannot be configured, which never starts on a 2-CPU
    machine whose other CPU the Train workers hold.
    """
    import ray.data

    from fmolab.config import to_dict

    d = cfg.data
    root, loader_split = split_args(cfg, split)
    loader = FMOLoader(root, split="all", val_fraction=d.val_fraction)  # shard list + held-out objects
    groups = [(f, g) for f in loader.files for g in range(loader.row_groups[f])]  # footers read once, above
    if samples > 0:
        held = loader.val_objects
        rows = sum((o in held) == (loader_split == "val") or loader_split == "all" for o in loader.object_ids)
        epochs = max(epochs, min(10_000, math.ceil(samples / max(1, rows)) + 1))
    units = []
    for e in range(max(1, epochs)):
        order = np.random.default_rng([d.seed, epoch_seed + e]).permutation(len(groups))
        units += [{"path": groups[k][0], "size": loader.sizes.get(groups[k][0]) or -1, "row_group": groups[k][1],
                   "epoch": e} for k in order]
    columns = COLUMNS + OPTIONAL
    ds = ray.data.from_items(units)
    ds = ds.map_batches(read_row_groups, batch_size=1, batch_format="numpy", num_cpus=d.loader_cpus,
                        fn_kwargs=dict(columns=columns, held_out=frozenset(loader.val_objects), keep=loader_split))
    return ds.map_batches(RayItems, fn_constructor_kwargs=dict(cfg_dict=to_dict(cfg), split=split,
                                                               epoch_seed=epoch_seed),
                          batch_size=batch_size, batch_format="pyarrow", concurrency=d.loader_actors,
                          num_cpus=d.loader_cpus)
