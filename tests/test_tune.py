"""Hyperparameter search: space files (validation, conditional sampling) and a real Ray Tune + Optuna +
ASHA search of Ray Train trials tracked in MLflow, on a tiny synthetic dataset."""
import csv
import math
from pathlib import Path

import numpy as np
import pytest

from fmolab.config import ConfigError, load_config
from fmolab.data.synthetic import write_synthetic_dataset
from fmolab.tune import load_space

ROOT = Path(__file__).resolve().parents[1]


def _write(path, text):
    path.write_text(text)
    return path


# ---------------------------------------------------------------- spaces (no Ray)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml")))
def test_shipped_spaces_validate_against_their_preset(name):
    import yaml

    from fmolab.config import preset_path

    path = ROOT / "search_spaces" / name
    preset = yaml.safe_load(path.read_text()).get("preset")
    space = load_space(path, load_config([preset_path(preset)] if preset else []))
    assert space.params and space.points_to_evaluate


@pytest.mark.parametrize("body, expected", [
    ("params:\n  train.lr: {gaussian: [0, 1]}\n", ["params.train.lr", "unknown distribution", "'gaussian'", "uniform, loguniform, int, choice"]),
    ("params:\n  train.lr: {loguniform: [0, 0.1]}\n", ["params.train.lr", "low must be > 0"]),
    ("params:\n  train.lr: {uniform: [0.1, 0.01]}\n", ["params.train.lr", "low must be < high"]),
    ("params:\n  train.lrr: {loguniform: [1.0e-4, 1.0e-2]}\n", ["params.train.lrr", "unknown key 'train.lrr'", "did you mean 'lr'"]),
    ("params:\n  w: {uniform: [0, 1]}\ntemplates:\n  loss.train: ['AlphaDicee:weight={w}']\n", ["AlphaDicee", "Known"]),
    ("params:\n  w: {uniform: [0, 1]}\ntemplates:\n  loss.train: ['AlphaDice:weight={v}']\n", ["templates.loss.train", "{v}", "parameters: w"]),
    ("params:\n  train.batch_size: {int: [0, 4]}\n", ["train.batch_size = 0", "must be >= 1"]),
    ("params:\n  g: {choice: [4, 8], when: {model.norm: group}}\n", ["params.g", "when refers to 'model.norm'"]),
    ("params:\n  model.norm: {choice: [group, batch]}\n  g: {choice: [4, 8], when: {model.norm: grup}}\n", ["params.g", "can never hold"]),
    ("paramz: {}\n", ["unknown top-level key 'paramz'", "allowed: description"]),
    ("metric: train/loss\nparams:\n  train.lr: {uniform: [0.1, 0.2]}\n", ["metric = 'train/loss'", "validation metric"]),
    ("mode: maximize\nparams:\n  train.lr: {uniform: [0.1, 0.2]}\n", ["mode = 'maximize'", "'min' or 'max'"]),
])
def test_invalid_space_names_file_key_and_what_is_allowed(tmp_path, body, expected):
    path = _write(tmp_path / "bad.yaml", body)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    message = str(err.value)
    assert str(path) in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_cli_reports_invalid_space_with_status_2(tmp_path, capsys):
    from fmolab.cli import main

    path = _write(tmp_path / "bad.yaml", "params:\n  train.lr: {normal: [0, 1]}\n")
    assert main(["tune", "--space", str(path), "--work-dir", str(tmp_path / "w"), "--print-space"]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "params.train.lr" in err and "'normal'" in err


CONDITIONAL = """
params:
  model.norm: {choice: [group, batch, instance]}
  groups: {choice: [4, 8, 16], when: {model.norm: group}, default: 8}
  w_alpha: {uniform: [0.1, 2.0]}
templates:
  model.encoder: "tiny:groups={groups}"
  loss.train: ["AlphaDice:weight={w_alpha}", "RGBL1:weight=1.0,mode=gt"]
"""


def test_conditional_parameter_only_sampled_when_its_condition_holds(tmp_path):
    import optuna

    space = load_space(_write(tmp_path / "cond.yaml", CONDITIONAL))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3))
    seen = set()
    for i in range(30):
        trial = study.ask()
        values = space.sample(trial)  # the define-by-run function OptunaSearch calls
        assert set(trial.params) == set(values)
        seen.add(values["model.norm"])
        assert ("groups" in values) == (values["model.norm"] == "group"), values
        cfg = space.build_config(load_config(), values)
        groups = values.get("groups", 8)  # the default fills the template when not sampled
        assert cfg.model.encoder == f"tiny:groups={groups}" and cfg.model.norm == values["model.norm"]
        assert cfg.loss.train[0] == f"AlphaDice:weight={values['w_alpha']}"
        study.tell(trial, float(i))
    assert seen == {"group", "batch", "instance"}


