"""Detection of fast movers on synthetic clips with known boxes: a textured, noisy background, a
blurred streak (the object's time average over the exposure, faint at its ends) of varying speed and
size, some frames without it. Recall and IoU are measured against the true streak boxes."""
from __future__ import annotations

import numpy as np

from fmolab.inference.video_io import detect_mover, with_background


def iou(a, b) -> float:
    ya, xa = max(a[0], b[0]), max(a[1], b[1])
    yb, xb = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, yb - ya) * max(0, xb - xa)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def clip(n=60, h=120, w=160, seed=0):
    """Frames ``[3,H,W]`` and the true box (y0, x0, y1, x1) of the streak in each (None: no object)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([0.45 + 0.15 * np.sin(xx / 9 + c) * np.cos(yy / 13 - c) for c in range(3)])
    frames, boxes = [], []
    x, y, vx, vy = 20.0, 30.0, 1.0, 0.6  # a bouncing ball: between frames it travels ~1.2 streak lengths
    for k in range(n):
        img = base + rng.normal(0, 0.01, base.shape)  # sensor noise
        if k % 10 == 7:  # the object is out of view
            frames.append(img.astype(np.float32))
            boxes.append(None)
            continue
        r = 4 + (k % 5)  # radius 4..8
        speed = 10 + 3 * (k % 7)  # streak length 10..28 px
        ends = []
        for _ in range(2):  # the exposure's start and end
            ends.append((x, y))
            x, y = x + vx * speed / 2, y + vy * speed / 2
            if not 12 < x < w - 12:
                vx, x = -vx, min(max(x, 12), w - 12)
            if not 12 < y < h - 12:
                vy, y = -vy, min(max(y, 12), h - 12)
        x, y = x + vx * speed * 0.2, y + vy * speed * 0.2  # the shutter is closed 20% of the time
        alpha = np.zeros((h, w))
        for t in np.linspace(0, 1, 32):
            cx, cy = ends[0][0] + t * (ends[1][0] - ends[0][0]), ends[0][1] + t * (ends[1][1] - ends[0][1])
            alpha += ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) / 32
        colour = np.array([0.95, 0.85, 0.2])[:, None, None]
        frames.append((img * (1 - alpha) + colour * alpha).astype(np.float32))
        ys, xs = np.nonzero(alpha > 0)
        boxes.append((ys.min(), xs.min(), ys.max() + 1, xs.max() + 1))
    return frames, boxes


def measure(seed: int) -> tuple[float, float, int]:
    """(recall at IoU >= 0.5, mean IoU over the frames with an object, false detections)."""
    frames, boxes = clip(seed=seed)
    hits, ious, false = 0, [], 0
    for k, frame, bg in with_background(iter(frames), window=9):
        found = detect_mover(frame, bg)
        if boxes[k] is None:
            false += found is not None
            continue
        score = iou(found.box, boxes[k]) if found is not None else 0.0
        ious.append(score)
        hits += score >= 0.5
    return hits / len(ious), float(np.mean(ious)), false


def test_a_clip_where_the_object_is_visible_in_most_frames_is_detected_in_most_frames():
    results = [measure(seed) for seed in range(3)]
    recall = np.mean([r[0] for r in results])
    mean_iou = np.mean([r[1] for r in results])
    false = sum(r[2] for r in results)
    print(f"detection: recall@0.5 {recall:.3f}, mean IoU {mean_iou:.3f}, false detections {false} "
          f"in {3 * 6} frames without the object")
    assert recall >= 0.9 and mean_iou >= 0.6 and false <= 2
