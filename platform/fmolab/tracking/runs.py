"""``fmolab runs list``: the runs of an experiment with their final metrics and why each ended, one
line each."""
from __future__ import annotations

from fmolab.tracking.ending import END_TAG, STEPS_TAG


def list_runs(experiment: str, max_results: int = 50) -> list[str]:
    """Table lines (a header, then a run a line); a ValueError when the experiment does not exist."""
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no experiment {experiment!r} in {mlflow.get_tracking_uri()}")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list", max_results=max_results)
    lines = [f"{'run name':32} {'status':9} {'end':11} {'steps':>11} {'variant':16} {'val/loss':>10} "
             f"{'val/psnr':>9}  run id"]
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        lines.append(f"{r.info.run_name[:32]:32} {r.info.status:9} {t.get(END_TAG, '-'):11} {t.get(STEPS_TAG, '-'):>11} "
                     f"{t.get('variant', ''):16} {m.get('val/loss', float('nan')):10.4f} "
                     f"{m.get('val/psnr', float('nan')):9.2f}  {r.info.run_id}")
    return lines
