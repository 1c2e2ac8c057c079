"""Items made ahead on a thread (video frames, training batches): same items, same order, errors where
they happened, at most ``depth`` ahead, a consumer that stops early stops the producer, and a producer's
torch ops start no OpenMP team of their own. Items made in runs by the caller (``in_runs``): same items,
same order, n made before the first of them is handed out, errors after the items made before them."""
from __future__ import annotations

import os
import threading
import time

import pytest

from fmolab.data.prefetch import in_runs, prefetched


def recorded(n: int, made: list):
    """0..n-1, each appended to ``made`` as it is made."""
    for i in range(n):
        made.append(i)
        yield i


def test_same_items_in_order_and_bounded_ahead():
    made, seen = [], []
    for i in prefetched(recorded(50, made), depth=3):
        time.sleep(0.002)
        assert len(made) <= i + 1 + 3 + 1  # this one, the queue, and one in the producer's hands
        seen.append(i)
    assert seen == list(range(50))


def test_an_error_is_raised_where_its_item_would_have_come():
    def items():
        yield 1
        yield 2
        raise ValueError("frame 3 is broken")

    got = []
    with pytest.raises(ValueError, match="frame 3 is broken"):
        for i in prefetched(items()):
            got.append(i)
    assert got == [1, 2]


def test_in_runs_makes_n_before_handing_out_the_first():
    made, seen = [], []
    for i in in_runs(recorded(11, made), 4):
        # item i comes out of the run that starts at 4 * (i // 4): the whole run is made by then
        assert len(made) == min(11, 4 * (i // 4 + 1)), (i, made)
        seen.append(i)
    assert seen == list(range(11))  # the short last run too
    assert list(in_runs(iter([]), 3)) == []


def test_in_runs_raises_after_the_items_made_before_the_error():
    def items():
        yield from range(5)
        raise ValueError("row 5 is broken")

    got = []
    with pytest.raises(ValueError, match="row 5 is broken"):
        for i in in_runs(items(), 4):
            got.append(i)
    assert got == [0, 1, 2, 3, 4]


def test_stopping_early_stops_the_producer_and_closes_its_generator():
    closed = threading.Event()

    def items():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    before = threading.active_count()
    stream = prefetched(items(), depth=2)
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()
    assert closed.wait(5)
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_torch_ops_made_ahead_run_on_the_producer_alone():
    """A second OpenMP team in the process makes libgomp's teams sleep between ops once its threads
    outnumber the CPUs (the training thread's steps 2.2x slower on 2 cores): a producer's parallel
    torch op runs on the producer alone, and the consumer keeps its thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.rand(1 << 22)
        float((x * 2).sum())  # the consumer's own team exists

        def items():
            for _ in range(3):
                threads = len(os.listdir("/proc/self/task"))
                float((x * 3).sum())  # parallel on any thread of a team of 2
                yield torch.get_num_threads(), len(os.listdir("/proc/self/task")) - threads

        assert list(prefetched(items())) == [(1, 0)] * 3
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
