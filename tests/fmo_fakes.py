"""Small fakes shared by the evaluation/deblur tests: a tiny model (checkpoint folder or registered) and a
real-benchmark folder (Falling Objects / TbD layout) with a textured background and a disc flying by."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fmolab.config import Config, load_config, to_dict

# A tiny model at test sizes (the toy datasets are 64x48).
TINY_MODEL = {"model.encoder": "tiny", "model.norm": "group", "data.frames_per_sample": 4, "render.width": 64,
              "render.height": 48, "tracking.experiment": "tests"}

# A few-second Ray Train run of that model (1 worker, half a CPU: it fits beside a test's other work).
TRAIN_TINY = ["model.encoder=tiny", "model.norm=group", "data.format=double_blur", "data.frames_per_sample=4",
              "data.val_fraction=0.25", "train.workers=1", "train.cpus_per_worker=0.5", "train.batch_size=2",
              "train.val_samples=2", "train.preview_samples=1", "train.log_every=2", "train.val_every=2",
              "train.ckpt_every=2"]


def make_config(*layers, files=()) -> Config:
    """A test's config: the defaults <- ``files`` <- each layer in turn: a ``{dotted.key: value}`` dict, a
    ``"dotted.key=value"`` string or a list of them (what the ``make_config`` fixture of conftest.py returns)."""
    overrides: list[str] = []
    for layer in layers:
        if isinstance(layer, dict):
            overrides += [f"{k}={v}" for k, v in layer.items()]
        else:
            overrides += [layer] if isinstance(layer, str) else list(layer)
    return load_config(list(files), overrides)


def tiny_model_config(work, fmt="double_blur", *layers) -> Config:
    return make_config(TINY_MODEL, {"runtime.work_dir": work, "data.format": fmt}, *layers)


def checkpoint_model(folder, fmt="double_blur", seed=0) -> Path:
    """A randomly initialised tiny model saved as a checkpoint folder (best_model.pt + config.json)."""
    from fmolab.data import build_format
    from fmolab.models import build_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = tiny_model_config(folder, fmt)
    torch.manual_seed(seed)
    torch.save(build_model(cfg.model, build_format(fmt).in_channels).state_dict(), folder / "best_model.pt")
    (folder / "config.json").write_text(json.dumps(to_dict(cfg)))
    return folder


def registered_model(work, name, alias="test", fmt="double_blur") -> str:
    """Log + register a randomly initialised tiny model in the work folder's MLflow store."""
    from fmolab.tracking import model_registry, store

    cfg = tiny_model_config(work, fmt)
    store.setup_tracking(cfg)
    run_id = store.start_or_resume_run(cfg, f"{name}-run", {"variant": fmt})
    folder = checkpoint_model(Path(work) / f"{name}-ckpt", fmt)
    uri = model_registry.log_model(cfg, folder / "best_model.pt", run_id)
    model_registry.register(uri, name, alias)
    return f"models:/{name}@{alias}"


def _background(h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = np.stack([0.3 + 0.3 * np.sin(xx / 7), 0.4 + 0.2 * np.cos(yy / 5), 0.5 + 0.1 * np.sin((xx + yy) / 9)], -1)
    return np.clip(bg, 0, 1)


def disc_position(t: float):
    """Continuous (x, y) of the disc at sub-frame index ``t`` (absolute: file frame * N + i)."""
    return 8.0 + 1.4 * t, 20.0 + 0.25 * t


def _disc(bg, x, y, r=5.0):
    h, w = bg.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    a = np.clip(r + 0.5 - np.sqrt((xx - x) ** 2 + (yy - y) ** 2), 0, 1)[..., None]
    return bg * (1 - a) + np.array([0.95, 0.9, 0.1], np.float32) * a


def _save(arr, path):
    Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)


def write_fake_benchmark(root, kind="falling", n_frames=5, nsplits=8, h=48, w=96, radius=5.0) -> Path:
    """One sequence in the published layout.

    falling: ``imgs/disc_GTgamma`` frames numbered from 00000001, ``imgs_gt`` from 00000001 (so the
    sub-frames of file frame f are f*N+i+1), trajectory from ``gt_bbox/disc_GTgamma.txt``.
    tbd: ``imgs/disc_flying`` from 00000000 with ``gt.txt`` + ``gtr.txt``, ``imgs_gt`` from 00000000.
    """
    root = Path(root)
    bg = _background(h, w)
    name = "disc_GTgamma" if kind == "falling" else "disc_flying"
    frames_dir, hs_dir = root / "imgs" / name, root / "imgs_gt" / name
    frames_dir.mkdir(parents=True)
    hs_dir.mkdir(parents=True)
    first = 1 if kind == "falling" else 0
    hs_offset = 1 if kind == "falling" else 0
    bbox_lines, gt_rows = [], []
    for f in range(0, first + n_frames):
        subs = []
        for i in range(nsplits):
            x, y = disc_position(f * nsplits + i)
            sub = _disc(bg, x, y, radius)
            subs.append(sub)
            _save(sub, hs_dir / f"{f * nsplits + i + hs_offset:08d}.png")
        if f >= first:
            _save(np.mean(subs, 0), frames_dir / f"{f:08d}.png")
            pos = [disc_position(f * nsplits + i) for i in range(nsplits)]
            for x, y in pos:  # files use 1-based pixel centres
                bbox_lines.append(f"{x + 0.5 - radius:.3f} {y + 0.5 - radius:.3f} {2 * radius:.3f} {2 * radius:.3f}")
            gt_rows.append(" ".join(f"{x + 0.5:.3f}" for x, _ in pos))
            gt_rows.append(" ".join(f"{y + 0.5:.3f}" for _, y in pos))
    if kind == "falling":
        (root / "gt_bbox").mkdir()
        (root / "gt_bbox" / f"{name}.txt").write_text("\n".join(bbox_lines) + "\n")
    else:
        (frames_dir / "gt.txt").write_text("\n".join(gt_rows) + "\n")
        (frames_dir / "gtr.txt").write_text(f"{radius}\n")
    return root


def write_disc_gif(path, n=8, h=48, w=64, still=False, size_jump=False):
    """An animated GIF of a disc crossing a textured background (``still``: nothing moves)."""
    bg = _background(h, w)
    frames = []
    for k in range(n):
        x = 10.0 if still else 6.0 + 7.0 * k
        img = _disc(bg, x, 24.0, 4.0)
        if still:  # frames differ slightly (else the GIF writer merges them), far below the threshold
            img = img + np.random.default_rng(k).uniform(-0.02, 0.02, img.shape)
        frames.append(Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)))
    if size_jump:
        frames[-1] = frames[-1].resize((w + 16, h))
        frames = frames[:1] + [frames[-1]]
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(frames):
            f.save(d / f"{i:04d}.png")
        return d
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=60, loop=0)
    return Path(path)


def corrupt_frames(shard: Path) -> None:
    """Every row of ``shard`` with an undecodable frames WebP (the rows stay, their images do not)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(shard)
    i = table.schema.get_field_index("frames")
    table = table.set_column(i, "frames", pa.array([b"RIFF-not-a-webp"] * len(table), type=table.schema.field(i).type))
    pq.write_table(table, shard)
