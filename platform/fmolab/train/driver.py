"""``fmolab train`` on the driver: start or resume the MLflow run, launch Ray Train, then log the best
weights as an MLflow model (with loss curves) and register them."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from fmolab import storage
from fmolab.config import Config, derive
from fmolab.train.launch import dataset_tags, launch, open_run, run_dir
from fmolab.train.preflight import preflight


def resolve_run_name(cfg: Config) -> str:
    return cfg.train.run_name or f"{cfg.variant}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_run_config(where: Config, run_name: str, overrides: list[str] = ()) -> Config:
    """The config run ``run_name`` was started with (``fmolab train --resume NAME``), looked up in the
    storage of ``where`` (``runtime.storage``, else the work folder), with ``overrides`` on top (e.g.
    more steps); this machine's work folder stays ``where``'s."""
    from fmolab.config import load_config
    from fmolab.runtime import use_work_dir

    runs = where.output("runs")
    try:
        saved = storage.read_json(storage.join(runs, run_name, "config.json"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no run {run_name!r} under {runs}: nothing to resume") from None
    cfg = load_config([], list(overrides), base=saved)
    return derive(cfg, {"runtime.work_dir": str(use_work_dir(where.work_dir)), "train.run_name": run_name})


def train(cfg: Config, register: bool = True) -> dict:
    """Train (or resume) ``cfg``; returns run id, model URI, registered version and final metrics."""
    from fmolab.runtime import init_ray
    from fmolab.tracking.ending import end_run, error_text, reason_of_error, reason_of_metrics
    from fmolab.tracking.store import run_address, setup_tracking, ui_command

    cfg = derive(cfg, {"runtime.work_dir": str(cfg.work_dir)})  # pinned before the config travels to workers
    storage.check_readable(cfg.train_dir, "training data (data.train)")
    data = preflight(cfg)  # the losses, format, model, optimizer and data, before anything starts
    for shard, why in data["bad_shards"].items():  # skipped, never silently
        print(f"[train] warning: skipping unreadable shard {shard}: {why.splitlines()[0][:200]}", flush=True)
    uri = setup_tracking(cfg)  # fail fast on a dead server, before starting Ray
    storage.check_writable(cfg.storage_root)
    init_ray(cfg.runtime.address, cfg.runtime.num_cpus, cfg.work_dir)
    run_name = resolve_run_name(cfg)
    cfg = derive(cfg, {"train.run_name": run_name})
    run_id = open_run(cfg)
    record_data(run_id, data)
    print(f"[train] run {run_name} (MLflow run {run_id}) on {cfg.train.workers} worker(s)", flush=True)
    ui = run_address(run_id)
    print(f"[train] MLflow UI: {ui}" + (f" (serve it: {ui_command(uri)})" if ui_command(uri) else ""), flush=True)
    result = launch(cfg, run_id, uri, cfg.output("ray_results"))
    metrics = dict(result.metrics or {})
    out = {"run_id": run_id, "run_name": run_name, "mlflow_ui": ui, "metrics": metrics}
    try:
        if result.checkpoint is not None:
            out.update(publish(cfg, run_id, result.checkpoint, metrics, register))
    except (Exception, KeyboardInterrupt) as exc:
        end_run(run_id, reason_of_error(exc), metrics, cfg.train.steps, detail=error_text(exc))
        raise
    end_run(run_id, reason_of_metrics(metrics, cfg.train.steps), metrics, cfg.train.steps, cfg.train.monitor.metric)
    return out


def record_data(run_id: str, data: dict) -> None:
    """The data a run sees on its record: rows, and the shards it had to skip (counted and named)."""
    import mlflow

    client = mlflow.MlflowClient()
    client.log_metric(run_id, "data/rows", data["rows"])
    client.log_metric(run_id, "data/bad_shards", len(data["bad_shards"]))
    if data["bad_shards"]:
        client.set_tag(run_id, "fmolab.bad_shards", ", ".join(sorted(data["bad_shards"]))[:5000])


def publish(cfg: Config, run_id: str, checkpoint, metrics: dict, register: bool) -> dict:
    """The best weights and curves into the run's folder; the weights as an MLflow model linked to the
    validation they were best at; registered with a description when ``register``."""
    from fmolab.tracking import model_registry

    out: dict = {}
    folder, best_step = run_dir(cfg, cfg.train.run_name), int(metrics.get("best_step", -1))
    with checkpoint.as_directory() as d, tempfile.TemporaryDirectory() as tmp:
        best = Path(tmp) / "best_model.pt"
        shutil.copyfile(Path(d) / "best_model.pt", best)
        out["best_weights"] = storage.upload(best, storage.join(folder, "best_model.pt"))
        curves = log_curves(cfg, run_id, Path(tmp) / "loss_curves.png")
        storage.upload(curves, storage.join(folder, "loss_curves.png"))
        out["linked"] = linked = model_registry.validation_at(run_id, best_step)
        out["model_uri"] = model_registry.log_model(cfg, best, run_id, step=best_step, metrics=linked)
    if register and cfg.tracking.register_as:
        out["version"] = model_registry.register(
            out["model_uri"], cfg.tracking.register_as, cfg.tracking.alias,
            tags={"run_name": cfg.train.run_name, "variant": cfg.variant},
            description=model_registry.describe_version(
                cfg, steps_done=int(metrics.get("step", 0)), best_step=best_step,
                best_value=linked.get(cfg.train.monitor.metric, metrics.get("best_metric", float("nan"))),
                linked=linked, digest=dataset_tags(cfg)["dataset_manifest_sha1"], metrics=metrics))
        out["registered"] = f"models:/{cfg.tracking.register_as}@{cfg.tracking.alias}"
    return out


def log_curves(cfg: Config, run_id: str, path: Path) -> Path:
    """This run's curves as a PNG artifact: losses (train and validation) in one panel, each validation
    metric family (PSNR, SSIM, TIoU, animation) in its own (:func:`fmolab.plots.plot_run_curves`)."""
    import mlflow

    from fmolab.plots import plot_run_curves

    client = mlflow.MlflowClient()
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith(("train/", "val/"))]
    series = {k: sorted({m.step: m.value for m in client.get_metric_history(run_id, k)}.items()) for k in sorted(keys)}
    plot_run_curves(series, path, title=f"{cfg.train.run_name} ({cfg.variant})")
    client.log_artifact(run_id, str(path), "plots")
    return path
