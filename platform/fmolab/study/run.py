"""``fmolab study run``: every (arm, seed) of a study as one trial of a Ray Tune experiment (a grid, no
search, no early stopping), each a Ray Train run started exactly as ``fmolab train`` starts one, with a
nested MLflow run under the study's parent run. Every trial trains on the same number of samples and
the same data (the arm's seed fixes the order, so seed s sees the same items in every arm).

Resuming is running the same command again: a trial with a finished MLflow run of the same config is
kept (whichever part of the study ran it: ``--seeds 1`` first, then the whole study runs only the
second seeds); unfinished ones restart from their last Train checkpoint (below
``<storage>/ray_results/<study>/train``) in the same MLflow run.
"""
from __future__ import annotations

import time

from fmolab import storage
from fmolab.config import Config, derive, to_dict
from fmolab.study.spec import ARM_TAG, SEED_TAG, STUDY_TAG, Study, load_study, samples_per_step

REPORTED = "val/animation_ratio"  # a key every validation report holds: what reaches Tune


def trial_name(study: str, arm: str, seed: int) -> str:
    return f"{study}-{arm.replace('/', '-')}-s{seed}"


def run_study_trial(params: dict, setup: dict) -> None:
    """One (arm, seed) in Tune's trial actor: its MLflow run (nested in the study's) and its Train run."""
    import mlflow

    from fmolab.tracking.ending import end_run, reason_of_metrics
    from fmolab.train.launch import launch, open_run
    from fmolab.tune.trial import report_callbacks

    study: Study = setup["study"]
    arm, seed = params["trial"]["arm"], int(params["trial"]["seed"])
    cfg = derive(study.config(arm, seed, setup["extra"]), {
        "runtime.work_dir": setup["work_dir"], "train.run_name": trial_name(study.name, arm, seed),
        "tracking.register_as": ""})
    uri = setup["tracking_uri"]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    run_id = open_run(cfg, {"mlflow.parentRunId": setup["parent_run_id"], STUDY_TAG: study.name, ARM_TAG: arm,
                            SEED_TAG: str(seed), "git_commit": setup["git_commit"]}, command="study")
    mlflow.MlflowClient().update_run(run_id, status="RUNNING")
    result = launch(cfg, run_id, uri, setup["train_storage"], callbacks=report_callbacks(REPORTED), keep=1)
    metrics = dict(result.metrics or {})
    end_run(run_id, reason_of_metrics(metrics, cfg.train.steps), metrics, cfg.train.steps, cfg.train.monitor.metric)


def _tuner(study: Study, cfg: Config, setup: dict, trials: list[dict], concurrency: int, verbose: int):
    """A Tune grid of ``trials`` (those no finished MLflow run holds), a new experiment each time: a
    trial cut short resumes from its Train checkpoint below ``setup["train_storage"]`` regardless."""
    import ray.tune

    from fmolab.tune.placement import release_callback
    from fmolab.tune.search import TRIAL_RESOURCES

    results = storage.ray_storage(cfg.output("ray_results"))
    trainable = ray.tune.with_resources(ray.tune.with_parameters(run_study_trial, setup=setup), TRIAL_RESOURCES)
    return ray.tune.Tuner(
        trainable, param_space={"trial": ray.tune.grid_search(trials)},
        tune_config=ray.tune.TuneConfig(max_concurrent_trials=concurrency),
        run_config=ray.tune.RunConfig(name=f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}", **results,
                                      verbose=verbose, callbacks=[release_callback()],
                                      failure_config=ray.tune.FailureConfig(max_failures=1)))


def run_study(name_or_path: str, overrides: dict | None = None, *, work_dir: str = "", concurrency: int = 0,
              groups: list[str] | None = None, seeds: int = 0, verbose: int = 0) -> dict:
    """Run (or resume) a study; returns its report (:func:`fmolab.study.report.study_report`).
    ``overrides`` apply to every arm after the study's own (e.g. a smaller budget's data); ``groups``
    and ``seeds`` run a part of it (:meth:`Study.subset`)."""
    import mlflow

    from fmolab.runtime import init_ray, use_config
    from fmolab.study.report import study_report, trial_results
    from fmolab.tracking.ending import end_run, error_text, reason_of_error
    from fmolab.tracking.store import git_commit, setup_tracking, start_or_resume_run
    from fmolab.train.preflight import preflight
    from fmolab.tune.search import default_concurrency, max_fitting

    study = load_study(name_or_path).subset(groups, seeds)
    extra = {**(overrides or {}), **({"runtime.work_dir": work_dir} if work_dir else {})}
    first = use_config(study.config(study.arms[0].name, 0, extra))
    for arm in study.arms:  # every arm's model, losses and data are checked before Ray starts
        preflight(study.config(arm.name, 0, {**extra, "runtime.work_dir": first.runtime.work_dir}))
    uri = setup_tracking(first)
    done = {(r["arm"], r["seed"]): r["study"] for r in trial_results(study, first, extra) if r["status"] == "FINISHED"}
    todo = [t for t in study.trials() if (t["arm"], t["seed"]) not in done]
    for (arm, seed), other in sorted(done.items()):
        if other != study.name:
            print(f"[study] {arm} seed {seed}: finished by {other} with the same config, kept", flush=True)
    init_ray(first.runtime.address, first.runtime.num_cpus, first.work_dir)
    fitting = max_fitting(first)
    concurrency = max(1, min(concurrency or study.concurrency or default_concurrency(first), fitting, len(todo)))
    parent_id = start_or_resume_run(first, study.name, {STUDY_TAG: study.name, "fmolab.kind": "study",
                                                        "variant": first.variant, "git_commit": git_commit()},
                                    command="study")
    client = mlflow.MlflowClient()
    client.update_run(parent_id, status="RUNNING")
    known = client.get_run(parent_id).data.params
    info = {"study.file": study.path, "study.preset": study.preset, "study.budget_samples": study.budget_samples,
            "study.trials": len(study.trials()), "study.arms": ", ".join(a.name for a in study.arms)[:6000]}
    client.log_batch(parent_id, params=[mlflow.entities.Param(k, str(v)) for k, v in info.items() if k not in known])
    client.set_tag(parent_id, "mlflow.note.content", f"Study **{study.name}** ({study.path}): "
                   f"{len(study.arms)} arms, {len(study.trials())} trials of {study.budget_samples} samples each."
                   + (f"\n\n{study.description}" if study.description else ""))
    print(f"[study] {study.name} (MLflow parent run {parent_id}): {len(study.arms)} arms, {len(study.trials())} "
          f"trials of {study.budget_samples} samples, {len(todo)} to run ({first.train.steps} steps at {samples_per_step(first)} "
          f"samples/step for {study.arms[0].name}), {concurrency} at a time", flush=True)
    setup = {"study": study, "extra": extra, "work_dir": first.runtime.work_dir, "parent_run_id": parent_id,
             "tracking_uri": uri, "train_storage": first.output("ray_results", study.name, "train"),
             "git_commit": git_commit()}
    started = time.time()
    try:
        errors = []
        if todo:
            grid = _tuner(study, first, setup, todo, concurrency, verbose).fit()
            errors = [str(r.error).splitlines()[0][:300] for r in grid if r.error is not None]
        out = study_report(study, first, parent_id, log=True, extra=extra)
    except (Exception, KeyboardInterrupt) as exc:
        end_run(parent_id, reason_of_error(exc), detail=error_text(exc))
        raise
    out.update(errors=errors, seconds=round(time.time() - started, 1), config=to_dict(first))
    client.set_terminated(parent_id, "FAILED" if errors else "FINISHED")
    return out
