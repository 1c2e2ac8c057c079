"""The official DeFMO network, against ``kornia.feature.DeFMO`` as the oracle: seeded random weights in
the official two-file format, imported through the CLI, must render what kornia renders (also at a
size not divisible by 16), and export back to the same files bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

kornia = pytest.importorskip("kornia")


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """kornia's DeFMO with random weights and BatchNorm statistics of one real batch (so outputs are
    neither saturated nor flat), saved as the official files."""
    torch.manual_seed(0)
    net = kornia.feature.DeFMO(pretrained=False)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0  # running statistics := those of the next batch
            m.weight.data.uniform_(0.8, 1.2)
            m.bias.data.uniform_(-0.1, 0.1)
    net.train()
    with torch.no_grad():
        net(torch.rand(2, 6, 64, 96))
    net.eval()
    folder = tmp_path_factory.mktemp("official")
    torch.save(net.encoder.state_dict(), folder / "encoder_best.pt")
    torch.save(net.rendering.state_dict(), folder / "rendering_best.pt")
    return net, folder


def test_imported_weights_render_what_kornia_renders(oracle, work, tmp_path, capsys):
    import mlflow

    from fmolab.cli import main

    net, folder = oracle
    assert main(["import", "defmo", str(folder / "encoder_best.pt"), str(folder / "rendering_best.pt"),
                 "--register", "defmo-oracle", "--alias", "oracle", "--work-dir", str(work)]) == 0
    assert "models:/defmo-oracle@oracle" in capsys.readouterr().out
    model = mlflow.pyfunc.load_model("models:/defmo-oracle@oracle")
    config = model.unwrap_python_model().config
    assert (config.model.renderer, config.model.norm, config.model.time_convention) == ("defmo_official", "batch",
                                                                                          "endpoints")
    rng = np.random.default_rng(1)
    for h, w in ((64, 96), (72, 100)):  # the second is not a multiple of 16: kornia renders 80x112
        x = rng.random((2, 6, h, w), dtype=np.float32)
        with torch.no_grad():
            ref = net(torch.from_numpy(x))
        assert ref.shape[-2:] == (-(-h // 16) * 16, -(-w // 16) * 16)
        ours = model.predict(x, params={"num_frames": 24})  # kornia renders linspace(0, 1, 24)
        assert ours.shape == (2, 24, 4, h, w)
        np.testing.assert_allclose(ours, ref[..., :h, :w].numpy(), atol=1e-5, rtol=0)
        assert 0.05 < ref[..., :h, :w].std() < 0.3  # a real comparison: neither saturated nor flat

    # and back: the exported files load strictly into kornia, bit for bit the originals
    out = tmp_path / "exported"
    assert main(["export", "defmo", "--model", "models:/defmo-oracle@oracle", "--out", str(out),
                 "--work-dir", str(work)]) == 0
    again = kornia.feature.DeFMO(pretrained=False)
    again.encoder.load_state_dict(torch.load(out / "encoder_best.pt", weights_only=True), strict=True)
    again.rendering.load_state_dict(torch.load(out / "rendering_best.pt", weights_only=True), strict=True)
    for a, b in ((net.encoder, again.encoder), (net.rendering, again.rendering)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_official_files_are_mapped_strictly(oracle, tmp_path):
    from fmolab.models import DeFMO
    from fmolab.models.official import load_official

    net, _ = oracle
    enc, ren = net.encoder.state_dict(), net.rendering.state_dict()
    official = DeFMO(6, "resnet50", "defmo_official", "batch")
    with pytest.raises(ValueError, match="missing tensors net.1.bias, .*net.1.weight"):
        load_official(official, enc, {k: v for k, v in ren.items() if not k.startswith("net.1.")})
    with pytest.raises(ValueError, match="'net.9.extra' is not part of the official DeFMO encoder"):
        load_official(official, {**enc, "net.9.extra": torch.zeros(1)}, ren)
    with pytest.raises(ValueError, match="unexpected tensors net.99.weight"):
        load_official(official, enc, {**ren, "net.99.weight": torch.zeros(1)})
    # GroupNorm would take the BatchNorm affine tensors silently and compute something else: refused
    fmolab_own = DeFMO(6, "resnet50", "defmo", "group")
    with pytest.raises(ValueError, match="model.norm=batch"):
        load_official(fmolab_own, enc, ren)


def test_a_bad_file_is_refused_before_any_work(tmp_path, work, capsys):
    from fmolab.cli import main

    (tmp_path / "enc.pt").write_bytes(b"not a checkpoint")
    code = main(["import", "defmo", str(tmp_path / "enc.pt"), str(tmp_path / "missing.pt"), "--register", "x",
                 "--work-dir", str(work)])
    err = capsys.readouterr().err
    assert code == 2 and "enc.pt is not a PyTorch state dict" in err and "Traceback" not in err


def test_training_mode_normalizes_each_time_step_as_the_official_code(oracle):
    """In training mode the official renderer sees one time step per call, so BatchNorm normalizes each
    time step over the batch alone: fmolab's renders and running statistics must be the same."""
    from fmolab.models import DeFMO
    from fmolab.models.official import load_official

    net, folder = oracle
    ours = DeFMO(6, "resnet50", "defmo_official", "batch", "endpoints")
    load_official(ours, torch.load(folder / "encoder_best.pt", weights_only=True),
                  torch.load(folder / "rendering_best.pt", weights_only=True))
    ref = kornia.feature.DeFMO(pretrained=False)
    ref.load_state_dict(net.state_dict())
    for m in (ours, ref):
        m.train()
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.momentum = 0.5
    x = torch.from_numpy(np.random.default_rng(3).random((2, 6, 64, 96), dtype=np.float32))
    with torch.no_grad():
        want = ref(x)  # [B, 24, 4, H, W] at linspace(0, 1, 24)
        got = ours(x, ours.times(24))["renders"]
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)
    stats = lambda m: [b.running_mean for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)][-3:]
    for a, b in zip(stats(ours.renderer), stats(ref.rendering)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
