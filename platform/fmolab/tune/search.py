"""Hyperparameter search: Ray Tune + Optuna (TPE, define-by-run) + ASHA, every trial a Ray Train run.

:func:`run_search` saves the search (base config, space, options) under ``<work>/searches/<name>/``,
opens the MLflow parent run and runs a ``Tuner`` whose trials are :func:`fmolab.tune.trial.run_trial`.
A trial's actor needs no CPU of its own (a token of logical memory); its Train workers hold ``train.cpus_per_worker`` each. Every
trial's ``train.monitor`` is the space's metric, so the checkpoint a trial keeps as its best is the
one the search ranks it by. After the search, :mod:`fmolab.tune.report` writes the table and plots
and registers the best trial's best weights.

Resuming (``fmolab tune --resume NAME``) re-reads the saved search and calls ``Tuner.restore`` on
``<work>/ray_results/<name>``; unfinished trials restart from their last Train checkpoint in the same
MLflow child run.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from fmolab import storage
from fmolab.config import Config, ConfigError, config_from_dict, derive, to_dict
from fmolab.train.preflight import preflight
from fmolab.tune.options import SearchOptions
from fmolab.tune.space import SearchSpace
from fmolab.tune.space_file import load_space, space_from_text

# A trial's own actor only waits on its Train controller; Tune refuses an empty request, and any CPU share
# (even 0.01) would stop two 1-CPU trials from packing on 2 CPUs: a token of Ray's logical memory instead.
TRIAL_RESOURCES = {"CPU": 0, "memory": 64 * 2**20}


def search_dir(cfg: Config, name: str) -> str:
    """``<storage>/searches/<name>``: the saved search, its table, plots and best weights."""
    return cfg.output("searches", name)


def default_concurrency(cfg: Config) -> int:
    """Trials at a time: one core per Train worker (more would only share the same cores)."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1))
    return max(1, int(cpus // max(1.0, cfg.train.workers * max(cfg.train.cpus_per_worker, 1.0))))


def max_fitting(cfg: Config) -> int:
    """Most trials whose Train workers fit at once (more would wait in Ray's queue)."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1))
    return max(1, int(cpus / (cfg.train.workers * cfg.train.cpus_per_worker) + 1e-9))


def study_storage(url: str):
    if not url:
        return None
    import optuna

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


def load_search(where: Config, name: str) -> dict:
    """What ``run_search`` saved for ``name`` (base config, space text, options), in ``where``'s storage."""
    try:
        return storage.read_json(storage.join(search_dir(where, name), "search.json"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no search {name!r} under {where.output('searches')}: nothing to resume") from None


def prepare(cfg: Config, space, overrides: list[str], name: str, resume: bool,
            options: SearchOptions) -> tuple[Config, SearchSpace, str, SearchOptions]:
    """The search's base config, space, name and options (those saved with it when resuming); every
    trial's config is ``cfg`` <- the space's fixed overrides <- ``overrides`` <- the sampled values."""
    if resume:
        if not name:
            raise ConfigError("resuming needs the search's name")
        saved = load_search(cfg, name)
        # this machine's work folder, not the one the search started on
        cfg = derive(config_from_dict(saved["config"]), {"runtime.work_dir": cfg.runtime.work_dir})
        space = space_from_text(saved["space_text"], saved["space_path"], cfg)
        return cfg, space, name, SearchOptions.from_dict(saved["options"])
    if space is None:
        raise ConfigError("a search needs a space (a YAML file, see search_spaces/README.md)")
    if not isinstance(space, SearchSpace):
        space = load_space(space, cfg)
    searched = [o.partition("=")[0].strip() for o in overrides
                if o.partition("=")[0].strip() in set(space.names) | set(space.templates)]
    if searched:
        raise ConfigError(f"{', '.join(searched)}: searched by {space.path}; drop the override or the parameter")
    cfg = space.with_overrides(cfg, list(overrides))  # best checkpoint = ranking (a checked change)
    cfg = derive(cfg, {"train.monitor.metric": space.metric, "train.monitor.mode": space.mode,
                       "runtime.work_dir": str(cfg.work_dir)})
    return cfg, space, name or f"tune-{Path(space.path).stem}-{time.strftime('%Y%m%d-%H%M%S')}", options


def open_parent_run(cfg: Config, space: SearchSpace, name: str, options: SearchOptions, concurrency: int,
                    folder: Path) -> str:
    """The search's MLflow run: its options and space as params, the space file as an artifact."""
    import mlflow

    from fmolab.tracking.store import git_commit, start_or_resume_run
    from fmolab.tune.trial import SEARCH_TAG

    parent_id = start_or_resume_run(cfg, name, {SEARCH_TAG: name, "fmolab.kind": "search", "variant": cfg.variant,
                                                "space": space.path, "git_commit": git_commit()}, command="tune")
    client = mlflow.MlflowClient()
    known = client.get_run(parent_id).data.params
    extra = {"tune.trials": options.trials, "tune.max_concurrent": concurrency, "tune.metric": space.metric,
             "tune.mode": space.mode, "tune.grace_steps": options.grace(cfg.train.val_every),
             "tune.max_steps": cfg.train.steps, "tune.reduction_factor": options.reduction_factor,
             "tune.seed": options.seed, "tune.space": space.path,
             **{f"tune.space.{p.name}": p.describe() + (f" when {p.when}" if p.when else "") for p in space.params}}
    new = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in extra.items() if k not in known]
    for i in range(0, len(new), 90):  # MLflow caps a batch at 100 params
        client.log_batch(parent_id, params=new[i:i + 90])
    (folder / "space.yaml").write_text(space.text or "")
    client.log_artifact(parent_id, str(folder / "space.yaml"), "search")
    client.update_run(parent_id, status="RUNNING")
    return parent_id


def concurrency_for(cfg: Config, options: SearchOptions) -> int:
    fitting = max_fitting(cfg)
    concurrency = options.max_concurrent or default_concurrency(cfg)
    if concurrency > fitting:
        print(f"[tune] --max-concurrent {concurrency}: only {fitting} trial(s) of {cfg.train.workers} worker(s) x "
              f"{cfg.train.cpus_per_worker} CPU fit at once; using {fitting}", flush=True)
        concurrency = fitting
    return min(concurrency, options.trials)


def build_tuner(cfg: Config, space: SearchSpace, name: str, options: SearchOptions, setup: dict, concurrency: int,
                resume: bool, verbose: int):
    import optuna
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from fmolab.tune.placement import release_callback
    from fmolab.tune.trial import run_trial

    results = storage.ray_storage(cfg.output("ray_results"))  # storage_path (+ storage_filesystem)
    experiment = storage.ray_storage(cfg.output("ray_results", name))
    trainable = ray.tune.with_resources(ray.tune.with_parameters(run_trial, setup=setup), TRIAL_RESOURCES)
    fs = experiment.get("storage_filesystem")
    if resume and ray.tune.Tuner.can_restore(experiment["storage_path"], storage_filesystem=fs):
        print(f"[tune] resuming {name} from {cfg.output('ray_results', name)}", flush=True)
        return ray.tune.Tuner.restore(experiment["storage_path"], trainable=trainable, resume_unfinished=True,
                                      resume_errored=True, storage_filesystem=fs)
    searcher = OptunaSearch(space=space, metric=space.metric, mode=space.mode,
                            points_to_evaluate=[dict(p) for p in space.points_to_evaluate] or None,
                            sampler=optuna.samplers.TPESampler(seed=options.seed),
                            study_name=name, storage=study_storage(options.study_storage))
    grace = options.grace(cfg.train.val_every)
    scheduler = ASHAScheduler(time_attr="step", max_t=cfg.train.steps, grace_period=min(grace, cfg.train.steps),
                              reduction_factor=options.reduction_factor)
    return ray.tune.Tuner(
        trainable,
        tune_config=ray.tune.TuneConfig(metric=space.metric, mode=space.mode, search_alg=searcher, scheduler=scheduler,
                                        num_samples=options.trials, max_concurrent_trials=concurrency),
        run_config=ray.tune.RunConfig(name=name, **results, verbose=verbose,
                                      callbacks=[release_callback()],
                                      failure_config=ray.tune.FailureConfig(max_failures=0)),
    )


def run_search(cfg: Config, space: SearchSpace | str | Path | None, options: SearchOptions = SearchOptions(), *,
               overrides: list[str] = (), name: str = "", resume: bool = False, verbose: int = 1) -> dict:
    """Search ``space`` around ``cfg`` as ``options`` say; returns the summary (best params, run ids,
    model URI, registered name, table path, plots). ``resume=True`` continues search ``name`` with the
    config, space and options it saved (``cfg`` then only gives the work folder and storage)."""
    import mlflow

    from fmolab.runtime import init_ray
    from fmolab.tracking.ending import end_run, error_text, reason_of_error
    from fmolab.tracking.store import git_commit, setup_tracking
    from fmolab.tune.report import report

    cfg = derive(cfg, {"runtime.work_dir": str(cfg.work_dir)})
    cfg, space, name, options = prepare(cfg, space, list(overrides), name, resume, options)
    storage.check_readable(cfg.train_dir, "training data (data.train)")
    preflight(cfg)  # the base config builds and the data fits it (the space was checked when loaded)
    if not resume:
        storage.write_json(storage.join(search_dir(cfg, name), "search.json"),
                           {"name": name, "config": to_dict(cfg), "space_path": space.path,
                            "space_text": space.text, "options": options.to_dict()})
    folder = Path(tempfile.mkdtemp(prefix=f"search-{name}-"))  # staged here, then copied to search_dir
    uri = setup_tracking(cfg)
    init_ray(cfg.runtime.address, cfg.runtime.num_cpus, cfg.work_dir)
    concurrency = concurrency_for(cfg, options)
    parent_id = open_parent_run(cfg, space, name, options, concurrency, folder)
    print(f"[tune] search {name} (MLflow parent run {parent_id}): {options.trials} trial(s), {concurrency} at a "
          f"time, ASHA on {space.metric} ({space.mode}; grace {options.grace(cfg.train.val_every)} steps, max "
          f"{cfg.train.steps}, reduction {options.reduction_factor})", flush=True)
    from fmolab.tracking.store import run_address

    print(f"[tune] MLflow UI: {run_address(parent_id)}", flush=True)
    setup = {"space": space, "base": to_dict(cfg), "name": name, "parent_run_id": parent_id, "tracking_uri": uri,
             "train_storage": cfg.output("ray_results", name, "train"), "git_commit": git_commit()}
    client = mlflow.MlflowClient()
    try:
        grid = build_tuner(cfg, space, name, options, setup, concurrency, resume, verbose).fit()
        summary = report(cfg, space, grid, name, parent_id, folder, setup["train_storage"])
        storage.upload_tree(folder, search_dir(cfg, name), last=("best.json",))
    except (Exception, KeyboardInterrupt) as exc:  # the parent says why (FAILED, or KILLED when interrupted)
        end_run(parent_id, reason_of_error(exc), detail=error_text(exc))
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    client.set_terminated(parent_id, "FINISHED")
    saved = search_dir(cfg, name)  # the staged files' final places
    summary["table"] = storage.join(saved, "trials.csv")
    summary["mlflow_ui"] = run_address(parent_id)
    summary["plots"] = {k: storage.join(saved, Path(v).name) for k, v in summary["plots"].items()}
    return summary


def start_search(space_path: str, files: list[str], preset: str, overrides: list[str],
                 options: SearchOptions = SearchOptions(), *, name: str = "", work_dir: str = "", metric: str = "",
                 mode: str = "", print_space: bool = False) -> dict | str:
    """``fmolab tune --space``: the config from the preset (the space's own ``preset`` unless one is
    given) and files, the space checked against it; ``print_space`` returns its description instead
    of searching. The command line's overrides win over the space's."""
    from fmolab.config import load_config, preset_path, read_yaml
    from fmolab.runtime import use_work_dir

    if not space_path:
        raise ConfigError("give --space FILE (see search_spaces/README.md), or --resume NAME")
    if not preset and Path(space_path).exists():
        try:
            preset = str(read_yaml(space_path).get("preset") or "")
        except ConfigError:  # reported with the file and key by load_space below
            preset = ""
    cfg = load_config(([preset_path(preset)] if preset else []) + list(files),
                      [f"runtime.work_dir={work_dir}"] if work_dir else [])
    cfg = derive(cfg, {"runtime.work_dir": str(use_work_dir(cfg.work_dir))})
    space = load_space(space_path, cfg)
    space.metric, space.mode = metric or space.metric, mode or space.mode
    if print_space:
        return space.describe()
    return run_search(cfg, space, options, overrides=overrides, name=name)
