"""The quick demo: render -> train -> register -> deblur a held-out sample, on local Ray + SQLite MLflow."""
from __future__ import annotations

import fnmatch
import time

import numpy as np
import torch

from fmolab import storage
from fmolab.config import Config, derive


def _banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def remove_demo_outputs(cfg: Config) -> None:
    """The demo's dataset and its runs (``train.run_name``, or every ``demo-<time>`` run), nothing else
    in the work folder: an empty run name must not select the whole runs folder."""
    storage.remove(cfg.dataset_dir)
    pattern = cfg.train.run_name or "demo-*"
    for folder in ("runs", "ray_results"):
        for path in storage.list_dirs(cfg.output(folder)):
            if fnmatch.fnmatch(storage.basename(path), pattern):
                storage.remove(path)


def run_demo(cfg: Config, fresh: bool = False) -> dict:
    from fmolab.shards import shard_files

    started = time.time()
    if fresh:
        remove_demo_outputs(cfg)

    _banner(f"1/4 render {cfg.render.num_sequences} sequences with Blender (Ray Data) -> {cfg.dataset_dir}")
    from render_cluster.pipeline import render_dataset

    manifest = render_dataset(cfg, progress=True)
    print(f"shards: {len(shard_files(cfg.dataset_dir))} in {cfg.dataset_dir}")

    _banner(f"2/4 train a {cfg.model.encoder} {cfg.variant} model with Ray Train ({cfg.train.workers} workers)")
    from fmolab.train import train

    if not cfg.train.run_name:
        cfg = derive(cfg, {"train.run_name": f"demo-{time.strftime('%Y%m%d-%H%M%S')}"})
    result = train(cfg)

    for line in held_out_lines(result):
        print(line, flush=True)

    _banner(f"3/4 deblur a held-out sample with {result.get('registered', result.get('model_uri'))}")
    preview = deblur_held_out(cfg, result.get("registered") or result["model_uri"])

    from fmolab.tracking.model_registry import model_name
    from fmolab.tracking.store import run_address, ui_command

    _banner("4/4 where everything is")
    db = cfg.tracking_uri
    lines = [
        f"dataset        {cfg.dataset_dir}  ({manifest.get('num_rows', '?')} sequences, manifest.json beside the shards)",
        f"MLflow run     {result['run_id']}  (experiment '{cfg.tracking.experiment}', store {db}; previews/latest.gif,"
        f" plots/loss_curves.png, the model '{model_name(cfg)}')",
        f"model          {result.get('registered', result.get('model_uri'))}",
        f"checkpoints    {cfg.output('ray_results', result['run_name'])}",
        f"deblur preview {preview['preview']}  (input frames | ground truth | prediction | alpha)",
        f"sub-frames     {preview['out_dir']}  (PSNR vs ground truth {preview['psnr']:.2f} dB)",
        f"loss curves    {cfg.output('runs', result['run_name'], 'loss_curves.png')}",
        "",
        "open the MLflow UI (the model-training view of this run):",
        *([f"  .venv/bin/{ui_command(db)}"] if ui_command(db) else []),
        f"  then browse {run_address(result['run_id'])}",
        f"demo finished in {time.time() - started:.0f} s",
    ]
    print("\n".join(lines), flush=True)
    return {**result, **preview}


def held_out_lines(result: dict) -> list[str]:
    """What the model does on held-out objects (its best checkpoint's validation, as logged in MLflow)
    beside the static baselines, and whether it animated: a number a person can trust."""
    from fmolab.tracking.ending import animation_note

    m, v = result["metrics"], result.get("linked", {})
    get = lambda k: v.get(k, float("nan"))  # noqa: E731
    lines = [f"held-out objects, best checkpoint (step {int(m.get('best_step', -1))}): animation ratio "
             f"{get('val/animation_ratio'):.2f} (> 0.5: renders follow the object), TIoU {get('val/tiou'):.3f}, "
             f"crop PSNR {get('val/crop_psnr'):.2f} dB",
             f"static baselines:  input image (im) crop PSNR {get('val/im_crop_psnr'):.2f} dB, background (bg) "
             f"{get('val/bg_crop_psnr'):.2f} dB; a render that is the same at every instant has animation ratio 0"]
    lines.append(animation_note(m).replace("**", ""))
    if get("val/crop_psnr") <= get("val/im_crop_psnr"):
        lines.append("WARNING: the model's crop PSNR does not beat returning the input image")
    return lines


def deblur_held_out(cfg: Config, model_uri: str) -> dict:
    """Run the registered model on the first validation item (objects never seen in training)."""
    from fmolab.compose import composite
    from fmolab.data import build_dataset, to_device
    from fmolab.evaluation.metrics import psnr
    from fmolab.inference.images import write_outputs
    from fmolab.inference.predictor import load_predictor
    from fmolab.media import prediction_animation, save_animation

    predictor = load_predictor(model_uri)
    item = to_device(build_dataset(cfg, "val")[0])
    inputs = item["inputs"][None].numpy().astype(np.float32)
    renders = torch.from_numpy(predictor.render(inputs, item["frames"].shape[0]))[0]
    out_dir = cfg.work_dir / "demo" / "deblurred"
    written = write_outputs(renders, out_dir, item["backgrounds"][0])
    preview = save_animation(cfg.work_dir / "demo" / "deblur_preview.webp",
                             prediction_animation(list(item["images"]), item["frames"], renders))
    bg = item["backgrounds"][:1]
    score = psnr(composite(renders, bg).numpy(), composite(item["frames"], bg).numpy())
    return {"preview": str(preview), "out_dir": written["out_dir"], "psnr": score}
