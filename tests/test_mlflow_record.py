"""The MLflow record as a person reads it, checked through the REST API of a real ``mlflow server`` and in
its UI driven by a real headless Chromium: a model-training experiment, browser-viewable previews, a named model linked to its
validation, the dataset as an input, why each run ended; the plots from their figure data; the
comparison report in a real headless Chromium."""
from __future__ import annotations

import io
import json
import math
import os
import urllib.parse
import urllib.request

import pytest
from PIL import Image

from browser import Browser, find_chromium, png_size
from fmo_fakes import TINY_MODEL
from fmolab.data.synthetic import write_synthetic_dataset

TRAIN = {**TINY_MODEL, "data.format": "double_blur", "data.val_fraction": 0.25,
         "loss.train": "[AlphaDice, 'RGBL1:mode=gt']", "loss.compare": "[DeFMOSupervised]",
         "train.workers": 1, "train.batch_size": 2, "train.lr": 0.003, "train.log_every": 2,
         "train.val_samples": 4, "train.preview_samples": 1, "train.max_failures": 0}


@pytest.fixture(scope="module")
def toy(session_home):
    return write_synthetic_dataset(session_home / "record-toy", num_sequences=16, width=64, height=48,
                                   num_frames=8, num_objects=4, seed=3)


def rest(server: str, endpoint: str, body: dict | None = None, **query) -> dict:
    url = f"{server}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="POST" if data else "GET")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def artifact(server: str, run_id: str, path: str) -> bytes:
    q = urllib.parse.urlencode({"run_id": run_id, "path": path})
    with urllib.request.urlopen(f"{server}/get-artifact?{q}", timeout=30) as resp:
        return resp.read()


def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("FMOLAB_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (.ci/run installs it with apt-get)")
        pytest.skip("chromium is not installed (apt-get install chromium; CI requires it)")
    return binary


