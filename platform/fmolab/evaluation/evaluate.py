"""``fmolab evaluate``: score a model on synthetic shards or a real FMO benchmark, beside the "Bg" and
"Im" baselines, and record the result in MLflow.

Outputs (folder ``--out``, written atomically): ``samples.csv`` (one row per sample: every metric for
the model, ``bg`` and ``im``), ``summary.json`` (means per metric for each method) and, in MLflow, a run
in experiment ``fmolab-eval`` (or ``--experiment``) with the means as metrics (``tiou``, ``psnr``,
``ssim``, ``middle_psnr`` for the model; ``bg/...`` and ``im/...`` for the baselines), both files as
artifacts and the tags ``model_uri``, ``dataset``, ``dataset_kind``.

Means follow the benchmark: per sequence first, then over sequences (a synthetic sample is its own
sequence); NaN values (e.g. TIoU of the baselines, which have no trajectory) are left out.
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from fmolab import storage
from fmolab.atomic import atomic_dir
from fmolab.inference.options import EvaluateOptions
from fmolab.evaluation.benchmark_data import benchmark_samples, detect_kind
from fmolab.evaluation.samples import Sample, shard_samples
from fmolab.evaluation.scoring import METHODS, METRICS, by_sequence, score

DATA_KINDS = ("auto", "shards", "falling", "tbd", "tbd3d")


PROTOCOLS = ("fmolab", "benchmark")


def data_kind(path: str | Path) -> str:
    """"shards" for an fmolab dataset (Parquet shards, a folder or a URI), else the benchmark kind of
    the folder."""
    if not storage.exists(path):
        raise FileNotFoundError(f"evaluation data {storage.normalize(path)} does not exist")
    if storage.list_files(path, ".parquet"):
        return "shards"
    if storage.is_remote(path):
        raise ValueError(f"{path}: no .parquet shards; the FMO benchmark layouts are read from local folders")
    return detect_kind(path)


def samples_for(predictor, data: str | Path, kind: str = "auto", num_frames: int | None = None,
                max_samples: int | None = None, sub_steps: int = 1,
                size: tuple[int, int] | None = None) -> tuple[str, Iterator[Sample]]:
    kind = data_kind(data) if kind == "auto" else kind
    if kind == "shards":
        return kind, shard_samples(predictor.config, data, num_frames, max_samples)
    return kind, benchmark_samples(data, predictor.input_format, size or predictor.size, kind, sub_steps, max_samples)


def _nanmean(values: Iterable[float]) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def aggregate(rows: list[dict]) -> dict:
    """Means per sequence, then over sequences (the benchmark's averaging)."""
    by_seq, out = by_sequence(rows)
    for method in METHODS:
        out[method] = {m: _nanmean(_nanmean(r[f"{method}_{m}"] for r in seq) for seq in by_seq.values())
                       for m in METRICS}
    out["model"]["reversed_fraction"] = _nanmean(r["model_reversed"] for r in rows)
    return out


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def evaluate(predictor, data: str | Path, out_dir: str | Path, kind: str = "auto", num_frames: int | None = None,
             max_samples: int | None = None, sub_steps: int = 1, size: tuple[int, int] | None = None,
             sync: str = "first", progress: bool = False, workers: int = 0, protocol: str = "fmolab") -> dict:
    """Score every sample; write ``samples.csv`` and ``summary.json`` into ``out_dir`` (all or nothing).
    ``workers > 0``: shard datasets are scored by that many model actors on the Ray cluster
    (:mod:`fmolab.evaluation.cluster`), the rows written as ``samples/*.parquet``, the summary last.
    ``protocol="benchmark"``: the FMO deblurring benchmark's own rules (:mod:`fmolab.evaluation.protocol`)."""
    kind = data_kind(data) if kind == "auto" else kind
    start = time.time()
    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
    if protocol == "benchmark":
        from fmolab.evaluation.protocol import score_benchmark

        if kind == "shards" or workers:
            raise ValueError("--protocol benchmark scores the published benchmark folders (Falling Objects, TbD, "
                             "TbD-3D) in this process; fmolab shards use the default protocol")
        rows = score_benchmark(predictor, data, kind, max_samples, size)
    elif workers:
        from fmolab.evaluation.cluster import score_on_ray

        if kind != "shards":
            raise ValueError(f"--workers scores fmolab shard datasets on the cluster; {data} is a {kind} benchmark "
                             f"folder on this machine: evaluate it without --workers")
        rows = score_on_ray(predictor, str(data), storage.normalize(out_dir), actors=workers, num_frames=num_frames,
                            max_samples=max_samples, sync=sync)
    else:
        rows = []
        for s in samples_for(predictor, data, kind, num_frames, max_samples, sub_steps, size)[1]:
            rows.append({"sample": s.sample_id, "sequence": s.sequence, "dataset": s.dataset, **score(predictor, s, sync)})
            if progress and len(rows) % 10 == 0:
                print(f"[evaluate] {len(rows)} samples, psnr {rows[-1]['model_psnr']:.2f} dB", flush=True)
    if not rows:
        raise ValueError(f"no samples to evaluate in {data} (kind {kind})")
    if protocol == "benchmark":
        from fmolab.evaluation.protocol import aggregate_strict as means
    else:
        means = aggregate
    summary = {"model_uri": predictor.source, "data": storage.normalize(data), "dataset_kind": kind,
               "input_format": predictor.config.data.format, "seconds": round(time.time() - start, 2),
               "workers": workers, "protocol": protocol, **means(rows)}
    if workers:  # the samples are in place: the summary says the folder is complete
        storage.write_json(storage.join(out_dir, "summary.json"), _json_safe(summary))
    else:
        with atomic_dir(out_dir) as tmp:
            with open(tmp / "samples.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                for r in rows:
                    writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
            (tmp / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2))
    summary["out_dir"] = storage.normalize(out_dir)
    return summary


def flat_metrics(summary: dict) -> dict[str, float]:
    """MLflow metric names: ``psnr`` (model), ``bg/psnr``, ``im/psnr`` ...; NaN left out."""
    out = {}
    for method in METHODS:
        for m, v in summary[method].items():
            key = m if method == "model" else f"{method}/{m}"
            if v is not None and math.isfinite(v):
                out[key] = float(v)
    out["num_samples"] = float(summary["num_samples"])
    return out


def log_evaluation(cfg, summary: dict, experiment: str = "fmolab-eval") -> str:
    """One MLflow run with the means, the CSV/JSON artifacts and the model URI as a tag; returns its id."""
    import mlflow

    from fmolab.tracking.store import create_run

    rid = create_run(cfg, experiment, f"eval-{Path(str(summary['data'])).name}-{time.strftime('%Y%m%d-%H%M%S')}",
                     {"model_uri": summary["model_uri"], "dataset": summary["data"],
                      "dataset_kind": summary["dataset_kind"], "fmolab.kind": "evaluation"}, command="evaluate")
    from fmolab.tracking.datasets import log_dataset

    log_dataset(rid, str(summary["data"]), "evaluation")
    client = mlflow.MlflowClient()
    ts = int(time.time() * 1000)
    client.log_batch(rid, metrics=[mlflow.entities.Metric(k, v, ts, 0) for k, v in flat_metrics(summary).items()],
                     params=[mlflow.entities.Param("input_format", summary["input_format"]),
                             mlflow.entities.Param("num_samples", str(summary["num_samples"]))])
    for f in ("samples.csv", "summary.json"):  # a cluster evaluation keeps its rows as Parquet, in place
        if storage.exists(storage.join(summary["out_dir"], f)):
            client.log_artifact(rid, str(storage.local(storage.join(summary["out_dir"], f))))
    client.set_terminated(rid)
    return rid


def format_summary(summary: dict) -> str:
    lines = [f"{'method':8} " + " ".join(f"{m:>12}" for m in METRICS)]
    for method in METHODS:
        vals = summary[method]
        lines.append(f"{method:8} " + " ".join(f"{vals[m]:12.4f}" if vals[m] is not None and math.isfinite(vals[m])
                                               else f"{'-':>12}" for m in METRICS))
    return "\n".join(lines)


def run_evaluation(model: str, data: str, out: str = "", options: EvaluateOptions = EvaluateOptions(), *,
                   work_dir: str = "", experiment: str = "fmolab-eval", log: bool = True, address: str = "") -> dict:
    """``fmolab evaluate``: check the inputs, load ``model``, evaluate it on ``data`` with ``options``
    (checked when made), log the run. With ``options.workers``, Ray starts (or joins ``address``)
    before the scoring."""
    from fmolab.inference.predictor import load_predictor
    from fmolab.runtime import work_config
    from fmolab.tracking.store import setup_tracking

    cfg = work_config(work_dir)
    storage.check_readable(data, "evaluation data")
    out = out or cfg.output("eval", f"{storage.basename(data)}-{time.strftime('%Y%m%d-%H%M%S')}")
    storage.check_writable(storage.parent(out))
    setup_tracking(cfg)
    predictor = load_predictor(model)
    predictor.ensemble = options.ensemble
    if options.workers:
        from fmolab.runtime import init_ray

        init_ray(address, cfg.runtime.num_cpus, cfg.work_dir)
    summary = evaluate(predictor, data, out, progress=True, **options.evaluate_kwargs())
    if log:
        summary["mlflow_run_id"] = log_evaluation(cfg, summary, experiment)
        from fmolab.tracking.store import run_address

        summary["mlflow_ui"] = run_address(summary["mlflow_run_id"])
    return summary
