"""A least-recently-used cache bounded by bytes: decoded background clips, training rows and their
decoded images (per process: nothing in it travels when its owner is pickled)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable


class ByteLRU:
    """Evicts the least recently used values while their bytes exceed ``max_bytes`` (always keeping the
    newest, so a bound smaller than one value still saves the repeat of the last one)."""

    def __init__(self, max_bytes: float):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable, default=None):
        hit = self._items.get(key)
        if hit is None:
            return default
        self._items.move_to_end(key)
        return hit[0]

    def put(self, key: Hashable, value, nbytes: int) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        self._items[key] = (value, nbytes)
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            self.nbytes -= self._items.popitem(last=False)[1][1]

    def empty(self) -> "ByteLRU":
        """A cache with the same bound and nothing in it (what a pickled owner carries)."""
        return ByteLRU(self.max_bytes)
