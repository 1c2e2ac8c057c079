"""Training batches made in a forked child (``data.prefetch_in=process``): the same batches in the same
order and memory layout as made in one process, each intact until the next is taken, rows skipped in
the child counted in the parent, the child's errors raised in the parent, and no child left behind."""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import pytest
import torch

from fmo_fakes import corrupt_frames
from fmolab.data.child_stream import child_batches
from fmolab.data.synthetic import write_synthetic_dataset
from fmolab.train.streams import batch_stream


def _dataset(make_config, work, data, **extra):
    from fmolab.data import build_dataset

    return build_dataset(make_config({"runtime.work_dir": work, "data.train": data, "data.val_fraction": 0.0,
                                      "data.format": "multi_object", "data.flip": True,
                                      "data.time_reverse": True, "data.jitter": 0.1, **extra}), "train")


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            assert v.dtype == b[k].dtype and v.shape == b[k].shape and v.stride() == b[k].stride(), k
            assert torch.equal(v, b[k]), k
        else:
            assert v == b[k], k


def test_same_batches_in_order_and_layout_and_each_intact_until_the_next(work, make_config):
    data = write_synthetic_dataset(work / "data", num_sequences=12, seed=3)
    expected = [(e, b) for _, (e, b) in zip(range(9), batch_stream(_dataset(make_config, work, data), 4, 0, 1, 5))]
    assert {e for e, _ in expected} == {0, 1, 2}  # three epochs: each draws anew
    assert any(not b["frames"].is_contiguous() for _, b in expected)  # channels-last uint8 frames kept so
    assert any(b["object_valid"].dtype == torch.bool for _, b in expected)

    got = child_batches(batch_stream(_dataset(make_config, work, data), 4, 0, 1, 5), depth=2)
    for k, (epoch, batch) in zip(range(9), got):
        if k == 2:  # the child runs ahead while this batch is held: its slot is not written meanwhile
            children = mp.active_children()
            assert [c.name for c in children] == ["fmolab-batches"] and children[0].pid != os.getpid()
            time.sleep(1.0)
        assert epoch == expected[k][0]
        _same(batch, expected[k][1])
    got.close()
    assert not mp.active_children()  # a consumer that stops stops the child


def test_rows_skipped_in_the_child_are_counted_in_the_parent(work, make_config):
    data = write_synthetic_dataset(work / "data", num_sequences=16, seed=4)
    corrupt_frames(data / "shard-00001.parquet")  # its rows are skipped and replaced
    alone = _dataset(make_config, work, data, **{"data.format": "double_blur"})
    for _, (_, _) in zip(range(8), batch_stream(alone, 4, 0, 1, 0)):
        pass
    assert alone.skipped

    ds = _dataset(make_config, work, data, **{"data.format": "double_blur"})
    stream = child_batches(batch_stream(ds, 4, 0, 1, 0), 2, lambda: ds.skipped, ds.skipped_elsewhere.update)
    for _, (_, _) in zip(range(8), stream):
        pass
    assert ds.skipped_elsewhere, "no row skipped in the child reached the parent"
    assert ds.skipped.keys() == alone.skipped.keys()
    stream.close()


def test_an_error_in_the_child_is_raised_in_the_parent_and_a_lost_child_is_named():
    def items():
        for i in range(3):
            yield 0, {"x": torch.full((4, 3), float(i))}
        raise ValueError("row 3 is broken")

    got = []
    with pytest.raises(RuntimeError, match="(?s)failed.*ValueError: row 3 is broken"):
        for _, batch in child_batches(items(), depth=2):
            got.append(float(batch["x"][0, 0]))
    assert got == [0.0, 1.0, 2.0]

    def endless():
        while True:
            yield 0, {"x": torch.zeros(8)}

    stream = child_batches(endless(), depth=1)
    next(stream)
    os.kill(mp.active_children()[0].pid, 9)
    with pytest.raises(RuntimeError, match="child process ended.*data.prefetch_in=thread"):
        for _ in range(100):
            next(stream)
    stream.close()
    assert not mp.active_children()


def test_a_batch_larger_than_the_first_comes_through_the_pipe_whole():
    def items():
        for n in (4, 64, 4):
            yield 0, {"x": torch.arange(n * 3, dtype=torch.float32).view(n, 3).t(), "id": [n]}

    got = [(b["x"].clone(), b["id"]) for _, b in child_batches(items(), depth=2)]
    assert [i for _, i in got] == [[4], [64], [4]]
    for x, (n,) in got:
        assert torch.equal(x, torch.arange(n * 3, dtype=torch.float32).view(n, 3).t())
