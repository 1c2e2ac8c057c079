"""Keep freed memory in the process instead of handing it back to the kernel.

glibc's malloc gives every block above its mmap threshold (batches, activations, gradients: most of a
training step) its own mapping and unmaps it on free, and trims the heap's top the same way, so each
step faults the same pages in again (measured: ~20% of a small-scale CPU step, as system time). Raising
both thresholds keeps those pages mapped between steps; the process's memory then stays at its peak
working set instead of breathing with every step.

That covers the main arena only. Ray Train runs the training function in a thread of its worker, and
glibc gives such a thread an arena of its own, whose heaps are unmapped whenever they fall empty,
whatever the thresholds: each step faulted ~3,200 pages in again (18% slower at the small scale,
measured in a plain thread). One arena for the whole process avoids it; glibc reads that setting
only when the process starts, so it travels in the Ray Train workers' environment (:data:`WORKER_ENV`).
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD = 16 << 20  # below glibc's ceiling for it (32 MB on 64-bit)
TRIM_THRESHOLD = 1 << 30
WORKER_ENV = {"MALLOC_ARENA_MAX": "1"}  # set where a training worker process starts


def with_worker_env(runtime_env: dict | None) -> dict:
    """A Ray runtime env (a worker's own; Ray merges its variables into the job's) with :data:`WORKER_ENV`."""
    env = dict(runtime_env or {})
    env["env_vars"] = {**(env.get("env_vars") or {}), **WORKER_ENV}
    return env


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where malloc is not glibc's."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):  # no libc found, or one without mallopt (macOS)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def malloc_arenas() -> int | None:
    """How many arenas glibc's malloc has made in this process (``malloc_info``); None where malloc is
    not glibc's. One where :data:`WORKER_ENV` was set as the process started, whatever its threads."""
    import os
    import re
    import tempfile

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
        libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
    except (OSError, AttributeError, TypeError):
        return None
    fd, path = tempfile.mkstemp(suffix=".xml")
    os.close(fd)
    try:
        stream = libc.fopen(path.encode(), b"w")
        if not stream:
            return None
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        with open(path) as f:
            return len(re.findall(r'<heap nr="\d+">', f.read()))
    finally:
        os.unlink(path)
