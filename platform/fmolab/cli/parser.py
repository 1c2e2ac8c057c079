"""The argument parser of ``fmolab``: one sub-command per stage, ``--help`` everywhere."""
from __future__ import annotations

import argparse

from fmolab.cli import commands as c
from fmolab.config import preset_names, scale_names
from fmolab.inference.options import ENSEMBLES


def _config_args(p: argparse.ArgumentParser, default_preset: str | None = None) -> None:
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="YAML config or job spec (repeatable; later files win)")
    p.add_argument("--preset", default=default_preset, choices=preset_names(),
                   help=f"start from a ready configuration (default: {default_preset or 'none'})")
    p.add_argument("--scale", default=None, choices=scale_names(),
                   help="a scale layer on the preset: 'small' learns in CPU-minutes (64x48, tiny encoder; "
                        "docs/studies.md)")
    p.add_argument("--work-dir", help="folder for every generated and temporary file (default ./fmolab-work, or $FMOLAB_HOME)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=1e-4 data.format=double_blur")


def _work_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work-dir", help="work folder (MLflow store; default ./fmolab-work, or $FMOLAB_HOME)")


def _ensemble_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ensemble", type=int, default=1, choices=ENSEMBLES,
                   help="test-time self-ensemble: average the renders of 1 (off), 2, 4 or 8 flips/transposes of "
                        "the input, each undone")


def _address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default="", help="Ray dashboard/job server (default $RAY_ADDRESS or http://127.0.0.1:8265)")


