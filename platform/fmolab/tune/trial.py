"""One trial of a search (runs in Tune's trial actor): its config from the sampled values, a nested
MLflow run, and a Ray Train run started exactly as ``fmolab train`` starts one
(:func:`fmolab.train.launch.launch`). Every validation of rank 0 reaches Tune through a Train
callback, so ASHA decides at the training step (``time_attr="step"``)."""
from __future__ import annotations

from fmolab.config import derive
from fmolab.tune.placement import recorder_callbacks, with_placement_group
from fmolab.tune.space import SearchSpace

SEARCH_TAG = "fmolab.search"
TRIAL_TAG = "fmolab.trial_id"


def trial_run_name(search: str, trial_id: str) -> str:
    return f"{search}-{trial_id}"


def report_callbacks(metric: str) -> list:
    """Train callbacks of a trial (they run in its Train controller): Ray's ``TuneReportCallback``
    (Train V2 -> Tune), forwarding rank 0's report only when it holds the searched metric
    (checkpoint-only reports between validations would give ASHA and Optuna a result without it),
    with the run's placement group id (:mod:`fmolab.tune.placement`)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    shared: dict = {}

    class ValidationReport(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and metric in metrics[0]:
                super().after_report(run_context, [with_placement_group(metrics[0], shared), *metrics[1:]], checkpoint)

    return [ValidationReport(), *recorder_callbacks(shared)]


def run_trial(params: dict, setup: dict) -> None:
    import mlflow
    import ray.tune

    from fmolab.tracking.ending import end_run, reason_of_metrics
    from fmolab.train.launch import launch, open_run

    space: SearchSpace = setup["space"]
    trial_id = ray.tune.get_context().get_trial_id()
    # train.monitor = the space's metric; the driver registers the best trial only
    cfg = derive(space.build_config(setup["base"], params, overrides=False),
                 {"train.run_name": trial_run_name(setup["name"], trial_id), "tracking.register_as": ""})
    uri = setup["tracking_uri"]  # Train workers get it with their config
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    run_id = open_run(cfg, {"mlflow.parentRunId": setup["parent_run_id"], SEARCH_TAG: setup["name"],
                            TRIAL_TAG: trial_id, "git_commit": setup["git_commit"]}, command="tune")
    client = mlflow.MlflowClient()
    existing = client.get_run(run_id).data.params
    searched = [mlflow.entities.Param(f"search.{k}", str(v)) for k, v in sorted(params.items())
                if f"search.{k}" not in existing]
    if searched:
        client.log_batch(run_id, params=searched)
    client.update_run(run_id, status="RUNNING")
    # Only a completed trial ends its own run. A failing one leaves that to the driver
    # (:func:`fmolab.tune.report.report`, Tune's view): when ASHA stops a trial, its Train run dies with
    # the actor and raises here, possibly after the driver already marked the run KILLED.
    result = launch(cfg, run_id, uri, setup["train_storage"], callbacks=report_callbacks(space.metric), keep=1,
                    end_on_error=False)
    metrics = dict(result.metrics or {})
    end_run(run_id, reason_of_metrics(metrics, cfg.train.steps), metrics, cfg.train.steps, cfg.train.monitor.metric)
