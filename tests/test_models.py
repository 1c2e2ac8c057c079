"""Models: shapes per preset and norm, stride-16 latent, size errors, pretrained loading, round trip."""
import io
import logging

import pytest
import torch
import torch.nn.functional as F

from fmolab.config import ModelConfig
from fmolab.models import ENCODERS, NORMS, RENDERERS, DeFMO, adapt_first_conv, build_model, load_pretrained, make_norm
from fmolab.models.encoder import resnet18


def test_registries_list_presets():
    assert {"resnet18", "resnet50", "tiny"} <= set(ENCODERS.names())
    assert {"defmo", "defmo_atrous"} <= set(RENDERERS.names())


@pytest.mark.parametrize("norm", NORMS)
def test_tiny_shapes_for_every_norm(norm):
    model = DeFMO(6, "tiny", "defmo", norm).train()
    out = model(torch.rand(2, 6, 32, 48), torch.rand(2, 3))
    assert out["renders"].shape == (2, 3, 4, 32, 48)
    assert out["latent"].shape == (2, 256, 2, 3)
    assert 0 <= out["renders"].min() and out["renders"].max() <= 1
    out["renders"].mean().backward()
    assert model.encoder.conv1.weight.grad is not None


@pytest.mark.parametrize("encoder,latent", [("resnet18", 512), ("resnet50", 2048), ("tiny:width=8", 128)])
def test_presets_latent_at_one_sixteenth(encoder, latent):
    model = DeFMO(6, encoder, "defmo").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 6, 64, 64), torch.tensor([0.25, 0.75]))  # times [T] broadcast
    assert out["latent"].shape == (1, latent, 4, 4)
    assert out["renders"].shape == (1, 2, 4, 64, 64)


def test_atrous_renderer_and_contrast_latent():
    model = DeFMO(3, "tiny", "defmo_atrous")
    assert any(type(m).__name__ == "AtrousBlock" for m in model.renderer.modules())
    x = torch.rand(2, 3, 32, 32)
    out = model(x, torch.rand(2, 4), contrast_inputs=x.flip(-1))
    assert out["contrast_latent"].shape == out["latent"].shape
    assert DeFMO(3, "tiny", "defmo:atrous=2").renderer.up[0][2].__class__.__name__ == "AtrousBlock"


def test_time_folding_matches_concatenated_time_channel():
    """The stem splits conv(latent ++ t) into conv(latent) + t*conv(1); it must equal the naive form."""
    torch.manual_seed(0)
    model = DeFMO(3, "tiny", "defmo", "group").eval()
    r = model.renderer
    latent, times = torch.rand(2, 256, 3, 4), torch.rand(2, 5)
    fast = model.render(latent, times)
    stacked = latent[:, None].expand(-1, 5, -1, -1, -1).flatten(0, 1)
    tmap = times.flatten()[:, None, None, None].expand(-1, 1, 3, 4)
    x = r.relu(r.stem_norm(F.conv2d(torch.cat([stacked, tmap], 1), r.stem.weight, padding=1)))
    naive = torch.sigmoid(r.shuffle(r.head(r.up(x)))).unflatten(0, (2, 5))
    assert torch.allclose(fast, naive, atol=1e-5)
    assert not torch.allclose(fast[:, 0], fast[:, 1])  # time matters


def test_non_divisible_size_names_size_and_nearest_valid():
    model = DeFMO(6, "tiny")
    with pytest.raises(ValueError, match=r"100x130.*height 100 -> 96 or 112.*width 130 -> 128 or 144"):
        model(torch.rand(1, 6, 100, 130), torch.rand(1, 2))
    with pytest.raises(ValueError, match="built for 6"):
        model(torch.rand(1, 3, 32, 32), torch.rand(1, 2))


def test_make_norm_groups_divide_channels():
    assert make_norm("group", 64, 8).num_groups == 8  # thesis 4.1 renderer bottlenecks
    assert make_norm("group", 16, 4).num_groups == 4
    assert make_norm("group", 2048).num_groups == 32
    assert make_norm("group", 24).num_groups == 24 and make_norm("group", 48).num_groups == 24
    with pytest.raises(ValueError, match="choose one of"):
        make_norm("weird", 8)


def _torchvision_style_state(in_ch=3):
    """A resnet18 ImageNet-like state dict with torchvision names (BatchNorm + fc)."""
    src = resnet18(in_ch, norm="batch")
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in src.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    return state


