import pytest

from fmolab.config import Config, ConfigError, config_from_dict, flatten, load_config, to_dict


def test_defaults_validate_and_round_trip():
    cfg = load_config()
    assert isinstance(cfg, Config)
    again = config_from_dict(to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)


def test_yaml_files_merge_in_order_then_overrides(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("train:\n  lr: 0.01\n  steps: 5\nmodel:\n  encoder: tiny\n")
    b = tmp_path / "b.yaml"
    b.write_text("train:\n  steps: 7\n")
    cfg = load_config([a, b], ["train.batch_size=3", "loss.train=[AlphaDice, 'RGBL1:mode=gt']"])
    assert cfg.train.lr == 0.01 and cfg.train.steps == 7 and cfg.train.batch_size == 3
    assert cfg.model.encoder == "tiny"
    assert cfg.loss.train == ["AlphaDice", "RGBL1:mode=gt"]


def test_override_value_types():
    cfg = load_config([], ["train.lr=1e-4", "train.use_gpu=true", "render.blurs={full: [0, 1]}"])
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.use_gpu is True
    assert cfg.render.blurs == {"full": [0.0, 1.0]}  # blur tables are replaced whole, not merged
    # key= is the empty string (e.g. no registration), not YAML's null
    assert load_config([], ["tracking.register_as=", "runtime.storage= "]).tracking.register_as == ""


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(ConfigError) as err:
        load_config([], ["train.lrr=1"])
    msg = str(err.value)
    assert "train.lrr" in msg and "did you mean 'lr'" in msg and "batch_size" in msg


def test_unknown_key_in_file_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("trian:\n  lr: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config([f])
    assert str(f) in str(err.value) and "'trian'" in str(err.value) and "train" in str(err.value)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.steps=abc", "expected int"),
        ("train.workers=1.5", "expected int"),
        ("train.precision=fp8", "must be one of"),
        ("train.lr=-1", "must be > 0"),
        ("render.blurs={full: [0.5, 0.2]}", "0 <= start < end <= 1"),
        ("render.trajectory.margin=0.7", "render.trajectory.margin"),
        ("data.objects_per_image=[3, 1]", "data.objects_per_image"),
        ("train", "not of the form"),
        ("tracking.alias=Latest", "reserved by MLflow"),  # MLflow refuses it only at registration, after training
        ("tracking.alias=v2", "reserved by MLflow"),
        ("tracking.alias=my best", "letters, digits"),
    ],
)
def test_bad_values_are_explained(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config([], [override])
    assert fragment in str(err.value)


def test_a_bad_cache_bound_in_the_environment_is_refused_with_the_config(monkeypatch):
    monkeypatch.setenv("FMOLAB_CACHE_GB", "ten")
    with pytest.raises(ConfigError, match="FMOLAB_CACHE_GB .*'ten': must be a number"):
        load_config()
    assert load_config([], ["runtime.cache_gb=2"]).runtime.cache_gb == 2  # the key wins over the variable


def test_job_spec_embeds_config(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("entrypoint: fmolab train\nconfig:\n  variant: multi_object\n  train:\n    steps: 3\n")
    cfg = load_config([spec])
    assert cfg.variant == "multi_object" and cfg.train.steps == 3


def test_flatten_keeps_blur_tables_as_values():
    flat = flatten(to_dict(load_config()))
    assert flat["train.lr"] == 1e-3
    assert flat["render.blurs"]["full"] == [0.0, 1.0]
    assert flat["render.trajectory.margin"] == 0.1


def test_work_dir_and_tracking_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("FMOLAB_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config([], ["render.name=x"])
    assert cfg.dataset_dir == str(tmp_path / "datasets" / "x")
    assert cfg.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    # outputs may live elsewhere, also in object storage; the work folder stays this machine's
    remote = load_config([], ["runtime.storage=s3://bucket/fmolab/", "render.name=x", "train.run_name=r"])
    assert remote.dataset_dir == "s3://bucket/fmolab/datasets/x" and remote.work_dir == tmp_path
    assert remote.output("ray_results", "r") == "s3://bucket/fmolab/ray_results/r"
    assert remote.backgrounds_dir == "s3://bucket/fmolab/datasets/x/backgrounds"
    with pytest.raises(ConfigError, match="runtime.work_dir .* must be a local folder.*runtime.storage=s3://b"):
        load_config([], ["runtime.work_dir=s3://b/x"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert load_config().tracking_uri == "http://127.0.0.1:9"


def test_overrides_of_one_section_accumulate():
    # regression: sections whose values are all lists (loss) were once replaced whole per override
    cfg = load_config([], ["loss.train=[AlphaDice]", "loss.compare=[DeFMOSupervised]", "render.blurs={a: [0, 1]}",
                           "render.blurs={b: [0, 0.5]}"])
    assert cfg.loss.train == ["AlphaDice"] and cfg.loss.compare == ["DeFMOSupervised"]
    assert cfg.render.blurs == {"b": [0.0, 0.5]}


def test_a_yaml_file_builds_on_the_preset_it_names(tmp_path):
    from fmolab.config import ConfigError, load_config, preset_path

    mine = tmp_path / "mine.yaml"
    mine.write_text("preset: demo\ntrain:\n  lr: 0.0005\n")
    cfg = load_config([mine])
    assert cfg.train.lr == 0.0005 and cfg.render.name == "demo" and cfg.train.time_limit == 330  # the demo's rest
    assert load_config([preset_path("demo_double_blur")]).data.format == "double_blur"
    mine.write_text("preset: nope\n")
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config([mine])


def test_a_scale_layer_on_any_preset(tmp_path):
    from fmolab.config import ConfigError, load_config, preset_path, scale_names

    assert "small" in scale_names()
    cli = load_config([preset_path("background_blur"), preset_path("small")])  # --preset background_blur --scale small
    assert (cli.variant, cli.render.width, cli.render.height, cli.model.encoder) == ("background_blur", 64, 48, "tiny")
    assert cli.data.format == "background_blur:contrastive=true" and cli.data.frames_per_sample == 8
    f = tmp_path / "mine.yaml"
    f.write_text("preset: [background_blur, small]\ntrain:\n  lr: 0.002\n")
    mine = load_config([f])
    assert mine.train.lr == 0.002 and mine.render.width == 64 and mine.variant == "background_blur"
    f.write_text("preset: [double_blur, smal]\n")
    with pytest.raises(ConfigError, match="unknown preset 'smal'.*scales: small"):
        load_config([f])


def test_a_checked_tree_is_frozen_and_changed_only_through_a_checked_copy():
    import dataclasses

    from fmolab.config import derive

    cfg = load_config([], ["train.steps=7"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.steps = 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.monitor.metric = "val/loss"
    new = derive(cfg, {"train.steps": 8, "train.monitor.metric": "val/loss", "train.monitor.mode": "min"})
    assert (new.train.steps, new.train.monitor.metric, new.train.monitor.mode) == (8, "val/loss", "min")
    assert (cfg.train.steps, cfg.train.monitor.metric) == (7, "val/tiou")  # the original is untouched
    # every change is checked as a loaded tree is: a search's monitor can no longer skip its rule
    with pytest.raises(ConfigError, match=r"train.monitor.metric.*'loss'.*must be a validation metric"):
        derive(cfg, {"train.monitor.metric": "loss"})
    with pytest.raises(ConfigError, match=r"train.steps = 0: must be >= 1"):
        derive(cfg, {"train.steps": 0})
    with pytest.raises(ConfigError, match="unknown key 'train.stepz'"):
        derive(cfg, {"train.stepz": 3})
