import json

import numpy as np
import pyarrow as pa
import pytest

from fmolab import shard_reader, shards
from fmolab.media import codecs


def _frames(n=4, h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    rgba = np.zeros((n, h, w, 4), np.uint8)
    for i in range(n):  # a smooth opaque square moving right, on transparent film
        rgba[i, 6:18, 4 + 5 * i:16 + 5 * i, :3] = (rng.integers(60, 200, 3)).astype(np.uint8)
        rgba[i, 6:18, 4 + 5 * i:16 + 5 * i, 3] = 255
    return rgba


def test_webp_round_trip_animation_and_still():
    frames = _frames()
    decoded = codecs.decode_webp(codecs.encode_webp(frames, lossless=True))
    assert decoded.shape == frames.shape
    np.testing.assert_array_equal(decoded[..., 3], frames[..., 3])
    np.testing.assert_array_equal(decoded[frames[..., 3] > 0], frames[frames[..., 3] > 0])
    still = codecs.decode_webp(codecs.encode_webp(frames[0], quality=90))
    assert still.shape == (1, 24, 32, 4)
    assert np.abs(still[0, ..., 3].astype(int) - frames[0, ..., 3]).max() <= 8
    data = codecs.encode_webp(frames, lossless=True)  # only the frames asked for, in their order
    np.testing.assert_array_equal(codecs.decode_webp(data, frames=[1, 3]), decoded[[1, 3]])
    np.testing.assert_array_equal(codecs.decode_webp(data, "RGB", frames=[2, 0]), decoded[[2, 0], ..., :3])
    with pytest.raises(ValueError, match=r"undecodable WebP .*frame 9 asked, the WebP holds 4"):
        codecs.decode_webp(data, frames=[9])


def test_decode_corrupt_names_size_and_raises_the_callers_error():
    with pytest.raises(ValueError, match=r"undecodable WebP \(19 bytes\)"):
        codecs.decode_webp(b"RIFF....WEBPgarbage")
    with pytest.raises(shards.ShardError, match="undecodable blur WebP"):
        codecs.decode_webp(b"RIFF....WEBPgarbage", error=shards.ShardError, what="blur WebP")


def _row(i):
    f = _frames(seed=i)
    return dict(seq_id=f"0-{i}", index=i, seed=0, object_id=f"obj/{i % 2}", texture_id="tex/0",
                params=json.dumps({"i": i}), width=32, height=24, num_frames=4,
                frames=codecs.encode_webp(f), blurs=[codecs.encode_webp(f.mean(0).astype(np.uint8))],
                blur_names=["full"], blur_spans=[[0.0, 1.0]], blur_coverage=[0.2])


def test_write_read_shards_and_skip_bad_shard(tmp_path):
    shards.write_shard([_row(0), _row(1)], tmp_path / "part-00000.parquet")
    shards.write_shard([_row(2)], tmp_path / "part-00001.parquet")
    (tmp_path / "part-00002.parquet").write_bytes(b"not parquet")  # a damaged shard
    (tmp_path / ".part-00003.parquet.abc.tmp").write_bytes(b"half written")  # never listed
    shards.write_json_atomic({"kind": "sequences"}, tmp_path / shards.MANIFEST)
    reader = shard_reader.ShardReader(tmp_path)
    assert len(reader) == 3
    assert list(reader.bad_shards) == [str(tmp_path / "part-00002.parquet")]
    assert reader.manifest == {"kind": "sequences"}
    row = reader.row(2)
    assert row["seq_id"] == "0-2" and row["_source"] == "part-00001.parquet#0"
    assert codecs.decode_webp(row["frames"]).shape == (4, 24, 32, 4)
    assert sorted(reader.column("object_id")) == ["obj/0", "obj/0", "obj/1"]


def test_each_footer_is_read_once_and_few_stay_open(tmp_path, monkeypatch):
    """Start-up reads each shard's footer once (the loader's own per-shard reads included); then only
    ShardReader.OPEN_FILES stay open (10^4 open footers held GBs) and rows of the others still read."""
    from fmolab.data import FMOLoader

    for k in range(5):
        shards.write_shard([_row(2 * k), _row(2 * k + 1)], tmp_path / f"part-{k:05d}.parquet")
    opened = []
    real = shards.open_parquet
    monkeypatch.setattr(shard_reader, "open_parquet", lambda f, *a, **kw: opened.append(f) or real(f, *a, **kw))
    monkeypatch.setattr(shard_reader.ShardReader, "OPEN_FILES", 2)
    reader = shard_reader.ShardReader(tmp_path)
    assert len(opened) == 5 == len(set(opened)) and len(reader._open) == 2
    assert [reader.refs[i].row for i in range(10)] == [0, 1] * 5 and len(list(reader.refs)) == 10
    assert [reader.row(i)["seq_id"] for i in range(10)] == [f"0-{i}" for i in range(10)]  # closed ones reopen
    assert len(reader._open) == 2
    opened.clear()
    loader = FMOLoader(tmp_path)
    assert sorted(opened) == sorted(set(opened)) and len(opened) == 5
    assert [loader.get(i).seq_id for i in range(len(loader))] == [f"0-{i}" for i in range(10)]


def test_write_shard_is_atomic_on_failure(tmp_path):
    bad = _row(0)
    bad["index"] = "not an int"
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError)):
        shards.write_shard([bad], tmp_path / "part-00000.parquet")
    assert list(tmp_path.iterdir()) == []


