"""Real video files (written here with PyAV: H.264 mp4, MPEG-4 avi, VP9 webm, FFV1 mkv, MJPEG mov) in,
H.264 mp4 out: the container's frame rate and each frame's timestamp survive (variable rate too), and
the result has every sub-frame at its exact time."""
from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest

from fmo_fakes import checkpoint_model
from fmolab.media.containers import decode, probe

CODECS = {".mp4": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9", ".mkv": "ffv1", ".mov": "mjpeg"}


def disc_clip(n: int = 12, h: int = 48, w: int = 64):
    """Frames of a bright disc crossing a textured background; the disc's centre in each."""
    yy, xx = np.mgrid[:h, :w]
    bg = np.stack([0.3 + 0.2 * np.sin(xx / 5), 0.4 + 0.2 * np.cos(yy / 4), 0.5 + 0.1 * np.sin((xx + yy) / 7)], -1)
    frames, centres = [], []
    for i in range(n):
        cx, cy = 8 + i * (w - 16) / (n - 1), h / 2
        alpha = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 36)[..., None]
        frames.append((np.where(alpha, [1.0, 0.9, 0.1], bg) * 255).astype(np.uint8))
        centres.append((cy, cx))
    return frames, centres


def write_clip(path, frames, times=None, fps=6):
    """Encode ``frames`` with the suffix's codec; ``times`` (seconds) for a variable frame rate."""
    codec = CODECS[path.suffix]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = {"ffv1": "yuv444p", "mjpeg": "yuvj420p"}.get(codec, "yuv420p")
        if times is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = int(round(times[i] * 1000)), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def bb_model(session_home):
    return str(checkpoint_model(session_home / "video-models" / "bb", "background_blur"))


