"""Evaluation: benchmark metrics on hand-made arrays, the benchmark adapters on a fake published layout,
and `fmolab evaluate` end to end with a registered tiny model."""
import csv
import hashlib
import json
import math

import numpy as np
import pytest

from fmolab import geometry
from fmolab.data import build_format
from fmolab.evaluation import metrics
from fmo_fakes import checkpoint_model, disc_position, registered_model, write_fake_benchmark

# ---------------------------------------------------------------- metrics, known answers


def test_circle_iou_known_values():
    assert metrics.circle_iou(0.0, 3.0) == pytest.approx(1.0)
    assert metrics.circle_iou(6.0, 3.0) == pytest.approx(0.0)
    assert metrics.circle_iou(100.0, 3.0) == pytest.approx(0.0)
    # d = r: lens area 2 r^2 (pi/3 - sqrt(3)/4) ... IoU = I / (2 pi r^2 - I)
    r = 2.0
    inter = 2 * r * r * (math.pi / 3 - math.sqrt(3) / 4)
    assert metrics.circle_iou(r, r) == pytest.approx(inter / (2 * math.pi * r * r - inter))


def test_tiou_identical_reversed_and_missing():
    gt = np.stack([np.linspace(0, 20, 8), np.full(8, 5.0)], -1)
    assert metrics.trajectory_iou(gt, gt, 3.0) == (pytest.approx(1.0), False)
    tiou, rev = metrics.trajectory_iou(gt, gt[::-1], 3.0)  # reversed prediction: the better direction wins
    assert tiou == pytest.approx(1.0) and rev is True
    shifted = gt + np.array([3.0, 0.0])  # every sub-frame off by one radius
    assert metrics.trajectory_iou(gt, shifted, 3.0)[0] == pytest.approx(float(metrics.circle_iou(3.0, 3.0)))
    empty = gt.copy()
    empty[0] = np.nan  # no alpha in one predicted sub-frame: it scores 0
    assert metrics.trajectory_iou(gt, empty, 3.0)[0] == pytest.approx(7 / 8)


def test_psnr_ssim_known_values():
    a = np.random.default_rng(0).random((4, 3, 16, 16))
    assert metrics.psnr(a, a) == metrics.PSNR_CAP == 100.0
    assert metrics.psnr(np.zeros((2, 3, 4, 4)), np.full((2, 3, 4, 4), 0.1)) == pytest.approx(20.0)
    # one MSE over all sub-frames, not a mean of per-frame PSNRs
    p = np.zeros((2, 1, 2, 2))
    t = np.stack([np.full((1, 2, 2), 0.1), np.full((1, 2, 2), 0.01)])
    assert metrics.psnr(p, t) == pytest.approx(-10 * math.log10((0.01 + 0.0001) / 2))
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert metrics.ssim(a, 1 - a) < 0.2
    # middle frame: T odd -> centre frame; T even -> mean of the two central frames
    frames = np.arange(5, dtype=float)[:, None, None, None] * np.ones((5, 1, 2, 2)) / 10
    assert metrics.middle_frame(frames)[0, 0, 0] == pytest.approx(0.2)
    assert metrics.middle_frame(frames[:4])[0, 0, 0] == pytest.approx(0.15)
    assert metrics.middle_psnr(frames[::-1], frames) == 100.0  # direction-free


def test_sync_directions_reports_the_better_order():
    gt = np.linspace(0, 1, 6)[:, None, None, None] * np.ones((6, 3, 4, 4))
    pred, rev = metrics.sync_directions(gt[::-1], gt)
    assert rev is True and np.allclose(pred, gt)
    pred, rev = metrics.sync_directions(gt, gt, mode="all")
    assert rev is False


