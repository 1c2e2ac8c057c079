import json

import numpy as np
import pyarrow as pa
import pytest

from fmolab import shards


def _frames(n=4, h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    rgba = np.zeros((n, h, w, 4), np.uint8)
    for i in range(n):  # a smooth opaque square moving right, on transparent film
        rgba[i, 6:18, 4 + 5 * i:16 + 5 * i, :3] = (rng.integers(60, 200, 3)).astype(np.uint8)
        rgba[i, 6:18, 4 + 5 * i:16 + 5 * i, 3] = 255
    return rgba


def test_webp_round_trip_animation_and_still():
    frames = _frames()
    decoded = shards.decode_webp(shards.encode_webp(frames, lossless=True))
    assert decoded.shape == frames.shape
    np.testing.assert_array_equal(decoded[..., 3], frames[..., 3])
    np.testing.assert_array_equal(decoded[frames[..., 3] > 0], frames[frames[..., 3] > 0])
    still = shards.decode_webp(shards.encode_webp(frames[0], quality=90))
    assert still.shape == (1, 24, 32, 4)
    assert np.abs(still[0, ..., 3].astype(int) - frames[0, ..., 3]).max() <= 8


def test_decode_corrupt_names_size():
    with pytest.raises(shards.ShardError, match="undecodable WebP"):
        shards.decode_webp(b"RIFF....WEBPgarbage")


def _row(i):
    f = _frames(seed=i)
    return dict(seq_id=f"0-{i}", index=i, seed=0, object_id=f"obj/{i % 2}", texture_id="tex/0",
                params=json.dumps({"i": i}), width=32, height=24, num_frames=4,
                frames=shards.encode_webp(f), blurs=[shards.encode_webp(f.mean(0).astype(np.uint8))],
                blur_names=["full"], blur_spans=[[0.0, 1.0]], blur_coverage=[0.2])


def test_write_read_shards_and_skip_bad_shard(tmp_path):
    shards.write_shard([_row(0), _row(1)], tmp_path / "part-00000.parquet")
    shards.write_shard([_row(2)], tmp_path / "part-00001.parquet")
    (tmp_path / "part-00002.parquet").write_bytes(b"not parquet")  # a damaged shard
    (tmp_path / ".part-00003.parquet.abc.tmp").write_bytes(b"half written")  # never listed
    shards.write_json_atomic({"kind": "sequences"}, tmp_path / shards.MANIFEST)
    reader = shards.ShardReader(tmp_path)
    assert len(reader) == 3
    assert list(reader.bad_shards) == [str(tmp_path / "part-00002.parquet")]
    assert reader.manifest == {"kind": "sequences"}
    row = reader.row(2)
    assert row["seq_id"] == "0-2" and row["_source"] == "part-00001.parquet#0"
    assert shards.decode_webp(row["frames"]).shape == (4, 24, 32, 4)
    assert sorted(reader.column("object_id")) == ["obj/0", "obj/0", "obj/1"]


def test_write_shard_is_atomic_on_failure(tmp_path):
    bad = _row(0)
    bad["index"] = "not an int"
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError)):
        shards.write_shard([bad], tmp_path / "part-00000.parquet")
    assert list(tmp_path.iterdir()) == []


def test_missing_or_empty_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(shards.ShardError, match="does not exist"):
        shards.ShardReader(tmp_path / "nope")
    with pytest.raises(shards.ShardError, match="no .parquet"):
        shards.ShardReader(tmp_path)