def test_missing_or_empty_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(shards.ShardError, match="does not exist"):
        shard_reader.ShardReader(tmp_path / "nope")
    with pytest.raises(shards.ShardError, match="no .parquet"):
        shard_reader.ShardReader(tmp_path)


def test_content_box_crop_paste_round_trip():
    frames = _frames()
    blurs = frames.mean(0, keepdims=True).astype(np.uint8)
    box = shards.content_box(frames, blurs)
    assert box == [6, 4, 18, 31]  # the square's rows, and its columns over all four positions
    assert shards.content_box(frames, blurs, pad=2) == [4, 2, 20, 32]  # clipped to the image
    cropped = shards.crop(frames, box)
    assert cropped.shape == (4, 12, 27, 4) and cropped.flags.c_contiguous
    np.testing.assert_array_equal(shards.paste(cropped, box, 24, 32), frames)  # zeros outside the box
    np.testing.assert_array_equal(shards.paste(shards.crop(blurs[0], box), box, 24, 32), blurs[0])
    # Through WebP (lossless): the stored crop pastes back to the original.
    decoded = codecs.decode_webp(codecs.encode_webp(cropped, lossless=True))
    np.testing.assert_array_equal(shards.paste(decoded, box, 24, 32), frames)


def test_content_box_of_empty_alpha_is_one_pixel():
    empty = np.zeros((3, 24, 32, 4), np.uint8)
    box = shards.content_box(empty, empty[:1])
    assert box == [0, 0, 1, 1]
    data = codecs.encode_webp(shards.crop(empty[0], box))  # a WebP cannot be 0x0
    np.testing.assert_array_equal(shards.paste(codecs.decode_webp(data), box, 24, 32), empty[:1])
    assert shards.content_box(empty, np.zeros((0, 24, 32, 4), np.uint8)) == [0, 0, 1, 1]  # no blurs


def test_paste_rejects_sizes_that_disagree():
    img = np.ones((2, 5, 6, 4), np.uint8)
    with pytest.raises(ValueError, match="its box is"):
        shards.paste(img, [0, 0, 5, 7], 24, 32)
    with pytest.raises(ValueError, match="does not fit"):
        shards.paste(img, [20, 0, 25, 6], 24, 32)
    with pytest.raises(ValueError, match="expected 32x24"):
        shards.paste(img, None, 24, 32)
    assert shards.paste(img, None, 5, 6) is img  # not cropped: as is


def test_box_column_is_optional_for_writers(tmp_path):
    old, new = _row(0), _row(1)
    assert "box" not in old  # a writer from before the column
    f = _frames(seed=1)
    box = shards.content_box(f, f[:1])
    new.update(frames=codecs.encode_webp(shards.crop(f, box)), box=box,
               blurs=[codecs.encode_webp(shards.crop(f.mean(0).astype(np.uint8), box))])
    shards.write_shard([old, new], tmp_path / "part-00000.parquet")
    reader = shard_reader.ShardReader(tmp_path)
    assert reader.row(0)["box"] is None and reader.row(1)["box"] == box
    for i in range(2):
        frames, blurs = shards.decode_sequence(reader.row(i))
        assert frames.shape == (4, 24, 32, 4) and blurs.shape == (1, 24, 32, 4)