def test_training_record_over_rest_and_in_the_mlflow_ui(work, toy, ray_local, mlflow_server, make_config,
                                                        monkeypatch):
    from fmolab.train import train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # stopped by its time limit long before its steps: the record must say so
    cfg = make_config(TRAIN, {"runtime.work_dir": work, "data.train": toy, "tracking.uri": mlflow_server,
                              "tracking.experiment": "record", "train.run_name": "timed", "train.steps": 100000,
                              "train.time_limit": 6, "train.val_every": 3, "train.ckpt_every": 3,
                              "tracking.register_as": "record-model", "tracking.alias": "candidate"})
    out = train(cfg)
    steps = int(out["metrics"]["step"])
    assert 0 < steps < 100000

    exp = rest(mlflow_server, "experiments/get-by-name", experiment_name="record")["experiment"]
    tags = {t["key"]: t["value"] for t in exp["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs table
    assert "training" in tags["mlflow.note.content"] and tags["variant"] == "double_blur"

    run = rest(mlflow_server, "runs/get", run_id=out["run_id"])["run"]
    rtags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert run["info"]["status"] == "FINISHED"
    assert rtags["fmolab.end_reason"] == "time_limit" and rtags["fmolab.steps_done"] == f"{steps}/100000"
    assert "time limit" in rtags["mlflow.note.content"] and f"{steps} of 100000" in rtags["mlflow.note.content"]
    assert rtags["mlflow.source.name"] == "fmolab train" and rtags["mlflow.user"]

    # the dataset as an input: digest = manifest hash, source, schema, row count
    (inp,) = run["inputs"]["dataset_inputs"]
    ds = inp["dataset"]
    assert ds["digest"] == rtags["dataset_manifest_sha1"][:36] and ds["name"] == toy.name
    assert json.loads(ds["source"])["uri"] == str(toy) and json.loads(ds["profile"])["num_rows"] == 16
    columns = {c["name"]: c for c in json.loads(ds["schema"])["mlflow_colspec"]}
    assert columns["frames"]["type"] == "binary" and columns["blurs"]["type"] == "array"
    assert {t["key"]: t["value"] for t in inp["tags"]}["mlflow.data.context"] == "training"

    # a browser-viewable preview per validation, and the latest/best at fixed names
    history = rest(mlflow_server, "metrics/get-history", run_id=out["run_id"], metric_key="val/loss")["metrics"]
    val_steps = sorted({m["step"] for m in history})
    names = {f["path"] for f in rest(mlflow_server, "artifacts/list", run_id=out["run_id"], path="previews")["files"]}
    assert {f"previews/val_step{s:07d}.gif" for s in val_steps} <= names
    assert {f"previews/val_step{s:07d}.webp" for s in val_steps} <= names
    assert {"previews/latest.gif", "previews/best.gif"} <= names
    latest = Image.open(io.BytesIO(artifact(mlflow_server, out["run_id"], "previews/latest.gif")))
    assert latest.format == "GIF" and latest.n_frames > 1
    assert artifact(mlflow_server, out["run_id"], "previews/latest.gif") == \
        artifact(mlflow_server, out["run_id"], f"previews/val_step{val_steps[-1]:07d}.gif")

    # the logged model: a meaningful name, linked to the validation of the step it came from
    models = rest(mlflow_server, "logged-models/search", {"experiment_ids": [exp["experiment_id"]]})["models"]
    (model,) = models
    best_step = int(out["metrics"]["best_step"])
    assert model["info"]["name"] == "double_blur-timed"
    linked = {m["key"]: m for m in model["data"]["metrics"]}
    assert {"val/loss", "val/psnr", "val/ssim", "val/tiou"} <= set(linked)
    assert all(int(m["step"]) == best_step for m in linked.values())
    assert math.isclose(linked["val/tiou"]["value"], out["metrics"]["best_metric"], rel_tol=1e-6)
    assert {p["key"]: p["value"] for p in model["data"]["params"]}["monitor"] == "val/tiou"

    version = rest(mlflow_server, "model-versions/get", name="record-model", version=str(out["version"]))
    text = version["model_version"]["description"]
    assert str(toy) in text and f"for {steps} of 100000 steps" in text and f"at step {best_step}" in text
    step = int(out["metrics"]["animation_step"])  # whether and when it animated, where a user reads
    assert (f"Animation point at step {step}." if step >= 0 else "**Never animated**") in text
    note = rest(mlflow_server, "runs/get", run_id=out["run_id"])["run"]["data"]["tags"]
    assert ("Animation point" if step >= 0 else "Never animated") in {t["key"]: t["value"] for t in note}[
        "mlflow.note.content"]

    plots = {f["path"] for f in rest(mlflow_server, "artifacts/list", run_id=out["run_id"], path="plots")["files"]}
    assert "plots/loss_curves.png" in plots

    # ... and as a person sees it: the UI of the same server in a real Chromium, at the address printed
    from fmolab.tracking.store import ML_VIEW, ui_address

    exp_id, rid = exp["experiment_id"], out["run_id"]
    assert out["mlflow_ui"] == f"{mlflow_server}/#/experiments/{exp_id}/runs/{rid}?{ML_VIEW}"
    browser = Browser(chromium())
    try:
        runs = browser.visit(ui_address(mlflow_server, exp_id), until=("timed", "fmolab train", "record-model"))
        plain = browser.visit(ui_address(mlflow_server, exp_id).replace(f"?{ML_VIEW}", ""), until=("timed",),
                              seconds=15)
        page = browser.visit(out["mlflow_ui"], until=("Ended: stopped at its time limit", f"{toy.name} (", "record-model", "v1",
                                                      "fmolab.end_reason"))
        viewer = browser.visit(f"{mlflow_server}/#/experiments/{exp_id}/runs/{rid}/artifacts/previews/latest.gif"
                               f"?{ML_VIEW}", until=("latest.gif", "best.gif"), images=("previews/latest.gif",))
        # wide enough that the table renders every metric column (it draws only the columns in view)
        models = browser.visit(f"{mlflow_server}/#/experiments/{exp_id}/models?{ML_VIEW}", width=8000,
                               until=("double_blur-timed", "Ready", "record-model", "val/tiou", "val/crop_psnr"))
    finally:
        browser.close()
    assert "/runs" in runs["url"] and not runs["missing"], runs["text"][:2000]  # the runs table lists the run
    # without the view in the address, a fresh browser lands on the GenAI traces overview, no run in sight
    assert "workflowType=genai" in plain["url"] and plain["missing"] == ["timed"], plain["url"]
    assert not page["missing"], page["missing"]  # the run page: its dataset, why it ended, the registered model
    assert not viewer["missing"]
    shown = {src: (w, h) for src, w, h in viewer["images"]}
    assert shown.get("previews/latest.gif", (0, 0))[0] > 0, shown  # the preview decoded in the artifact viewer
    assert not models["missing"], models["text"][:2000]  # the Models tab: the logged model and its metrics


def test_failed_run_ends_failed_with_its_reason(work, toy, ray_local, make_config):
    import mlflow

    from fmolab.train import train

    cfg = make_config(TRAIN, {"runtime.work_dir": work, "data.train": toy, "train.run_name": "nan-run",
                              "train.steps": 3, "train.val_every": 3, "tracking.experiment": "record-nan",
                              "loss.train": "['RGBL1:weight=.inf,mode=direct']"})
    with pytest.raises(Exception, match="non-finite loss"):
        train(cfg, register=False)
    exp = mlflow.get_experiment_by_name("record-nan")
    (run,) = mlflow.search_runs([exp.experiment_id], output_format="list")
    assert run.info.status == "FAILED" and run.data.tags["fmolab.end_reason"] == "nan_stop"
    assert "non-finite loss" in run.data.tags["mlflow.note.content"]

    from fmolab.tracking.runs import list_runs

    table = list_runs("record-nan")
    assert "end" in table[0].split() and "nan_stop" in table[1] and "FAILED" in table[1]


def test_run_curves_split_losses_and_metrics_with_distinct_colours(tmp_path):
    from fmolab.plots import plot_run_curves, run_curves_figure

    steps = range(0, 50, 10)
    names = ["train/loss", "train/AlphaDice", "train/RGBL1_mode_gt", "val/loss", "val/AlphaDice", "val/psnr",
             "val/crop_psnr", "val/ssim", "val/tiou", "val/animation_ratio", "val/animation_step",
             "best/val/loss"]
    series = {k: [(s, 0.5 + i + s / 100) for s in steps] for i, k in enumerate(names)}
    fig = run_curves_figure(series, "t")
    panels = {ax.get_title(loc="left"): ax for ax in fig.axes}
    assert list(panels) == ["losses", "PSNR (dB)", "SSIM", "TIoU", "animation ratio"]
    labels = {t: [ln.get_label() for ln in ax.get_lines()] for t, ax in panels.items()}
    assert labels["losses"] == ["train/AlphaDice", "train/RGBL1_mode_gt", "train/loss", "val/AlphaDice", "val/loss"]
    assert labels["PSNR (dB)"] == ["val/crop_psnr", "val/psnr"] and labels["TIoU"] == ["val/tiou"]
    drawn = [lab for labs in labels.values() for lab in labs]
    assert set(drawn) == set(names) - {"val/animation_step", "best/val/loss"}  # every curve, once
    for t, ax in panels.items():
        colours = [ln.get_color() for ln in ax.get_lines()]
        assert len(set(map(str, colours))) == len(colours), t  # no colour repeats in a panel
        assert ax.get_yscale() == ("log" if t == "losses" else "linear")
        assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1  # beside, not over
    styles = {ln.get_label(): ln.get_linestyle() for ln in panels["losses"].get_lines()}
    assert styles["train/loss"] == "-" and styles["val/loss"] == "--"
    assert (xs := list(panels["SSIM"].get_lines()[0].get_xdata())) == list(steps), xs
    assert plot_run_curves(series, tmp_path / "c.png", "t").stat().st_size > 10_000


def test_parallel_coordinates_place_every_trial():
    from fmolab.tune.plots import parallel_axes

    rows = [{"trial": "a", "best": 0.5, "params": {"train.lr": 1e-4, "model.norm": "batch"}},
            {"trial": "b", "best": 0.2, "params": {"train.lr": 1e-2, "model.norm": "instance"}},
            {"trial": "c", "best": float("nan"), "params": {"train.lr": 1e-3, "model.norm": "batch"}}]
    axes, lines, ticks = parallel_axes(rows, ["train.lr", "model.norm"], "val/loss")
    assert axes == ["train.lr", "model.norm", "val/loss"]
    assert lines == [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]  # lr on a log axis; choices by order; the metric
    assert ticks[1] == ["batch", "instance"] and ticks[0] == ["0.0001", "0.01"]


def _fake_run(client, exp_id: str, name: str, lr: str, psnr: list[float], preview_dir):
    """A run as training leaves it: params, curves and preview GIFs (no training needed to compare)."""
    from fmolab.media import save_gif

    run = client.create_run(exp_id, run_name=name, tags={"variant": "double_blur", "fmolab.end_reason": "steps_done"})
    rid = run.info.run_id
    client.log_param(rid, "train.lr", lr)
    client.log_param(rid, "train.steps", "20")
    for i, v in enumerate(psnr):
        client.log_metric(rid, "val/psnr", v, step=10 * (i + 1))
        client.log_metric(rid, "val/loss", 1.0 / v, step=10 * (i + 1))
        client.log_metric(rid, "train/loss", 2.0 / v, step=10 * (i + 1))
    import numpy as np

    frames = np.zeros((3, 24, 40, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(3)[:, None, None] * 100
    gif = save_gif(preview_dir / name / "latest.gif", frames)
    client.log_artifact(rid, str(gif), "previews")
    client.set_terminated(rid)
    return rid


def test_compare_report_renders_in_a_real_browser(work, make_config, monkeypatch):
    import mlflow

    from fmolab.tracking.compare import compare_runs
    from fmolab.tracking.store import ensure_experiment, setup_tracking

    binary = chromium()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = make_config({"runtime.work_dir": work, "tracking.experiment": "cmp-src"})
    setup_tracking(cfg)
    client = mlflow.MlflowClient()
    exp_id = ensure_experiment(cfg)
    a = _fake_run(client, exp_id, "slow-lr", "0.0003", [20.0, 22.0], work)
    b = _fake_run(client, exp_id, "fast-lr", "0.003", [21.0, 25.0], work)
    res = compare_runs(["slow-lr", "fast-lr"], "cmp-src", ["val/psnr", "val/loss"], work / "cmp", cfg=cfg)

    browser = Browser(binary)
    try:
        page = browser.load(res["report"])
    finally:
        browser.close()
    assert page["errors"] == []
    images = {alt: (w, h) for alt, w, h in page["images"]}
    assert set(images) == {"val_psnr", "val_loss", "preview of slow-lr", "preview of fast-lr"}
    assert all(w > 0 and h > 0 for w, h in images.values()), images  # every image decoded
    assert images["preview of slow-lr"] == (40, 24)
    width, height = png_size(page["screenshot"])
    assert 1200 <= width <= 1280 and height > 900  # the whole page (less a scrollbar), taller than one screen
    text = page["text"]
    assert "Comparison of 2 runs" in text and "train.lr" in text and "0.0003" in text and "train.steps" not in text
    # the report is logged beside the comparison and to the first run
    assert res["report_logged_to"] == a != b
    logged = [f.path for f in client.list_artifacts(a, f"comparisons/{res['comparison_run_id'][:8]}")]
    assert logged == [f"comparisons/{res['comparison_run_id'][:8]}/report.html"]
