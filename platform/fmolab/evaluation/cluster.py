"""Evaluation at cluster scale: the samples of a shard dataset (a folder or a URI) scored by a pool of
model actors with Ray Data ``map_batches`` (one GPU each where the cluster has GPUs), per-sample rows
written as Parquet next to the summary, so scoring 100k sequences is one job.

The actors score exactly what :func:`fmolab.evaluation.evaluate.evaluate` scores (same samples, same
:func:`~fmolab.evaluation.evaluate.score`), only in parallel.
"""
from __future__ import annotations

from fmolab import storage
from fmolab.inference.predictor import ModelActor


class Scorer(ModelActor):
    """A batch of sample indices -> their metric rows."""

    def __init__(self, model: str, data: str, num_frames: int | None, sync: str, tracking_uri: str, env: dict,
                 ensemble: int = 1):
        from fmolab.evaluation.samples import shard_dataset

        super().__init__(model, tracking_uri, env, ensemble)
        self.dataset = shard_dataset(self.predictor.config, data, num_frames)
        self.sync = sync

    def __call__(self, batch: dict) -> dict:
        from fmolab.evaluation.samples import shard_sample
        from fmolab.evaluation.scoring import score

        rows = []
        for i in batch["id"]:
            s = shard_sample(self.dataset, int(i))
            rows.append({"sample": s.sample_id, "sequence": s.sequence, "dataset": s.dataset,
                         **score(self.predictor, s, self.sync)})
        return {k: [r[k] for r in rows] for k in rows[0]}


def score_on_ray(predictor, data: str, out_dir: str, *, actors: int, num_frames: int | None = None,
                 max_samples: int | None = None, sync: str = "first", batch_size: int = 8) -> list[dict]:
    """Score every sample of ``data`` with ``actors`` model actors; writes ``<out_dir>/samples/*.parquet``
    and returns the rows (for the summary). Ray must be initialised (:func:`fmolab.runtime.init_ray`)."""
    import mlflow
    import ray

    from fmolab.evaluation.samples import shard_dataset
    from fmolab.runtime import worker_env

    n = len(shard_dataset(predictor.config, data, num_frames))
    n = n if max_samples is None else min(n, max_samples)
    gpus = 1 if ray.cluster_resources().get("GPU") else 0
    cpus = float(ray.cluster_resources().get("CPU", 1))
    # from_items: the index blocks come from the driver (ray.data.range would read them in tasks of
    # one whole CPU each, which never start on a small node whose CPUs the model actors hold)
    ds = ray.data.from_items([{"id": i} for i in range(n)]).map_batches(
        Scorer, fn_constructor_kwargs=dict(model=predictor.source, data=storage.normalize(data), num_frames=num_frames,
                                           sync=sync, tracking_uri=mlflow.get_tracking_uri(),
                                           env=worker_env(), ensemble=predictor.ensemble),
        concurrency=actors, batch_size=batch_size, num_gpus=gpus,
        num_cpus=0 if gpus else max(0.25, min(1.0, cpus / (actors + 1))),  # room for Ray Data's own tasks
    ).materialize()
    ds.write_parquet(**_parquet_target(storage.join(out_dir, "samples")))
    return sorted(ds.take_all(), key=lambda r: r["sample"])


def _parquet_target(path: str) -> dict:
    if not storage.is_remote(path):
        return {"path": path}
    fs, p = storage.filesystem(path)
    return {"path": p, "filesystem": fs}