def test_scoring_crop_and_centroids():
    alpha = np.zeros((3, 20, 30))
    alpha[0, 5:8, 4:6] = 1
    alpha[2, 10:12, 20:25] = 1
    assert geometry.scoring_crop(alpha, margin=2) == (3, 2, 14, 27)
    assert geometry.scoring_crop(alpha, margin=10) == (0, 0, 20, 30)  # clipped to the image
    assert geometry.scoring_crop(np.zeros((2, 5, 6))) == (0, 0, 5, 6)  # empty: whole image
    c = metrics.alpha_centroids(alpha)
    assert c[0] == pytest.approx([5.0, 6.5]) and np.isnan(c[1]).all() and c[2] == pytest.approx([22.5, 11.0])
    disc = np.zeros((1, 41, 41))
    yy, xx = np.mgrid[0:41, 0:41] + 0.5
    disc[0] = ((xx - 20.5) ** 2 + (yy - 20.5) ** 2) <= 100
    assert metrics.equivalent_radius(disc) == pytest.approx(10.0, rel=0.03)


def test_score_sample_of_perfect_prediction():
    rng = np.random.default_rng(1)
    gt = rng.random((5, 3, 12, 12))
    traj = np.stack([np.arange(5.0), np.arange(5.0)], -1)
    s = metrics.score_sample(gt[::-1], gt, (0, 0, 12, 12), traj, traj[::-1], 2.0)
    assert s["psnr"] == 100.0 and s["ssim"] == pytest.approx(1.0) and s["tiou"] == pytest.approx(1.0)
    assert s["reversed"] == 1.0


# ---------------------------------------------------------------- adapters


def test_falling_objects_layout_adapter(tmp_path):
    from fmolab.evaluation.benchmark_data import benchmark_samples, detect_kind

    root = write_fake_benchmark(tmp_path / "falling_objects", "falling", n_frames=4)
    assert detect_kind(root) == "falling"
    samples = list(benchmark_samples(root, build_format("background_blur"), (48, 64)))
    assert len(samples) == 4
    s = samples[1]
    assert s.sample_id == "disc_GTgamma/00000002" and s.inputs.shape == (6, 48, 64) and s.gt.shape == (8, 3, 48, 96)
    expected = np.array([disc_position(2 * 8 + i) for i in range(8)])
    np.testing.assert_allclose(s.gt_traj, expected, atol=1e-3)  # 1-based file coordinates converted
    assert s.radius == pytest.approx(5.0)
    y0, x0, y1, x1 = s.box
    assert x0 <= expected[:, 0].min() - 5 + 1 and x1 >= expected[:, 0].max() + 5 - 1
    py0, px0, py1, px1 = s.place  # model crop: the model's aspect ratio, inside the image
    assert (py1 - py0) * 64 == pytest.approx((px1 - px0) * 48, rel=0.1) and px1 <= 96 and py1 <= 48
    # the running median removed the flying disc from the background
    assert np.abs(s.backgrounds[0] - s.gt[0]).sum(0).max() > 0.3
    # double blur: frames k-1 and k, the second half of 2N times; the first frame is skipped
    dbl = list(benchmark_samples(root, build_format("double_blur"), (48, 64)))
    assert len(dbl) == 3 and dbl[0].sample_id.endswith("00000002")
    assert dbl[0].times.min() > 0.5 and len(dbl[0].times) == 8


def test_tbd_layout_adapter_with_gt_txt(tmp_path):
    from fmolab.evaluation.benchmark_data import benchmark_samples, detect_kind

    root = write_fake_benchmark(tmp_path / "TbD", "tbd", n_frames=3)
    assert detect_kind(root) == "tbd"
    s = list(benchmark_samples(root, build_format("background_blur"), (48, 64), sub_steps=5))
    assert [x.sample_id for x in s] == ["disc_flying/00000000", "disc_flying/00000001", "disc_flying/00000002"]
    np.testing.assert_allclose(s[1].gt_traj[0], disc_position(8), atol=1e-3)
    assert len(s[1].times) == 40  # 8 sub-frames x 5 averaged renders


