"""Losses on hand-made tensors with known answers."""
import pytest
import torch

from fmolab.compose import blur_from_frames, composite, frame_times
from fmolab.losses import LOSSES, LossSet, binarize_st, resolve_order
from fmolab.registry import SpecError

B, T, H, W = 2, 6, 24, 32


def moving_square(b=B, t=T, h=H, w=W, size=6, step=3, seed=0):
    """Straight-alpha RGBA frames [B,T,4,H,W] of a coloured square moving right by ``step`` px per frame."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.zeros(b, t, 4, h, w)
    for i in range(b):
        colour = torch.rand(3, generator=g)
        for j in range(t):
            y, x = 4 + i, 2 + j * step
            frames[i, j, :3, y:y + size, x:x + size] = colour[:, None, None]
            frames[i, j, 3, y:y + size, x:x + size] = 1.0
    return frames


def batch_for(frames, k_spans=((0.0, 1.0),), seed=1):
    b, t = frames.shape[:2]
    g = torch.Generator().manual_seed(seed)
    times = frame_times(t).expand(b, t)
    spans = torch.tensor(k_spans).expand(b, -1, -1)
    bgs = torch.rand(b, len(k_spans), 3, *frames.shape[-2:], generator=g)
    images = torch.stack([composite(blur_from_frames(frames, times, spans[:, k]), bgs[:, k])
                          for k in range(len(k_spans))], 1)
    return {"frames": frames, "times": times, "spans": spans, "backgrounds": bgs, "images": images}


def loss(spec):
    return LOSSES.build(spec)


def test_dice_identical_masks_is_zero_and_disjoint_is_near_one():
    f = moving_square()
    assert loss("AlphaDice")(batch_for(f), {"renders": f}).item() == pytest.approx(0.0, abs=1e-7)
    shifted = torch.roll(f, shifts=12, dims=-1)
    disjoint = loss("AlphaDice:smooth=0,order=forward")(batch_for(f), {"renders": shifted})
    assert disjoint.item() == pytest.approx(1.0, abs=1e-6)
    assert loss("AlphaJaccard")(batch_for(f), {"renders": f}).item() == pytest.approx(0.0, abs=1e-7)


def test_alpha_l2_and_bce_known_values():
    """A half-transparent render everywhere: (0.5 - a)^2 = 1/4 and BCE = ln 2 whatever the binary GT; a
    render of 0.8 inside the GT square and 0 outside: only the square's pixels (36 of 24x32) cost."""
    import math

    f = moving_square()
    half = f.clone()
    half[:, :, 3] = 0.5
    assert loss("AlphaL2:order=forward")(batch_for(f), {"renders": half}).item() == pytest.approx(0.25, rel=1e-6)
    bce = loss("AlphaBCE:order=forward")(batch_for(f), {"renders": half}).item()
    assert bce == pytest.approx(math.log(2), rel=1e-5)
    dim = f.clone()
    dim[:, :, 3] *= 0.8
    inside = 36 / (H * W)
    l2 = loss("AlphaL2:order=forward")(batch_for(f), {"renders": dim}).item()
    assert l2 == pytest.approx(inside * 0.04, rel=1e-5)
    assert loss("AlphaBCE:order=forward")(batch_for(f), {"renders": dim}).item() == pytest.approx(
        inside * -math.log(0.8), abs=1e-5)  # outside: -log(1 - eps), eps = 1e-6


def test_order_min_picks_reversed_gt():
    f = moving_square()
    pred = (f * 0.8 + 0.1).clamp(0, 1)  # an imperfect prediction, so the loss is not trivially 0
    forward = loss("DeFMOSupervised:order=forward")(batch_for(f), {"renders": pred})
    reversed_gt = batch_for(f.flip(1))
    picked = loss("DeFMOSupervised:order=min")(reversed_gt, {"renders": pred})
    wrong = loss("DeFMOSupervised:order=forward")(reversed_gt, {"renders": pred})
    assert picked.item() == pytest.approx(forward.item(), rel=1e-6)
    assert wrong.item() > forward.item() + 0.1
    # per sample: only sample 0 reversed -> each sample still gets its own best order
    mixed = torch.stack([f[0].flip(0), f[1]])
    per = resolve_order(loss("AlphaL1").compare, pred, mixed, "min")
    assert torch.allclose(per, resolve_order(loss("AlphaL1").compare, pred, f, "forward"))


