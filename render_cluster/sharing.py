"""One dataset, several renders: the settings a dataset was started with, and who renders which block.

``.render/settings.json`` is created (only where absent: :func:`fmolab.storage.claims.create_exclusive`)
by the first render of a dataset. A later render, by the same user or another, with other settings is
refused before any work: its blocks would be mixed with the others in one dataset. A dataset may grow
(more sequences) when its last shard is full. Blocks are claimed under ``.render/claims`` (a lease,
renewed while the block renders), so two renders at once never render a block twice.
"""
from __future__ import annotations

import json

from fmolab import storage
from fmolab.config import Config, ConfigError, to_dict
from fmolab.config.loading import flatten
from fmolab.storage.claims import create_exclusive

SETTINGS = ".render/settings.json"
CLAIMS = ".render/claims"
# How a dataset is rendered, not what it holds: these may differ between renders of one dataset.
NOT_IDENTITY = ("out", "name", "workers", "num_sequences", "claim_lease_s", "start_timeout_s", "blocks_per_pass")


class DatasetWriteError(RuntimeError):
    """The dataset's folder cannot take its settings file (a full disk, a quota): nothing rendered."""


class DatasetSettingsError(ConfigError):
    """A render into an existing dataset with other settings (bad input: exit 2, nothing changed)."""


def identity(cfg: Config) -> dict:
    """The settings that fix a dataset's content (flat ``render.*`` keys) and its sequence count."""
    flat = flatten(to_dict(cfg.render))
    return {"num_sequences": cfg.render.num_sequences,
            "settings": {f"render.{k}": v for k, v in flat.items() if k not in NOT_IDENTITY}}


def _legacy(out: str) -> dict | None:
    """The identity recorded by a dataset rendered before settings.json: its manifest's render config."""
    path = storage.join(out, "manifest.json")
    if not storage.exists(path):
        return None
    render = storage.read_json(path).get("render") or {}
    flat = flatten(render) if isinstance(render, dict) else {}
    return {"num_sequences": render.get("num_sequences"),
            "settings": {f"render.{k}": v for k, v in flat.items() if k not in NOT_IDENTITY}}


def check_settings(cfg: Config) -> None:
    """Record this render's settings in a new dataset, or check them against an existing one's."""
    out = cfg.dataset_dir
    path = storage.join(out, SETTINGS)
    mine = identity(cfg)
    recorded = storage.exists(path)
    theirs = storage.read_json(path) if recorded else _legacy(out)
    if theirs is None:
        try:
            created = create_exclusive(path, json.dumps(mine, indent=1, sort_keys=True).encode())
        except OSError as exc:
            raise DatasetWriteError(f"cannot write {path}: {exc.strerror or exc}; nothing was rendered: free space "
                                    "(or fix the store) and rerun the same command") from None
        if created:
            return
        theirs, recorded = storage.read_json(path), True  # another render created it a moment ago
    diff = [f"{k}: {theirs['settings'].get(k)!r} there, {v!r} here" for k, v in mine["settings"].items()
            if json.dumps(theirs["settings"].get(k), sort_keys=True) != json.dumps(v, sort_keys=True)]
    where = f"{out} holds a dataset rendered with other settings"
    todo = ("nothing was changed; render it under another name (render.name=NAME or render.out=PATH), "
            "or with its settings")
    if diff:
        raise DatasetSettingsError(f"{where} ({'; '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}); {todo}")
    have, want, rows = theirs.get("num_sequences"), mine["num_sequences"], cfg.render.shard_rows
    if have is not None and want != have:
        if want < have or have % rows:
            raise DatasetSettingsError(
                f"{where}: {have} sequences in shards of {rows}; render.num_sequences={want} would "
                + ("leave shards beyond it in the dataset" if want < have else "leave its last shard short")
                + f"; {todo} (render.num_sequences={have})")
        storage.write_json(path, mine)  # grown: later renders compare against the new count
    elif not recorded:
        create_exclusive(path, json.dumps(mine, indent=1, sort_keys=True).encode())  # a dataset from before
