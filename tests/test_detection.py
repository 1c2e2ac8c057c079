"""Detection of fast movers on synthetic clips with known boxes: a textured, noisy background, a
blurred streak (the object's time average over the exposure, faint at its ends) of varying speed and
size, some frames without it. Recall and IoU are measured against the true streak boxes, through
the path ``deblur --video`` takes (uint8 frames as decoded, the running background, detection on
copies reduced to at most DETECT_SIDE pixels)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fmolab.inference.movers import find_movers, median_layers, with_background


def iou(a, b) -> float:
    ya, xa = max(a[0], b[0]), max(a[1], b[1])
    yb, xb = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, yb - ya) * max(0, xb - xa)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


BALLS = ((20.0, 30.0, 1.0, 0.6, (12, 108), (0.95, 0.85, 0.2)),  # x, y, vx, vy, rows it bounces in, colour
         (140.0, 96.0, -0.8, 0.5, (70, 108), (0.2, 0.9, 0.95)))


def clip(n=60, h=120, w=160, seed=0, balls=1):
    """Frames ``[3,H,W]`` and the true boxes (y0, x0, y1, x1) of the streaks in each (none: no object).
    Bouncing balls: between frames each travels ~1.2 streak lengths; with two, the second bounces in
    the lower rows and the first above it once they would meet."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([0.45 + 0.15 * np.sin(xx / 9 + c) * np.cos(yy / 13 - c) for c in range(3)])
    state = [list(b[:4]) for b in BALLS[:balls]]
    rows = [(12, 60) if balls > 1 else BALLS[0][4], BALLS[1][4]][:balls]
    frames, boxes = [], []
    for k in range(n):
        img = base + rng.normal(0, 0.01, base.shape)  # sensor noise
        if k % 10 == 7:  # the objects are out of view
            frames.append(img.astype(np.float32))
            boxes.append([])
            continue
        r = 4 + (k % 5)  # radius 4..8
        speed = 10 + 3 * (k % 7)  # streak length 10..28 px
        found = []
        for ball, (lo, hi), colour in zip(state, rows, [b[5] for b in BALLS]):
            x, y, vx, vy = ball
            ends = []
            for _ in range(2):  # the exposure's start and end
                ends.append((x, y))
                x, y = x + vx * speed / 2, y + vy * speed / 2
                if not 12 < x < w - 12:
                    vx, x = -vx, min(max(x, 12), w - 12)
                if not lo < y < hi:
                    vy, y = -vy, min(max(y, lo), hi)
            ball[:] = x + vx * speed * 0.2, y + vy * speed * 0.2, vx, vy  # the shutter is closed 20% of the time
            alpha = np.zeros((h, w))
            for t in np.linspace(0, 1, 32):
                cx, cy = ends[0][0] + t * (ends[1][0] - ends[0][0]), ends[0][1] + t * (ends[1][1] - ends[0][1])
                alpha += ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) / 32
            img = img * (1 - alpha) + np.array(colour)[:, None, None] * alpha
            ys, xs = np.nonzero(alpha > 0)
            found.append((ys.min(), xs.min(), ys.max() + 1, xs.max() + 1))
        frames.append(img.astype(np.float32))
        boxes.append(found)
    return frames, boxes


def decoded(frames: list[np.ndarray], scale: int = 1) -> list[np.ndarray]:
    """The clip as a decoder gives it: uint8 ``[H,W,3]``, enlarged ``scale`` times."""
    out = [(np.clip(np.moveaxis(f, 0, -1), 0, 1) * 255 + 0.5).astype(np.uint8) for f in frames]
    if scale > 1:
        out = [np.asarray(Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.BILINEAR))
               for f in out]
    return out


def measure(seed: int, balls: int = 1, scale: int = 1) -> tuple[float, float, int]:
    """(recall at IoU >= 0.5, mean IoU over the true boxes, false detections: in frames without an
    object, or matching no true box), each true box scored by its best detection; ``scale``: the clip
    enlarged that many times (its boxes too), so that detection runs on a reduced copy."""
    frames, boxes = clip(seed=seed, balls=balls)
    boxes = [[tuple(v * scale for v in b) for b in bs] for bs in boxes]
    hits, ious, false = 0, [], 0
    for k, frame, bg in with_background(iter(decoded(frames, scale)), window=9):
        assert (bg.scale > 1) == (scale > 1)  # 160x120: detection at full size; 800x600: on a copy halved
        found = find_movers(frame, bg, max_objects=4)  # deblur's default: extra ones are false
        false += sum(max((iou(d.box, b) for b in boxes[k]), default=0.0) < 0.1 for d in found)
        for b in boxes[k]:
            score = max((iou(d.box, b) for d in found), default=0.0)
            ious.append(score)
            hits += score >= 0.5
    return hits / len(ious), float(np.mean(ious)), false


def over_seeds(label: str, **kwargs) -> tuple[float, float, int]:
    """:func:`measure` over three seeds: mean recall, mean IoU, total false detections (printed)."""
    results = [measure(seed, **kwargs) for seed in range(3)]
    recall, mean_iou = np.mean([r[0] for r in results]), np.mean([r[1] for r in results])
    false = sum(r[2] for r in results)
    print(f"{label}: recall@0.5 {recall:.3f}, mean IoU {mean_iou:.3f}, false detections {false} in {3 * 60} frames")
    return recall, mean_iou, false


def test_a_clip_where_the_object_is_visible_in_most_frames_is_detected_in_most_frames():
    recall, mean_iou, false = over_seeds("detection")
    assert recall >= 0.9 and mean_iou >= 0.6 and false <= 2


def test_two_movers_are_both_detected_in_most_frames():
    recall, mean_iou, false = over_seeds("two movers", balls=2)
    assert recall >= 0.85 and mean_iou >= 0.6 and false <= 6


def test_a_large_frame_is_searched_on_a_reduced_copy_with_the_same_results():
    """The 160x120 clip enlarged 5 times (800x600: detection works on a 400x300 copy) is found as well,
    its boxes given back in the large frame's pixels."""
    recall, mean_iou, false = over_seeds("reduced x5", scale=5)
    assert recall >= 0.9 and mean_iou >= 0.6 and false <= 2


@pytest.mark.parametrize("n", [1, 2, 5, 8, 9])
def test_the_median_network_is_numpys_median(n):
    rng = np.random.default_rng(n)
    layers = [rng.integers(0, 256, (7, 11, 3), dtype=np.uint8) for _ in range(n)]
    np.testing.assert_allclose(median_layers(layers), np.median(np.stack(layers), axis=0), atol=0)
    floats = [rng.random((5, 4), dtype=np.float32) for _ in range(n)]
    np.testing.assert_allclose(median_layers(floats), np.median(np.stack(floats), axis=0), rtol=1e-6)


def test_the_fast_opening_is_scipys():
    from scipy import ndimage

    from fmolab.inference.movers import opening3

    rng = np.random.default_rng(0)
    for shape, p in (((40, 57), 0.5), ((3, 3), 0.9), ((120, 160), 0.7), ((1, 9), 1.0)):
        mask = rng.random(shape) < p
        np.testing.assert_array_equal(opening3(mask), ndimage.binary_opening(mask, structure=np.ones((3, 3))))