def test_oracle_on_shards_scores_perfectly(session_home):
    """Renders equal to the ground truth: PSNR capped, SSIM 1, TIoU 1 (checks the shard adapter end to end)."""
    from fmo_fakes import tiny_model_config
    from fmolab.data import build_dataset, to_device, write_synthetic_dataset
    from fmolab.evaluation.scoring import score
    from fmolab.evaluation.samples import shard_samples

    data = write_synthetic_dataset(session_home / "eval-oracle", num_sequences=4, width=64, height=48, seed=3)
    cfg = tiny_model_config(session_home, "double_blur", {"data.train": data})
    ds = build_dataset(cfg, "all")

    class Oracle:
        config, source, input_format = cfg, "oracle", build_format("double_blur")
        frames = None

        def input_size(self, h, w):
            return h, w

        def render(self, inputs, times):
            return self.frames[None]

    oracle = Oracle()
    for i, sample in enumerate(shard_samples(cfg, data, max_samples=3)):
        oracle.frames = to_device(ds[i])["frames"].numpy()
        row = score(oracle, sample)
        assert row["model_psnr"] == 100.0 and row["model_ssim"] == pytest.approx(1.0)
        assert row["model_tiou"] == pytest.approx(1.0) and row["model_reversed"] == 0.0
        assert row["im_psnr"] < 100 and math.isnan(row["bg_tiou"])


# ---------------------------------------------------------------- fmolab evaluate


@pytest.fixture(scope="module")
def eval_home(session_home):
    import os

    os.environ.pop("MLFLOW_TRACKING_URI", None)  # this module's own store
    home = session_home / "eval-cli"
    home.mkdir(exist_ok=True)
    uri = registered_model(home, "eval-tiny", "test", "double_blur")
    return home, uri


def test_evaluate_cli_on_shards_logs_to_mlflow(eval_home, capsys):
    import mlflow

    from fmolab.cli import main
    from fmolab.data import write_synthetic_dataset

    home, uri = eval_home
    data = write_synthetic_dataset(home / "shards", num_sequences=4, width=64, height=48, seed=5)
    out = home / "eval-shards"
    assert main(["evaluate", "--model", uri, "--data", str(data), "--out", str(out), "--max", "3",
                 "--num-frames", "4", "--work-dir", str(home)]) == 0
    printed = capsys.readouterr().out
    assert "model" in printed and "bg" in printed and "im" in printed
    rows = list(csv.DictReader(open(out / "samples.csv")))
    assert len(rows) == 3 and {"model_tiou", "model_psnr", "bg_psnr", "im_ssim", "model_middle_psnr"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_samples"] == 3 and summary["dataset_kind"] == "shards" and summary["model_uri"] == uri
    assert 0 <= summary["model"]["tiou"] <= 1 and summary["bg"]["tiou"] is None
    assert summary["im"]["psnr"] > 10
    exp = mlflow.get_experiment_by_name("fmolab-eval")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    run = runs[0]
    assert run.data.tags["model_uri"] == uri and "psnr" in run.data.metrics and "bg/psnr" in run.data.metrics
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"samples.csv", "summary.json"} <= arts
    # the data as the run's dataset input (the manifest's hash, the rows it holds), the command as Source
    (inp,) = run.inputs.dataset_inputs
    manifest_sha1 = hashlib.sha1((data / "manifest.json").read_bytes()).hexdigest()
    assert inp.dataset.digest == manifest_sha1[:36] and json.loads(inp.dataset.profile)["num_rows"] == 4
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "evaluation"
    assert run.data.tags["mlflow.source.name"] == "fmolab evaluate"
    exp_tags = mlflow.get_experiment_by_name("fmolab-eval").tags
    assert exp_tags["mlflow.experimentKind"] == "custom_model_development" and "evaluations" in exp_tags["mlflow.note.content"]


def test_evaluate_on_fake_falling_objects_and_tbd(eval_home, tmp_path):
    from fmolab.evaluation.evaluate import evaluate
    from fmolab.inference.predictor import load_predictor

    home, uri = eval_home
    predictor = load_predictor(uri)  # double blur
    falling = write_fake_benchmark(tmp_path / "falling_objects", "falling", n_frames=3)
    s = evaluate(predictor, falling, tmp_path / "out-falling")
    assert s["dataset_kind"] == "falling" and s["num_samples"] == 2  # first frame has no predecessor
    assert 0 <= s["model"]["tiou"] <= 1 and math.isfinite(s["model"]["psnr"])
    assert s["im"]["psnr"] > s["bg"]["psnr"] - 20  # both baselines computed
    bb = load_predictor(str(checkpoint_model(tmp_path / "bb", "background_blur")))
    tbd = write_fake_benchmark(tmp_path / "TbD", "tbd", n_frames=2)
    s2 = evaluate(bb, tbd, tmp_path / "out-tbd", kind="tbd", sub_steps=2)
    assert s2["num_samples"] == 2 and math.isfinite(s2["model"]["ssim"])