@pytest.mark.parametrize("suffix", sorted(CODECS))
def test_every_common_container_is_read_with_its_rate_and_written_as_mp4_at_k_times_it(suffix, bb_model, tmp_path,
                                                                                       capsys):
    from fmolab.cli import main

    frames, _ = disc_clip()
    clip = write_clip(tmp_path / f"clip{suffix}", frames, fps=6)
    info = probe(clip)
    assert info["fps"] == 6 and (info["width"], info["height"]) == (64, 48)
    times = [t for _, t in decode(clip)]
    assert len(times) == 12 and np.allclose(times, np.arange(12) / 6, atol=1e-3)

    out = tmp_path / "out"
    assert main(["deblur", "--model", bb_model, "--video", str(clip), "--out", str(out), "--num-frames", "4",
                 "--work-dir", str(tmp_path)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_fps"] == 6 and summary["output_fps"] == 24 and summary["frames"] == 12
    assert summary["mp4"] == {"file": "super_resolved.mp4", "codec": "libx264", "frames": 48}
    result = probe(out / "super_resolved.mp4")
    assert result["codec"] == "h264" and abs(result["fps"] - 24) < 0.01 and (result["width"], result["height"]) == (64, 48)
    side = probe(out / "side_by_side.mp4")
    assert (side["width"], side["height"]) == (128, 48) and len(list(decode(out / "side_by_side.mp4"))) == 48
    outputs = summary["outputs"]
    assert all((out / f).exists() for f in [*outputs["crops"], outputs["trajectory"], *outputs["animations"]])
    got = [t for _, t in decode(out / "super_resolved.mp4")]
    # no merged or dropped sub-frame; each within the input clock's tick (mkv and webm count whole ms),
    # none drifting
    assert len(got) == 48 and np.allclose(got, np.arange(48) / 24, atol=1.1e-3)


def test_the_trajectory_is_the_alpha_centroid_of_every_sub_frame():
    from fmolab.inference.tracks import centroid, draw_trajectory

    alpha = np.zeros((48, 64))
    alpha[10:14, 20:30] = 1.0  # centre (12, 25) in pixel-centre coordinates
    assert centroid(alpha) == (12.0, 25.0) and centroid(np.zeros((4, 4))) is None
    picture = np.asarray(draw_trajectory(np.zeros((48, 64, 3), np.uint8), [[[0.0, 5.0, 5.0], [0.1, 40.0, 30.0]]]))
    assert picture.shape == (48, 64, 3) and picture[5, 5].any() and picture[30, 40].any() and not picture[45, 2].any()


def test_a_variable_frame_rate_keeps_each_frames_time(bb_model, tmp_path):
    from fmolab.cli import main

    frames, _ = disc_clip(8)
    times = [0.0, 0.1, 0.3, 0.35, 0.5, 0.9, 1.0, 1.2]
    clip = write_clip(tmp_path / "vfr.mkv", frames, times=times)
    assert np.allclose([t for _, t in decode(clip)], times, atol=1e-3)
    out = tmp_path / "out"
    assert main(["deblur", "--model", bb_model, "--video", str(clip), "--out", str(out), "--num-frames", "2",
                 "--work-dir", str(tmp_path)]) == 0
    got = [t for _, t in decode(out / "super_resolved.mp4")]
    # each frame's span (to the next frame; the last frame's: one frame at the average rate) in 2 halves
    spans = np.diff(times + [times[-1] + 1 / probe(clip)["fps"]])
    want = [t + j * d / 2 for t, d in zip(times, spans) for j in range(2)]
    assert len(got) == 16 and np.allclose(got, want, atol=1e-4), (got, want)


def test_an_unreadable_video_is_one_line(bb_model, tmp_path, capsys):
    from fmolab.cli import main

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    code = main(["deblur", "--model", bb_model, "--video", str(broken), "--out", str(tmp_path / "o"),
                 "--work-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(broken) in err
    assert not (tmp_path / "o").exists()


def test_an_existing_out_is_kept_unless_overwrite(bb_model, tmp_path, capsys):
    from fmolab.cli import main

    frames, _ = disc_clip(6)
    clip = str(write_clip(tmp_path / "c.mp4", frames))
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("an earlier result")
    args = ["deblur", "--model", bb_model, "--video", clip, "--out", str(out), "--work-dir", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exists" in err and "--overwrite" in err
    assert (out / "mine.txt").exists()
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "mine.txt").exists() and (out / "super_resolved.mp4").exists()


def test_a_video_shows_progress_with_a_total_and_an_eta(bb_model, tmp_path, capsys, monkeypatch):
    from fmolab.cli import main

    frames, _ = disc_clip(10)
    clip = str(write_clip(tmp_path / "c.mp4", frames))
    monkeypatch.setenv("FMOLAB_PROGRESS", "1")  # as on a terminal (a test's stderr is not one)
    assert main(["deblur", "--model", bb_model, "--video", clip, "--out", str(tmp_path / "o"),
                 "--work-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "deblur c.mp4" in err and "10/10" in err and "frame/s" in err and "<" in err  # elapsed<remaining
    monkeypatch.setenv("FMOLAB_PROGRESS", "0")
    assert main(["deblur", "--model", bb_model, "--video", clip, "--out", str(tmp_path / "o2"),
                 "--work-dir", str(tmp_path)]) == 0
    assert "deblur c.mp4" not in capsys.readouterr().err


def test_two_movers_give_two_tracks_and_both_are_pasted_back(bb_model, tmp_path):
    """A 25 fps avi with two discs crossing in opposite directions, one in the upper rows, one in the
    lower: each frame has two detections, the tracker links them into two tracks that follow their own
    disc, and the crops are named by track."""
    from fmolab.cli import main

    h, w, n = 160, 160, 14  # far enough apart for two crops (closer movers share one)
    yy, xx = np.mgrid[:h, :w]
    bg = np.stack([0.3 + 0.2 * np.sin(xx / 5), 0.4 + 0.2 * np.cos(yy / 4), 0.5 + 0.1 * np.sin((xx + yy) / 7)], -1)
    frames = []
    for i in range(n):
        a = ((yy - 25) ** 2 + (xx - (12 + 10 * i)) ** 2 <= 36)[..., None]
        b = ((yy - 135) ** 2 + (xx - (148 - 10 * i)) ** 2 <= 36)[..., None]
        frames.append((np.where(a, [1.0, 0.9, 0.1], np.where(b, [0.1, 0.9, 1.0], bg)) * 255).astype(np.uint8))
    clip = write_clip(tmp_path / "two.avi", frames, fps=25)
    out = tmp_path / "out"
    assert main(["deblur", "--model", bb_model, "--video", str(clip), "--out", str(out), "--num-frames", "2",
                 "--work-dir", str(tmp_path)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_fps"] == 25 and summary["output_fps"] == 50
    doubles = [boxes for boxes in summary["detections"].values() if len(boxes) == 2]
    assert len(doubles) >= n - 2, summary["detections"]
    tracks = summary["tracks"]
    assert len(tracks) == 2 and all(len(t["frames"]) >= n - 2 for t in tracks), tracks
    rows = sorted(np.mean([y for _, _, y in t["trajectory"]]) for t in tracks)
    assert rows[0] < 50 and rows[1] > 110  # each track stays with its own disc
    xs = {round(np.mean([y for _, _, y in t["trajectory"]])) < 80: [x for _, x, _ in t["trajectory"]] for t in tracks}
    assert xs[True][-1] > xs[True][0] and xs[False][-1] < xs[False][0]  # upper disc goes right, lower goes left
    assert {p.split("_")[1].split(".")[0] for p in summary["outputs"]["crops"]} == {"t0", "t1"}
    assert set(summary["seconds"]) >= {"decode", "background", "detect", "model", "composite", "encode"}


@pytest.mark.parametrize("case", ["text_file", "truncated_mp4", "no_motion_mp4", "zero_frames", "empty_file"])
def test_bad_video_is_one_line_and_leaves_no_output(case, bb_model, tmp_path, capsys):
    from fmolab.cli import main

    frames, _ = disc_clip(12)
    if case == "text_file":
        video = tmp_path / "notes.txt"
        video.write_text("not a video\n" * 50)
    elif case == "truncated_mp4":
        whole = write_clip(tmp_path / "whole.mp4", frames).read_bytes()
        video = tmp_path / "cut.mp4"
        video.write_bytes(whole[: len(whole) // 2])  # the moov atom (the index) is at the end: gone
    elif case == "no_motion_mp4":
        video = write_clip(tmp_path / "still.mp4", [frames[0]] * 8)
    elif case == "zero_frames":  # a header and no frame
        video = tmp_path / "zero.avi"
        with av.open(str(video), "w") as container:
            stream = container.add_stream("mpeg4", rate=6)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            container.start_encoding()
    else:
        video = tmp_path / "empty.mp4"
        video.write_bytes(b"")
    out = tmp_path / "o"
    code = main(["deblur", "--model", bb_model, "--video", str(video), "--out", str(out), "--work-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and video.name in err and "Traceback" not in err, err
    if case == "no_motion_mp4":
        assert "no moving object" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("size", [(240, 320), (241, 317)])
def test_a_sub_frame_converts_only_its_part_and_encodes_as_the_whole_frame_would(size, tmp_path, monkeypatch):
    """What the threaded writer encodes for an Overlay (odd sizes, parts on every edge, one pixel, the
    whole frame) is exactly the whole frame's yuv420p conversion: its mp4, lossless (crf 0), decodes to
    those planes. Lossless rather than two lossy mp4s compared byte for byte: with a second x264
    encoder at work in the process, x264 wrote a different (valid) stream from the same frames in
    15 of 3,604 runs under load, which failed CI once."""
    from fmolab.media import containers
    from fmolab.media.containers import Mp4Writer, Overlay, yuv420

    monkeypatch.setattr(containers, "LARGE_FRAME", 0)  # parts converted at this size too

    rng = np.random.default_rng(0)
    H, W = size
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    places = [(3, 5, 30, 41), (H - 30, W - 41, 30, 41), (0, 0, 7, 9), (10, 11, 1, 1), (0, 0, H, W)]
    places += [(int(rng.integers(0, H - h)), int(rng.integers(0, W - w)), h, w) for h, w in rng.integers(1, 60, (20, 2))]
    frames = [Overlay(base, y, x, rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for y, x, h, w in places]
    frames.append(Overlay(base))
    with Mp4Writer(tmp_path / "parts.mp4", 24, crf=0, threaded=True, threads=1) as parts:
        for k, ov in enumerate(frames):
            parts.write(ov, k / 24)
    with av.open(str(tmp_path / "parts.mp4")) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == len(frames) and {f.format.name for f in decoded} == {"yuv420p"}
    for frame, ov in zip(decoded, frames):
        got = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in frame.planes]
        whole = np.pad(ov.rgb(), ((0, H % 2), (0, W % 2), (0, 0)), mode="edge")
        where = (ov.y, ov.x, None if ov.part is None else ov.part.shape)
        assert all(np.array_equal(g, want) for g, want in zip(got, yuv420(whole))), where


def test_the_side_by_side_reduces_only_the_part_and_shows_input_beside_result():
    from fmolab.inference.movers import reduced
    from fmolab.inference.video_outputs import SideView

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    view = SideView()
    pair = view.pair(frame)
    assert view.scale == 2 and pair.shape == (540, 1920, 3)
    for y, x, h, w in [(101, 333, 57, 91), (0, 0, 1080, 1920), (1079, 1919, 1, 1), (200, 400, 64, 64)]:
        part = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        result = frame.copy()
        result[y:y + h, x:x + w] = part
        want = np.concatenate([reduced(frame, 2), reduced(result, 2)], axis=1)
        assert np.array_equal(view.overlay(pair, frame, y, x, part).rgb(), want), (y, x, h, w)
