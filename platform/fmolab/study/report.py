"""A study's report, read back from its trials' own MLflow runs: one table (mean +- sd over seeds per
arm), the curves of every arm against samples, each arm's preview; logged to the study's parent run and
printed as Markdown (``fmolab study report NAME``).

Per trial: the samples to the animation point (the first validation with ``val/animation_ratio`` >
0.5, in samples: steps x the arm's global batch) and the final held-out metrics (its last validation).
"""
from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path

from fmolab.config import Config
from fmolab.study.spec import ARM_TAG, SEED_TAG, STUDY_TAG, Study
from fmolab.train.state import ANIMATED, first_animated

FINAL = ("val/tiou", "val/crop_psnr", "val/im_crop_psnr", "val/animation_ratio", "val/loss")
HEADS = {"val/tiou": "TIoU", "val/crop_psnr": "crop PSNR", "val/im_crop_psnr": "im PSNR",
         "val/animation_ratio": "anim. ratio", "val/loss": "val loss"}


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted({m.step: m.value for m in client.get_metric_history(run_id, key)}.items())


SHARED_IGNORED = ("runtime.", "tracking.", "train.run_name")  # where a trial ran, not what it trained


def same_config(params: dict[str, str], cfg: Config) -> bool:
    """Whether a run's logged params are ``cfg`` (a trial is shared between parts of a study only then).
    A key the run lacks (a setting added to fmolab since) matches its default: what the run did."""
    from fmolab.tracking.store import config_params

    defaults = config_params(Config())
    return all(params.get(k, defaults.get(k)) == v for k, v in config_params(cfg).items()
               if not k.startswith(SHARED_IGNORED))