def test_cluster_scoring_gives_the_numbers_of_local_scoring(eval_home, tmp_path, ray_local):
    """--workers: model actors through Ray Data score the same samples to the same values, rows as Parquet."""
    import pyarrow.parquet as pq

    from fmolab.data import write_synthetic_dataset
    from fmolab.evaluation.evaluate import evaluate
    from fmolab.inference.predictor import load_predictor

    home, uri = eval_home
    data = write_synthetic_dataset(tmp_path / "shards", num_sequences=6, width=64, height=48, seed=9)
    predictor = load_predictor(uri)
    here = evaluate(predictor, data, tmp_path / "local", num_frames=4)
    there = evaluate(predictor, data, tmp_path / "cluster", num_frames=4, workers=2)
    for method in ("model", "bg", "im"):
        for metric, value in here[method].items():
            assert there[method][metric] == pytest.approx(value, rel=1e-6, nan_ok=True), (method, metric)
    table = pq.read_table(tmp_path / "cluster" / "samples")
    local_rows = list(csv.DictReader(open(tmp_path / "local" / "samples.csv")))
    assert table.num_rows == len(local_rows) == 6
    assert sorted(table.column("sample").to_pylist()) == sorted(r["sample"] for r in local_rows)
    assert json.loads((tmp_path / "cluster" / "summary.json").read_text())["workers"] == 2


def test_evaluate_bad_data_is_a_clear_error(eval_home, tmp_path, capsys):
    from fmolab.cli import main

    home, uri = eval_home
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--model", uri, "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"),
                 "--work-dir", str(home), "--no-log"]) == 2
    assert "imgs/" in capsys.readouterr().err and not (tmp_path / "o").exists()


# ---------------------------------------------------------------- the benchmark's own protocol


def test_protocol_ground_truth_rules_known_values():
    from fmolab.evaluation.protocol import extend_to_aspect, extend_uniform, fill_positions

    nan = float("nan")
    filled = fill_positions(np.array([[nan, nan], [1.0, 1.0], [nan, nan], [3.0, 5.0], [nan, nan]]))
    # a leading gap: the first known; inside: the mean of both neighbours; at the end: the previous
    np.testing.assert_array_equal(filled, [[1, 1], [1, 1], [2, 3], [3, 5], [3, 5]])
    # 20 x 40 box + 8 in height at aspect 3/4: h2 = ceil(ceil(28 / .75) * .75) = 29, w2 = int(29 / .75) = 38;
    # 9 more rows split round(4.5) = 4 above (numpy rounds half to even), 5 below; 2 fewer columns: -1 left
    assert extend_to_aspect(np.array([10, 20, 30, 60]), 8, 0.75, (100, 100)).tolist() == [6, 21, 35, 59]
    assert extend_uniform(np.array([2, 3, 90, 95]), 5, (96, 99)).tolist() == [0, 0, 95, 98]  # last row/col - 1


def test_protocol_scores_known_values():
    from fmolab.evaluation.protocol import aggregate_strict, appearance, tiou

    gt = np.array([[10.0, 12.0, 14.0], [5.0, 5.0, 5.0]])
    assert tiou(gt, gt[:, ::-1], 3) == pytest.approx(1.0)  # the better order
    assert np.isnan(tiou(gt, np.array([[10.0, np.nan, 14.0], [5.0, 5.0, 5.0]]), 3))  # a missing position
    rng = np.random.default_rng(2)
    g = rng.random((2, 3, 12, 12))
    e = 0.5 * g + 0.25  # half the range of the ground truth
    psnr, ssim = appearance(g, e)
    assert ssim == pytest.approx(np.mean([metrics.ssim_image(a, b, float(e.max() - e.min())) for a, b in zip(e, g)]))
    assert ssim != pytest.approx(metrics.ssim(e, g))  # fmolab's default takes the ground truth's range
    assert appearance(g, g)[0] == 100.0 and psnr == pytest.approx(
        20 * np.log10(1 / np.sqrt(np.mean((g.astype(np.float32) - e.astype(np.float32)) ** 2))))
    rows = [{"sequence": s, **{f"{m}_{k}": v for m in ("model", "bg", "im") for k, v in
                               (("tiou", t), ("psnr", 20.0), ("ssim", 0.5), ("middle_psnr", np.nan))},
             "model_reversed": 0.0} for s, t in (("a", 0.6), ("a", np.nan), ("b", 0.8), ("b", 0.4))]
    summary = aggregate_strict(rows)
    assert summary["model"]["tiou"] == pytest.approx(0.6)  # sequence a drops out; b averages (0.8 + 0.4) / 2


