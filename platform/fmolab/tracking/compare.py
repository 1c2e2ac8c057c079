"""``fmolab runs compare``: parameter differences, final metrics and overlaid curves of MLflow runs.

Runs are named by id or by run name (``--experiment`` narrows name look-ups), or all runs of an
experiment are taken. Outputs (folder ``--out``): ``comparison.csv`` (one row per run: run name, id,
the params that differ between the runs, the final value of every metric), one PNG per compared
metric (``train_loss.png``, ``val_loss.png``: the runs' curves overlaid, as the thesis' figs. 4.6-4.9)
and ``report.html``, all of it on one self-contained page with each run's latest preview
(:mod:`fmolab.tracking.compare_html`). The files are logged as artifacts of a new run in experiment
``fmolab-compare`` (tagged ``fmolab.kind=comparison`` and ``compared_runs=<ids>``), so the training
experiments stay clean; the report also goes to the runs' parent (a search) or the first run, under
``comparisons/<comparison run id>/``.
"""
from __future__ import annotations

import csv
import math
import re
import time
from pathlib import Path

DEFAULT_METRICS = ("train/loss", "val/loss")
COMPARE_EXPERIMENT = "fmolab-compare"


def resolve_runs(refs: list[str], experiment: str | None = None) -> list:
    """MLflow runs for ids / names (or every finished-or-not run of ``experiment`` when ``refs`` is empty)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    exp_ids: list[str]
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ValueError(f"no experiment {experiment!r}")
        exp_ids = [exp.experiment_id]
    else:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    if not refs:
        if not experiment:
            raise ValueError("name the runs to compare (ids or names) or give --experiment")
        runs = client.search_runs(exp_ids, max_results=1000, order_by=["attributes.start_time ASC"])
        runs = [r for r in runs if r.data.tags.get("fmolab.kind") not in ("comparison", "evaluation")]
        if not runs:
            raise ValueError(f"experiment {experiment!r} has no runs")
        return runs
    out = []
    for ref in refs:
        run = None
        if re.fullmatch(r"[0-9a-f]{32}", ref):
            try:
                run = client.get_run(ref)
            except MlflowException:
                run = None
        if run is None:
            found = client.search_runs(exp_ids, filter_string=f"attributes.run_name = '{ref}'", max_results=2,
                                       order_by=["attributes.start_time DESC"])
            if not found:
                raise ValueError(f"no run with id or name {ref!r}" + (f" in experiment {experiment!r}" if experiment else ""))
            run = found[0]
        out.append(run)
    return out


def param_differences(runs: list) -> dict[str, list[str]]:
    """``{param: [value per run]}`` for params whose values are not all equal (missing = "")."""
    keys = sorted(set().union(*(r.data.params.keys() for r in runs)))
    diff = {}
    for k in keys:
        values = [r.data.params.get(k, "") for r in runs]
        if len(set(values)) > 1:
            diff[k] = values
    return diff


def run_label(run) -> str:
    return run.info.run_name or run.info.run_id[:8]


def compare_runs(refs: list[str], experiment: str | None = None, metrics: list[str] | tuple = DEFAULT_METRICS,
                 out_dir: str | Path = "", log: bool = True, log_experiment: str = COMPARE_EXPERIMENT,
                 cfg=None) -> dict:
    """Compare runs; write the CSV and plots to ``out_dir`` (default ``<work>/comparisons/<time>``);
    log them to MLflow when ``log``."""
    import mlflow

    from fmolab.plots import plot_curves

    runs = resolve_runs(list(refs), experiment)
    if len({r.info.run_id for r in runs}) < len(runs):
        raise ValueError("the same run is named twice")
    client = mlflow.MlflowClient()
    diff = param_differences(runs)
    metric_keys = sorted(set().union(*(r.data.metrics.keys() for r in runs)))
    rows = []
    for i, r in enumerate(runs):
        row = {"run": run_label(r), "run_id": r.info.run_id}
        row.update({f"param:{k}": v[i] for k, v in diff.items()})
        row.update({k: r.data.metrics.get(k, float("nan")) for k in metric_keys})
        rows.append(row)
    from fmolab.config import resolve_work_dir

    out = Path(out_dir or resolve_work_dir(cfg.runtime.work_dir if cfg else "") / "comparisons" /
               time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "comparison.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plots = []
    labels = [run_label(r) for r in runs]
    if len(set(labels)) < len(labels):  # same names: tell them apart by id
        labels = [f"{l} ({r.info.run_id[:6]})" for l, r in zip(labels, runs)]
    for m in metrics:
        series = {lab: [(p.step, p.value) for p in client.get_metric_history(r.info.run_id, m)]
                  for lab, r in zip(labels, runs)}
        if not any(series.values()):
            continue
        path = plot_curves(series, out / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', m)}.png", title=m, ylabel=m,
                           logy="loss" in m)
        plots.append(str(path))
    from fmolab.tracking import compare_html

    report = out / "report.html"
    report.write_text(compare_html.build(runs, labels, diff, metric_keys, plots,
                                         latest_previews(runs, labels, out / "previews")))
    result = {"runs": [r.info.run_id for r in runs], "csv": str(csv_path), "plots": plots, "report": str(report),
              "differing_params": sorted(diff), "table": format_table(rows, diff, metrics)}
    if log:
        result["comparison_run_id"] = _log(runs, csv_path, plots, log_experiment, cfg)
        client.log_artifact(result["comparison_run_id"], str(report))
        home = report_home(runs)
        client.log_artifact(home, str(report), f"comparisons/{result['comparison_run_id'][:8]}")
        result["report_logged_to"] = home
        from fmolab.tracking.store import run_address

        result["mlflow_ui"] = run_address(result["comparison_run_id"])
    return result


def report_home(runs: list) -> str:
    """Where the report is also logged: the runs' shared parent (a search), else the first run."""
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    return parents.pop() if len(parents) == 1 and None not in parents else runs[0].info.run_id


