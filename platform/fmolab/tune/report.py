"""After a search: the table of trials (printed, ``trials.csv``), the optimization history and the
parameter importances (PNG), all logged to the parent run; the best trial's best weights (best by the
space's metric, as its ``train.monitor`` was) logged as a model in its run and registered as
``models:/<tracking.register_as>@<alias>``."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from fmolab import storage
from fmolab.config import Config, derive, to_dict
from fmolab.train.launch import dataset_tags
from fmolab.train.state import Monitor, first_animated
from fmolab.tune.plots import plot_history, plot_importances, plot_parallel
from fmolab.tune.space import SearchSpace
from fmolab.tune.trial import SEARCH_TAG, TRIAL_TAG, trial_run_name


def trial_rows(cfg: Config, space: SearchSpace, grid, name: str) -> list[dict]:
    import mlflow

    client = mlflow.MlflowClient()
    exp = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    runs = {r.data.tags.get(TRIAL_TAG): r for r in
            client.search_runs([exp.experiment_id], filter_string=f"tags.`{SEARCH_TAG}` = '{name}'", max_results=10000)
            if r.data.tags.get(TRIAL_TAG)}
    monitor = Monitor(space.metric, space.mode, cfg.train.monitor.animated_first)
    rows = []
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.split("_", 1)[-1]
        run = runs.get(trial_id)
        best_step, best_val, moving, animation_step = -1, math.nan, False, -1
        history, ratio_of, steps = _history(client, run, result, space.metric)
        if history:
            # as the trial chose its checkpoint: an animated validation first, then the metric
            best = monitor.best_of([(st, v, ratio_of.get(st, 0.0)) for st, v in history])
            if best:
                best_step, best_val, moving = best
            animation_step = first_animated([(st, ratio_of.get(st, 0.0)) for st, _ in history])
        params = {k: v for k, v in (result.config or {}).items() if k in space.names}
        trial_cfg = space.build_config(cfg, params, overrides=False)
        if result.error is not None:
            status = "error"
        elif steps < trial_cfg.train.steps:
            status = "stopped early"
        else:
            status = "completed"
        rows.append({"trial": trial_id, "params": params, "best": best_val, "best_step": best_step,
                     "animated": moving, "animation_step": animation_step, "steps": steps,
                     "max_steps": trial_cfg.train.steps, "status": status,
                     "run_id": run.info.run_id if run else "", "run_name": trial_run_name(name, trial_id),
                     "checkpoint_path": (result.metrics or {}).get("checkpoint_path", ""), "history": history,
                     "error": str(result.error)[:500] if result.error is not None else ""})
    return rows  # in the order Tune created the trials


def _history(client, run, result, metric: str) -> tuple[list[tuple[int, float]], dict[int, float], int]:
    """(metric history, animation ratio per step, last step) of a trial: from its MLflow run, which
    holds its whole history across driver restarts (Tune's own dataframe starts over at a resume),
    else from Tune's dataframe."""
    if run is not None:
        rid = run.info.run_id
        history = sorted({m.step: m.value for m in client.get_metric_history(rid, metric)}.items())
        if history:
            ratios = {m.step: m.value for m in client.get_metric_history(rid, "val/animation_ratio")}
            last = max([m.step for m in client.get_metric_history(rid, "train/loss")] + [history[-1][0]])
            return history, ratios, int(last)
    df = result.metrics_dataframe
    if df is None or metric not in df or "step" not in df:
        return [], {}, 0
    history = [(int(st), float(v)) for st, v in zip(df["step"], df[metric].astype(float))]
    ratios = dict(zip((int(st) for st in df["step"]), df["val/animation_ratio"].astype(float))) \
        if "val/animation_ratio" in df else {}
    return history, ratios, int(df["step"].max())


def format_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_table(rows: list[dict], names: list[str], metric: str) -> str:
    head = ["trial", *names, f"best {metric}", "animated", "steps", "status"]
    body = [[r["trial"], *[format_value(r["params"].get(n, "-")) for n in names],
             f"{r['best']:.5f}", "yes" if r.get("animated") else "no", f"{r['steps']}/{r['max_steps']}", r["status"]]
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in [head, *body]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def write_csv(rows: list[dict], names: list[str], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", *names, "best", "best_step", "animated", "steps", "max_steps", "status", "run_id"])
        for r in rows:
            w.writerow([r["trial"], *[r["params"].get(n, "") for n in names], r["best"], r.get("best_step", ""),
                        int(bool(r.get("animated"))), r["steps"], r["max_steps"], r["status"], r["run_id"]])
    return path


def study_of(rows: list[dict], space: SearchSpace):
    """An in-memory Optuna study of the finished trials (values = each trial's best metric), for importances."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    def dist(p):
        if p.dist == "choice":
            return CategoricalDistribution(p.choices)
        if p.dist == "int":
            return IntDistribution(int(p.low), int(p.high), step=int(p.step or 1))
        return FloatDistribution(p.low, p.high, log=p.dist == "loguniform", step=p.step)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if space.mode == "max" else "minimize")
    for r in rows:
        if math.isfinite(r["best"]):
            study.add_trial(optuna.trial.create_trial(
                params=r["params"], distributions={k: dist(space.param(k)) for k in r["params"]},
                value=r["best"]))
    return study


def report(cfg: Config, space: SearchSpace, grid, name: str, parent_id: str, folder: Path, train_storage: str) -> dict:
    """Table, CSV, plots, child-run statuses, and the best trial's model (logged + registered)."""
    import mlflow
    import ray.train

    from fmolab.tracking import model_registry
    from fmolab.tracking.ending import END_TAG, end_run, reason_of_error

    client = mlflow.MlflowClient()
    rows = trial_rows(cfg, space, grid, name)
    names = space.names
    table = print_table(rows, names, space.metric)
    print(f"[tune] {name}: {len(rows)} trial(s)\n{table}", flush=True)
    csv_path = write_csv(rows, names, folder / "trials.csv")
    client.log_artifact(parent_id, str(csv_path), "search")
    # A trial stopped by ASHA ends with its actor, its run still RUNNING; a failed trial leaves its run
    # to this driver too: Tune's view decides the end reason and status (a completed trial set its own).
    for r in rows:
        if not r["run_id"]:
            continue
        client.set_tag(r["run_id"], "fmolab.tune.status", r["status"])
        progress = {"step": r["steps"]} if r["steps"] else {}
        if r["status"] == "stopped early":
            end_run(r["run_id"], "asha_stop", progress, r["max_steps"])
        elif r["status"] == "error":
            end_run(r["run_id"], reason_of_error(r["error"]), progress, r["max_steps"], detail=r["error"])
        elif END_TAG not in client.get_run(r["run_id"]).data.tags:
            end_run(r["run_id"], "steps_done", progress, r["max_steps"])
    plots = {"history": str(plot_history(rows, folder / "optimization_history.png", name, space.metric, space.mode)),
             "parallel": str(plot_parallel(rows, space, folder / "parallel_coordinates.png", name))}
    importances: dict[str, float] = {}
    study = study_of(rows, space)
    if len(study.trials) >= 2:
        try:
            import optuna

            importances = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError) as exc:  # e.g. every trial had the same value
            print(f"[tune] no parameter importances: {exc}", flush=True)
    if importances:
        plots["importances"] = str(plot_importances(importances, folder / "param_importances.png", name, space.metric))
    for p in plots.values():
        client.log_artifact(parent_id, p, "plots")

    out: dict[str, Any] = {"name": name, "parent_run_id": parent_id, "trials": [
        {k: v for k, v in r.items() if k not in ("history",)} for r in rows], "table": str(csv_path),
        "plots": plots, "importances": importances}
    done = [r for r in rows if math.isfinite(r["best"]) and r["checkpoint_path"]]
    if not done:
        print("[tune] no trial reported a validation: nothing to register", flush=True)
        return out
    sign = 1 if space.mode == "max" else -1  # animated trials first, then the best metric
    best = max(done, key=lambda r: (r["animated"] and cfg.train.monitor.animated_first, sign * r["best"]))
    best_cfg = derive(space.build_config(cfg, best["params"], overrides=False), {"train.run_name": best["run_name"]})
    out.update(best_trial=best["trial"], best_params=best["params"], metric=space.metric, best_value=best["best"],
               best_run_id=best["run_id"], best_config=to_dict(best_cfg))
    weights = folder / "best_model.pt"
    fs = storage.ray_storage(train_storage).get("storage_filesystem")  # checkpoint paths are inside it
    with ray.train.Checkpoint(best["checkpoint_path"], filesystem=fs).as_directory() as d:
        weights.write_bytes((Path(d) / "best_model.pt").read_bytes())
    (folder / "best_config.json").write_text(json.dumps(to_dict(best_cfg), indent=2))
    (folder / "best.json").write_text(json.dumps({k: out[k] for k in ("best_trial", "best_params", "metric", "best_value",
                                                                     "best_run_id")}, indent=2, default=str))
    model_run = best["run_id"] or parent_id
    best_step = max(best["best_step"], 0)
    linked = model_registry.validation_at(best["run_id"], best_step) if best["run_id"] else {}
    out["model_uri"] = model_registry.log_model(best_cfg, weights, model_run, step=best_step,
                                                metrics=linked or {space.metric: best["best"]})
    client.log_metric(parent_id, f"best_{space.metric.replace('/', '_')}", best["best"])
    client.log_batch(parent_id, params=[mlflow.entities.Param(f"best.{k}", str(v)[:6000])
                                        for k, v in best["params"].items()
                                        if f"best.{k}" not in client.get_run(parent_id).data.params])
    for k, v in {"best_trial": best["trial"], "best_run_id": best["run_id"], "best_model_uri": out["model_uri"]}.items():
        client.set_tag(parent_id, f"fmolab.{k}", v)
    client.log_artifact(parent_id, str(folder / "best_config.json"), "search")
    if cfg.tracking.register_as:
        out["version"] = model_registry.register(out["model_uri"], cfg.tracking.register_as, cfg.tracking.alias,
                                           tags={"run_name": best["run_name"], "search": name, "variant": cfg.variant},
                                           description=model_registry.describe_version(
                                               best_cfg, steps_done=best["steps"], best_step=best_step,
                                               best_value=best["best"], linked=linked,
                                               digest=dataset_tags(best_cfg)["dataset_manifest_sha1"],
                                               metrics={"animation_step": best["animation_step"],
                                                        "best_animated": best["animated"], "best_step": best_step})
                                           + f"\nBest trial {best['trial']} of search {name}.")
        out["registered"] = f"models:/{cfg.tracking.register_as}@{cfg.tracking.alias}"
    print(f"[tune] best trial {best['trial']}: {space.metric} {best['best']:.5f} with "
          f"{json.dumps(best['params'], default=str)}" + (f" -> {out['registered']}" if "registered" in out else ""),
          flush=True)
    return out
