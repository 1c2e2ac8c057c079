"""Look at a rendered dataset: manifest summary, a contact sheet PNG and an animated preview WebP.

Frames and blurs are shown over a checkerboard so transparency (and thin blurs) stay visible.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fmolab import storage
from fmolab.media import checkerboard
from fmolab.shard_reader import ShardReader
from fmolab.shards import decode_sequence, read_manifest


def over_checker(rgba: np.ndarray) -> np.ndarray:
    """Straight-alpha RGBA ``[..., H, W, 4]`` uint8 over a grey checkerboard -> RGB uint8."""
    a = rgba[..., 3:4].astype(np.float32) / 255
    bg = np.moveaxis(checkerboard(*rgba.shape[-3:-1]), 0, -1) * 255
    return (rgba[..., :3] * a + bg * (1 - a)).round().astype(np.uint8)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).text((3, 2), text, fill=(255, 255, 0))
    return np.asarray(pil)


def summary(manifest: dict, rows: int) -> dict:
    render = manifest.get("render", {})
    return {
        "rows": rows, "num_sequences": manifest.get("num_sequences"), "seed": manifest.get("seed"),
        "resolution": [render.get("width"), render.get("height")], "num_frames": render.get("num_frames"),
        "blurs": render.get("blurs"), "engine": render.get("engine"), "samples": render.get("samples"),
        "rejections": manifest.get("rejections"), "failed_indices": manifest.get("failed_indices"),
        "software": manifest.get("software"), "nodes": manifest.get("nodes"),
        "complete": manifest.get("complete"), "timing": manifest.get("timing"),
    }


def verify(reader: ShardReader) -> dict[str, str]:
    """``{"<shard>#<row>": reason}`` of every row whose images do not decode (every row is read)."""
    bad = {}
    for i in range(len(reader)):
        try:
            decode_sequence(reader.row(i))
        except Exception as exc:  # a corrupt cell, a truncated image: named, never fatal
            ref = reader.refs[i]
            bad[f"{storage.basename(ref.file)}#{ref.row}"] = f"{type(exc).__name__}: {exc}"[:300]
    return bad


def health(info: dict, manifest: dict, reader: ShardReader, bad_rows: dict[str, str] | None) -> dict:
    """Whether the dataset is whole: the manifest says complete, every shard opens, the rows the
    manifest counts are there, and (``--verify``) every row decodes."""
    expected = manifest.get("num_rows")
    missing = int(expected) - len(reader) if expected is not None else 0
    out = {"bad_shards": dict(reader.bad_shards), "missing_rows": max(0, missing)}
    if bad_rows is not None:
        out.update(verified_rows=len(reader), bad_rows=bad_rows)
    out["complete"] = bool(manifest.get("complete", True)) and not reader.bad_shards and missing <= 0 and not bad_rows
    return out


def default_out(path: str) -> str:
    """Pictures go to the work folder (``<work>/inspect/<dataset name>``), never into the dataset."""
    from fmolab.config import resolve_work_dir

    return str(resolve_work_dir("") / "inspect" / (storage.basename(path.rstrip("/")) or "dataset"))


def inspect_dataset(path: str | Path, out_dir: str | Path | None = None, n: int = 8, columns: int = 8,
                    check_rows: bool = False) -> dict:
    """Return the manifest summary and the dataset's health (``check_rows``: decode every row); write
    ``contact_sheet.png`` and ``preview.webp`` into ``out_dir`` (default :func:`default_out`; either
    may be a URI)."""
    path = storage.normalize(path)
    out_dir = storage.normalize(out_dir) if out_dir else default_out(path)
    reader = ShardReader(path, columns=["seq_id", "object_id", "texture_id", "width", "height", "frames", "blurs",
                                        "blur_names", "box"])  # box: absent in older datasets, then left out
    manifest = read_manifest(path)
    info = summary(manifest, len(reader))
    info.update(health(info, manifest, reader, verify(reader) if check_rows else None))
    picks = np.unique(np.linspace(0, len(reader) - 1, min(n, len(reader))).round().astype(int))
    sheet_rows, anim = [], []
    for i in picks:
        row = reader.row(int(i))
        try:
            frames, blurs = decode_sequence(row)  # full size (stored cropped to the object's box)
        except Exception:  # a broken row is reported above (--verify names them all), not drawn
            continue
        sel = np.unique(np.linspace(0, len(frames) - 1, min(columns, len(frames))).round().astype(int))
        tiles = [_label(over_checker(frames[k]), f"t{k}") for k in sel]
        tiles += [_label(over_checker(b), name) for b, name in zip(blurs, row["blur_names"])]
        strip = np.concatenate(tiles, axis=1)
        header = np.zeros((12, strip.shape[1], 3), np.uint8)  # the row's ids, above its tiles
        sheet_rows.append(np.concatenate([_label(header, f"{row['seq_id']} {row['object_id']} {row['texture_id']}"),
                                          strip]))
        # Preview column: the animated frame above the (static) first blur.
        anim.append((over_checker(frames), over_checker(blurs[0]) if len(blurs) else None))
    width = max(r.shape[1] for r in sheet_rows)
    sheet = np.concatenate([np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in sheet_rows])
    n_frames = max(len(f) for f, _ in anim)
    pics = []
    for t in range(n_frames):
        cols = [np.concatenate([f[min(t, len(f) - 1)]] + ([b] if b is not None else []), axis=0) for f, b in anim]
        pics.append(Image.fromarray(np.concatenate(cols, axis=1)))
    with tempfile.TemporaryDirectory() as tmp:  # each file lands whole; others in out_dir are left alone
        Image.fromarray(sheet).save(f"{tmp}/contact_sheet.png")
        pics[0].save(f"{tmp}/preview.webp", format="WEBP", save_all=True, append_images=pics[1:], duration=80,
                     loop=0, quality=80)
        for name in ("contact_sheet.png", "preview.webp"):
            storage.upload(f"{tmp}/{name}", storage.join(out_dir, name))
    bg_manifest = read_manifest(storage.join(path, "backgrounds"))
    if bg_manifest:
        info["backgrounds"] = {"clips": bg_manifest.get("num_rows"), "source": bg_manifest.get("source"),
                               "skipped": bg_manifest.get("skipped_this_run")}
    info.update(contact_sheet=storage.join(out_dir, "contact_sheet.png"), preview=storage.join(out_dir, "preview.webp"),
                shown=[int(i) for i in picks])
    return info