# ---------------------------------------------------------------- a real search


@pytest.fixture(scope="module")
def toy(session_home):
    return write_synthetic_dataset(session_home / "toy-tune", num_sequences=16, width=64, height=48,
                                   num_frames=8, num_objects=4, seed=1)


SEARCH = """
description: test search - an obviously bad learning rate makes ASHA stop trials early
params:
  train.lr: {choice: [0.003, 10.0]}
  rgb_mode: {choice: [gt, direct]}
  model.norm: {choice: [group, instance]}
  groups: {choice: [4, 8], when: {model.norm: group}, default: 8}
templates:
  loss.train: ["AlphaDice:weight=1.0", "RGBL1:weight=1.0,mode={rgb_mode}"]
  model.encoder: "tiny:groups={groups}"
overrides:
  train.steps: 8
  train.val_every: 2
  train.ckpt_every: 2
points_to_evaluate:
  - {train.lr: 0.003, rgb_mode: gt, model.norm: group, groups: 8}
  - {train.lr: 0.003, rgb_mode: direct, model.norm: group, groups: 4}
  - {train.lr: 10.0, rgb_mode: gt, model.norm: group, groups: 8}
  - {train.lr: 10.0, rgb_mode: direct, model.norm: instance}
"""


# slow (123 s): CI keeps under 30 minutes; a search runs in test_registered_weights_are_the_checkpoint_best_by_the_search_metric
@pytest.mark.slow
def test_search_stops_bad_trials_tracks_children_and_registers_the_best(work, toy, ray_local, tmp_path, make_config):
    import mlflow
    import ray

    from fmolab.data import build_dataset
    from fmolab.tune import SearchOptions, run_search

    space = _write(tmp_path / "space.yaml", SEARCH)
    cfg = make_config({
        "runtime.work_dir": str(work), "data.train": str(toy), "data.format": "double_blur",
        "data.frames_per_sample": 4, "data.val_fraction": 0.25, "loss.compare": "[]",
        "train.workers": 1, "train.batch_size": 2, "train.log_every": 2, "train.val_samples": 4,
        "train.preview_samples": 1, "train.nan_policy": "skip", "train.max_failures": 0,
        "tracking.experiment": "tune-tests", "tracking.register_as": "tune-best", "tracking.alias": "champion",
    })
    out = run_search(cfg, space, SearchOptions(trials=4, max_concurrent=2), name="search1", verbose=0)

    rows = out["trials"]
    assert len(rows) == 4 and not [r for r in rows if r["status"] == "error"], rows
    bad = [r for r in rows if r["params"]["train.lr"] == 10.0]
    assert bad and all(r["status"] == "stopped early" and r["steps"] < 8 for r in bad), rows
    assert [r for r in rows if r["status"] == "completed" and r["steps"] == 8]
    # ASHA's stop must free the stopped trials' Train workers (no CPU left held)
    free = 0.0
    for _ in range(30):
        free = ray.available_resources().get("CPU", 0)
        if free >= ray.cluster_resources()["CPU"] - 0.02:
            break
        import time

        time.sleep(1)
    assert free >= ray.cluster_resources()["CPU"] - 0.02, ray.available_resources()

    # best configuration reported
    assert out["best_params"]["train.lr"] == 0.003
    assert math.isfinite(out["best_value"]) and out["metric"] == "val/loss"
    # ranked as each trial chose its checkpoint: animated validations first, then the lowest val/loss
    assert out["best_value"] == max(rows, key=lambda r: (r["animated"], -r["best"]))["best"]

    # MLflow: parent run + one nested child per trial, with the trial's params
    client = mlflow.MlflowClient()
    parent = client.get_run(out["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["fmolab.search"] == "search1"
    exp = mlflow.get_experiment_by_name("tune-tests")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4
    by_run = {r["run_id"]: r for r in rows}
    for child in children:
        assert child.data.params["search.train.lr"] in ("0.003", "10.0")
        assert "val/loss" in child.data.metrics
        assert child.info.status in ("FINISHED", "KILLED")
        # why it ended, as Tune saw it: ASHA's stops KILLED, the completed FINISHED with all their steps
        stopped = by_run[child.info.run_id]["status"] == "stopped early"
        assert child.data.tags["fmolab.end_reason"] == ("asha_stop" if stopped else "steps_done")
        assert child.info.status == ("KILLED" if stopped else "FINISHED")
        assert child.data.tags["fmolab.steps_done"] == f"{by_run[child.info.run_id]['steps']}/8"
    conditional = [c for c in children if c.data.params.get("search.model.norm") == "instance"]
    assert conditional and all("search.groups" not in c.data.params for c in conditional)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/param_importances.png",
            "plots/parallel_coordinates.png"} <= artifacts
    assert "search/trials.csv" in {a.path for a in client.list_artifacts(parent.info.run_id, "search")}
    with open(out["table"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {"trial", "train.lr", "best", "steps", "status"} <= set(table[0])

    # the best trial's model is registered and loads by alias
    assert out["registered"] == "models:/tune-best@champion"
    model = mlflow.pyfunc.load_model("models:/tune-best@champion")
    best_cfg = load_config([], [f"runtime.work_dir={work}", f"data.train={toy}", "data.frames_per_sample=4",
                                "data.val_fraction=0.25"])
    x = build_dataset(best_cfg, "val")[0]["inputs"][None].numpy().astype(np.float32)
    renders = model.predict(x, params={"num_frames": 3})
    assert renders.shape == (1, 3, 4, 48, 64) and np.isfinite(renders).all()

    # resuming a finished search restores it (Tuner.restore) and reports the same best trial
    again = run_search(load_config([], [f"runtime.work_dir={work}"]), None, name="search1", resume=True, verbose=0)
    assert again["best_trial"] == out["best_trial"] and again["parent_run_id"] == out["parent_run_id"]


def test_loss_spaces_rank_by_a_metric_independent_of_the_losses():
    """A space that varies losses or weights ranks trials by a metric every trial computes alike."""
    paths = sorted((ROOT / "search_spaces").glob("*_losses.yaml"))
    assert len(paths) >= 3, paths  # background_blur, double_blur, self_supervised at least
    for path in paths:
        space = load_space(path)
        assert (space.metric, space.mode) == ("val/crop_psnr", "max"), path.name


MONITORED = """
description: ranks by the highest validation loss (the opposite of what training lowers), so the weights a
  val/loss-min checkpoint would keep are not the ones the search must register
metric: val/loss
mode: max
params:
  train.lr: {choice: [0.003]}
overrides:
  train.steps: 6
  train.val_every: 2
  train.ckpt_every: 2
points_to_evaluate: [{train.lr: 0.003}]
"""


def test_registered_weights_are_the_checkpoint_best_by_the_search_metric(work, toy, ray_local, tmp_path, make_config):
    import mlflow
    import ray.train
    import torch

    from fmolab.tune import SearchOptions, run_search

    space = _write(tmp_path / "monitored.yaml", MONITORED)
    cfg = make_config({"runtime.work_dir": work, "data.train": toy, "data.frames_per_sample": 4,
                       "data.val_fraction": 0.25, "model.encoder": "tiny", "loss.compare": "[]", "train.workers": 1,
                       "train.batch_size": 2, "train.val_samples": 4, "train.preview_samples": 0,
                       "tracking.experiment": "tune-monitor", "tracking.register_as": "monitored",
                       "tracking.alias": "best", "train.monitor.animated_first": False})  # the metric alone
    out = run_search(cfg, space, SearchOptions(trials=1, max_concurrent=1), name="monitored", verbose=0)
    client = mlflow.MlflowClient()
    logged = client.get_metric_history(out["best_run_id"], "val/loss")
    history = {m.step: m.value for m in logged}
    highest, lowest = max(history, key=history.get), min(history, key=history.get)
    assert sorted(m.step for m in logged) == [2, 4, 6] and highest != lowest, history  # linking logs none twice
    model = client.get_logged_model(client.get_run(out["best_run_id"]).outputs.model_outputs[0].model_id)
    assert {m.key: m.step for m in model.metrics}["val/loss"] == highest

    # the trial's checkpoint kept the weights of its highest val/loss, as the search ranks it
    trial = out["trials"][0]
    with ray.train.Checkpoint(trial["checkpoint_path"]).as_directory() as d:
        state = torch.load(f"{d}/state.pt", weights_only=True)["train_state"]
        best = torch.load(f"{d}/best_model.pt", weights_only=True)
        final = torch.load(f"{d}/state.pt", weights_only=True)["model"]
    assert state["best_step"] == highest and state["best_metric"] == pytest.approx(history[highest])
    assert out["best_value"] == pytest.approx(history[highest])
    # ... and those are the weights the registry serves (not the last ones)
    served = mlflow.pyfunc.load_model("models:/monitored@best").unwrap_python_model().model.state_dict()
    assert all(torch.equal(served[k], best[k]) for k in best)
    assert highest == 6 or any(not torch.equal(best[k], final[k]) for k in best)

    # a trial's run carries the same tags as a `fmolab train` run (one launch path)
    tags = client.get_run(out["best_run_id"]).data.tags
    assert tags["dataset"] == str(toy) and tags["dataset_manifest_sha1"] not in ("", "none")
    assert tags["variant"] == cfg.variant and tags["fmolab.search"] == "monitored"


def test_a_resumed_trial_is_ranked_on_its_whole_history_not_on_what_tune_saw_since_the_resume(work, make_config):
    """A search driver killed and resumed: Tune's dataframe of the trial starts over at the resume,
    its MLflow run holds the whole history. The table, and so the parent's best and the registered
    version, take the MLflow one: the true best (0.7609 at step 60, before the resume) wins."""
    from types import SimpleNamespace

    import mlflow
    import pandas as pd
    from mlflow.entities import Metric

    from fmolab.tracking.store import setup_tracking
    from fmolab.tune.report import trial_rows
    from fmolab.tune.trial import SEARCH_TAG, TRIAL_TAG

    cfg = make_config({"runtime.work_dir": work, "tracking.experiment": "resumed-search", "train.steps": 120,
                       "train.monitor.metric": "val/loss", "train.monitor.mode": "min"})
    setup_tracking(cfg)
    client = mlflow.MlflowClient()
    exp = client.create_experiment("resumed-search")
    rid = client.create_run(exp, tags={SEARCH_TAG: "s", TRIAL_TAG: "t1"}).info.run_id
    whole = {20: 0.90, 40: 0.80, 60: 0.7609, 80: 0.82, 100: 0.8053, 120: 0.81}
    client.log_batch(rid, metrics=[Metric(k, v, 0, st) for st, val in whole.items()
                                   for k, v in (("val/loss", val), ("val/animation_ratio", 0.9), ("train/loss", val))])
    after_resume = pd.DataFrame({"step": [80, 100, 120], "val/loss": [0.82, 0.8053, 0.81],
                                 "val/animation_ratio": [0.9, 0.9, 0.9]})
    result = SimpleNamespace(metrics_dataframe=after_resume, metrics={"trial_id": "t1"}, path="/x/trial_t1",
                             config={}, error=None)
    space = SimpleNamespace(metric="val/loss", mode="min", names=[], build_config=lambda c, p, overrides: cfg)
    [row] = trial_rows(cfg, space, [result], "s")
    assert (row["best"], row["best_step"], row["steps"], row["status"]) == (0.7609, 60, 120, "completed")
    assert [st for st, _ in row["history"]] == sorted(whole)