def test_order_auto_is_forward_for_two_images():
    f = moving_square()
    pred = (f * 0.8 + 0.1).clamp(0, 1)
    two = batch_for(f.flip(1), k_spans=((0.0, 0.5), (0.5, 1.0)))
    auto = loss("AlphaL1")(two, {"renders": pred})
    assert auto.item() == pytest.approx(loss("AlphaL1:order=forward")(two, {"renders": pred}).item())
    assert auto.item() > loss("AlphaL1:order=min")(two, {"renders": pred}).item()


def test_rgb_gt_mode_sends_no_gradient_to_alpha():
    f = moving_square()
    pred = torch.rand_like(f).requires_grad_()
    loss("RGBL1:mode=gt")(batch_for(f), {"renders": pred}).backward()
    assert pred.grad[:, :, 3].abs().sum() == 0
    assert pred.grad[:, :, :3].abs().sum() > 0
    pred.grad = None
    loss("RGBL1:mode=standard")(batch_for(f), {"renders": pred}).backward()
    assert pred.grad[:, :, 3].abs().sum() > 0  # the coupling the thesis removes


def test_rgb_direct_and_standard_differ_only_where_alpha_below_one():
    f = moving_square()
    b = batch_for(f)
    opaque = f.clone()
    opaque[:, :, :3] = 0.5  # wrong colour, exact alpha (1 inside)
    d, s = loss("RGBL1:mode=direct"), loss("RGBL1:mode=standard")
    assert d(b, {"renders": opaque}).item() == pytest.approx(s(b, {"renders": opaque}).item(), rel=1e-6)
    faint = opaque.clone()
    faint[:, :, 3] *= 0.5
    assert d(b, {"renders": faint}).item() != pytest.approx(s(b, {"renders": faint}).item(), rel=1e-3)
    assert loss("RGBL2:mode=direct")(b, {"renders": f}).item() == 0.0
    assert loss("Charbonnier:mode=direct")(b, {"renders": f}).item() == pytest.approx(0.0, abs=1e-7)
    # Charbonnier ~ L1 for errors much larger than eps
    assert loss("Charbonnier:mode=direct,eps=1e-4")(b, {"renders": opaque}).item() == pytest.approx(
        d(b, {"renders": opaque}).item(), rel=1e-3)
    assert loss("DeFMOSupervised")(b, {"renders": f}).item() == 0.0


