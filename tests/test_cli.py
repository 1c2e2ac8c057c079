"""The CLI as a user meets it: --help everywhere, clear errors and non-zero exits on bad input."""
import subprocess
import sys

import pytest

from fmolab.cli import build_parser, main

COMMANDS = ["demo", "render", "dataset", "train", "tune", "evaluate", "deblur", "runs", "submit", "jobs", "import",
            "export", "list"]


def test_every_stage_has_help(capsys):
    for cmd in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([cmd, "--help"])
        assert exit_.value.code == 0
        assert "usage: fmolab " + cmd in capsys.readouterr().out


def test_bad_config_gives_clear_message_and_nonzero_exit(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fmolab.cli", "train", "--work-dir", str(tmp_path),
                           "--print-config", "train.lrr=0.1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown key 'train.lrr'" in proc.stderr and "did you mean 'lr'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_file_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    assert main(["render", "-c", str(bad), "--work-dir", str(tmp_path), "--print-config"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["render", "-c", str(tmp_path / "missing.yaml"), "--work-dir", str(tmp_path), "--print-config"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_print_config_resolves_preset_and_overrides(tmp_path, capsys):
    assert main(["train", "--preset", "demo", "--work-dir", str(tmp_path), "--print-config", "train.steps=9"]) == 0
    out = capsys.readouterr().out
    assert "steps: 9" in out and "encoder: tiny" in out


def test_unknown_preset_is_rejected_naming_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["train", "--preset", "nope"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "double_blur" in err and "self_supervised" in err


def test_presets_are_read_from_their_folder():
    from fmolab.config import PRESET_DIR, preset_names, preset_path

    names = preset_names()
    assert names == sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    assert {"demo", "background_blur", "double_blur", "multi_object", "self_supervised"} <= set(names)
    with pytest.raises(Exception, match="unknown preset 'nope'; known: background_blur"):
        preset_path("nope")


@pytest.mark.parametrize("flags, fragment", [
    (["--trials", "0"], "--trials = 0: must be >= 1"),
    (["--reduction-factor", "1"], "--reduction-factor = 1: must be >= 2"),
    (["--grace-steps", "-5"], "--grace-steps = -5: must be >= 0"),
    (["--study-storage", "optuna.db"], "--study-storage = 'optuna.db': must be a database URL"),
])
def test_bad_search_options_are_refused_before_anything_starts(tmp_path, capsys, flags, fragment):
    # the space does not even exist: the options are checked first, in the config tree's style
    assert main(["tune", "--space", str(tmp_path / "none.yaml"), "--work-dir", str(tmp_path), *flags]) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "ray").exists()
