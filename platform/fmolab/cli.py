"""``fmolab``: one subcommand per stage, each parsing its arguments and calling one function of its
stage. Every config value is settable as ``section.key=value``."""
from __future__ import annotations

import argparse
import json
import sys

from fmolab.config import Config, ConfigError, dump_yaml, load_config, preset_names, preset_path


def _config_args(p: argparse.ArgumentParser, default_preset: str | None = None) -> None:
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="YAML config or job spec (repeatable; later files win)")
    p.add_argument("--preset", default=default_preset, choices=preset_names(),
                   help=f"start from a ready configuration (default: {default_preset or 'none'})")
    p.add_argument("--work-dir", help="folder for every generated and temporary file (default ./fmolab-work, or $FMOLAB_HOME)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=1e-4 data.format=double_blur")


def _work_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work-dir", help="work folder (MLflow store; default ./fmolab-work, or $FMOLAB_HOME)")


def _address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default="", help="Ray dashboard/job server (default $RAY_ADDRESS or http://127.0.0.1:8265)")


def _load(args) -> Config:
    """The config of a command: preset, files, overrides; its work folder pinned and in use."""
    from fmolab.runtime import use_work_dir

    files = ([preset_path(args.preset)] if getattr(args, "preset", None) else []) + args.config
    cfg = load_config(files, list(args.overrides) + ([f"runtime.work_dir={args.work_dir}"] if args.work_dir else []))
    cfg.runtime.work_dir = str(use_work_dir(cfg.work_dir))  # pinned: workers must not guess it
    return cfg


def _printed(args, cfg: Config) -> bool:
    """``--print-config``: print the resolved tree instead of running."""
    if getattr(args, "print_config", False):
        print(dump_yaml(cfg))
        return True
    return False


def _show(result: dict, keys=None) -> None:
    print(json.dumps({k: v for k, v in result.items() if keys is None or k in keys}, indent=2, default=str))


# ---------------------------------------------------------------- commands


def cmd_demo(args) -> int:
    from fmolab.demo import run_demo

    run_demo(_load(args), fresh=args.fresh)
    return 0


def cmd_render(args) -> int:
    from render_cluster.pipeline import render_dataset

    cfg = _load(args)
    if not _printed(args, cfg):
        _show(render_dataset(cfg, progress=True), ("path", "num_rows", "rejections", "shards"))
    return 0


def cmd_dataset_inspect(args) -> int:
    from render_cluster.inspect import inspect_dataset

    _show(inspect_dataset(args.path, args.out, n=args.n))
    return 0


def cmd_train(args) -> int:
    from fmolab.train import load_run_config, train

    cfg = load_run_config(_load(args), args.resume, args.overrides) if args.resume else _load(args)
    if not _printed(args, cfg):
        _show({k: v for k, v in train(cfg).items() if k != "metrics"})
    return 0


def cmd_deblur(args) -> int:
    from fmolab.inference.deblur import deblur

    _show(deblur(args.model, args.out, frames=args.frames, image=args.image, background=args.background,
                 video=args.video, num_frames=args.num_frames, work_dir=args.work_dir, window=args.window,
                 threshold=args.threshold, min_area=args.min_area, chunk_frames=args.chunk_frames))
    return 0


def cmd_runs(args) -> int:
    from fmolab.runtime import work_config
    from fmolab.tracking.store import setup_tracking

    cfg = work_config(args.work_dir)
    setup_tracking(cfg)
    if args.runs_cmd == "promote":
        from fmolab.tracking.model_registry import promote

        version = promote(args.name, args.alias, args.version, args.from_alias)
        print(f"models:/{args.name}@{args.alias} -> version {version}")
    elif args.runs_cmd == "compare":
        from fmolab.tracking.compare import compare_runs

        res = compare_runs(args.run, args.experiment, args.metric or ["train/loss", "val/loss"], args.out or "",
                           log=not args.no_log, cfg=cfg)
        print(res.pop("table"))
        _show(res)
    else:
        from fmolab.tracking.runs import list_runs

        print("\n".join(list_runs(args.experiment, args.max)))
    return 0


def cmd_list(args) -> int:
    from fmolab.data import FORMATS
    from fmolab.losses import LOSSES
    from fmolab.models import ENCODERS, RENDERERS
    from fmolab.train.optim import OPTIMIZERS, SCHEDULERS

    tables = {"encoders": ENCODERS, "renderers": RENDERERS, "losses": LOSSES, "formats": FORMATS,
              "optimizers": OPTIMIZERS, "schedulers": SCHEDULERS}
    for kind, reg in tables.items():
        if args.kind in (kind, "all"):
            print(f"{kind}: {', '.join(reg.names())}")
    return 0


def cmd_submit(args) -> int:
    from fmolab.jobs import submit_and_follow

    return submit_and_follow(args.spec, args.overrides, args.address, wait=not args.no_wait)


def cmd_jobs(args) -> int:
    from fmolab.jobs import manage

    return manage(args.jobs_cmd, getattr(args, "id", ""), args.address, getattr(args, "follow", False))


def cmd_evaluate(args) -> int:
    from fmolab.evaluation.evaluate import format_summary, run_evaluation

    summary = run_evaluation(args.model, args.data, args.out or "", work_dir=args.work_dir or "", size=args.size or "",
                             experiment=args.experiment, log=not args.no_log, address=args.address, kind=args.kind,
                             num_frames=args.num_frames, max_samples=args.max, sub_steps=args.sub_steps,
                             sync=args.sync, workers=args.workers)
    print(format_summary(summary))
    _show(summary, ("out_dir", "num_samples", "dataset_kind", "mlflow_run_id"))
    return 0


