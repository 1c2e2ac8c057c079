"""Hyperparameter search: Ray Tune + Optuna (TPE, define-by-run) + ASHA, every trial a Ray Train run.

Driver: :func:`run_search` saves the search (base config, space, options) under
``<work>/searches/<name>/``, opens the MLflow parent run, and runs a ``Tuner`` whose trials are
:func:`run_trial`. A trial is a function trainable that needs no CPU of its own: it builds its config
from the sampled values, opens a nested MLflow run (tag ``mlflow.parentRunId``) and runs a
``TorchTrainer`` of fmolab's ``train_loop`` on ``train.workers`` workers of ``train.cpus_per_worker``
CPUs. Every validation of rank 0 reaches Tune through a Ray Train ``UserCallback``
(:class:`ValidationReport`, Ray's ``TuneReportCallback`` restricted to results that hold the metric),
so ASHA decides on ``val/loss`` at the training step (``time_attr="step"``). When ASHA stops a trial,
Tune ends the trial's actor; the Train controller and its workers are owned by it and end with it.

After the search: a table of trials (printed, ``trials.csv``), an optimization-history and a
parameter-importance plot (PNG), all logged to the parent run; the best trial's best weights are
logged as an MLflow model in its run and registered as ``models:/<tracking.register_as>@<alias>``.

Resuming: ``run_search(..., resume=True)`` (``fmolab tune --resume NAME``) re-reads the saved search and
calls ``Tuner.restore`` on ``<work>/ray_results/<name>``; unfinished trials restart from their last
Train checkpoint in the same MLflow child run.
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

from fmolab.config import Config, ConfigError, config_from_dict, to_dict
from fmolab.search_space import SearchSpace, load_space, space_from_text

SEARCH_TAG = "fmolab.search"
TRIAL_TAG = "fmolab.trial_id"
TRIAL_CPU = 0.01  # CPU held by a trial's own actor (its Train workers hold train.cpus_per_worker each)


# ---------------------------------------------------------------- trial side


PG_KEY = "train_placement_group"


def _train_callbacks(metric: str) -> list:
    """Callbacks of a trial's Train run (they run in its Train controller).

    * ``ValidationReport``: Ray's ``TuneReportCallback`` (Train V2 -> Tune), forwarding rank 0's report
      only when it holds the searched metric (checkpoint-only reports between validations would give
      ASHA and Optuna a result without ``val/loss``), with the id of the run's placement group added.
    * ``PlacementGroupRecorder``: notes that id when the worker group starts. When ASHA stops a trial,
      Tune ends the trial's actor and with it the Train controller and workers (owned by it), but not
      their placement group: Ray Train's own cleaner watches the controller through the state API,
      which needs the dashboard (off on small machines). The driver's :class:`ReleaseStoppedTrials`
      removes it, or the CPUs it holds would starve the next trials.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    shared: dict = {}

    class ValidationReport(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and metric in metrics[0]:
                first = {**metrics[0], PG_KEY: shared.get("pg", "")}
                super().after_report(run_context, [first, *metrics[1:]], checkpoint)

    callbacks = [ValidationReport()]
    try:  # an internal hook of Ray Train V2; without it only the dashboard-based cleanup remains
        from ray.train.v2._internal.execution.callback import WorkerGroupCallback

        class PlacementGroupRecorder(WorkerGroupCallback):
            def after_worker_group_start(self, worker_group):
                try:
                    pg = worker_group.get_worker_group_state().placement_group_handle.placement_group
                    shared["pg"] = pg.id.hex()
                except Exception:  # never fail a run for bookkeeping
                    shared["pg"] = ""

        callbacks.append(PlacementGroupRecorder())
    except ImportError:
        pass
    return callbacks


def release_placement_group(pg_hex: str) -> bool:
    """Remove a trial's Train placement group if it is still there; True when one was removed."""
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    if not pg_hex:
        return False
    try:
        from ray._raylet import PlacementGroupID

        pg = PlacementGroup(PlacementGroupID(bytes.fromhex(pg_hex)))
        state = ray.util.placement_group_table(pg).get("state", "")
        if state in ("", "REMOVED"):
            return False
        remove_placement_group(pg)
        return True
    except Exception:
        return False


def _release_callback():
    import ray.tune

    class ReleaseStoppedTrials(ray.tune.Callback):
        """Driver side: when a trial ends (ASHA stop, error), free its Train workers' resources."""

        def _release(self, trial):
            if release_placement_group((trial.last_result or {}).get(PG_KEY, "")):
                print(f"[tune] trial {trial.trial_id} ended: released its Train placement group", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._release(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._release(trial)

    return ReleaseStoppedTrials()


def trial_run_name(search: str, trial_id: str) -> str:
    return f"{search}-{trial_id}"


def run_trial(params: dict, setup: dict) -> None:
    """One trial (runs in Tune's trial actor): config from ``params``, MLflow child run, Train run."""
    import mlflow
    import ray.train
    import ray.tune

    from fmolab import tracking
    from fmolab.train import run_dir, torch_trainer

    space: SearchSpace = setup["space"]
    cfg = space.build_config(setup["base"], params, overrides=False)
    trial_id = ray.tune.get_context().get_trial_id()
    run_name = trial_run_name(setup["name"], trial_id)
    cfg.train.run_name = run_name
    cfg.tracking.register_as = ""  # the driver registers the best trial only
    uri = setup["tracking_uri"]  # Train workers get it with their config
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    rdir = run_dir(cfg, run_name)
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    tags = {"mlflow.parentRunId": setup["parent_run_id"], SEARCH_TAG: setup["name"], TRIAL_TAG: trial_id,
            "variant": cfg.variant, "git_commit": setup.get("git_commit", "unknown")}
    run_id = tracking.start_or_resume_run(cfg, run_name, tags)
    client = mlflow.MlflowClient()
    existing = client.get_run(run_id).data.params
    searched = [mlflow.entities.Param(f"search.{k}", str(v)) for k, v in sorted(params.items())
                if f"search.{k}" not in existing]
    if searched:
        client.log_batch(run_id, params=searched)
    client.update_run(run_id, status="RUNNING")

    tc = cfg.train
    trainer = torch_trainer(
        cfg, {"config": to_dict(cfg), "run_id": run_id, "tracking_uri": uri},
        ray.train.RunConfig(
            name=run_name,
            storage_path=setup["train_storage"],
            callbacks=_train_callbacks(space.metric),
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    try:
        trainer.fit()
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


# ---------------------------------------------------------------- driver side


def search_dir(cfg: Config, name: str) -> Path:
    return cfg.work_dir / "searches" / name


def default_concurrency(cfg: Config) -> int:
    """Trials at a time: one core per Train worker (more would only share the same cores)."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1))
    return max(1, int(cpus // max(1.0, cfg.train.workers * max(cfg.train.cpus_per_worker, 1.0))))


def max_fitting(cfg: Config) -> int:
    """Most trials whose Train workers fit at once (more would wait in Ray's queue)."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1))
    return max(1, int(cpus / (cfg.train.workers * cfg.train.cpus_per_worker + TRIAL_CPU) + 1e-9))


def _study_storage(url: str):
    if not url:
        return None
    import optuna

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


def load_search(work_dir: str | Path, name: str) -> dict:
    """What ``run_search`` saved for ``name`` (base config, space text, options)."""
    path = Path(work_dir) / "searches" / name / "search.json"
    if not path.exists():
        raise FileNotFoundError(f"no search {name!r} under {Path(work_dir) / 'searches'}: nothing to resume")
    return json.loads(path.read_text())


def run_search(cfg: Config, space: SearchSpace | str | Path | None, trials: int = 8, *, overrides: list[str] = (),
               name: str = "", max_concurrent: int = 0, resume: bool = False, study_storage: str = "",
               seed: int = 0, grace_steps: int = 0, reduction_factor: int = 2, verbose: int = 1) -> dict:
    """Search ``space`` around ``cfg`` with ``trials`` trials; returns the summary (best params, run ids,
    model URI, registered name, table path, plots). Every trial's config is ``cfg`` <- the space's fixed
    ``overrides`` <- ``overrides`` (``key=value``) <- the sampled values. ``resume=True`` continues
    search ``name`` with what it saved (``cfg`` then only gives the work folder)."""
    import mlflow
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from fmolab import tracking
    from fmolab.runtime import init_ray

    cfg.runtime.work_dir = str(cfg.work_dir)
    if resume:
        if not name:
            raise ConfigError("resuming needs the search's name")
        saved = load_search(cfg.work_dir, name)
        cfg = config_from_dict(saved["config"])
        space = space_from_text(saved["space_text"], saved["space_path"], cfg)
        opts = saved["options"]
        trials, max_concurrent, study_storage, seed = (opts["trials"], opts["max_concurrent"],
                                                       opts["study_storage"], opts["seed"])
        grace_steps, reduction_factor = opts["grace_steps"], opts["reduction_factor"]
    else:
        if space is None:
            raise ConfigError("a search needs a space (a YAML file, see search_spaces/README.md)")
        if not isinstance(space, SearchSpace):
            space = load_space(space, cfg)
        searched = [o.partition("=")[0].strip() for o in overrides
                    if o.partition("=")[0].strip() in set(space.names) | set(space.templates)]
        if searched:
            raise ConfigError(f"{', '.join(searched)}: searched by {space.path}; drop the override or the parameter")
        cfg = space.with_overrides(cfg, list(overrides))
        cfg.runtime.work_dir = str(cfg.work_dir)
    if trials < 1:
        raise ConfigError(f"--trials {trials}: must be >= 1")
    if reduction_factor < 2:
        raise ConfigError(f"reduction factor {reduction_factor}: must be >= 2")
    name = name or f"tune-{Path(space.path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    sdir = search_dir(cfg, name)
    sdir.mkdir(parents=True, exist_ok=True)
    grace = grace_steps or cfg.train.val_every
    options = {"trials": trials, "max_concurrent": max_concurrent, "study_storage": study_storage, "seed": seed,
               "grace_steps": grace_steps, "reduction_factor": reduction_factor}
    if not resume:
        (sdir / "search.json").write_text(json.dumps({"name": name, "config": to_dict(cfg), "space_path": space.path,
                                                      "space_text": space.text, "options": options}, indent=2))

    uri = tracking.setup_tracking(cfg)
    init_ray(cfg.runtime.address, cfg.runtime.num_cpus, cfg.work_dir)
    fitting = max_fitting(cfg)
    concurrency = max_concurrent or default_concurrency(cfg)
    if concurrency > fitting:
        print(f"[tune] --max-concurrent {concurrency}: only {fitting} trial(s) of {cfg.train.workers} worker(s) x "
              f"{cfg.train.cpus_per_worker} CPU fit at once; using {fitting}", flush=True)
        concurrency = fitting
    concurrency = min(concurrency, trials)

    parent_id = tracking.start_or_resume_run(cfg, name, {SEARCH_TAG: name, "fmolab.kind": "search",
                                                          "variant": cfg.variant, "space": space.path,
                                                          "git_commit": tracking.git_commit()})
    client = mlflow.MlflowClient()
    parent_params = client.get_run(parent_id).data.params
    extra = {"tune.trials": trials, "tune.max_concurrent": concurrency, "tune.metric": space.metric, "tune.mode": space.mode,
             "tune.grace_steps": grace, "tune.max_steps": cfg.train.steps, "tune.reduction_factor": reduction_factor,
             "tune.seed": seed, "tune.space": space.path,
             **{f"tune.space.{p.name}": p.describe() + (f" when {p.when}" if p.when else "") for p in space.params}}
    new = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in extra.items() if k not in parent_params]
    for i in range(0, len(new), 90):
        client.log_batch(parent_id, params=new[i:i + 90])
    (sdir / "space.yaml").write_text(space.text or "")
    client.log_artifact(parent_id, str(sdir / "space.yaml"), "search")
    client.update_run(parent_id, status="RUNNING")
    print(f"[tune] search {name} (MLflow parent run {parent_id}): {trials} trial(s), {concurrency} at a time, "
          f"ASHA on {space.metric} ({space.mode}; grace {grace} steps, max {cfg.train.steps}, reduction {reduction_factor})", flush=True)

    storage_root = cfg.work_dir / "ray_results"
    setup = {"space": space, "base": to_dict(cfg), "name": name, "parent_run_id": parent_id, "tracking_uri": uri,
             "train_storage": str(storage_root / name / "train"), "git_commit": tracking.git_commit()}
    # The trial actor only waits on its Train controller: a token CPU share (Tune refuses an empty request).
    trainable = ray.tune.with_resources(ray.tune.with_parameters(run_trial, setup=setup), {"CPU": TRIAL_CPU})
    exp_path = storage_root / name
    if resume and ray.tune.Tuner.can_restore(str(exp_path)):
        print(f"[tune] resuming {name} from {exp_path}", flush=True)
        tuner = ray.tune.Tuner.restore(str(exp_path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        import optuna

        searcher = OptunaSearch(space=space, metric=space.metric, mode=space.mode,
                                points_to_evaluate=[dict(p) for p in space.points_to_evaluate] or None,
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                study_name=name, storage=_study_storage(study_storage))
        scheduler = ASHAScheduler(time_attr="step", max_t=cfg.train.steps, grace_period=min(grace, cfg.train.steps),
                                  reduction_factor=reduction_factor)
        tuner = ray.tune.Tuner(
            trainable,
            tune_config=ray.tune.TuneConfig(metric=space.metric, mode=space.mode, search_alg=searcher, scheduler=scheduler,
                                            num_samples=trials, max_concurrent_trials=concurrency),
            run_config=ray.tune.RunConfig(name=name, storage_path=str(storage_root), verbose=verbose,
                                          callbacks=[_release_callback()],
                                          failure_config=ray.tune.FailureConfig(max_failures=0)),
        )
    grid = tuner.fit()
    try:
        summary = summarize(cfg, space, grid, name, parent_id, sdir)
    except Exception:
        client.set_terminated(parent_id, "FAILED")
        raise
    client.set_terminated(parent_id, "FINISHED")
    return summary


# ---------------------------------------------------------------- results


def _trial_rows(cfg: Config, space: SearchSpace, grid, name: str) -> list[dict]:
    import mlflow

    client = mlflow.MlflowClient()
    exp = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    runs = {r.data.tags.get(TRIAL_TAG): r for r in
            client.search_runs([exp.experiment_id], filter_string=f"tags.`{SEARCH_TAG}` = '{name}'", max_results=10000)
            if r.data.tags.get(TRIAL_TAG)}
    rows = []
    for result in grid:
        df = result.metrics_dataframe
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.split("_", 1)[-1]
        if df is not None and space.metric in df:
            vals = df[space.metric].astype(float)
            best_val = float(vals.max() if space.mode == "max" else vals.min()) if len(vals.dropna()) else math.nan
            steps = int(df["step"].max()) if "step" in df else 0
            history = [(int(s), float(v)) for s, v in zip(df["step"], vals)] if "step" in df else []
        else:
            best_val, steps, history = math.nan, 0, []
        params = {k: v for k, v in (result.config or {}).items() if k in space.names}
        trial_cfg = space.build_config(cfg, params, overrides=False)
        if result.error is not None:
            status = "error"
        elif steps < trial_cfg.train.steps:
            status = "stopped early"
        else:
            status = "completed"
        run = runs.get(trial_id)
        rows.append({"trial": trial_id, "params": params, "best": best_val, "steps": steps,
                     "max_steps": trial_cfg.train.steps, "status": status,
                     "run_id": run.info.run_id if run else "", "run_name": trial_run_name(name, trial_id),
                     "checkpoint_path": (result.metrics or {}).get("checkpoint_path", ""), "history": history,
                     "error": str(result.error)[:500] if result.error is not None else ""})
    return rows  # in the order Tune created the trials


def _format_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_table(rows: list[dict], names: list[str], metric: str) -> str:
    head = ["trial", *names, f"best {metric}", "steps", "status"]
    body = [[r["trial"], *[_format_value(r["params"].get(n, "-")) for n in names],
             f"{r['best']:.5f}", f"{r['steps']}/{r['max_steps']}", r["status"]] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in [head, *body]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def write_csv(rows: list[dict], names: list[str], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", *names, "best", "steps", "max_steps", "status", "run_id"])
        for r in rows:
            w.writerow([r["trial"], *[r["params"].get(n, "") for n in names], r["best"], r["steps"],
                        r["max_steps"], r["status"], r["run_id"]])
    return path


def _study_of(rows: list[dict], space: SearchSpace):
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


def plot_history(rows: list[dict], path: Path, title: str, metric: str, mode: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    xs = list(range(len(rows)))
    ys = [r["best"] for r in rows]
    colors = {"completed": "tab:blue", "stopped early": "tab:orange", "error": "tab:red"}
    for status, color in colors.items():
        pts = [(x, y) for x, y, r in zip(xs, ys, rows) if r["status"] == status and math.isfinite(y)]
        if pts:
            ax1.scatter(*zip(*pts), color=color, label=status, zorder=3)
    better = max if mode == "max" else min
    running, best = [], -math.inf if mode == "max" else math.inf
    for y in ys:
        best = better(best, y) if math.isfinite(y) else best
        running.append(best)
    ax1.step(xs, running, where="post", color="black", linewidth=1.2, label="best so far")
    ax1.set_xlabel("trial")
    ax1.set_ylabel(f"best {metric}")
    ax1.set_title("optimization history")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    for r in rows:  # learning curves: where ASHA cut
        if r["history"]:
            s, v = zip(*r["history"])
            ax2.plot(s, v, marker=".", linewidth=1, color=colors.get(r["status"], "gray"), alpha=0.8)
    ax2.set_xlabel("step")
    ax2.set_ylabel(metric)
    ax2.set_title("validation curves (orange: stopped by ASHA)")
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_importances(importances: dict[str, float], path: Path, title: str, metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(items) + 1.5), dpi=110)
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set_xlabel(f"importance for {metric} (fANOVA)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def summarize(cfg: Config, space: SearchSpace, grid, name: str, parent_id: str, sdir: Path) -> dict:
    """Table, CSV, plots, child-run statuses, and the best trial's model (logged + registered)."""
    import mlflow
    import ray.train

    from fmolab import tracking

    client = mlflow.MlflowClient()
    rows = _trial_rows(cfg, space, grid, name)
    names = space.names
    table = print_table(rows, names, space.metric)
    print(f"[tune] {name}: {len(rows)} trial(s)\n{table}", flush=True)
    csv_path = write_csv(rows, names, sdir / "trials.csv")
    client.log_artifact(parent_id, str(csv_path), "search")
    # A trial stopped by ASHA ends with its actor (its run may read RUNNING, or FAILED when its workers
    # went first): Tune's view decides the final status.
    final = {"completed": "FINISHED", "stopped early": "KILLED", "error": "FAILED"}
    for r in rows:
        if r["run_id"]:
            client.set_tag(r["run_id"], "fmolab.tune.status", r["status"])
            client.set_terminated(r["run_id"], final[r["status"]])
    plots = {"history": str(plot_history(rows, sdir / "optimization_history.png", name, space.metric, space.mode))}
    importances: dict[str, float] = {}
    study = _study_of(rows, space)
    if len(study.trials) >= 2:
        try:
            import optuna

            importances = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError) as exc:  # e.g. every trial had the same value
            print(f"[tune] no parameter importances: {exc}", flush=True)
    if importances:
        plots["importances"] = str(plot_importances(importances, sdir / "param_importances.png", name, space.metric))
    for p in plots.values():
        client.log_artifact(parent_id, p, "plots")

    out: dict[str, Any] = {"name": name, "parent_run_id": parent_id, "trials": [
        {k: v for k, v in r.items() if k not in ("history",)} for r in rows], "table": str(csv_path),
        "plots": plots, "importances": importances}
    done = [r for r in rows if math.isfinite(r["best"]) and r["checkpoint_path"]]
    if not done:
        print("[tune] no trial reported a validation: nothing to register", flush=True)
        return out
    best = (max if space.mode == "max" else min)(done, key=lambda r: r["best"])
    best_cfg = space.build_config(cfg, best["params"], overrides=False)
    best_cfg.train.run_name = best["run_name"]
    out.update(best_trial=best["trial"], best_params=best["params"], metric=space.metric, best_value=best["best"],
               best_run_id=best["run_id"], best_config=to_dict(best_cfg))
    weights = sdir / "best_model.pt"
    with ray.train.Checkpoint(best["checkpoint_path"]).as_directory() as d:
        weights.write_bytes((Path(d) / "best_model.pt").read_bytes())
    (sdir / "best_config.json").write_text(json.dumps(to_dict(best_cfg), indent=2))
    (sdir / "best.json").write_text(json.dumps({k: out[k] for k in ("best_trial", "best_params", "metric", "best_value",
                                                                     "best_run_id")}, indent=2, default=str))
    model_run = best["run_id"] or parent_id
    out["model_uri"] = tracking.log_model(best_cfg, weights, model_run)
    client.log_metric(parent_id, f"best_{space.metric.replace('/', '_')}", best["best"])
    client.log_batch(parent_id, params=[mlflow.entities.Param(f"best.{k}", str(v)[:6000])
                                        for k, v in best["params"].items()
                                        if f"best.{k}" not in client.get_run(parent_id).data.params])
    for k, v in {"best_trial": best["trial"], "best_run_id": best["run_id"], "best_model_uri": out["model_uri"]}.items():
        client.set_tag(parent_id, f"fmolab.{k}", v)
    client.log_artifact(parent_id, str(sdir / "best_config.json"), "search")
    if cfg.tracking.register_as:
        out["version"] = tracking.register(out["model_uri"], cfg.tracking.register_as, cfg.tracking.alias,
                                           tags={"run_name": best["run_name"], "search": name, "variant": cfg.variant})
        out["registered"] = f"models:/{cfg.tracking.register_as}@{cfg.tracking.alias}"
    print(f"[tune] best trial {best['trial']}: {space.metric} {best['best']:.5f} with "
          f"{json.dumps(best['params'], default=str)}" + (f" -> {out['registered']}" if "registered" in out else ""),
          flush=True)
    return out
