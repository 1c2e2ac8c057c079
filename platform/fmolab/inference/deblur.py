"""``fmolab deblur``: one entry for frames, an image + background, or a video."""
from __future__ import annotations

from fmolab import storage
from fmolab.config import ConfigError
from fmolab.inference.options import DeblurOptions


def local_input(path: str, option: str) -> str:
    """``path`` itself when local; for a URI, this machine's copy of the file or frame folder."""
    if not path or not storage.is_remote(path):
        return path
    storage.check_readable(path, f"{option} input")
    return str(storage.local_copy(path))


def deblur(model: str, out: str, *, frames: list[str] | None = None, image: str = "", background: str = "",
           video: str = "", videos: str = "", options: DeblurOptions = DeblurOptions(), address: str = "",
           work_dir: str = "", overwrite: bool = False) -> dict:
    """Check the inputs (before any model is loaded), load ``model`` and deblur with ``options``
    (checked when made). ``videos``: every video of a folder or URI prefix, by ``options.workers``
    model actors on the Ray cluster. An existing ``out`` is replaced only with ``overwrite`` (it is
    someone's earlier result)."""
    from fmolab.inference.images import deblur_images
    from fmolab.inference.predictor import load_predictor
    from fmolab.inference.video import deblur_video
    from fmolab.runtime import work_config
    from fmolab.tracking.store import setup_tracking

    if sum(bool(x) for x in (frames, image, video, videos)) != 1:
        raise ConfigError("give exactly one input: --frames A B (double blur), --image X --background B, "
                          "--video PATH, or --videos FOLDER")
    if (video or videos) and background:
        raise ConfigError("--background goes with --image; a video's background is estimated from its frames")
    if storage.exists(out) and not overwrite:
        raise ConfigError(f"--out {out} exists (an earlier result?); give --overwrite to replace it, or another --out")
    cfg = work_config(work_dir)
    # every input may be a URI: read from this machine's cached copy (checked before the model loads)
    frames = [local_input(f, "--frames") for f in frames or []]
    image, background = local_input(image, "--image"), local_input(background, "--background")
    video = local_input(video, "--video")
    if storage.is_remote(out) and not videos:  # a missing bucket or credentials: now, not after the work
        storage.check_writable(out)
    if videos:
        storage.check_readable(videos, "--videos folder")
        storage.check_writable(out)
    if videos:  # the actors need the tracking URI set
        setup_tracking(cfg)
    predictor = load_predictor(model, cache=cfg.work_dir / "cache" / "models", store=cfg.tracking_uri,
                               setup=lambda: setup_tracking(cfg))
    predictor.ensemble = options.ensemble
    if videos:
        from fmolab.inference.batch import deblur_folder
        from fmolab.runtime import init_ray

        init_ray(address, cfg.runtime.num_cpus, cfg.work_dir)
        return deblur_folder(predictor, videos, out, options)
    if video:
        return deblur_video(predictor, video, out, options.num_frames, options.video)
    v = options.video  # still inputs find their movers as videos do
    return deblur_images(predictor, list(frames or [image]), background or None, out, num_frames=options.num_frames,
                         threshold=v.threshold, min_area=v.min_area, max_objects=v.max_objects)
