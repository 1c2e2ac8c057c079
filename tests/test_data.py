"""fmolab.data: synthetic shards, loader, background adder, formats, augmentation, torch and Ray paths."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fmolab.compose import composite, frame_times, over
from fmolab.data import (FORMATS, Augment, BackgroundAdder, FMOLoader, build_dataset, build_format, collate,
                         contrast, in_channels, to_device, write_synthetic_dataset)
from fmolab.data.dataset import unbatch
from fmolab.data.formats import sub_frame_times
from fmolab.data.loader import frame_indices
from fmolab.media.codecs import encode_webp
from fmolab.registry import SpecError
from fmolab.shards import SEQUENCE_SCHEMA, ShardError, content_box, crop, decode_sequence, write_shard

ALL_FORMATS = ["background_blur", "double_blur", "single_blur", "multi_object", "double_blur:contrastive=true"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("syn") / "ds")


DATA = {"data.frames_per_sample": 4, "data.val_fraction": 0.25}


def data_of(root, fmt="double_blur") -> dict:
    """The config layer of a dataset read in a format."""
    return {**DATA, "data.train": root, "data.format": fmt}


def test_synthetic_is_in_schema(tmp_path):
    # (its speed is measured by benchmarks/loader.py, not asserted here: CI machines are shared)
    root = write_synthetic_dataset(tmp_path / "ds")
    table = pq.read_table(root / "shard-00000.parquet")
    assert table.schema.names == SEQUENCE_SCHEMA.names
    assert (root / "manifest.json").exists() and (root / "backgrounds" / "manifest.json").exists()
    loader = FMOLoader(root)
    assert len(loader) == 16  # background shards under root/ are not sequences
    assert len(set(loader.object_ids)) == 4
    row = loader.get(0)
    assert row.frames().shape == (8, 48, 64, 4) and row.blur("full").shape == (48, 64, 4)
    assert row.params["generator"] == "fmolab.data.synthetic"


def test_half_blurs_average_to_full_blur(root):
    loader = FMOLoader(root)
    for i in range(len(loader)):
        row = loader.get(i)
        first, second, full = (row.blur(n).astype(np.float32) / 255 for n in ("first", "second", "full"))
        alpha = (first[..., 3] + second[..., 3]) / 2
        premult = (first[..., :3] * first[..., 3:] + second[..., :3] * second[..., 3:]) / 2
        assert np.abs(alpha - full[..., 3]).max() < 2 / 255
        assert np.abs(premult - full[..., :3] * full[..., 3:]).mean() < 0.01
        assert full[..., 3].mean() > 0.01  # the object is visible


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_items_follow_contract_and_composite_exactly(root, fmt, make_config):
    cfg = make_config(data_of(root, fmt), "data.flip=true", "data.time_reverse=true", "data.jitter=0.1")
    ds = build_dataset(cfg, "train")
    raw = collate([ds[i] for i in range(4)])
    # ground-truth frames travel as uint8 (channels-last memory) until to_device scales them
    assert raw["frames"].dtype == torch.uint8 and raw["frames"].movedim(-3, -1).is_contiguous()
    batch = to_device(raw)
    torch.testing.assert_close(batch["frames"], raw["frames"].float() / 255)
    k = 1 if fmt in ("background_blur", "single_blur") else 2
    c = in_channels(fmt)
    assert batch["inputs"].shape == (4, c, 48, 64) and c == ds.fmt.in_channels
    assert batch["images"].shape == (4, k, 3, 48, 64)
    assert batch["backgrounds"].shape == (4, k, 3, 48, 64)
    assert batch["blurs"].shape == (4, k, 4, 48, 64)
    assert batch["spans"].shape == (4, k, 2)
    assert batch["frames"].shape == (4, 4, 4, 48, 64) and batch["times"].shape == (4, 4)
    assert isinstance(batch["seq_id"], list) and len(batch["seq_id"]) == 4
    for key in ("inputs", "images", "backgrounds", "blurs", "frames"):
        assert batch[key].dtype == torch.float32 and 0 <= batch[key].min() and batch[key].max() <= 1
    # RGB = RGB_fmo * alpha + RGB_bg * (1 - alpha), after augmentation too
    rgb, alpha = batch["blurs"][:, :, :3], batch["blurs"][:, :, 3:]
    torch.testing.assert_close(batch["images"], rgb * alpha + batch["backgrounds"] * (1 - alpha))
    assert torch.equal(batch["images"], composite(batch["blurs"], batch["backgrounds"]))  # the very same operations
    if fmt == "background_blur":
        torch.testing.assert_close(batch["inputs"], torch.cat([batch["images"][:, 0], batch["backgrounds"][:, 0]], 1))
    elif fmt == "single_blur":
        assert batch["backgrounds"].abs().max() == 0
        torch.testing.assert_close(batch["inputs"], rgb[:, 0] * alpha[:, 0])
    else:
        torch.testing.assert_close(batch["inputs"], batch["images"].flatten(1, 2))
        assert torch.equal(batch["spans"][0], torch.tensor([[0.0, 0.5], [0.5, 1.0]]))
    assert (batch["times"].diff(dim=1) > 0).all()
    if "contrastive" in fmt:
        assert batch["contrast_inputs"].shape == batch["inputs"].shape
        assert not torch.equal(batch["contrast_inputs"], batch["inputs"])


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_a_batch_made_whole_is_its_items_made_one_by_one(root, fmt, make_config):
    """Training makes batches whole (each item's draws, then one set of array operations): each item of
    such a batch, in any order and beside any other, is the item made alone."""
    cfg = make_config(data_of(root, fmt), "data.flip=true", "data.time_reverse=true", "data.jitter=0.2",
                      "data.noise=0.05")
    ds = build_dataset(cfg, "train")
    order = [5, 0, 3, 0, 7, 2, 6, 1]
    whole, alone = ds.batch(order), collate([ds[i] for i in order])
    assert whole.keys() == alone.keys()
    for key, value in whole.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == alone[key].dtype and torch.equal(value, alone[key]), key
        else:
            assert value == alone[key], key
    assert not torch.equal(whole["inputs"][0], whole["inputs"][1])  # the items differ from one another
    assert whole["frames"].movedim(-3, -1).is_contiguous()  # uint8 frames stay channels-last
    # the frames' times are the sub-frame centres of compose.frame_times
    idx = frame_indices(16, 4)
    assert torch.equal(sub_frame_times(idx, 16), frame_times(16)[torch.tensor(idx)])


def test_multi_object_masks_padding_and_order(root, make_config):
    ds = build_dataset(make_config(data_of(root, "multi_object:min_objects=1,max_objects=3")), "all")
    counts = set()
    for i in range(len(ds)):
        item = to_device(ds[i])
        valid = item["object_valid"]
        n = int(valid.sum())
        counts.add(n)
        assert item["object_frames"].shape == (3, 4, 4, 48, 64)
        assert valid[:n].all() and not valid[n:].any()  # real objects first, then padding
        assert not item["object_frames"][n:].any()
        assert len(item["seq_id"].split("+")) == n
        expected = item["object_frames"][0]
        for o in range(1, n):  # later objects are drawn over earlier ones
            expected = over(item["object_frames"][o], expected)
        # computed in float, stored in 8 bits like every ground-truth frame; colour under alpha 0 is moot
        def premult(x):
            return torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], 1)

        torch.testing.assert_close(premult(item["frames"]), premult(expected), atol=1 / 255, rtol=0)
        # the composite is at least as opaque as each of its objects
        assert (item["frames"][:, 3] + 1e-6 >= item["object_frames"][:n, :, 3].amax(0)).all()
    assert counts <= {1, 2, 3} and len(counts) >= 2


def test_determinism_for_a_seed(root, make_config):
    cfg = make_config(data_of(root, "double_blur"), "data.noise=0.02", "data.jitter=0.1", "data.time_reverse=true")
    a, b = build_dataset(cfg, "train"), build_dataset(cfg, "train")
    for i in (0, 3, len(a) - 1):
        x, y = a[i], b[i]
        assert x["seq_id"] == y["seq_id"]
        for key in ("inputs", "frames", "times", "blurs"):
            assert torch.equal(x[key], y[key])
    assert torch.equal(a[2]["inputs"], a[2]["inputs"])  # same process, cache warm: still the same
    other_epoch = build_dataset(cfg, "train", epoch_seed=1)
    assert not torch.equal(other_epoch[0]["inputs"], a[0]["inputs"])


def test_item_generators_are_each_items_own_in_every_thread():
    """item_rng reseeds one generator per thread: an item's draws depend on its key only, whatever
    another thread draws meanwhile, and nearby keys give unrelated streams."""
    import threading

    from fmolab.data.dataset import item_rng

    rng, interleaved = item_rng(0, 1, "seq-7"), []
    for other in [(0, 1, "seq-8"), (0, 2, "seq-7")]:  # another thread's items, between this one's draws
        t = threading.Thread(target=lambda: item_rng(*other).random(100))
        t.start()
        t.join()
        interleaved.append(rng.random(5))
    assert np.array_equal(np.concatenate(interleaved), item_rng(0, 1, "seq-7").random(10))
    # nearby keys: unrelated streams (uniform means, no shared values)
    streams = [item_rng(s, e, f"seq-{i}").random(256) for s in (0, 1) for e in (0, 1) for i in range(8)]
    assert len({float(x[0]) for x in streams}) == len(streams)
    assert abs(np.corrcoef(np.stack(streams)).mean() - 1 / len(streams)) < 0.02  # off-diagonal ~0
    assert all(abs(x.mean() - 0.5) < 0.06 for x in streams)


def test_row_cache_gives_the_same_items_and_decodes_once(root, make_config, monkeypatch):
    import fmolab.data.loader as loader_mod

    layer = {**data_of(root, "double_blur"), "data.noise": 0.02, "data.jitter": 0.1, "data.time_reverse": True}
    cached = build_dataset(make_config(layer), "train")
    plain = build_dataset(make_config({**layer, "data.row_cache_mb": 0}), "train")
    assert cached.loader._rows is not None and plain.loader._rows is None
    for epoch in (0, 1):  # epoch 1 takes every row and image from the cache
        cached.set_epoch(epoch), plain.set_epoch(epoch)
        for i in range(len(plain)):
            x, y = cached[i], plain[i]
            for key in ("inputs", "frames", "times", "blurs", "spans", "backgrounds"):
                assert torch.equal(x[key], y[key]), (epoch, i, key)
    decodes = []
    real = loader_mod.decode_webp
    monkeypatch.setattr(loader_mod, "decode_webp", lambda *a, **k: decodes.append(1) or real(*a, **k))
    assert [cached[i]["seq_id"] for i in range(len(cached))] and not decodes
    seq = cached.loader.get(0)
    seq.frames([0])[:] = 0  # a caller changing what it got does not change the cache
    seq.blur(seq.blur_names[0])[:] = 0
    seq.blurs(tuple(seq.blur_names))[:] = 0
    assert seq.frames([0]).any() and seq.blur(seq.blur_names[0]).any() and seq.blurs(tuple(seq.blur_names)).any()
    assert np.array_equal(seq.blurs(tuple(seq.blur_names)), np.stack([seq.blur(n) for n in seq.blur_names]))
    tiny = FMOLoader(root, cache_mb=1e-6)  # a bound below one row keeps only the newest value
    tiny.get(0).frames(), tiny.get(1)
    assert len(tiny._rows) == 1 and 1 in tiny._rows


def test_no_object_leaks_across_splits(root, make_config):
    cfg = make_config(data_of(root))
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert len(train) > 0 and len(val) > 0 and len(train) + len(val) == 16
    assert not set(train.loader.object_ids) & set(val.loader.object_ids)
    assert {train[i]["seq_id"] for i in range(len(train))}.isdisjoint({val[i]["seq_id"] for i in range(len(val))})
    assert val.augment == Augment()  # validation is never augmented


def _clip_frames(adder, clips) -> dict:
    return {adder.reader.row(c)["clip_id"]: adder.clip(c, 48, 64) for c in clips}


def test_validation_backgrounds_are_never_seen_in_training(root, tmp_path, make_config):
    cfg = make_config(data_of(root, "double_blur"), "data.bg_val_fraction=0.25", "data.flip=false")  # pixels as stored
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    train_clips, val_clips = _clip_frames(train.adder, train.adder.clips), _clip_frames(val.adder, val.adder.clips)
    assert train_clips and val_clips and not set(train_clips) & set(val_clips)
    assert len(train_clips) + len(val_clips) == 4
    for ds, own, other in ((val, val_clips, train_clips), (train, train_clips, val_clips)):
        for i in range(min(len(ds), 4)):
            for bg in ds[i]["backgrounds"]:  # each background frame is a frame of one of its split's clips
                bg = (bg.movedim(0, -1) * 255).round().to(torch.uint8).numpy()
                assert any((f == bg).all() for frames in own.values() for f in frames)
                assert not any((f == bg).all() for frames in other.values() for f in frames)
    # a separate validation folder (the thesis: OTB clips for validation, VOT for training)
    other = write_synthetic_dataset(tmp_path / "other", seed=7, num_sequences=2, num_clips=2)
    cfg = make_config(data_of(root, "double_blur"), f"data.val_backgrounds={other / 'backgrounds'}")
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert val.adder.root == str(other / "backgrounds") and len(val.adder.clips) == 2
    assert train.adder.root == str(root / "backgrounds") and len(train.adder.clips) == 4


def test_index_range_filter(root):
    loader = FMOLoader(root, index_range=(4, 10))
    assert sorted(loader.get(i).index for i in range(len(loader))) == list(range(4, 10))


def _augmented(augment: Augment, layers: dict, rng) -> dict:
    """One item's layers through an augmentation, as a batch of one would take them."""
    draw = augment.draw(rng)
    return unbatch(augment.colour(collate([augment.orient(layers, draw)]), [draw]))


def test_time_reversal_swaps_the_two_half_blurs(root):
    fmt = build_format("double_blur")
    loader = FMOLoader(root)
    adder = BackgroundAdder(root / "backgrounds", min_contrast=0.0)
    seed = next(s for s in range(100) if np.random.default_rng(s).random(3)[2] < 0.5)  # draws "reverse"
    layers = fmt.gather([loader.get(0)], adder, np.random.default_rng(0), 4)
    out = _augmented(Augment(time_reverse=True), layers, np.random.default_rng(seed))
    base = _augmented(Augment(), layers, np.random.default_rng(seed))
    torch.testing.assert_close(out["blurs"][0], base["blurs"][1])  # second half comes first in reverse
    torch.testing.assert_close(out["backgrounds"][0], base["backgrounds"][1])
    torch.testing.assert_close(out["frames"], base["frames"].flip(0))
    torch.testing.assert_close(out["times"], 1 - base["times"].flip(0))  # frame at t now sits at 1 - t
    assert (out["times"].diff() > 0).all()
    torch.testing.assert_close(out["spans"], base["spans"])


def test_corrupt_rows_are_skipped_and_counted(tmp_path, caplog, make_config):
    root = write_synthetic_dataset(tmp_path / "ds")
    shard = root / "shard-00000.parquet"
    rows = pq.read_table(shard).to_pylist()
    rows[2]["frames"] = b"RIFF-not-a-webp"  # undecodable
    rows[3]["width"] = 99  # wrong size
    rows[5]["blur_names"] = None  # missing value
    write_shard(rows, shard)
    ds = build_dataset(make_config(data_of(root, "double_blur")), "all")
    with caplog.at_level(logging.WARNING, logger="fmolab.data"):
        items = [ds[i] for i in range(len(ds))]
    assert len(items) == 16 and all(it["inputs"].shape == (6, 48, 64) for it in items)
    assert set(ds.skipped) == {"shard-00000.parquet#2", "shard-00000.parquet#3", "shard-00000.parquet#5"}
    assert "undecodable" in ds.skipped["shard-00000.parquet#2"]
    assert "99x48" in ds.skipped["shard-00000.parquet#3"]
    assert "shard-00000.parquet#2" in caplog.text
    used = {it["seq_id"] for it in items}
    assert not used & {"0-2", "0-3", "0-5"}


def test_shard_missing_a_column_is_skipped(tmp_path):
    root = write_synthetic_dataset(tmp_path / "ds")
    table = pq.read_table(root / "shard-00001.parquet").drop(["frames"])
    pq.write_table(table, root / "shard-00001.parquet")
    loader = FMOLoader(root)
    assert len(loader) == 8 and len(loader.skipped) == 8
    assert "frames" in loader.skipped["shard-00001.parquet#0"]


def _premultiplied(x: torch.Tensor) -> torch.Tensor:
    """RGB under alpha 0 is not kept (cropped away, or changed by the WebP encoder): compare RGB * alpha."""
    return torch.cat([x[..., :3, :, :] * x[..., 3:, :, :], x[..., 3:, :, :]], -3)


def _same_pixels(got: np.ndarray, want: np.ndarray, rgb_tol: float) -> None:
    """Alpha identical; premultiplied RGB (0..255) within ``rgb_tol`` on average over the object."""
    assert got.shape == want.shape and got.dtype == want.dtype == np.uint8
    np.testing.assert_array_equal(got[..., 3], want[..., 3])  # WebP alpha is lossless, even at quality < 100
    seen = want[..., 3] > 0
    pm = [x[..., :3].astype(np.float64) * x[..., 3:] / 255 for x in (got, want)]
    diff = np.abs(pm[0] - pm[1])[seen]
    assert diff.mean() <= rgb_tol, f"mean premultiplied RGB difference {diff.mean():.3f} over the object"


def test_cropped_rows_give_the_items_of_full_size_rows(tmp_path, root, make_config):
    full = write_synthetic_dataset(tmp_path / "full", cropped=False)  # the layout before the box column
    a, b = FMOLoader(root), FMOLoader(full)
    boxes = [a.get(i).box for i in range(len(a))]
    assert b.get(0).box is None and all(bx is not None for bx in boxes)
    assert np.mean([(y1 - y0) * (x1 - x0) for y0, x0, y1, x1 in boxes]) < 0.8 * 48 * 64  # it does crop
    for i in range(len(a)):
        ra, rb = a.get(i), b.get(i)
        # Lossy (q90, method 0): two encodes of the same pixels, each ~28 dB from them on these stripes.
        _same_pixels(ra.frames([1, 5]), rb.frames([1, 5]), rgb_tol=10)
        for name in ra.blur_names:
            _same_pixels(ra.blur(name), rb.blur(name), rgb_tol=10)
    for fmt in ALL_FORMATS:
        da = build_dataset(make_config(data_of(root, fmt)), "all")
        db = build_dataset(make_config(data_of(full, fmt)), "all")
        for i in (0, 5):
            x, y = to_device(da[i]), to_device(db[i])
            assert x.keys() == y.keys() and x["seq_id"] == y["seq_id"]
            for key in ("backgrounds", "spans", "times"):
                torch.testing.assert_close(x[key], y[key], atol=0, rtol=0)
            for key, v, w in [("inputs", x["inputs"], y["inputs"]), ("images", x["images"], y["images"]),
                              ("blurs", _premultiplied(x["blurs"]), _premultiplied(y["blurs"])),
                              ("frames", _premultiplied(x["frames"]), _premultiplied(y["frames"]))]:
                assert v.shape == w.shape, key
                assert (v - w).abs().max() < 0.25 and (v - w).abs().mean() < 0.005, key


def test_lossless_cropped_rows_are_bit_exact(tmp_path, root):
    rows = pq.read_table(root / "shard-00000.parquet").to_pylist()
    for cropped in (False, True):
        out = []
        for r in rows:
            frames, blurs = decode_sequence(r)
            box = content_box(frames, blurs) if cropped else None
            if box is not None:
                frames, blurs = crop(frames, box), crop(blurs, box)
            out.append(dict(r, box=box, frames=encode_webp(frames, lossless=True),
                            blurs=[encode_webp(x, lossless=True) for x in blurs]))
        write_shard(out, tmp_path / f"cropped={cropped}" / "shard-00000.parquet")
    a, b = FMOLoader(tmp_path / "cropped=True"), FMOLoader(tmp_path / "cropped=False")
    for i in range(len(a)):
        ra, rb = a.get(i), b.get(i)
        assert ra.box is not None and rb.box is None
        _same_pixels(ra.frames(), rb.frames(), rgb_tol=0)
        for name in ra.blur_names:
            _same_pixels(ra.blur(name), rb.blur(name), rgb_tol=0)


def test_rows_without_box_column_still_load(tmp_path, make_config):
    root = write_synthetic_dataset(tmp_path / "ds", num_sequences=8, cropped=False)
    shard = root / "shard-00000.parquet"
    pq.write_table(pq.read_table(shard).drop(["box"]), shard)  # a shard written before the column existed
    assert "box" not in pq.read_schema(shard).names
    loader = FMOLoader(root)
    assert len(loader) == 8 and not loader.skipped
    row = loader.get(3)
    assert row.box is None and row.frames().shape == (8, 48, 64, 4) and row.blur("full").shape == (48, 64, 4)
    ds = build_dataset(make_config(data_of(root, "double_blur")), "all")
    assert all(ds[i]["inputs"].shape == (6, 48, 64) for i in range(len(ds))) and not ds.skipped


def test_rows_whose_crop_disagrees_with_their_box_are_skipped(tmp_path, make_config):
    root = write_synthetic_dataset(tmp_path / "ds")
    shard = root / "shard-00000.parquet"
    rows = pq.read_table(shard).to_pylist()
    y0, x0, y1, x1 = rows[1]["box"]
    rows[1]["box"] = [y0, x0, y1, x1 + 1] if x1 < 64 else [y0, x0 - 1, y1, x1]  # one column too wide
    rows[4]["box"] = [0, 0, 60, 10]  # taller than the image
    write_shard(rows, shard)
    ds = build_dataset(make_config(data_of(root, "double_blur")), "all")
    items = [ds[i] for i in range(len(ds))]
    assert len(items) == 16 and all(it["inputs"].shape == (6, 48, 64) for it in items)
    assert set(ds.skipped) == {"shard-00000.parquet#1", "shard-00000.parquet#4"}
    assert "its box is" in ds.skipped["shard-00000.parquet#1"]
    assert "does not fit a 64x48 image" in ds.skipped["shard-00000.parquet#4"]
    assert not {it["seq_id"] for it in items} & {"0-1", "0-4"}


def test_unreadable_datasets_fail_clearly(tmp_path):
    with pytest.raises(ShardError, match="does not exist"):
        FMOLoader(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(ShardError, match="no readable shard"):
        FMOLoader(tmp_path / "bad")
    with pytest.raises(ShardError, match="write_synthetic_dataset"):
        BackgroundAdder(tmp_path / "no-backgrounds")


def test_background_adder_contrast_and_resize(tmp_path, root):
    bg_root = write_synthetic_dataset(tmp_path / "big", num_sequences=1, width=80, height=40, num_clips=2)
    adder = BackgroundAdder(bg_root / "backgrounds", min_contrast=2.0, max_tries=3)  # unreachable: best kept
    blur = FMOLoader(root).get(0).blur("full")
    frames = adder.sample([blur, blur], np.random.default_rng(0))
    assert frames.shape == (2, 48, 64, 3) and frames.dtype == np.uint8  # 80x40 resized to cover, cropped
    flat = np.zeros((8, 8, 4), np.uint8)
    flat[..., :3], flat[..., 3] = 100, 255
    assert contrast(flat, np.full((8, 8, 3), 100, np.uint8)) == 0.0
    assert contrast(flat, np.full((8, 8, 3), 151, np.uint8)) == pytest.approx(51 / 255)


def test_mean_contrast_is_the_mean_of_each_blurs_contrast():
    """The weighted sum a draw costs equals the plain definition: per blur, the alpha-weighted mean of
    |rgb - bg| / 255 over the pixel grid (0 for a blur with no alpha), averaged over the blurs."""
    from fmolab.data.background_adder import contrast_weights, mean_contrast

    rng = np.random.default_rng(3)
    for k in (1, 2, 3):
        blurs = rng.integers(0, 256, (k, 48, 64, 4), dtype=np.uint8)
        blurs[..., 3] *= rng.random((k, 48, 64)) < 0.3
        if k == 3:
            blurs[1, ..., 3] = 0  # an object out of view
        backgrounds = rng.integers(0, 256, (k, 48, 64, 3), dtype=np.uint8)
        expected = []
        for blur, bg in zip(blurs, backgrounds):
            b, g = blur[::4, ::4].astype(np.float64), bg[::4, ::4].astype(np.float64)
            alpha = b[..., 3]
            diff = np.abs(b[..., :3] - g).mean(-1) / 255
            expected.append((alpha * diff).sum() / alpha.sum() if alpha.sum() > 0 else 0.0)
        assert mean_contrast(contrast_weights(blurs), backgrounds) == pytest.approx(np.mean(expected), rel=1e-5)
        assert contrast(blurs[0], backgrounds[0]) == pytest.approx(expected[0], rel=1e-5)


def test_background_below_min_contrast_is_drawn_again(tmp_path):
    """Two clips: one the object's own grey (contrast 0), one far from it. With min_contrast the adder
    draws again until it gets the far one; without it, it keeps whatever it drew first."""
    from fmolab.shards import BACKGROUND_SCHEMA

    rows = [dict(clip_id=name, source="test", width=16, height=16, num_frames=3,
                 # frames differ by 1 (the WebP writer merges identical ones)
                 frames=encode_webp(grey + np.arange(3, dtype=np.uint8)[:, None, None, None]
                                    + np.zeros((3, 16, 16, 3), np.uint8), lossless=True))
            for name, grey in (("same", 100), ("far", 200))]
    write_shard(rows, tmp_path / "bg" / "clips-00000.parquet", schema=BACKGROUND_SCHEMA)
    blur = np.zeros((16, 16, 4), np.uint8)
    blur[4:12, 4:12] = (100, 100, 100, 255)

    def greys(min_contrast):
        adder = BackgroundAdder(tmp_path / "bg", min_contrast=min_contrast, max_tries=30)
        return [int(adder.sample([blur, blur], np.random.default_rng(seed))[0, 0, 0, 0]) // 100 * 100
                for seed in range(24)]

    assert set(greys(0.2)) == {200}  # contrast ~100/255 > 0.2; the object's grey never passes
    first_draws = greys(0.0)
    assert 100 in first_draws and 200 in first_draws  # so the clip above was drawn again, not drawn once


def test_format_registry():
    assert {"background_blur", "double_blur", "multi_object", "single_blur"} <= set(FORMATS.names())
    assert [in_channels(f) for f in ("background_blur", "double_blur", "single_blur", "multi_object")] == [6, 6, 3, 6]
    with pytest.raises(SpecError, match="needs a background"):
        build_format("single_blur:contrastive=true")
    with pytest.raises(SpecError, match="Did you mean"):
        build_format("double_blurr")


def test_torch_dataloader_workers(root, make_config):
    ds = build_dataset(make_config(data_of(root, "background_blur")), "train")
    dl = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate, num_workers=1)
    batch = next(iter(dl))
    assert batch["inputs"].shape == (3, 6, 48, 64) and len(batch["seq_id"]) == 3


def test_ray_data_path_matches_torch_path(root, ray_local, make_config):
    from fmolab.data.ray_pipeline import RayCollate, ray_dataset

    cfg = make_config(data_of(root, "double_blur"), "data.jitter=0.1")
    expected = {}
    for epoch in (0, 1):
        torch_ds = build_dataset(cfg, "train", epoch_seed=epoch)
        expected.update({(epoch, torch_ds[i]["seq_id"]): torch_ds[i] for i in range(len(torch_ds))})
    ds = ray_dataset(cfg, "train", batch_size=4, epochs=2)
    batches = list(ds.iter_torch_batches(batch_size=4, collate_fn=RayCollate()))
    ref = collate(list(expected.values())[:1])
    seen = []
    for b in batches:
        assert set(b) == set(ref)
        for key, value in ref.items():
            if isinstance(value, torch.Tensor):
                assert b[key].shape[1:] == value.shape[1:] and b[key].dtype == value.dtype, key
        for j, sid in enumerate(b["seq_id"]):  # one per-sample function: the item of that row and epoch
            e = next(e for e in (0, 1) if torch.allclose(b["inputs"][j], expected[(e, sid)]["inputs"]))
            seen.append((e, sid))
            assert torch.equal(b["frames"][j], expected[(e, sid)]["frames"])  # uint8, layout restored
    assert sorted(seen) == sorted(expected)  # same split, each row once per epoch (jitter tells them apart)
