"""Endless streams of ``(epoch, batch)`` for the training loop: from a torch dataset (each worker makes
its own items) or from the worker's Ray Data shard (``data.pipeline=ray_data``)."""
from __future__ import annotations

from typing import Iterator

import torch


def batch_stream(dataset, batch_size: int, rank: int, world: int, seed: int) -> Iterator[tuple[int, dict]]:
    """A fresh permutation each epoch, strided over ranks; each epoch draws new backgrounds and
    augmentations (``dataset.set_epoch``); batches are made whole (``dataset.batch``)."""
    epoch = 0
    n = len(dataset)
    if n < world:
        raise RuntimeError(f"training split has {n} items, fewer than {world} workers: render more sequences")
    while True:
        dataset.set_epoch(epoch)
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = torch.randperm(n, generator=g)[rank::world].tolist()
        order = order[: len(order) // batch_size * batch_size] or order  # tiny datasets: one short batch
        for i in range(0, len(order), batch_size):
            yield epoch, dataset.batch(order[i:i + batch_size])
        epoch += 1


def ray_batch_stream(shard, batch_size: int, seed: int) -> Iterator[tuple[int, dict]]:
    """Batches of this worker's Ray Data shard (it holds many epochs, see ``launch.torch_trainer``;
    should a run outlast them, the shard is read again)."""
    from fmolab.data.ray_pipeline import RayCollate

    collate_fn = RayCollate()
    epoch = 0
    while True:
        got = 0
        for batch in shard.iter_torch_batches(batch_size=batch_size, collate_fn=collate_fn, drop_last=True,
                                              local_shuffle_buffer_size=4 * batch_size,
                                              local_shuffle_seed=seed + epoch):
            got += 1
            yield epoch, batch
        if not got:
            raise RuntimeError(f"this worker's Ray Data shard holds fewer than batch_size={batch_size} items: "
                               "render more sequences or lower train.batch_size")
        epoch += 1