def trial_results(study: Study, cfg: Config, extra: dict | None = None) -> list[dict]:
    """One dict per trial of ``study``: arm, seed, run id, status, samples per step, animation (samples,
    or None), the last value of every FINAL metric, and the curves. A trial run by any part of the
    same study (``thesis-s1`` for ``thesis``) counts when its config is the arm's (with ``extra``);
    of several for one (arm, seed), a finished one, then the latest."""
    import mlflow

    client = mlflow.MlflowClient()
    exp = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{STUDY_TAG}` LIKE '{study.root}%'",
                              max_results=10000, order_by=["attributes.start_time ASC"])
    wanted = {(a.name, s) for a in study.arms for s in range(a.seeds)}
    chosen: dict[tuple[str, int], object] = {}
    for run in runs:
        tags = run.data.tags
        key = (tags.get(ARM_TAG, ""), int(tags.get(SEED_TAG, 0)))
        if key not in wanted or not study.part_of_root(tags[STUDY_TAG]):
            continue  # the parent run, another study, or an arm/seed outside this part
        if not same_config(run.data.params, study.config(*key, extra)):
            continue  # the study file (or the overrides) changed since: not this arm's trial
        old = chosen.get(key)
        if old is None or old.info.status != "FINISHED" or run.info.status == "FINISHED":
            chosen[key] = run
    out = []
    for (arm, seed), run in chosen.items():
        params = run.data.params
        per_step = int(params.get("train.batch_size", 1)) * int(params.get("train.grad_accum", 1)) * \
            int(params.get("train.workers", 1))
        curves = {k: _history(client, run.info.run_id, k) for k in ("val/animation_ratio", "val/tiou")}
        moving = first_animated(curves["val/animation_ratio"])
        final = {}
        for key in FINAL:
            hist = curves.get(key) or _history(client, run.info.run_id, key)
            final[key] = hist[-1][1] if hist else math.nan
        out.append({"arm": arm, "seed": seed, "run_id": run.info.run_id, "study": run.data.tags[STUDY_TAG],
                    "status": run.info.status, "samples_per_step": per_step,
                    "animation_samples": None if moving < 0 else moving * per_step,
                    "steps": int(max((s for s, _ in curves["val/animation_ratio"]), default=0)),
                    "final": final, "curves": curves})
    order = {a.name: i for i, a in enumerate(study.arms)}
    return sorted(out, key=lambda r: (order.get(r["arm"], len(order)), r["seed"]))


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}"


def table_rows(study: Study, results: list[dict]) -> list[dict]:
    """Per arm: seeds, how many animated, the mean (+- sd) samples to animation over those that did,
    and every final metric's mean +- sd over seeds."""
    rows = []
    for arm in study.arms:
        rs = [r for r in results if r["arm"] == arm.name]
        moved = [r["animation_samples"] for r in rs if r["animation_samples"] is not None]
        row = {"arm": arm.name, "claim": study.claims.get(arm.group, ""), "seeds": f"{len(rs)}/{arm.seeds}",
               "animated": f"{len(moved)}/{len(rs)}", "animation at (samples)": mean_sd(moved)}
        for key in FINAL:
            row[HEADS[key]] = mean_sd([r["final"][key] for r in rs])
        rows.append(row)
    return rows


def markdown(study: Study, rows: list[dict]) -> str:
    heads = ["arm", "seeds", "animated", "animation at (samples)", *HEADS.values()]
    lines = [f"Study `{study.name}`: {study.budget_samples} samples per trial; final held-out metrics, "
             "mean ± sd over seeds.", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(str(r[h]) for h in heads) + " |" for r in rows]
    return "\n".join(lines)


def curves_figure(study: Study, results: list[dict]):
    """Animation ratio and TIoU against samples: one colour per arm, one line per seed."""
    from fmolab.plots import distinct_colors, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(9, 6.4), dpi=110)
    colors = dict(zip([a.name for a in study.arms], distinct_colors(len(study.arms))))
    for ax, key, title in zip(axes, ("val/animation_ratio", "val/tiou"), ("animation ratio", "TIoU")):
        seen = set()
        for r in results:
            pts = r["curves"].get(key) or []
            if not pts:
                continue
            xs = [s * r["samples_per_step"] for s, _ in pts]
            ax.plot(xs, [v for _, v in pts], color=colors.get(r["arm"], "k"), linewidth=1.3,
                    linestyle="-" if r["seed"] == 0 else "--", label=None if r["arm"] in seen else r["arm"])
            seen.add(r["arm"])
        if key == "val/animation_ratio":
            ax.axhline(ANIMATED, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xlabel("samples")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.suptitle(f"study {study.name}")
    fig.tight_layout()
    return fig


def study_report(study: Study, cfg: Config, parent_id: str = "", log: bool = False, extra: dict | None = None) -> dict:
    """The report from the trials' MLflow runs; ``log``: table, curves and previews to the parent run."""
    import mlflow

    from fmolab.plots import save

    results = trial_results(study, cfg, extra)
    rows = table_rows(study, results)
    text = markdown(study, rows)
    out = {"name": study.name, "parent_run_id": parent_id, "table": rows, "markdown": text,
           "trials": [{k: v for k, v in r.items() if k != "curves"} for r in results]}
    if not (log and parent_id):
        return out
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "report.md").write_text(text + "\n")
        (Path(d) / "study.yaml").write_text(study.text)
        save(curves_figure(study, results), Path(d) / "curves.png")
        for name in ("report.md", "study.yaml", "curves.png"):
            client.log_artifact(parent_id, str(Path(d) / name), "study")
        for arm in study.arms:  # each arm's last preview (its first seed)
            first = next((r for r in results if r["arm"] == arm.name), None)
            if first is None:
                continue
            try:
                gif = client.download_artifacts(first["run_id"], "previews/latest.gif", d)
            except Exception:  # noqa: BLE001 - a trial without previews (preview_samples=0) has none
                continue
            target = Path(d) / f"{arm.name.replace('/', '-')}.gif"
            Path(gif).rename(target)
            client.log_artifact(parent_id, str(target), "study/previews")
    client.set_tag(parent_id, "mlflow.note.content", f"Study **{study.name}** ({study.path})"
                   + (f": {study.description}" if study.description else "") + f"\n\n{text}")
    print(f"[study] {study.name}\n{text}", flush=True)
    return out