def _study_part_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--groups", default="", metavar="G1,G2", help="only these groups (a study of its own name, "
                   "e.g. thesis-F1-F2)")
    p.add_argument("--seeds", type=int, default=0, metavar="N", help="at most N seeds per arm (name suffix -sN)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmolab",
        description="Temporal super-resolution of fast-moving objects on Ray: render, train, tune, evaluate, deblur.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="render a small dataset, train a background+blur model that animates "
                       "(--preset demo_double_blur: a double-blur one), register it, deblur a held-out sample")
    _config_args(p, "demo")
    p.add_argument("--fresh", action="store_true", help="delete the demo's dataset and runs first")
    p.set_defaults(func=c.cmd_demo)

    p = sub.add_parser("render", help="render a synthetic FMO dataset with Blender across the Ray cluster")
    _config_args(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=c.cmd_render)

    p = sub.add_parser("dataset", help="look at a rendered dataset")
    dsub = p.add_subparsers(dest="dataset_cmd", required=True)
    q = dsub.add_parser("inspect", help="print the manifest, write a contact sheet and an animated preview")
    q.add_argument("path")
    q.add_argument("-n", type=int, default=8, help="samples in the preview")
    q.add_argument("--out", help="output folder for the pictures (default <work folder>/inspect/<dataset name>)")
    q.add_argument("--verify", action="store_true",
                   help="decode every row and name the broken ones; exit 1 unless the dataset is complete")
    q.set_defaults(func=c.cmd_dataset_inspect)

    p = sub.add_parser("train", help="train a DeFMO model with Ray Train; tracked in MLflow")
    _config_args(p, None)
    p.add_argument("--resume", metavar="RUN_NAME", help="resume a run from its last checkpoint with its saved config "
                   "(KEY=VALUE overrides on top, e.g. train.steps=...; runtime.storage=URI says where to look)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=c.cmd_train)

    p = sub.add_parser("tune", help="hyperparameter search with Ray Tune + Optuna (TPE) and ASHA early stopping")
    _config_args(p, None)
    p.add_argument("--space", help="search space YAML (see search_spaces/README.md); required unless --resume")
    p.add_argument("--trials", type=int, default=8, help="number of trials (default 8)")
    p.add_argument("--max-concurrent", type=int, default=0, metavar="K",
                   help="trials at a time (default: one core per Train worker; capped to what fits)")
    p.add_argument("--name", default="", help="search name (default tune-<space>-<timestamp>); also the MLflow parent run")
    p.add_argument("--resume", metavar="NAME", help="continue an interrupted search with its saved config, space and options")
    p.add_argument("--study-storage", default="", metavar="URL",
                   help="persist the Optuna study in an RDB, e.g. sqlite:///fmolab-work/optuna.db (study name = search name)")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    p.add_argument("--grace-steps", type=int, default=0, help="ASHA grace period in training steps (default train.val_every)")
    p.add_argument("--reduction-factor", type=int, default=2, help="ASHA reduction factor (default 2)")
    p.add_argument("--metric", default="", help="validation metric trials are ranked by (default: the space's "
                   "'metric', else val/loss), e.g. val/crop_psnr")
    p.add_argument("--mode", default="", choices=["", "min", "max"], help="whether lower or higher --metric is better")
    p.add_argument("--print-space", action="store_true", help="validate the space, print its parameters and exit")
    p.set_defaults(func=c.cmd_tune)

    p = sub.add_parser("study", help="run a study (arms x seeds at a fixed sample budget, studies/*.yaml) and report it")
    ssub = p.add_subparsers(dest="study_command", required=True)
    q = ssub.add_parser("run", help="run or resume every (arm, seed) as one Ray Tune experiment; prints the table")
    q.add_argument("study", help="a study file, or NAME for studies/NAME.yaml")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for every arm, after the study's own")
    q.add_argument("--max-concurrent", type=int, default=0, metavar="K", help="trials at a time (default: what fits)")
    _study_part_args(q)
    _work_dir_arg(q)
    q.set_defaults(func=c.cmd_study)
    q = ssub.add_parser("report", help="print a study's table (mean +- sd over seeds per arm) as Markdown")
    q.add_argument("study", help="a study file, or NAME for studies/NAME.yaml")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="the overrides the study ran with (tracking.*)")
    _study_part_args(q)
    _work_dir_arg(q)
    q.set_defaults(func=c.cmd_study)

    p = sub.add_parser("evaluate", help="evaluate a registered model with the FMO benchmark metrics")
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, runs:/ID/NAME, models:/m-ID, or a checkpoint folder")
    p.add_argument("--data", required=True, help="fmolab shard dataset (a folder or a URI such as s3://bucket/ds), "
                   "or a Falling Objects / TbD / TbD-3D folder")
    p.add_argument("--kind", default="auto", choices=["auto", "shards", "falling", "tbd", "tbd3d"],
                   help="dataset layout (default: detected)")
    p.add_argument("--out", help="output folder or URI (default <work>/eval/<data>-<time>)")
    p.add_argument("--max", type=int, help="evaluate at most N samples")
    p.add_argument("--num-frames", type=int, help="sub-frames per sample for shards (default: the model's "
                   "data.frames_per_sample; benchmarks fix it: 8, or 12 for '-12' sequences)")
    p.add_argument("--sub-steps", type=int, default=1, help="benchmarks: renders averaged per sub-frame "
                   "(DeFMO used 5 to imitate the ground truth's short exposure)")
    p.add_argument("--size", help="benchmarks: model input WIDTHxHEIGHT (default: the training resolution)")
    p.add_argument("--protocol", default="fmolab", choices=["fmolab", "benchmark"],
                   help="benchmark folders: fmolab's protocol (default) or the FMO deblurring benchmark's own, "
                        "whose numbers match the DeFMO paper's table (docs/evaluate.md)")
    p.add_argument("--sync", default="first", choices=["first", "all"],
                   help="direction synchronisation: first sub-frame (benchmark) or whole sequence")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="shards: score with N model actors on the Ray cluster (Ray Data; a GPU each where there are "
                        "GPUs), rows written as OUT/samples/*.parquet (default 0: in this process)")
    _address_arg(p)
    _ensemble_arg(p)
    p.add_argument("--experiment", default="fmolab-eval", help="MLflow experiment of the evaluation run")
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    _work_dir_arg(p)
    p.set_defaults(func=c.cmd_evaluate)

    p = sub.add_parser("deblur", help="deblur real frames or a video with a trained model")
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, runs:/ID/NAME, models:/m-ID, or a checkpoint folder")
    p.add_argument("--frames", nargs=2, metavar=("FRAME1", "FRAME2"), help="two consecutive frames (double-blur models)")
    p.add_argument("--image", help="one blurred image (background+blur models)")
    p.add_argument("--background", help="the background of --image")
    p.add_argument("--video", help="a video: mp4, mov, avi, mkv, webm (any container FFmpeg reads), an animated GIF/WebP/APNG, or a folder of frames")
    p.add_argument("--videos", help="a folder (or URI) of videos: each deblurred into OUT/<name>/ by Ray Data model "
                   "actors; unreadable ones are skipped and counted in OUT/summary.json")
    p.add_argument("--workers", type=int, default=1, help="--videos: model actors on the Ray cluster (default 1)")
    _address_arg(p)
    p.add_argument("--window", type=int, default=9, help="video: frames in the running-median background")
    p.add_argument("--threshold", type=float, default=0.1, help="difference to the background (or, for --frames, between the frames) that marks a mover")
    p.add_argument("--min-area", type=int, default=12, help="smallest mover in pixels")
    p.add_argument("--max-objects", type=int, default=4, help="movers deblurred per frame, largest first (default 4)")
    p.add_argument("--animations", nargs="+", default=[], choices=["webp", "gif"], metavar="FORMAT",
                   help="video: also write the result as animated webp and/or gif (the mp4s are always written)")
    p.add_argument("--chunk-frames", type=int, default=240, help="video: output frames per --animations file")
    p.add_argument("--crops", default="webp", choices=["webp", "png", "none"],
                   help="video: per object and frame, its sub-frames as an animated webp (default); png: also "
                   "their RGBA and alpha PNGs; none: no crops")
    p.add_argument("--num-frames", type=int, default=8, help="sub-frames to render per input (temporal super-resolution factor)")
    _ensemble_arg(p)
    p.add_argument("--out", required=True, help="output folder (or URI); must not exist unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _work_dir_arg(p)
    p.set_defaults(func=c.cmd_deblur)

    p = sub.add_parser("runs", help="list and compare runs, move registry aliases")
    _work_dir_arg(p)
    rsub = p.add_subparsers(dest="runs_cmd", required=True)
    q = rsub.add_parser("list", help="runs of an experiment with their final metrics")
    q.add_argument("--experiment", default="fmolab")
    q.add_argument("--max", type=int, default=50)
    q = rsub.add_parser("compare", help="differing params, final metrics and overlaid curves of runs")
    q.add_argument("run", nargs="*", help="run ids or run names (none: every run of --experiment)")
    q.add_argument("--experiment", help="experiment to take the runs from / to look names up in")
    q.add_argument("--metric", action="append", help="metric to plot (repeatable; default train/loss and val/loss)")
    q.add_argument("--out", help="output folder (default <work>/comparisons/<time>)")
    q.add_argument("--no-log", action="store_true", help="do not log the comparison to MLflow")
    q = rsub.add_parser("promote", help="point a registry alias at a model version")
    q.add_argument("name", help="registered model name")
    q.add_argument("alias", help="alias to set, e.g. champion")
    q.add_argument("--version", type=int, help="model version (default: the version --from-alias points to)")
    q.add_argument("--from-alias", default="", help="copy the version of this alias")
    p.set_defaults(func=c.cmd_runs)

    p = sub.add_parser("submit", help="submit a job spec (jobs/*.yaml) to a Ray cluster and follow it")
    p.add_argument("spec", help="job spec YAML (see jobs/README.md)")
    _address_arg(p)
    p.add_argument("--no-wait", action="store_true", help="print the submission id and return")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides appended to the entrypoint")
    p.set_defaults(func=c.cmd_submit)

    p = sub.add_parser("jobs", help="list, inspect, follow and stop Ray jobs")
    _address_arg(p)
    jsub = p.add_subparsers(dest="jobs_cmd", required=True)
    jsub.add_parser("list", help="all jobs of the cluster")
    for name, text in (("status", "status of a job"), ("logs", "log of a job"), ("stop", "stop a job")):
        q = jsub.add_parser(name, help=text)
        q.add_argument("id", help="submission id")
        if name == "logs":
            q.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    p.set_defaults(func=c.cmd_jobs)

    p = sub.add_parser("import", help="bring published weights in as an MLflow model")
    q = p.add_subparsers(dest="import_kind", required=True).add_parser(
        "defmo", help="the official DeFMO files -> a registered model of the `defmo` preset (strict, weights_only)")
    q.add_argument("encoder", help="encoder_best.pt (a path or a URI)")
    q.add_argument("rendering", help="rendering_best.pt (a path or a URI)")
    q.add_argument("--register", required=True, metavar="NAME", help="registered model name")
    q.add_argument("--alias", default="official", help="alias to point at the new version (default official)")
    _work_dir_arg(q)
    q.set_defaults(func=c.cmd_import)

    p = sub.add_parser("export", help="write a model out in another project's format")
    q = p.add_subparsers(dest="export_kind", required=True).add_parser(
        "defmo", help="a model of the official structure -> encoder_best.pt + rendering_best.pt (official code, kornia)")
    q.add_argument("--model", required=True, help="models:/NAME@ALIAS, runs:/ID/NAME, models:/m-ID, or a checkpoint folder")
    q.add_argument("--out", required=True, help="output folder or URI")
    _work_dir_arg(q)
    q.set_defaults(func=c.cmd_export)

    p = sub.add_parser("list", help="list registered parts by name")
    p.add_argument("kind", nargs="?", default="all",
                   choices=["all", "encoders", "renderers", "losses", "formats", "optimizers", "schedulers"])
    p.set_defaults(func=c.cmd_list)
    return parser
