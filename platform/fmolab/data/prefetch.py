"""Items made ahead of their use: on a thread of their own (:func:`prefetched`: video frames decoded
while earlier ones are deblurred, as FFmpeg runs without the GIL; training batches composited while
the network computes, as Pillow's WebP decoding and numpy release it too), or by the caller, several
in a row (:func:`in_runs`).

A thread that makes items runs its torch ops on itself alone (:func:`torch_on_this_thread_only`): libgomp
gives every thread that starts a parallel region a team of its own, and once a process holds more
OpenMP threads than CPUs, every team waits for its threads by sleeping instead of spinning. Measured
on 2 cores: a prefetch thread whose batches went through one parallel op made every op of the
training thread 2.2x slower, for the rest of the process.
"""
from __future__ import annotations

import ctypes
import functools
import sys
from typing import Iterator


@functools.lru_cache(maxsize=1)
def _openmp():
    """The OpenMP runtime torch loaded (libgomp, Intel's or LLVM's), or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if ".so" in line}
    except OSError:  # not Linux
        paths = set()
    for path in sorted(paths):
        if path.rsplit("/", 1)[-1].startswith(("libgomp", "libiomp5", "libomp")):
            lib = ctypes.CDLL(path)  # already loaded: the same handle, nothing new runs
            if hasattr(lib, "omp_set_num_threads"):
                return lib
    return None


def torch_on_this_thread_only() -> bool:
    """Parallel torch ops made on the calling thread run on it alone (OpenMP's team size is a per-thread
    setting; other threads keep theirs). False where it could not be set."""
    import torch

    torch.get_num_threads()  # torch sets a thread's team size at its first op: let it, then override it
    lib = _openmp()
    if lib is None:
        return False
    lib.omp_set_num_threads(1)
    return torch.get_num_threads() == 1


def prefetched(items: Iterator, depth: int = 4) -> Iterator:
    """``items`` made on a thread of their own, at most ``depth`` ahead: a decoder (FFmpeg runs without
    the GIL) works on the next frames while the caller works on this one. An error is raised where its
    item would have come; a caller that stops early stops the thread."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop, end = threading.Event(), object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            if "torch" in sys.modules:  # items with torch ops (training batches) must not slow the consumer's
                torch_on_this_thread_only()
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:
            put((end, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is end:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


def in_runs(items: Iterator, n: int) -> Iterator:
    """``items`` made ``n`` in a row by the caller, then handed out one by one: between two training
    steps a batch's many small array ops find the caches and branch predictors the step left cold and
    cost ~1.5x what they cost in a run (docs/architecture.md), while no other thread takes a core from
    the step's OpenMP team. An error is raised where its item would have come, after the items before it."""
    items = iter(items)
    while True:
        run, error = [], None
        try:
            for _ in range(n):
                run.append(next(items))
        except StopIteration:
            pass
        except Exception as exc:  # raised below, after the items made before it
            error = exc
        yield from run
        if error is not None:
            raise error
        if len(run) < n:
            return