def cmd_tune(args) -> int:
    from fmolab.tune import run_search, start_search

    if args.resume:  # the saved search is looked up in runtime.storage (an override), else the work folder
        out = run_search(_load(args), None, name=args.resume, resume=True)
    else:
        out = start_search(args.space, args.config, args.preset, args.overrides, work_dir=args.work_dir or "",
                           metric=args.metric, mode=args.mode, print_space=args.print_space, trials=args.trials,
                           name=args.name, max_concurrent=args.max_concurrent, study_storage=args.study_storage,
                           seed=args.seed, grace_steps=args.grace_steps, reduction_factor=args.reduction_factor)
        if isinstance(out, str):  # --print-space
            print(out)
            return 0
    _show(out, ("name", "parent_run_id", "best_trial", "best_params", "metric", "best_value", "best_run_id",
                "model_uri", "registered", "table", "plots"))
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmolab",
        description="Temporal super-resolution of fast-moving objects on Ray: render, train, tune, evaluate, deblur.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="render a small dataset, train a double-blur model, register it, deblur a held-out sample")
    _config_args(p, "demo")
    p.add_argument("--fresh", action="store_true", help="delete the demo's dataset and runs first")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("render", help="render a synthetic FMO dataset with Blender across the Ray cluster")
    _config_args(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("dataset", help="look at a rendered dataset")
    dsub = p.add_subparsers(dest="dataset_cmd", required=True)
    q = dsub.add_parser("inspect", help="print the manifest, write a contact sheet and an animated preview")
    q.add_argument("path")
    q.add_argument("-n", type=int, default=8, help="samples in the preview")
    q.add_argument("--out", help="output folder (default PATH/inspect)")
    q.set_defaults(func=cmd_dataset_inspect)

    p = sub.add_parser("train", help="train a DeFMO model with Ray Train; tracked in MLflow")
    _config_args(p, None)
    p.add_argument("--resume", metavar="RUN_NAME", help="resume a run from its last checkpoint with its saved config "
                   "(KEY=VALUE overrides on top, e.g. train.steps=...; runtime.storage=URI says where to look)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=cmd_train)

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
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("evaluate", help="evaluate a registered model with the FMO benchmark metrics")
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, runs:/ID/model, or a checkpoint folder")
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
    p.add_argument("--sync", default="first", choices=["first", "all"],
                   help="direction synchronisation: first sub-frame (benchmark) or whole sequence")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="shards: score with N model actors on the Ray cluster (Ray Data; a GPU each where there are "
                        "GPUs), rows written as OUT/samples/*.parquet (default 0: in this process)")
    _address_arg(p)
    p.add_argument("--experiment", default="fmolab-eval", help="MLflow experiment of the evaluation run")
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    _work_dir_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("deblur", help="deblur real frames or a video with a trained model")
    p.add_argument("--model", required=True, help="models:/NAME@ALIAS, runs:/ID/model, or a checkpoint folder")
    p.add_argument("--frames", nargs=2, metavar=("FRAME1", "FRAME2"), help="two consecutive frames (double-blur models)")
    p.add_argument("--image", help="one blurred image (background+blur models)")
    p.add_argument("--background", help="the background of --image")
    p.add_argument("--video", help="a video: animated GIF/WebP/APNG, a folder of frames, or (with imageio) any video")
    p.add_argument("--window", type=int, default=9, help="video: frames in the running-median background")
    p.add_argument("--threshold", type=float, default=0.1, help="video: difference to the background that marks a mover")
    p.add_argument("--min-area", type=int, default=12, help="video: smallest mover in pixels")
    p.add_argument("--chunk-frames", type=int, default=240, help="video: output frames per super-resolved WebP file")
    p.add_argument("--num-frames", type=int, default=8, help="sub-frames to render per input (temporal super-resolution factor)")
    p.add_argument("--out", required=True, help="output folder")
    _work_dir_arg(p)
    p.set_defaults(func=cmd_deblur)

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
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("submit", help="submit a job spec (jobs/*.yaml) to a Ray cluster and follow it")
    p.add_argument("spec", help="job spec YAML (see jobs/README.md)")
    _address_arg(p)
    p.add_argument("--no-wait", action="store_true", help="print the submission id and return")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides appended to the entrypoint")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("jobs", help="list, inspect, follow and stop Ray jobs")
    _address_arg(p)
    jsub = p.add_subparsers(dest="jobs_cmd", required=True)
    jsub.add_parser("list", help="all jobs of the cluster")
    for name, text in (("status", "status of a job"), ("logs", "log of a job"), ("stop", "stop a job")):
        q = jsub.add_parser(name, help=text)
        q.add_argument("id", help="submission id")
        if name == "logs":
            q.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("list", help="list registered parts by name")
    p.add_argument("kind", nargs="?", default="all",
                   choices=["all", "encoders", "renderers", "losses", "formats", "optimizers", "schedulers"])
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted; completed work is kept (rerun the same command to resume)", file=sys.stderr)
        return 130
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"fmolab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # ShardError, TrackingError, training failures
        print(f"fmolab {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