def latest_previews(runs: list, labels: list[str], folder: Path) -> dict[str, str]:
    """``{label: local GIF}``: each run's ``previews/latest.gif`` (runs from before it existed: their last
    ``val_step*.gif``); runs without one are left out."""
    import mlflow

    client = mlflow.MlflowClient()
    out = {}
    for label, r in zip(labels, runs):
        try:
            names = [a.path for a in client.list_artifacts(r.info.run_id, "previews")]
        except Exception:  # no artifacts at all
            continue
        gifs = sorted(n for n in names if n.endswith(".gif") and "/val_step" in n)
        pick = "previews/latest.gif" if "previews/latest.gif" in names else (gifs[-1] if gifs else "")
        if pick:
            dest = folder / r.info.run_id
            dest.mkdir(parents=True, exist_ok=True)
            out[label] = mlflow.artifacts.download_artifacts(run_id=r.info.run_id, artifact_path=pick,
                                                             dst_path=str(dest))
    return out


def _log(runs, csv_path: Path, plots: list[str], experiment: str, cfg) -> str:
    import mlflow

    from fmolab.config import Config
    from fmolab.tracking.store import create_run

    ids = ",".join(r.info.run_id for r in runs)
    run_id = create_run(cfg or Config(), experiment, f"compare-{len(runs)}-runs-{time.strftime('%Y%m%d-%H%M%S')}",
                        {"fmolab.kind": "comparison", "compared_runs": ids[:5000],
                         "compared_names": ",".join(run_label(r) for r in runs)[:5000]}, command="runs compare")
    client = mlflow.MlflowClient()
    client.log_artifact(run_id, str(csv_path))
    for p in plots:
        client.log_artifact(run_id, p, "plots")
    client.set_terminated(run_id)
    return run_id


def _fmt(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def format_table(rows: list[dict], diff: dict, metrics) -> str:
    """Runs as rows: name, differing params, the compared metrics' final values."""
    cols = ["run"] + [f"param:{k}" for k in diff] + [m for m in metrics if any(m in r for r in rows)]
    table = [[c.removeprefix("param:") for c in cols]] + [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [min(40, max(len(line[i]) for line in table)) for i in range(len(cols))]
    return "\n".join("  ".join(cell[:40].ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table)
