"""`fmolab study`: a tiny grid (2 arms x 1 seed, seconds of training) on real Ray Tune + Ray Train +
MLflow, the report's table checked against the trials' own MLflow metrics; resuming keeps finished
trials; a bad study file is refused before anything runs."""
import math

import pytest
import yaml

from fmo_fakes import TRAIN_TINY
from fmolab.config import ConfigError, derive
from fmolab.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def toy(session_home):
    return write_synthetic_dataset(session_home / "toy-study", num_sequences=16, width=64, height=48,
                                   num_frames=8, num_objects=4, seed=5)


def _study(tmp_path, toy, work, **changes):
    base = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in TRAIN_TINY)}
    base.update({"data.train": str(toy), "runtime.work_dir": str(work), "tracking.experiment": "study-tests",
                 "train.preview_samples": 1, "train.threads": 1})
    spec = {"preset": "double_blur", "base": base, "budget_samples": 8, "seeds": 1,
            "groups": {"G": {"claim": "a faster rate animates sooner", "arms": {"fast": {"train.lr": 0.003},
                                                                                 "slow": {"train.lr": 0.0003}}}},
            **changes}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow  # ~108 s in CI: CI keeps under 30 minutes (make test-all runs it)
def test_study_runs_arms_as_trials_and_reports_their_own_metrics(tmp_path, toy, work, ray_local, capsys):
    import mlflow

    from fmolab.cli import main
    from fmolab.study import load_study
    from fmolab.study.report import mean_sd

    path = _study(tmp_path, toy, work)
    assert main(["study", "run", str(path), "--work-dir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "| G/fast | 1/1 |" in out and "| G/slow | 1/1 |" in out

    client = mlflow.MlflowClient()
    exp = mlflow.get_experiment_by_name("study-tests")
    runs = client.search_runs([exp.experiment_id], "tags.`fmolab.study` = 'tiny'")
    parent = next(r for r in runs if "fmolab.study.arm" not in r.data.tags)
    trials = {r.data.tags["fmolab.study.arm"]: r for r in runs if "fmolab.study.arm" in r.data.tags}
    assert set(trials) == {"G/fast", "G/slow"}
    for arm, run in trials.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
        assert run.data.params["train.steps"] == "4"  # 8 samples at 2 per step: the same budget for every arm
        assert run.data.params["train.lr"] == ("0.003" if arm == "G/fast" else "0.0003")

    # the table is the trials' own final metrics (one seed: the value itself)
    assert main(["study", "report", str(path), "--work-dir", str(work)]) == 0
    table = capsys.readouterr().out
    for arm, run in trials.items():
        line = next(line for line in table.splitlines() if line.startswith(f"| {arm} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        final = {k: client.get_metric_history(run.info.run_id, k)[-1].value
                 for k in ("val/tiou", "val/crop_psnr", "val/im_crop_psnr", "val/animation_ratio", "val/loss")}
        assert cells[4:9] == [mean_sd([final[k]]) for k in ("val/tiou", "val/crop_psnr", "val/im_crop_psnr",
                                                            "val/animation_ratio", "val/loss")]
        ratios = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/animation_ratio"))
        first = next((s for s, v in ratios if v > 0.5), None)
        assert cells[3] == ("-" if first is None else mean_sd([first * 2.0]))
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/report.md", "study/curves.png", "study/study.yaml"} <= names
    previews = {a.path for a in client.list_artifacts(parent.info.run_id, "study/previews")}
    assert previews == {"study/previews/G-fast.gif", "study/previews/G-slow.gif"}
    assert "| G/fast |" in client.get_run(parent.info.run_id).data.tags["mlflow.note.content"]

    # the same command again resumes: nothing is trained twice
    assert main(["study", "run", str(path), "--work-dir", str(work)]) == 0
    capsys.readouterr()
    again = client.search_runs([exp.experiment_id], "tags.`fmolab.study` = 'tiny'")
    assert len(again) == 3
    for run in again:
        if "fmolab.study.arm" in run.data.tags:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")]
            assert len(steps) == len(set(steps))
    assert math.isfinite(load_study(str(path)).budget_samples)

    # a second seed for one arm: only that trial trains; the first seeds are shared, and a part of the
    # study (its own name) reports them too
    spec = yaml.safe_load(path.read_text())
    spec["groups"]["G"]["arms"]["fast"] = {"train.lr": 0.003}
    spec["groups"]["H"] = {"arms": {"fast2": {"train.lr": 0.003}}, "seeds": 2}
    path.write_text(yaml.safe_dump(spec))
    assert main(["study", "run", str(path), "--groups", "G,H", "--work-dir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "G/fast seed 0: finished by tiny with the same config, kept" in out
    assert "2 to run" in out  # H/fast2's two seeds; G's trials are the first run's
    runs = client.search_runs([exp.experiment_id], "tags.`fmolab.study.arm` != ''")
    assert sorted((r.data.tags["fmolab.study"], r.data.tags["fmolab.study.arm"], r.data.tags["fmolab.study.seed"])
                  for r in runs) == [("tiny", "G/fast", "0"), ("tiny", "G/slow", "0"),
                                     ("tiny-G-H", "H/fast2", "0"), ("tiny-G-H", "H/fast2", "1")]
    assert "| H/fast2 | 2/2 |" in out and "| G/fast | 1/1 |" in out


@pytest.mark.parametrize("change,message", [
    ({"budget_samples": 0}, "budget_samples: 0 must be a whole number > 0"),
    ({"groups": {"G": {"arms": {"a": {"train.lrr": 1}}}}}, "arm G/a: override 'train.lrr=1': unknown key"),
    ({"groups": {"G": {"arms": {"a": {}}, "claims": "x"}}}, "unknown key(s) ['claims']"),
    ({"seedz": 2}, "unknown key(s) ['seedz']"),
])
def test_bad_study_file_is_refused_with_where_and_what(tmp_path, toy, work, change, message):
    from fmolab.study import load_study

    with pytest.raises(ConfigError) as err:
        load_study(str(_study(tmp_path, toy, work, **change)))
    assert message in str(err.value)


def test_a_trial_is_shared_only_with_the_same_config_and_settings_added_since_count_as_defaults(tmp_path, toy, work):
    from fmolab.study import load_study
    from fmolab.study.report import same_config
    from fmolab.tracking.store import config_params

    study = load_study(str(_study(tmp_path, toy, work)))
    cfg = study.config("G/fast", 0)
    logged = config_params(cfg)
    assert same_config(logged, cfg)
    assert not same_config({**logged, "train.lr": "0.0003"}, cfg)  # another arm's run
    assert same_config({**logged, "runtime.work_dir": "/elsewhere", "train.run_name": "x"}, cfg)  # where it ran
    older = {k: v for k, v in logged.items() if k != "render.claim_lease_s"}  # logged before that setting existed
    assert same_config(older, cfg)
    # ... but this arm sets it: the older run did not train this
    assert not same_config(older, derive(cfg, {"render.claim_lease_s": 30.0}))
