"""Every ready configuration (variant) builds its parts and takes a real training step."""
import pytest
import torch

from fmolab.config import load_config, preset_names, preset_path
from fmolab.data import build_dataset, collate, in_channels
from fmolab.data.synthetic import write_synthetic_dataset
from fmolab.losses import LossSet
from fmolab.models import build_model


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("toy"), num_sequences=8, num_objects=4, seed=3)


@pytest.mark.parametrize("preset", preset_names())
def test_preset_takes_a_training_step(preset, toy):
    # the preset's format and losses, on a tiny encoder and the toy data (resnet50 is for GPUs); the
    # official network is only itself (resnet50 + the published renderer)
    official = load_config([preset_path(preset)]).model.renderer == "defmo_official"
    cfg = load_config([preset_path(preset)], [f"data.train={toy}", "data.frames_per_sample=4",
                                              *([] if official else ["model.encoder=tiny"])])
    ds = build_dataset(cfg, "train")
    batch = collate([ds[0], ds[1]])
    model = build_model(cfg.model, in_channels(cfg.data.format))
    losses = LossSet(cfg.loss.train, cfg.loss.compare)
    out = model(batch["inputs"], batch["times"], batch.get("contrast_inputs"))
    total, values = losses(batch, out)
    assert torch.isfinite(total) and set(values) >= {l.name for l in losses.compare_losses}
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    if "contrastive=true" in cfg.data.format:
        assert "contrast_latent" in out