def test_reconstruction_of_perfect_prediction_is_zero_single_and_double_blur():
    f = moving_square()
    for spans in (((0.0, 1.0),), ((0.0, 0.5), (0.5, 1.0))):
        b = batch_for(f, spans)
        for kind in ("l1", "l2", "charbonnier", "ssim", "msssim"):
            value = loss(f"Reconstruction:kind={kind}")(b, {"renders": f}).item()
            assert value == pytest.approx(0.0, abs=1e-5), (spans, kind)
        # the half-blurs are not interchangeable: swapping time halves must cost
        swapped = torch.cat([f[:, T // 2:], f[:, :T // 2]], 1)
        if len(spans) == 2:
            assert loss("Reconstruction:kind=l1")(b, {"renders": swapped}).item() > 1e-3
    # binary alpha: exact for a binary GT, and the straight-through gradient reaches alpha
    binary = loss("Reconstruction:binary=true,kind=l2")
    assert binary(batch_for(f), {"renders": f}).item() == pytest.approx(0.0, abs=1e-6)
    faint = (f * 0.8).requires_grad_()  # alpha 0.8 rounds to 1: only the colour is wrong
    assert binary(batch_for(f), {"renders": faint}).item() < loss("Reconstruction:kind=l2")(
        batch_for(f), {"renders": faint}).item()
    binary(batch_for(f), {"renders": faint}).backward()
    assert faint.grad[:, :, 3].abs().sum() > 0


def test_binarize_st_rounds_forward_identity_backward():
    a = torch.tensor([0.2, 0.5, 0.7], requires_grad=True)
    out = binarize_st(a)
    assert out.tolist() == [0.0, 0.0, 1.0]
    out.sum().backward()
    assert a.grad.tolist() == [1.0, 1.0, 1.0]


def test_pairwise_order_invariant_equal_for_reversed_predictions():
    f = moving_square(t=7)
    pred = torch.rand_like(f)
    b = batch_for(f)
    l_pair = loss("PairwiseOrderInvariant")
    assert l_pair(b, {"renders": pred}).item() == pytest.approx(l_pair(b, {"renders": pred.flip(1)}).item(), rel=1e-6)
    assert l_pair(b, {"renders": f.flip(1)}).item() == pytest.approx(0.0, abs=1e-7)
    assert l_pair(b, {"renders": pred}).item() > 0.01


def test_object_order_resolves_each_object_independently():
    a = moving_square(b=1, h=32, size=5, seed=0)  # row 4
    b_ = moving_square(b=1, h=32, size=5, seed=3)
    b_ = torch.roll(b_, shifts=18, dims=-2)  # second object lower, disjoint from the first
    objects = torch.stack([a, b_], 1)  # [1,2,T,4,H,W]
    pred = (objects[:, 0] + objects[:, 1].flip(1)).clamp(0, 1)  # object 2 rendered backwards
    batch = {"frames": pred, "object_frames": objects, "object_valid": torch.tensor([[True, True]])}
    per_object = loss("ObjectOrderSupervised")(batch, {"renders": pred}).item()
    assert per_object == pytest.approx(0.0, abs=1e-6)
    composite_gt = (objects[:, 0] + objects[:, 1]).clamp(0, 1)
    whole = loss("DeFMOSupervised:order=min")({"frames": composite_gt}, {"renders": pred}).item()
    assert whole > 0.1  # one global order cannot fit both objects


def _disc_frames(step: int, t: int = 5, h: int = 48, w: int = 96, r: float = 5.0) -> torch.Tensor:
    """A yellow disc translating right by ``step`` px per frame on a transparent film [1,T,4,H,W]."""
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    frames = torch.zeros(1, t, 4, h, w)
    for k in range(t):
        inside = ((xx - 20 - step * k) ** 2 + (yy - 24) ** 2 <= r * r).float()
        frames[0, k, 0], frames[0, k, 1], frames[0, k, 3] = inside, 0.8 * inside, inside
    return frames


@pytest.mark.parametrize("step", [0, 1, 3, 6, 9])
def test_time_consistency_does_not_penalize_correct_motion(step):
    """A render that moves exactly by ``step`` px per frame (within the 10% window: 9 of 96 px) loses only
    the strip the shift uncovers: centred background values (0 - mean) / std on k of W columns, so the
    loss is exactly (k / W) * (mean / std)^2 per pair: ~0, not a penalty for moving fast."""
    f = _disc_frames(step)
    got = loss("TimeConsistency")({}, {"renders": f}).item()
    mean, std = f[0, 0].mean().item(), f[0, 0].std(unbiased=False).item()
    assert got == pytest.approx(step / 96 * (mean / std) ** 2, rel=1e-3, abs=1e-6)
    assert got < 0.01


def test_time_consistency_penalizes_a_jump_beyond_the_window():
    f = _disc_frames(0)
    f[0, 3:] = torch.roll(f[0, 3:], shifts=30, dims=-1)  # 30 px > 9 px in one step: not the same object there
    assert loss("TimeConsistency")({}, {"renders": f}).item() > 0.1
    with pytest.raises(ValueError, match="max_shift 0.7 is a fraction"):
        loss("TimeConsistency:max_shift=0.7")


def test_regularizers_known_values():
    f = moving_square(t=5, step=4)
    b = batch_for(f)
    assert loss("Sharpness")(b, {"renders": f}).item() == pytest.approx(0.0, abs=1e-4)
    half = f.clone()
    half[:, :, 3] = 0.5
    assert loss("Sharpness")(b, {"renders": half}).item() == pytest.approx(1.0, abs=1e-4)
    assert loss("Contiguity")(b, {"renders": half}).item() == pytest.approx(1.0, abs=1e-5)
    empty = torch.zeros_like(f)
    assert loss("Contiguity")(b, {"renders": empty}).item() == 0.0
    # identical consecutive frames correlate perfectly, whatever the window
    still = f[:, :1].expand_as(f)
    assert loss("TimeConsistency:max_shift=0")(b, {"renders": still}).item() == pytest.approx(0.0, abs=1e-5)
    # constant velocity is smooth; a jump in the middle is not
    smooth = loss("TrajectorySmoothness:scale=1")(b, {"renders": f}).item()
    jumpy = f.clone()
    jumpy[:, 3:] = torch.roll(jumpy[:, 3:], shifts=6, dims=-1)
    assert smooth == pytest.approx(0.0, abs=1e-3)
    assert loss("TrajectorySmoothness:scale=1")(b, {"renders": jumpy}).item() > 0.05


def test_background_rejection_and_latent():
    f = moving_square()
    b = batch_for(f)
    like_bg = f.clone()
    like_bg[:, :, :3] = b["backgrounds"][:, :1]  # object painted with the background
    rej = loss("BackgroundRejection")
    assert rej(b, {"renders": like_bg}).item() == pytest.approx(1.0, abs=1e-5)
    assert rej(b, {"renders": like_bg}).item() > rej(b, {"renders": f}).item()
    z = torch.rand(2, 8, 3, 4)
    lat = loss("Latent")
    assert lat(b, {"latent": z}).item() == 0.0
    assert lat(b, {"latent": z, "contrast_latent": z}).item() == 0.0
    assert lat(b, {"latent": z, "contrast_latent": z + 0.25}).item() == pytest.approx(0.25)


def test_bad_specs_raise_helpful_spec_errors():
    with pytest.raises(SpecError, match="AlphaDice"):  # close-match hint and the list of known names
        LOSSES.build("AlphaDise")
    with pytest.raises(SpecError, match=r"takes no argument 'mod'.*mode"):
        LOSSES.build("RGBL1:mod=gt")
    with pytest.raises(SpecError, match="order='sideways'"):
        LOSSES.build("DeFMOSupervised:order=sideways")
    with pytest.raises(SpecError, match="Known:.*Reconstruction"):
        LossSet(["Nope"], [])


def test_lossset_weights_names_and_compare_has_no_grad():
    f = moving_square()
    b = batch_for(f)
    pred = torch.rand_like(f).requires_grad_()
    ls = LossSet(["AlphaDice:weight=2", "RGBL1:mode=gt,weight=0.5", "RGBL1:mode=direct"], ["DeFMOSupervised"])
    assert ls.names == ["AlphaDice", "RGBL1:mode=gt,weight=0.5", "RGBL1:mode=direct", "DeFMOSupervised"]
    total, values = ls(b, {"renders": pred})
    expected = 2 * values["AlphaDice"] + 0.5 * values["RGBL1:mode=gt,weight=0.5"] + values["RGBL1:mode=direct"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(not v.requires_grad for v in values.values())
    compare_only = LossSet(["RGBL1:mode=gt"], ["AlphaL1"])
    total, values = compare_only(b, {"renders": pred})
    total.backward()
    assert pred.grad[:, :, 3].abs().sum() == 0  # AlphaL1 was only compared, never back-propagated
    assert values["AlphaL1"].item() > 0
    same = LossSet(["AlphaL1", "AlphaL1"])
    assert same.names == ["AlphaL1", "AlphaL1#2"]


def test_losses_run_under_bf16_autocast():
    f = moving_square()
    pred = torch.rand_like(f).to(torch.bfloat16)
    ls = LossSet(["AlphaBCE", "TrajectorySmoothness", "Reconstruction:kind=msssim"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, values = ls(batch_for(f), {"renders": pred})
    assert total.dtype == torch.float32 and torch.isfinite(total)


def test_defmo_reconstruction_and_sharpness_known_values():
    """The paper's variants: reconstruction only inside the object's region (penalty summed over the 3
    channels, divided by the area + 0.01) and entropy summed over frames / a fixed 24."""
    f = moving_square()  # 2 samples, 6 frames, a 6x6 square moving 3 px a frame: area 6 x (6 + 5*3) px
    b = batch_for(f)
    off = dict(b, images=b["images"] + 0.1)  # the inputs differ from the re-blurred renders by 0.1 everywhere
    area = 6 * (6 + 5 * 3)
    assert loss("Reconstruction:kind=l1,region=object")(b, {"renders": f}).item() == pytest.approx(0.0, abs=1e-6)
    got = loss("Reconstruction:kind=l1,region=object")(off, {"renders": f}).item()
    assert got == pytest.approx(3 * 0.1 * area / (area + 0.01), rel=1e-5)
    assert loss("Reconstruction:kind=l1")(off, {"renders": f}).item() == pytest.approx(0.1, rel=1e-5)  # whole image
    half = f.clone()
    half[:, :, 3] = 0.5  # 1 bit per pixel and frame
    assert loss("Sharpness")(b, {"renders": half}).item() == pytest.approx(1.0, rel=1e-4)
    assert loss("Sharpness:frames=24")(b, {"renders": half}).item() == pytest.approx(6 / 24, rel=1e-4)
    with pytest.raises(ValueError, match="region=object takes a pixel penalty"):
        loss("Reconstruction:kind=ssim,region=object")


# ---------------------------------------------------------------- what the thesis' study needs (4.5, 4.6)


def test_staggered_losses_start_and_ramp_known_values():
    frames = moving_square()
    renders = frames.clone()
    renders[:, :, :3] = 0.5  # an RGB error only
    batch = batch_for(frames)
    ls = LossSet(["AlphaDice", "RGBL1:mode=gt,weight=2,start=10,ramp=4"])
    rgb = LOSSES.build("RGBL1:mode=gt")(batch, {"renders": renders})
    dice = LOSSES.build("AlphaDice")(batch, {"renders": renders})
    for step, share in ((None, 1.0), (0, 0.0), (9, 0.0), (10, 0.25), (12, 0.75), (13, 1.0), (500, 1.0)):
        total, values = ls(batch, {"renders": renders}, step)
        assert float(total) == pytest.approx(float(dice) + 2 * share * float(rgb)), step
        assert float(values["RGBL1"]) == pytest.approx(float(rgb))  # logged unweighted, even before it starts
    with pytest.raises(SpecError, match="start=-3"):
        LossSet(["RGBL1:start=-3"])
    with pytest.raises(SpecError, match="takes no argument 'stat'"):
        LossSet(["RGBL1:stat=3"])


def test_mean_alpha_against_the_all_zero_alpha():
    frames = moving_square()  # 36 of 768 pixels opaque per frame
    batch = batch_for(frames)
    empty = frames.clone()
    empty[:, :, 3] = 0
    loss = LOSSES.build("MeanAlpha")
    assert float(loss(batch, {"renders": empty})) == pytest.approx(36 / (H * W), rel=1e-5)
    assert float(loss(batch, {"renders": frames.roll(5, -1)})) == pytest.approx(0.0, abs=1e-7)  # any place
    fixed = LOSSES.build("MeanAlpha:target=0.5")
    assert float(fixed(batch, {"renders": empty})) == pytest.approx(0.5)


def test_rgb_ssim_loss_known_values():
    from fmolab.losses.ssim import ssim

    frames = moving_square()
    batch = batch_for(frames)
    loss = LOSSES.build("RGBSSIM")
    assert float(loss(batch, {"renders": frames})) == pytest.approx(0.0, abs=1e-5)
    darker = frames.clone()
    darker[:, :, :3] *= 0.5
    a = frames[:, :, 3:4]
    want = (1 - ssim((darker[:, :, :3] * a).flatten(0, 1), (frames[:, :, :3] * a).flatten(0, 1))).view(B, T).mean()
    assert float(loss(batch, {"renders": darker})) == pytest.approx(float(want), rel=1e-5)
    assert 0 < float(want) < 1
    ms = LOSSES.build("RGBSSIM:ms=true")
    assert float(ms(batch, {"renders": frames})) == pytest.approx(0.0, abs=1e-5)
    assert float(ms(batch, {"renders": darker})) > 0
