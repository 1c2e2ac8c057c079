"""Config and data mistakes are caught on the driver before Ray, MLflow or a worker starts: one line on
stderr, exit 2, no MLflow store created, nothing retried."""
from __future__ import annotations

import time

import pytest

from fmolab.cli import main
from fmolab.data.synthetic import write_synthetic_dataset

TINY = ["model.encoder=tiny", "model.norm=group", "data.format=double_blur", "data.frames_per_sample=4",
        "train.workers=1", "train.steps=2"]


@pytest.fixture(scope="module")
def toy(session_home):
    return write_synthetic_dataset(session_home / "preflight-toy", num_sequences=4, width=64, height=48, seed=2)


@pytest.fixture(scope="module")
def odd_size(session_home):
    return write_synthetic_dataset(session_home / "preflight-odd", num_sequences=4, width=72, height=40, seed=2)


def run_train(work, overrides, capsys):
    t0 = time.time()
    code = main(["train", "--work-dir", str(work), *TINY, *overrides])
    err = capsys.readouterr().err.strip()
    return code, err, time.time() - t0


@pytest.mark.parametrize("overrides, expected", [
    (["loss.train=[Nope]"], ["loss.train", "unknown loss 'Nope'", "Known: AlphaBCE"]),
    (["loss.train=['AlphaDice:wieght=0.5']"], ["loss.train", "no argument 'wieght'", "it takes: weight"]),
    (["train.optimizer=Adamm"], ["train.optimizer", "Adamm"]),
    (["data.format=double_blurr"], ["data.format", "Did you mean 'double_blur'"]),
    (["model.encoder=resnet5"], ["model", "resnet5"]),
])
def test_config_mistakes_fail_in_a_line_before_anything_starts(work, toy, capsys, overrides, expected):
    code, err, seconds = run_train(work, [f"data.train={toy}", *overrides], capsys)
    assert code == 2, err
    assert err.startswith("fmolab train: error:") and len(err.splitlines()) == 1, err
    for part in expected:
        assert part in err, (part, err)
    assert not (work / "mlflow.db").exists()  # no store made as a side effect
    assert seconds < 30


def test_data_mistakes_name_the_folder_and_the_fix(work, toy, odd_size, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    empty = work / "empty"
    empty.mkdir()
    code, err, _ = run_train(work, [f"data.train={empty}"], capsys)
    assert code == 2 and "data.train" in err and str(empty) in err and "no .parquet shards" in err
    assert "fmolab render" in err and len(err.splitlines()) == 1

    code, err, _ = run_train(work, [f"data.train={odd_size}"], capsys)
    assert code == 2 and "72x40 (WxH)" in err and "divisible by 16" in err and "defmo_official" in err
    assert len(err.splitlines()) == 1 and not (work / "mlflow.db").exists()

    # rows with only the full-exposure blur cannot feed a double-blur model
    single = work / "single-blur"
    single.mkdir()
    table = pq.read_table(toy / "shard-00000.parquet")
    i = table.schema.get_field_index("blur_names")
    table = table.set_column(i, "blur_names", pa.array([["full"]] * len(table), type=table.schema.field(i).type))
    pq.write_table(table, single / "shard-00000.parquet")
    code, err, _ = run_train(work, [f"data.train={single}"], capsys)
    assert code == 2 and "reads blurs ['first', 'second']" in err and "the rows have ['full']" in err
    from fmolab.config import load_config
    from fmolab.train.preflight import preflight

    fine = preflight(load_config([], [*TINY, f"data.train={single}", "data.format=single_blur"]))
    assert fine["blurs"] == ["full"] and fine["rows"] == 4  # a format that reads only "full" is fine


def test_print_config_runs_the_preflight(work, toy, capsys):
    assert main(["train", "--work-dir", str(work), *TINY, f"data.train={toy}", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "preflight: {'config': 'format, losses, model, optimizer and scheduler build'}" in out
    assert main(["train", "--work-dir", str(work), *TINY, f"data.train={toy}", "loss.train=[Nope]",
                 "--print-config"]) == 2
    assert "unknown loss 'Nope'" in capsys.readouterr().err


def test_gpu_settings_measured_slow_with_group_norm_are_named_before_the_run(work, toy, caplog):
    """bf16 and channels_last lose with GroupNorm on a GPU (docs/cluster.md): a warning each, the run
    allowed; none with BatchNorm, where they pay."""
    gpu = ["train.use_gpu=true", "train.precision=bf16", "train.channels_last=true"]
    with caplog.at_level("WARNING", logger="fmolab.train"):
        assert main(["train", "--work-dir", str(work), *TINY, f"data.train={toy}", *gpu, "--print-config"]) == 0
        said = [r.getMessage() for r in caplog.records if r.name == "fmolab.train"]
        assert [m[:40] for m in said] == ["train.channels_last=true trained at 0.63",
                                          "train.precision=bf16 trained at 0.98x th"], said
        caplog.clear()
        assert main(["train", "--work-dir", str(work), *TINY, f"data.train={toy}", *gpu, "model.norm=batch",
                     "--print-config"]) == 0
        assert not [r for r in caplog.records if r.name == "fmolab.train"]


def test_every_preset_passes_on_data_it_fits(toy):
    from fmolab.config import load_config, preset_names, preset_path
    from fmolab.train.preflight import preflight

    for name in preset_names():
        cfg = load_config([preset_path(name)], [f"data.train={toy}"])
        assert preflight(cfg)["rows"] == 4, name  # synthetic rows carry full, first and second
