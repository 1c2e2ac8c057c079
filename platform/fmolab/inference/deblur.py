"""``fmolab deblur``: one entry for frames, an image + background, or a video."""
from __future__ import annotations

from fmolab.config import ConfigError


def deblur(model: str, out: str, *, frames: list[str] | None = None, image: str = "", background: str = "",
           video: str = "", num_frames: int = 8, work_dir: str = "", **video_options) -> dict:
    """Check the inputs (before any model is loaded), load ``model`` and deblur; ``video_options`` are
    those of :func:`fmolab.inference.video.deblur_video` (window, threshold, min_area, chunk_frames)."""
    from fmolab.inference.images import deblur_images
    from fmolab.inference.predictor import load_predictor
    from fmolab.inference.video import deblur_video
    from fmolab.runtime import work_config
    from fmolab.tracking.store import setup_tracking

    if sum(bool(x) for x in (frames, image, video)) != 1:
        raise ConfigError("give exactly one input: --frames A B (double blur), --image X --background B, "
                          "or --video PATH")
    if video and background:
        raise ConfigError("--background goes with --image; a video's background is estimated from its frames")
    if num_frames < 1:
        raise ConfigError(f"--num-frames {num_frames}: must be >= 1")
    setup_tracking(work_config(work_dir))
    predictor = load_predictor(model)
    if video:
        return deblur_video(predictor, video, out, num_frames=num_frames, **video_options)
    return deblur_images(predictor, list(frames or [image]), background or None, out, num_frames=num_frames)
