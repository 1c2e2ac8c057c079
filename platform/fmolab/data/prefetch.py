"""Items made on a thread of their own, ahead of the one that uses them: video frames decoded while
earlier ones are deblurred (FFmpeg runs without the GIL), training batches composited while the
network computes (Pillow's WebP decoding and numpy release it too)."""
from __future__ import annotations

from typing import Iterator


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
