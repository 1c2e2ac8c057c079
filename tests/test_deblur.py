"""`fmolab deblur`: two frames, a video (GIF with a moving disc), and bad input (exit 2, clear message,
nothing half-written)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmo_fakes import checkpoint_model, write_disc_gif
from fmolab.config import ConfigError


@pytest.fixture(scope="module")
def models(session_home):
    d = session_home / "deblur-models"
    return {"double": str(checkpoint_model(d / "double", "double_blur")),
            "bb": str(checkpoint_model(d / "bb", "background_blur"))}


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_deblur_two_frames(models, tmp_path, capsys):
    from fmolab.cli import main

    gif = write_disc_gif(tmp_path / "disc.gif", n=2)
    frames = []
    with Image.open(gif) as im:
        for i in range(2):
            im.seek(i)
            frames.append(tmp_path / f"f{i}.png")
            im.convert("RGB").save(frames[-1])
    out = tmp_path / "out"
    assert main(["deblur", "--model", models["double"], "--frames", *map(str, frames), "--out", str(out),
                 "--num-frames", "4", "--work-dir", str(tmp_path)]) == 0
    assert (out / "subframes.webp").exists() and (out / "subframe_003.png").exists() and (out / "alpha_000.png").exists()


def test_deblur_video_gif(models, tmp_path, capsys):
    from fmolab.cli import main

    gif = write_disc_gif(tmp_path / "disc.gif", n=8)
    for kind, crops in (("double", "png"), ("bb", "webp")):
        out = tmp_path / f"video-{kind}"
        assert main(["deblur", "--model", models[kind], "--video", str(gif), "--out", str(out), "--num-frames", "4",
                     "--animations", "webp", "--crops", crops, "--work-dir", str(tmp_path)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["frames"] == 8 and len(summary["detections"]) >= 6
        # 4x the frame rate, full frames (libwebp merges identical consecutive frames into longer ones,
        # so count time, not frames: 8 input frames of 60 ms = 32 sub-frames of 15 ms)
        assert _webp_duration(out / "super_resolved.webp") == (480, (64, 48))
        k = sorted(summary["detections"])[2]
        assert (out / "crops" / f"{int(k):06d}_t0.webp").exists()
        pngs = sorted((out / "crops").glob("*.png"))
        if crops == "png":  # each object's sub-frames and alphas, at its box's size (smaller than the model's)
            y0, x0, y1, x1 = summary["detections"][k][0]
            alpha = np.asarray(Image.open(out / "crops" / f"{int(k):06d}_t0_alpha_000.png"))
            assert alpha.shape == (y1 - y0, x1 - x0) and len(pngs) == 2 * 4 * len(summary["detections"])
        else:
            assert pngs == []
    # long videos are split into chunks (bounded memory); no crops on request
    out = tmp_path / "chunked"
    assert main(["deblur", "--model", models["bb"], "--video", str(gif), "--out", str(out), "--num-frames", "4",
                 "--chunk-frames", "12", "--animations", "webp", "--crops", "none", "--work-dir", str(tmp_path)]) == 0
    assert not (out / "crops").exists()
    names = json.loads((out / "summary.json").read_text())["files"]
    assert names == ["super_resolved.mp4", "side_by_side.mp4", "trajectory.png", "super_resolved_000.webp",
                     "super_resolved_001.webp", "super_resolved_002.webp"]
    assert sum(_webp_duration(out / n)[0] for n in names[3:]) == 480


def _webp_duration(path):
    total = 0
    with Image.open(path) as im:
        for i in range(im.n_frames):
            im.seek(i)
            im.load()  # Pillow sets a frame's duration when it decodes it
            total += im.info["duration"]
        return total, im.size


def test_deblur_video_from_frame_folder(models, tmp_path):
    from fmolab.inference.predictor import load_predictor
    from fmolab.inference.video import deblur_video

    gif = write_disc_gif(tmp_path / "disc.gif", n=6)
    folder = tmp_path / "frames"
    folder.mkdir()
    with Image.open(gif) as im:
        for i in range(6):
            im.seek(i)
            im.convert("RGB").save(folder / f"{i:04d}.png")
    res = deblur_video(load_predictor(models["double"]), folder, tmp_path / "out", num_frames=3)
    assert res["frames"] == 6 and res["frames_with_object"] >= 4


@pytest.mark.parametrize("case", ["unreadable_image", "missing_image", "sizes_differ", "no_mover", "corrupt_video",
                                  "video_sizes_differ", "two_inputs"])
def test_bad_input_exits_2_with_message_and_no_output(models, tmp_path, capsys, case):
    from fmolab.cli import main

    out = tmp_path / "result"
    args = ["deblur", "--model", models["double"], "--out", str(out), "--work-dir", str(tmp_path)]
    expect = ""
    if case == "unreadable_image":
        bad = tmp_path / "bad.png"
        bad.write_text("not an image")
        good = tmp_path / "good.png"
        Image.new("RGB", (64, 48)).save(good)
        args += ["--frames", str(bad), str(good)]
        expect = "cannot read image"
    elif case == "missing_image":
        args += ["--frames", str(tmp_path / "nope.png"), str(tmp_path / "nope2.png")]
        expect = "does not exist"
    elif case == "sizes_differ":
        a, b = tmp_path / "a.png", tmp_path / "b.png"
        Image.new("RGB", (64, 48)).save(a)
        Image.new("RGB", (80, 48)).save(b)
        args += ["--frames", str(a), str(b)]
        expect = "differ in size"
    elif case == "no_mover":
        args += ["--video", str(write_disc_gif(tmp_path / "still.gif", n=6, still=True))]
        expect = "no moving object"
    elif case == "corrupt_video":
        bad = tmp_path / "broken.gif"
        bad.write_bytes(b"GIF89a" + b"\x00garbage" * 10)
        args += ["--video", str(bad)]
        expect = "broken.gif"
    elif case == "video_sizes_differ":
        args += ["--video", str(write_disc_gif(tmp_path / "jump", size_jump=True))]
        expect = "one size"
    elif case == "two_inputs":
        args += ["--video", "x.gif", "--image", "y.png"]
        expect = "exactly one input"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err
    assert not out.exists() and not _leftovers(tmp_path)


def test_deblur_a_folder_of_videos_with_model_actors(models, tmp_path, ray_local, capsys):
    """--videos: Ray Data model actors deblur every video; a corrupt one and one without a mover are
    skipped and counted, the others written as `--video` writes them."""
    from fmolab.cli import main

    folder = tmp_path / "videos"
    folder.mkdir()
    write_disc_gif(folder / "disc_a.gif", n=6)
    write_disc_gif(folder / "disc_b.gif", n=5)
    write_disc_gif(folder / "still.gif", n=6, still=True)
    (folder / "broken.gif").write_bytes(b"GIF89a" + b"\x00garbage" * 10)
    out = tmp_path / "out"
    assert main(["deblur", "--model", models["double"], "--videos", str(folder), "--workers", "2", "--out", str(out),
                 "--num-frames", "3", "--work-dir", str(tmp_path)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["videos"], summary["deblurred"], summary["skipped"]) == (4, 2, 2)
    errors = {Path(r["video"]).name: r["error"] for r in summary["results"]}
    assert "no moving object" in errors["still.gif"] and "broken.gif" in errors["broken.gif"]
    for name, n in (("disc_a", 6), ("disc_b", 5)):
        assert json.loads((out / name / "summary.json").read_text())["frames"] == n
        assert (out / name / "super_resolved.mp4").exists()
    assert '"deblurred": 2' in capsys.readouterr().out


def test_self_ensemble_averages_the_undone_flips(models, tmp_path):
    """--ensemble 2: the renders of the input and of its mirror image (mirrored back), averaged in
    premultiplied colour; 8: all flips and transposes; the time order is the model's."""
    import torch

    from fmolab.inference.predictor import load_predictor

    p = load_predictor(models["double"])
    x = np.random.default_rng(0).random((1, 6, 48, 64), dtype=np.float32)
    t = p.times(5).numpy()
    with torch.no_grad():
        direct = p.model(torch.from_numpy(x), torch.from_numpy(t)[None])["renders"].numpy()
        mirror = p.model(torch.from_numpy(x[..., ::-1].copy()), torch.from_numpy(t)[None])["renders"].numpy()[..., ::-1]
    assert np.array_equal(p.render(x, t), direct)  # ensemble 1: the network itself
    assert np.array_equal(p.render(x, 5), direct)  # a count: that many instants in the model's convention
    p.ensemble = 2
    alpha = (direct[:, :, 3:] + mirror[:, :, 3:]) / 2
    rgb = (direct[:, :, :3] * direct[:, :, 3:] + mirror[:, :, :3] * mirror[:, :, 3:]) / 2 / np.maximum(alpha, 1e-6)
    np.testing.assert_allclose(p.render(x, t), np.concatenate([rgb.clip(0, 1), alpha], 2), atol=1e-6)
    p.ensemble = 8
    all8 = p.render(x, t)
    assert all8.shape == direct.shape and np.isfinite(all8).all() and not np.allclose(all8, direct)
    p.ensemble = 3
    with pytest.raises(ConfigError, match=r"--ensemble = 3: one of 1, 2, 4, 8"):
        p.render(x, t)
    from fmolab.cli import main

    frames = []
    for i in range(2):
        frames.append(tmp_path / f"f{i}.png")
        Image.fromarray((x[0, 3 * i:3 * i + 3].transpose(1, 2, 0) * 255).astype(np.uint8)).save(frames[-1])
    assert main(["deblur", "--model", models["double"], "--frames", *map(str, frames), "--out", str(tmp_path / "o"),
                 "--ensemble", "4", "--num-frames", "3", "--work-dir", str(tmp_path)]) == 0
    assert (tmp_path / "o" / "subframe_002.png").exists()


