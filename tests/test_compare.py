"""`fmolab runs compare`: differing params, final metrics, overlaid curves, logged as a comparison run."""
import csv

import pytest


@pytest.fixture
def two_runs(work, monkeypatch):
    import mlflow

    from fmolab.config import load_config
    from fmolab.tracking.store import ensure_experiment, setup_tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # this test's own store
    cfg = load_config([], [f"runtime.work_dir={work}", "tracking.experiment=cmp"])
    setup_tracking(cfg)
    exp = ensure_experiment(cfg)
    client = mlflow.MlflowClient()
    ids = []
    for name, lr, norm in (("run-a", "0.001", "group"), ("run-b", "0.0003", "group")):
        run = client.create_run(exp, run_name=name, tags={"variant": "double_blur"})
        rid = run.info.run_id
        client.log_batch(rid, params=[mlflow.entities.Param("train.lr", lr), mlflow.entities.Param("model.norm", norm),
                                      mlflow.entities.Param("train.steps", "30")])
        metrics = []
        for step in range(0, 31, 5):
            metrics.append(mlflow.entities.Metric("train/loss", 1.0 / (1 + step * float(lr) * 100), 0, step))
            if step % 10 == 0:
                metrics.append(mlflow.entities.Metric("val/loss", 1.2 / (1 + step * float(lr) * 80), 0, step))
        metrics.append(mlflow.entities.Metric("val/psnr", 20.0 + float(lr) * 1000, 0, 30))
        client.log_batch(rid, metrics=metrics)
        client.set_terminated(rid)
        ids.append(rid)
    return work, ids


def test_compare_two_runs_by_id_and_name(two_runs, capsys):
    import mlflow

    from fmolab.cli import main

    work, ids = two_runs
    out = work / "cmp-out"
    assert main(["runs", "--work-dir", str(work), "compare", ids[0], "run-b", "--experiment", "cmp",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train.lr" in printed and "model.norm" not in printed.split("{")[0]
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    assert [r["run"] for r in rows] == ["run-a", "run-b"]
    assert "param:train.lr" in rows[0] and "param:model.norm" not in rows[0] and "param:train.steps" not in rows[0]
    assert float(rows[1]["val/psnr"]) == pytest.approx(20.3) and "train/loss" in rows[0]
    assert (out / "train_loss.png").stat().st_size > 1000 and (out / "val_loss.png").exists()
    exp = mlflow.get_experiment_by_name("fmolab-compare")
    run = mlflow.search_runs([exp.experiment_id], output_format="list")[0]
    assert run.data.tags["fmolab.kind"] == "comparison" and ids[0] in run.data.tags["compared_runs"]
    client = mlflow.MlflowClient()
    assert "comparison.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plots/train_loss.png", "plots/val_loss.png"} <= {a.path for a in client.list_artifacts(run.info.run_id, "plots")}


def test_compare_all_runs_of_experiment_and_unknown_run(two_runs, capsys):
    from fmolab.cli import main

    work, ids = two_runs
    assert main(["runs", "--work-dir", str(work), "compare", "--experiment", "cmp", "--out", str(work / "o2"),
                 "--metric", "val/psnr", "--no-log"]) == 0
    rows = list(csv.DictReader(open(work / "o2" / "comparison.csv")))
    assert sorted(r["run_id"] for r in rows) == sorted(ids)
    assert (work / "o2" / "val_psnr.png").exists()
    capsys.readouterr()
    assert main(["runs", "--work-dir", str(work), "compare", "no-such-run", "--experiment", "cmp", "--no-log"]) == 2
    assert "no run with id or name 'no-such-run'" in capsys.readouterr().err
