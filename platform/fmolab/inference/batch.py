"""Batch deblurring at cluster scale: every video of a folder (or a URI prefix) super-resolved by a pool
of model actors with Ray Data ``map_batches`` (a GPU each where the cluster has GPUs), each into
``<out>/<video name>/`` exactly as ``fmolab deblur --video`` writes it. A video that cannot be read,
or shows no moving object, is skipped and counted in ``<out>/summary.json`` (written last)."""
from __future__ import annotations

from pathlib import Path

from fmolab import storage
from fmolab.inference.options import DeblurOptions
from fmolab.inference.predictor import ModelActor
from fmolab.media.video import FRAME_SUFFIXES, VIDEO_SUFFIXES as ALWAYS_VIDEOS

# in a folder of videos, a still-image kind that may be animated (WebP, PNG, TIFF) is taken as a video too
VIDEO_SUFFIXES = ALWAYS_VIDEOS | {".webp", ".png", ".tif", ".tiff"}


def list_videos(folder: str) -> list[str]:
    """The videos directly in ``folder``: animated image or video files, and sub-folders of frames."""
    files = [p for p in storage.list_files(folder) if Path(storage.basename(p)).suffix.lower() in VIDEO_SUFFIXES]
    return sorted(files + storage.list_dirs(folder))


class VideoDeblurrer(ModelActor):
    """A batch of videos -> one result row each (never an exception)."""

    def __init__(self, model: str, out: str, tracking_uri: str, env: dict, options: DeblurOptions):
        super().__init__(model, tracking_uri, env, options.ensemble)
        self.out, self.options = out, options

    def __call__(self, batch: dict) -> dict:
        from fmolab.inference.predictor import DeblurError
        from fmolab.inference.video import deblur_video

        rows = []
        for video in batch["video"]:
            name = Path(storage.basename(video)).stem
            row = {"video": video, "out": storage.join(self.out, name), "frames": 0, "frames_with_object": 0,
                   "error": ""}
            try:
                done = deblur_video(self.predictor, storage.local_copy(video), row["out"], self.options.num_frames,
                                    self.options.video)
                row.update(frames=done["frames"], frames_with_object=done["frames_with_object"])
            except (DeblurError, OSError, ValueError) as exc:  # a bad video is counted, the others go on
                row["error"] = str(exc)[:500]
            rows.append(row)
        return {k: [r[k] for r in rows] for k in rows[0]}


def deblur_folder(predictor, folder: str, out: str, options: DeblurOptions = DeblurOptions()) -> dict:
    """Deblur every video of ``folder`` with ``options.workers`` actors (Ray initialised); returns the
    summary."""
    import mlflow
    import ray

    from fmolab.runtime import progress, worker_env

    videos, workers = list_videos(folder), options.workers
    if not videos:
        raise ValueError(f"{folder}: no videos (animated {', '.join(sorted(VIDEO_SUFFIXES))} or folders of "
                         f"{', '.join(sorted(FRAME_SUFFIXES))} frames)")
    gpus = 1 if ray.cluster_resources().get("GPU") else 0
    cpus = float(ray.cluster_resources().get("CPU", 1))
    ds = ray.data.from_items([{"video": v} for v in videos]).map_batches(
        VideoDeblurrer, fn_constructor_kwargs=dict(model=predictor.source, out=storage.normalize(out),
                                                   tracking_uri=mlflow.get_tracking_uri(), env=worker_env(),
                                                   options=options),
        concurrency=max(1, min(workers, len(videos))), batch_size=1, num_gpus=gpus,
        num_cpus=0 if gpus else max(0.25, min(1.0, cpus / (workers + 1))))
    rows = []
    with progress(len(videos), "video", "deblur") as bar:
        for row in ds.iter_rows():
            rows.append(row)
            bar.update(1)
    rows.sort(key=lambda r: r["video"])
    failed = [r for r in rows if r["error"]]
    summary = {"model": predictor.source, "folder": storage.normalize(folder), "videos": len(rows),
               "deblurred": len(rows) - len(failed), "skipped": len(failed), "workers": workers, "results": rows}
    storage.write_json(storage.join(out, "summary.json"), summary)
    return {**summary, "out_dir": storage.normalize(out)}