def test_image_below_the_model_minimum_is_refused_and_every_written_file_is_listed(models, tmp_path, capsys):
    from fmolab.cli import main

    rng = np.random.default_rng(0)
    for name, (w, h) in {"tiny": (8, 12), "ok": (64, 48)}.items():
        for part in ("im", "bg"):
            Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{name}_{part}.png")
    out = tmp_path / "tiny-out"
    code = main(["deblur", "--model", models["bb"], "--image", str(tmp_path / "tiny_im.png"), "--background",
                 str(tmp_path / "tiny_bg.png"), "--out", str(out), "--work-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "8x12 is below the smallest input a model takes (16x16" in err and len(err.splitlines()) == 1
    assert not out.exists() and not _leftovers(tmp_path)

    out = tmp_path / "ok-out"
    assert main(["deblur", "--model", models["bb"], "--image", str(tmp_path / "ok_im.png"), "--background",
                 str(tmp_path / "ok_bg.png"), "--out", str(out), "--num-frames", "3", "--work-dir", str(tmp_path)]) == 0
    listed = json.loads(capsys.readouterr().out)["files"]
    assert listed == sorted(p.name for p in out.iterdir()) and len(listed) == 2 * 3 + 2  # PNGs + 2 animations


def _scene(h=1080, w=1920, seed=0):
    """A smooth textured background (low-frequency noise) as float [H,W,3]."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 60 + 2, w // 60 + 2, 3))
    return np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) / 255.0


def _streak(bg, x0, x1, y, r=9):
    """``bg`` with a bright disc of radius ``r`` blurred along y=const from x0 to x1 (its time average)."""
    h, w, _ = bg.shape
    yy, xx = np.mgrid[:h, :w]
    alpha = np.zeros((h, w))
    for x in np.linspace(x0, x1, 24):
        alpha += ((yy - y) ** 2 + (xx - x) ** 2 <= r * r) / 24
    return bg * (1 - alpha[..., None]) + np.array([1.0, 0.9, 0.2]) * alpha[..., None]


def _save(path, image):
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return str(path)


def test_a_full_hd_frame_is_deblurred_in_a_crop_around_the_object_and_pasted_back(models, tmp_path, capsys):
    """1920x1080 inputs: the network sees a crop of the model's aspect ratio around the detected
    streak, at its training size (not the whole frame), for image + background and for two frames."""
    from fmolab.cli import main

    bg = _scene()
    image = _save(tmp_path / "im.png", _streak(bg, 900, 980, 500))
    background = _save(tmp_path / "bg.png", bg)
    out = tmp_path / "hd"
    assert main(["deblur", "--model", models["bb"], "--image", image, "--background", background, "--out", str(out),
                 "--num-frames", "3", "--work-dir", str(tmp_path)]) == 0
    res = json.loads(capsys.readouterr().out)
    y0, x0, y1, x1 = res["box"]
    assert res["detected"] and y0 <= 491 and y1 >= 510 and x0 <= 891 and x1 >= 990  # the streak is inside
    assert (y1 - y0) * (x1 - x0) < 0.02 * 1920 * 1080  # a crop, not the frame
    assert abs((x1 - x0) / (y1 - y0) - 64 / 48) < 0.05  # the model's aspect ratio
    assert Image.open(out / "subframe_000.png").size == (x1 - x0, y1 - y0)
    with Image.open(out / "super_resolved.webp") as im:
        assert im.size == (1920, 1080)  # (frame count: libwebp merges near-identical frames of a random model)
        far = np.asarray(im.convert("RGB"))[:200, :200] / 255.0  # pasted back: the rest is the background
    assert np.abs(far - bg[:200, :200]).max() < 0.05

    first = _save(tmp_path / "a.png", _streak(bg, 600, 680, 300))
    second = _save(tmp_path / "b.png", _streak(bg, 720, 800, 320))
    assert main(["deblur", "--model", models["double"], "--frames", first, second, "--out", str(tmp_path / "pair"),
                 "--num-frames", "3", "--work-dir", str(tmp_path)]) == 0
    y0, x0, y1, x1 = json.loads(capsys.readouterr().out)["box"]
    assert y0 <= 291 and y1 >= 330 and x0 <= 591 and x1 >= 810  # both streaks

    still = tmp_path / "still"
    code = main(["deblur", "--model", models["bb"], "--image", background, "--background", background, "--out",
                 str(still), "--work-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "no moving object found" in err and "1920x1080 frame is too large to run whole" in err
    assert not still.exists()


def test_a_model_of_another_kind_is_refused_with_the_kind_to_use_and_how_to_get_it(models, tmp_path, capsys):
    from fmolab.cli import main

    bg = _scene(48, 64)
    image, background = _save(tmp_path / "i.png", _streak(bg, 20, 40, 24, r=5)), _save(tmp_path / "b.png", bg)
    code = main(["deblur", "--model", models["double"], "--image", image, "--background", background,
                 "--out", str(tmp_path / "o1"), "--work-dir", str(tmp_path)])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "takes two consecutive frames (--frames A B)" in line
    assert "background+blur model" in line and "fmolab import defmo" in line and "--preset background_blur" in line
    code = main(["deblur", "--model", models["bb"], "--frames", image, background, "--out", str(tmp_path / "o2"),
                 "--work-dir", str(tmp_path)])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "double-blur model" in line and "fmolab demo" in line
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


@pytest.mark.parametrize("w,h", [(300, 650), (1920, 1072)])
def test_odd_sizes_through_every_input_kind_with_two_movers(models, tmp_path, capsys, w, h):
    """Portrait 300x650 and 1920x1072 (not a multiple of the model's 16) frames, two streaks each:
    image + background, two frames and a video all find two objects, crop each and paste both back."""
    import av

    from fmolab.cli import main

    bg = _scene(h, w, seed=1)
    ys, r = (int(h * 0.25), int(h * 0.75)), max(5, w // 60)

    def frame(shift):
        out = bg
        for y in ys:
            out = _streak(out, w * 0.3 + shift, w * 0.3 + shift + 6 * r, y, r)
        return out

    def inside(box, y):
        return box[0] <= y - r and box[2] >= y + r

    base = ["--num-frames", "3", "--work-dir", str(tmp_path)]
    assert main(["deblur", "--model", models["bb"], "--image", _save(tmp_path / "i.png", frame(0)), "--background",
                 _save(tmp_path / "b.png", bg), "--out", str(tmp_path / "image"), *base]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["objects"] == 2 and all(any(inside(b, y) for b in res["boxes"]) for y in ys), res["boxes"]
    assert (tmp_path / "image" / "object_1" / "subframe_002.png").exists() and "object_1/alpha_000.png" in res["files"]
    with Image.open(tmp_path / "image" / "super_resolved.webp") as im:
        assert im.size == (w, h)

    pair = [_save(tmp_path / "a.png", frame(0)), _save(tmp_path / "c.png", frame(7 * r))]
    assert main(["deblur", "--model", models["double"], "--frames", *pair, "--out", str(tmp_path / "pair"), *base]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["objects"] == 2 and all(any(inside(b, y) for b in res["boxes"]) for y in ys), res["boxes"]

    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for k in range(5):
            image = (np.clip(frame(k * 7 * r - 14 * r), 0, 1) * 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    assert main(["deblur", "--model", models["bb"], "--video", str(clip), "--out", str(tmp_path / "video"), *base]) == 0
    summary = json.loads((tmp_path / "video" / "summary.json").read_text())
    assert summary["frames"] == 5 and max(len(b) for b in summary["detections"].values()) == 2
    assert len(summary["tracks"]) >= 2
    from fmolab.media.containers import probe

    assert (probe(tmp_path / "video" / "super_resolved.mp4")["width"], probe(tmp_path / "video" / "super_resolved.mp4")["height"]) == (w, h)


def test_every_deblur_input_and_output_may_be_an_s3_uri(models, tmp_path, monkeypatch, capsys):
    """--frames, --image + --background, --video (a file and a frame folder) and --videos read from,
    and --out writes to, a real S3-protocol server (moto): nothing lands in a local folder named
    ``s3:`` and every result is where --out says."""
    from cluster_fakes import s3_server
    from fmo_fakes import _background
    from fmolab import storage
    from fmolab.cli import main

    gif = write_disc_gif(tmp_path / "disc.gif", n=6)
    local = tmp_path / "in"
    (local / "folder").mkdir(parents=True)
    with Image.open(gif) as im:
        for i in range(6):
            im.seek(i)
            im.convert("RGB").save(local / "folder" / f"{i:04d}.png")
    Image.fromarray((np.clip(_background(48, 64), 0, 1) * 255 + 0.5).astype(np.uint8)).save(local / "bg.png")
    monkeypatch.chdir(tmp_path)
    with s3_server() as variables:
        for k, v in variables.items():
            monkeypatch.setenv(k, v)
        up = {name: storage.upload(local / "folder" / name, f"s3://fmo/in/{name}") for name in ("0000.png", "0001.png")}
        up["bg"] = storage.upload(local / "bg.png", "s3://fmo/in/bg.png")
        up["gif"] = storage.upload(gif, "s3://fmo/in/videos/disc.gif")
        storage.upload_tree(local / "folder", "s3://fmo/in/folder")
        base = ["--num-frames", "3", "--work-dir", str(tmp_path / "w")]
        runs = {"pair": ["--model", models["double"], "--frames", up["0000.png"], up["0001.png"]],
                "image": ["--model", models["bb"], "--image", up["0000.png"], "--background", up["bg"]],
                "video": ["--model", models["bb"], "--video", up["gif"]],
                "folder": ["--model", models["bb"], "--video", "s3://fmo/in/folder"]}
        for name, args in runs.items():
            code = main(["deblur", *args, "--out", f"s3://fmo/out/{name}", *base])
            assert code == 0, (name, capsys.readouterr().err[-2000:])
            assert json.loads(capsys.readouterr().out)["out_dir"] == f"s3://fmo/out/{name}"
        # the Ray Data actors of --videos: a local Ray of its own, started with the store's credentials
        # (a cluster's nodes have their own; fmolab never sends secrets to workers)
        env = {**os.environ, "FMOLAB_HOME": str(tmp_path / "w")}
        env.pop("RAY_ADDRESS", None)
        done = subprocess.run([sys.executable, "-m", "fmolab.cli", "deblur", "--model", models["double"], "--videos",
                               "s3://fmo/in/videos", "--out", "s3://fmo/out/batch", *base], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        runs["batch"] = []
        written = {name: {storage.basename(p) for p in storage.list_files(f"s3://fmo/out/{name}")} for name in runs}
        summary = json.loads(storage.read_bytes("s3://fmo/out/video/summary.json"))
        nested = {storage.basename(p) for p in storage.list_files("s3://fmo/out/batch/disc")}
        batch = json.loads(storage.read_bytes("s3://fmo/out/batch/summary.json"))
    assert {"subframes.webp", "subframe_002.png", "alpha_000.png"} <= written["pair"]
    assert {"super_resolved.webp", "subframe_000.png"} <= written["image"]
    assert {"summary.json", "super_resolved.mp4"} <= written["video"] and summary["frames"] == 6
    assert {"summary.json", "super_resolved.mp4"} <= written["folder"]
    assert "summary.json" in written["batch"] and "super_resolved.mp4" in nested, batch
    assert not (tmp_path / "s3:").exists() and not Path("s3:").exists()


@pytest.mark.parametrize("command, option, fragment", [
    ("deblur", ["--num-frames", "0"], "--num-frames = 0: must be >= 1"),
    ("deblur", ["--max-objects", "0"], "--max-objects = 0: must be >= 1"),
    ("deblur", ["--threshold", "0"], "--threshold = 0.0: must be > 0"),
    ("evaluate", ["--size", "64by48"], "--size = '64by48': expected WIDTHxHEIGHT"),
    ("evaluate", ["--max", "0"], "--max = 0: must be >= 1"),
])
def test_options_are_checked_once_before_the_model_loads(tmp_path, capsys, command, option, fragment):
    """Bad options: one line naming the option, its value and what is allowed, exit 2, before anything
    else (the model named here does not exist: it is never reached)."""
    from fmolab.cli import main

    where = ["--video", str(tmp_path / "v.gif"), "--out", str(tmp_path / "o")] if command == "deblur" else \
        ["--data", str(tmp_path / "d")]
    assert main([command, "--model", str(tmp_path / "no-model"), *where, *option, "--work-dir", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"fmolab {command}: error: {fragment}" or line.startswith(f"fmolab {command}: error: {fragment}"), line