def test_protocol_benchmark_end_to_end_and_refusals(tmp_path, capsys):
    from fmolab.cli import main

    bb = checkpoint_model(tmp_path / "bb", "background_blur")
    falling = write_fake_benchmark(tmp_path / "falling_objects", "falling", n_frames=3)
    out = tmp_path / "out"
    assert main(["evaluate", "--model", str(bb), "--data", str(falling), "--protocol", "benchmark", "--out", str(out),
                 "--no-log", "--work-dir", str(tmp_path), "--size", "64x48"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "benchmark" and summary["num_samples"] == 3
    assert summary["bg"]["tiou"] == 0.0 and summary["im"]["tiou"] == 0.0  # the benchmark's baselines
    assert math.isfinite(summary["model"]["psnr"]) and 0 <= summary["model"]["ssim"] <= 1
    double = checkpoint_model(tmp_path / "db", "double_blur")
    assert main(["evaluate", "--model", str(double), "--data", str(falling), "--protocol", "benchmark", "--no-log",
                 "--out", str(tmp_path / "o2"), "--work-dir", str(tmp_path)]) == 2
    assert "one-image methods" in capsys.readouterr().err


def test_protocol_fills_gaps_of_gt_bbox_as_the_benchmark(tmp_path):
    """A NaN row of gt_bbox is a gap the benchmark fills from its neighbours; only the padding before
    the ROI is zero (turning the NaN into (0, 0) made TIoU 0.67 where the benchmark gives 0.72)."""
    from fmolab.evaluation.benchmark_data import BenchmarkSequence
    from fmolab.evaluation.protocol import frame_truth

    root = write_fake_benchmark(tmp_path / "falling_objects", "falling", n_frames=3)
    bbox = root / "gt_bbox" / "disc_GTgamma.txt"
    lines = bbox.read_text().splitlines()
    lines[8 + 3] = "NaN NaN NaN NaN"  # file frame 2 (k = 1), sub-frame 3
    bbox.write_text("\n".join(lines) + "\n")
    seq = BenchmarkSequence(root / "imgs" / "disc_GTgamma", 0)
    traj, _, box = frame_truth(seq, 1)
    x2, y2 = disc_position(2 * 8 + 2)
    x4, y4 = disc_position(2 * 8 + 4)
    np.testing.assert_allclose(traj[:, 3], [(x2 + x4) / 2 + 0.5, (y2 + y4) / 2 + 0.5], atol=1e-3)
    assert box.min() > 5  # no (0, 0) position pulls the box to the corner


def test_high_speed_ground_truth_starting_late_is_found(tmp_path):
    """imgs_gt numbered from 1 with the ROI starting later: the first sub-frame is (start * n + 1), not
    00000001.png, and the benchmark scores it."""
    from fmolab.evaluation.benchmark_data import BenchmarkSequence

    root = write_fake_benchmark(tmp_path / "falling_objects", "falling", n_frames=4)
    (root / "roi_frames.txt").write_text("1 3\n")  # frames from 00000002 (no 00000000.png: start + 1)
    for i in range(1, 17):  # no sub-frames before the ROI
        (root / "imgs_gt" / "disc_GTgamma" / f"{i:08d}.png").unlink()
    seq = BenchmarkSequence(root / "imgs" / "disc_GTgamma", 0)
    assert seq.start == 2 and seq.use_hs
    gt = seq.gt_subframes(0, (48, 96))
    assert gt is not None and gt.shape == (8, 3, 48, 96)
