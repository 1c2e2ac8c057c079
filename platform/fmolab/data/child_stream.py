"""Training batches made in a child process (``data.prefetch_in=process``), handed over through a ring
of shared-memory slots: the training process only maps them.

Why not the prefetch thread: a thread of the training process takes Python's lock from the step's
many small ops, so on a busy machine its batches cost the step about what making them between two
steps does. Why not a DataLoader worker: its batches travel pickled or as one shared-memory file per
tensor, and receiving them cost the training process about what making them did (measured, see
docs/architecture.md "Training speed on CPU").

The child is forked after the parent made the first batch: it inherits the stream mid-way (so the
batches come in the same order as in one process), the dataset's caches, and an anonymous shared
mapping sized from that batch; torch gives it one thread. A batch's tensors stay valid until the next batch
is taken (their slot is then given back to the child).
"""
from __future__ import annotations

import ctypes
import mmap
import multiprocessing as mp
import traceback
from typing import Iterator

import numpy as np
import torch

SLACK = 1.25  # slot size over the first batch's bytes (later batches of one run have its shapes)
ALIGN = 64


def _layout(batch: dict) -> tuple[list, dict, int]:
    """Where each tensor of ``batch`` goes in a slot: ``(key, dtype, shape, order, offset)`` with
    ``order`` the permutation that makes its memory contiguous (channels-last images stay so);
    non-tensor values travel as they are. Returns (entries, values, bytes)."""
    entries, values, offset = [], {}, 0
    for key, v in batch.items():
        if not isinstance(v, torch.Tensor) or v.numel() == 0:
            values[key] = v
            continue
        order = sorted(range(v.dim()), key=lambda d: (-v.stride(d), d))
        dense = v.permute(order).is_contiguous()
        entries.append((key, v.dtype, tuple(v.shape), order if dense else list(range(v.dim())), offset))
        offset += -(-v.numel() * v.element_size() // ALIGN) * ALIGN
    return entries, values, offset


def _write(buf: memoryview, batch: dict, entries: list) -> None:
    for key, dtype, shape, order, offset in entries:
        src = batch[key].permute(order)
        dst = torch.frombuffer(buf, dtype=dtype, count=src.numel(), offset=offset).view(src.shape)
        dst.copy_(src)


def _read(buf: memoryview, entries: list, values: dict) -> dict:
    out = dict(values)
    for key, dtype, shape, order, offset in entries:
        held = [shape[d] for d in order]
        t = torch.frombuffer(buf, dtype=dtype, count=int(np.prod(held)), offset=offset).view(held)
        out[key] = t.permute(np.argsort(order).tolist())
    return out


def _die_with_parent() -> None:
    try:  # Linux: the child gets SIGKILL when the thread that forked it ends, however it ends
        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (AttributeError, OSError):
        pass


def _child(stream, conn, ring: mmap.mmap, slot_bytes: int, slots: int, skipped_of) -> None:
    _die_with_parent()
    torch.set_num_threads(1)
    free, told = list(range(1, slots)), set(skipped_of())  # slot 0 holds the first batch, the parent's
    try:
        for epoch, batch in stream:
            while not free or conn.poll():  # slots given back (or a stop) first
                msg = conn.recv()
                if msg is None:
                    return
                free.append(msg)
            entries, values, size = _layout(batch)
            new = {k: v for k, v in skipped_of().items() if k not in told}
            told.update(new)
            if size > slot_bytes:  # a batch larger than the first (none of fmolab's): pickled whole
                tensors = {k: v.numpy() for k, v in batch.items() if isinstance(v, torch.Tensor)}
                conn.send(("whole", epoch, ({**batch, **tensors}, list(tensors)), new))
                continue
            slot = free.pop(0)
            _write(memoryview(ring)[slot * slot_bytes:(slot + 1) * slot_bytes], batch, entries)
            conn.send(("slot", epoch, (slot, entries, values), new))
        conn.send(("end", None, None, {}))
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc(), None, {}))
        except OSError:  # the parent is gone
            pass


def child_batches(stream: Iterator[tuple[int, dict]], depth: int, skipped_of=dict,
                  on_skipped=lambda rows: None) -> Iterator[tuple[int, dict]]:
    """``stream``'s ``(epoch, batch)`` items, in order, made ``depth`` ahead in a forked child.

    ``skipped_of()`` gives the rows the stream skipped so far (in the child); those skipped there are
    passed to ``on_skipped`` here with the batch after them. An error in the child is raised here."""
    first = next(stream)
    entries, values, size = _layout(first[1])
    slot_bytes, slots = max(ALIGN, int(size * SLACK) // ALIGN * ALIGN), depth + 1
    ring = mmap.mmap(-1, slot_bytes * slots)  # anonymous and shared: the child inherits it
    _write(memoryview(ring)[:slot_bytes], first[1], entries)
    ours, theirs = mp.Pipe()
    child = mp.get_context("fork").Process(target=_child, name="fmolab-batches", daemon=True,
                                           args=(stream, theirs, ring, slot_bytes, slots, skipped_of))
    child.start()
    theirs.close()
    held = 0
    try:
        yield first[0], _read(memoryview(ring)[:slot_bytes], entries, values)
        while True:
            try:
                if held is not None:
                    ours.send(held)  # the batch taken before this one is done with: its slot goes back
                    held = None
                kind, epoch, payload, new = ours.recv()
            except (EOFError, OSError):  # the child's end closed: it ended
                child.join(timeout=5)
                raise RuntimeError(f"the batch-making child process ended (exit code {child.exitcode}); "
                                   "see the lines above for its cause, or set data.prefetch_in=thread") from None
            if new:
                on_skipped(new)
            if kind == "error":
                raise RuntimeError(f"making a batch in the child process failed:\n{epoch}")
            if kind == "end":
                return
            if kind == "whole":
                batch, tensors = payload
                yield epoch, {k: torch.from_numpy(v) if k in tensors else v for k, v in batch.items()}
                continue
            held, slot_entries, slot_values = payload
            yield epoch, _read(memoryview(ring)[held * slot_bytes:(held + 1) * slot_bytes], slot_entries,
                               slot_values)
    finally:
        try:
            ours.send(None)
        except OSError:
            pass
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join()
        ours.close()