def test_pretrained_loading_maps_names_and_copies_first_layer(tmp_path, caplog):
    state = _torchvision_style_state()
    path = tmp_path / "resnet18.pth"
    torch.save({"module." + k: v for k, v in state.items()}, path)  # DDP-style prefix must be stripped
    for norm in ("batch", "group"):
        enc = ENCODERS.build("resnet18", in_channels=6, norm=norm)
        with caplog.at_level(logging.INFO, logger="fmolab.models"):
            report = load_pretrained(enc, path)
        assert report["adapted"] == ["conv1.weight"]
        assert "fc.weight" in report["unexpected"] and not report["missing"]
        w = enc.conv1.weight.detach()
        half = state["conv1.weight"] / 2
        assert torch.allclose(w[:, :3], half) and torch.allclose(w[:, 3:], half)
        assert torch.equal(enc.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
        assert torch.equal(enc.bn1.weight, state["bn1.weight"])  # BN affine -> GN affine too
        if norm == "group":
            assert "bn1.running_mean" in report["ignored"] and not report["skipped"]
        else:
            assert torch.equal(enc.bn1.running_mean, state["bn1.running_mean"])
    # stacking the same image twice reproduces the single-image first-layer response
    x = torch.rand(1, 3, 16, 16)
    single = F.conv2d(x, state["conv1.weight"], stride=2, padding=3)
    assert torch.allclose(enc.conv1(torch.cat([x, x], 1)), single, rtol=1e-4, atol=1e-4)
    assert "loaded" in caplog.text


def test_pretrained_empty_path_logs_random_init_and_bad_file_fails(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="fmolab.models"):
        model = build_model(ModelConfig(encoder="tiny", pretrained=""), 6)
    assert "no pretrained weights given: random init" in caplog.text
    assert isinstance(model, DeFMO)
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="no tensor matches"):
        load_pretrained(model.encoder, tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        load_pretrained(model.encoder, tmp_path / "missing.pt")


def test_adapt_first_conv_odd_channel_counts():
    w = torch.randn(8, 3, 7, 7)
    out = adapt_first_conv(w, 4)
    assert out.shape == (8, 4, 7, 7) and torch.allclose(out[:, 3], w[:, 0] * 3 / 4)
    assert torch.allclose(adapt_first_conv(w, 9).sum(1), w.sum(1), atol=1e-5)


def test_from_config_and_state_dict_round_trip_weights_only():
    cfg = ModelConfig(encoder="tiny:width=8", renderer="defmo_atrous", norm="batch")
    model = DeFMO.from_config(cfg, 6).eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    rebuilt = DeFMO(**model.hparams).eval()
    rebuilt.load_state_dict(torch.load(buf, weights_only=True))
    x, t = torch.rand(1, 6, 32, 32), torch.rand(1, 3)
    with torch.no_grad():
        assert torch.equal(model(x, t)["renders"], rebuilt(x, t)["renders"])
    assert model.hparams == {"in_channels": 6, "encoder": "tiny:width=8", "renderer": "defmo_atrous", "norm": "batch",
                             "time_convention": "centers"}


def test_bad_encoder_spec_is_spec_error():
    from fmolab.registry import SpecError
    with pytest.raises(SpecError, match="resnet50"):
        DeFMO(6, "resnet51")
    with pytest.raises(SpecError, match="takes no argument 'widht'"):
        DeFMO(6, "tiny:widht=8")


def test_paper_renderer_widths_and_group_counts():
    """Thesis 2.2/4.1: 2049 -> 1024 channels; GroupNorm 32, but 8 and 4 in the 64/16-channel bottlenecks."""
    r = RENDERERS.build("defmo", latent_channels=2048, norm="group")
    assert r.stem.in_channels == 2049 and r.stem.out_channels == 1024
    mids = [(m.bn1.num_channels, m.bn1.num_groups) for m in r.modules() if type(m).__name__ == "Bottleneck"]
    assert mids == [(64, 8), (16, 4)]
    assert sum(isinstance(m, torch.nn.PixelShuffle) for m in r.modules()) == 4


def test_time_options_of_the_renderer():
    """``time_init`` scales the time channel's initial stem weights (thesis 4.6); ``time_stages`` adds the
    time at every upsampling stage: the same parameters otherwise, and the renders depend on t at once."""
    torch.manual_seed(0)
    plain = DeFMO(6, "tiny", "defmo")
    torch.manual_seed(0)
    scaled = DeFMO(6, "tiny", "defmo:time_init=8")
    w0, w1 = plain.renderer.stem.weight, scaled.renderer.stem.weight
    torch.testing.assert_close(w1[:, -1:], 8 * w0[:, -1:])
    torch.testing.assert_close(w1[:, :-1], w0[:, :-1])
    staged = DeFMO(6, "tiny", "defmo:time_stages=true")
    extra = {k for k in staged.state_dict()} - {k for k in plain.state_dict()}
    assert extra == {"renderer.time_vectors.0", "renderer.time_vectors.1", "renderer.time_vectors.2"}
    x = torch.rand(2, 6, 48, 64)
    with torch.no_grad():
        out = staged(x, staged.times(4))["renders"]
    assert out.shape == (2, 4, 4, 48, 64)
    assert (out[:, 0] - out[:, -1]).abs().mean() > 1e-3
