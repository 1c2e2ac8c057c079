"""``fmolab``: one subcommand per stage. Every config value is settable as ``section.key=value``."""
from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from fmolab.config import Config, ConfigError, dump_yaml, load_config

PRESETS = ("demo", "background_blur", "double_blur", "multi_object", "self_supervised")


def preset_path(name: str) -> Path:
    path = Path(str(resources.files("fmolab") / "presets" / f"{name}.yaml"))
    if not path.exists():
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return path


def _config_args(p: argparse.ArgumentParser, default_preset: str | None = None) -> None:
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="YAML config or job spec (repeatable; later files win)")
    p.add_argument("--preset", default=default_preset, choices=PRESETS,
                   help=f"start from a ready configuration (default: {default_preset or 'none'})")
    p.add_argument("--work-dir", help="folder for every generated and temporary file (default ./fmolab-work, or $FMOLAB_HOME)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=1e-4 data.format=double_blur")


def _load(args) -> Config:
    files = ([preset_path(args.preset)] if getattr(args, "preset", None) else []) + args.config
    overrides = list(args.overrides)
    if getattr(args, "work_dir", None):
        overrides.append(f"runtime.work_dir={args.work_dir}")
    cfg = load_config(files, overrides)
    from fmolab.runtime import use_work_dir

    cfg.runtime.work_dir = str(use_work_dir(cfg.work_dir))  # pinned: workers must not guess it
    return cfg


# ---------------------------------------------------------------- commands


def cmd_demo(args) -> int:
    from fmolab.demo import run_demo

    run_demo(_load(args), fresh=args.fresh)
    return 0


def cmd_render(args) -> int:
    cfg = _load(args)
    if args.print_config:
        print(dump_yaml(cfg))
        return 0
    from render_cluster.pipeline import render_dataset

    manifest = render_dataset(cfg, progress=True)
    print(json.dumps({k: manifest.get(k) for k in ("path", "num_rows", "rejections", "shards") if k in manifest},
                     indent=2, default=str))
    return 0


def cmd_dataset_inspect(args) -> int:
    from render_cluster.inspect import inspect_dataset

    out = Path(args.out or Path(args.path) / "inspect")
    info = inspect_dataset(args.path, out, n=args.n)
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_train(args) -> int:
    if args.resume:
        from fmolab.runtime import use_work_dir
        from fmolab.train import load_run_config

        import os

        work = Path(args.work_dir or os.environ.get("FMOLAB_HOME") or "fmolab-work").absolute()
        cfg = load_run_config(work, args.resume)
        use_work_dir(cfg.work_dir)
    else:
        cfg = _load(args)
    if args.print_config:
        print(dump_yaml(cfg))
        return 0
    from fmolab.train import train

    out = train(cfg)
    print(json.dumps({k: v for k, v in out.items() if k != "metrics"}, indent=2))
    return 0


def cmd_deblur(args) -> int:
    from fmolab.deblur import deblur_images, deblur_video, load_predictor
    from fmolab.runtime import use_work_dir
    from fmolab.tracking import setup_tracking

    cfg = load_config([], [f"runtime.work_dir={args.work_dir}"] if args.work_dir else [])
    use_work_dir(cfg.work_dir)
    images = args.frames or ([args.image] if args.image else [])
    if sum(bool(x) for x in (args.frames, args.image, args.video)) != 1:
        raise ConfigError("give exactly one input: --frames A B (double blur), --image X --background B, "
                          "or --video PATH")
    if args.video and args.background:
        raise ConfigError("--background goes with --image; a video's background is estimated from its frames")
    if args.num_frames < 1:
        raise ConfigError(f"--num-frames {args.num_frames}: must be >= 1")
    setup_tracking(cfg)
    predictor = load_predictor(args.model)
    if args.video:
        out = deblur_video(predictor, args.video, args.out, num_frames=args.num_frames, window=args.window,
                           threshold=args.threshold, min_area=args.min_area, chunk_frames=args.chunk_frames)
    else:
        out = deblur_images(predictor, images, args.background, args.out, num_frames=args.num_frames)
    print(json.dumps(out, indent=2))
    return 0


def cmd_runs(args) -> int:
    import mlflow

    from fmolab.runtime import use_work_dir
    from fmolab.tracking import promote, setup_tracking

    cfg = load_config([], [f"runtime.work_dir={args.work_dir}"] if args.work_dir else [])
    use_work_dir(cfg.work_dir)
    setup_tracking(cfg)
    if args.runs_cmd == "promote":
        version = promote(args.name, args.alias, args.version, args.from_alias)
        print(f"models:/{args.name}@{args.alias} -> version {version}")
        return 0
    if args.runs_cmd == "compare":
        import time

        from fmolab.compare import compare_runs

        out_dir = args.out or str(cfg.work_dir / "comparisons" / time.strftime("%Y%m%d-%H%M%S"))
        res = compare_runs(args.run, args.experiment, args.metric or ["train/loss", "val/loss"], out_dir,
                           log=not args.no_log, cfg=cfg)
        print(res["table"])
        print(json.dumps({k: v for k, v in res.items() if k != "table"}, indent=2))
        return 0
    # list
    exp = mlflow.get_experiment_by_name(args.experiment)
    if exp is None:
        print(f"no experiment {args.experiment!r} in {cfg.tracking_uri}")
        return 1
    runs = mlflow.search_runs([exp.experiment_id], output_format="list", max_results=args.max)
    print(f"{'run name':32} {'status':10} {'variant':16} {'val/loss':>10} {'val/psnr':>9}  run id")
    for r in runs:
        m = r.data.metrics
        print(f"{r.info.run_name[:32]:32} {r.info.status:10} {r.data.tags.get('variant', ''):16} "
              f"{m.get('val/loss', float('nan')):10.4f} {m.get('val/psnr', float('nan')):9.2f}  {r.info.run_id}")
    return 0


def cmd_list(args) -> int:
    from fmolab.registry import Registry

    tables: dict[str, Registry] = {}
    if args.kind in ("encoders", "renderers", "all"):
        from fmolab.models import ENCODERS, RENDERERS

        tables.update(encoders=ENCODERS, renderers=RENDERERS)
    if args.kind in ("losses", "all"):
        from fmolab.losses import LOSSES

        tables["losses"] = LOSSES
    if args.kind in ("formats", "all"):
        from fmolab.data import FORMATS

        tables["formats"] = FORMATS
    for kind, reg in tables.items():
        print(f"{kind}: {', '.join(reg.names())}")
    return 0


def cmd_submit(args) -> int:
    from fmolab import jobs

    spec = jobs.load_spec(args.spec, args.overrides)
    submission_id = jobs.submit(spec, args.address)
    print(f"submitted {args.spec} as {submission_id}", flush=True)
    if args.no_wait:
        return 0
    status = jobs.follow(submission_id, args.address, echo=lambda text: print(text, flush=True))
    print(f"job {submission_id}: {status}", flush=True)
    if status != "SUCCEEDED":
        print(f"--- last lines of {submission_id} ---\n{jobs.log_tail(submission_id, args.address)}", file=sys.stderr)
        return 1
    return 0


def cmd_jobs(args) -> int:
    from fmolab import jobs

    c = jobs.client(args.address)
    if args.jobs_cmd == "list":
        print(f"{'submission id':28} {'status':10} entrypoint")
        for j in c.list_jobs():
            print(f"{(j.submission_id or j.job_id or '')[:28]:28} {str(j.status.value):10} {j.entrypoint[:80]}")
    elif args.jobs_cmd == "status":
        print(c.get_job_status(args.id).value)
    elif args.jobs_cmd == "logs":
        if args.follow:
            return 0 if jobs.follow(args.id, args.address) == "SUCCEEDED" else 1
        print(c.get_job_logs(args.id))
    elif args.jobs_cmd == "stop":
        print("stopped" if c.stop_job(args.id) else "already finished")
    return 0


def cmd_evaluate(args) -> int:
    import time

    from fmolab.deblur import load_predictor
    from fmolab.evaluate import evaluate, format_summary, log_evaluation
    from fmolab.runtime import use_work_dir
    from fmolab.tracking import setup_tracking

    cfg = load_config([], [f"runtime.work_dir={args.work_dir}"] if args.work_dir else [])
    use_work_dir(cfg.work_dir)
    if args.max is not None and args.max < 1:
        raise ConfigError(f"--max {args.max}: must be >= 1")
    size = None
    if args.size:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 320x240") from None
        size = (h, w)
    setup_tracking(cfg)
    predictor = load_predictor(args.model)
    out_dir = args.out or str(cfg.work_dir / "eval" / f"{Path(args.data).name}-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = evaluate(predictor, args.data, out_dir, kind=args.kind, num_frames=args.num_frames,
                       max_samples=args.max, sub_steps=args.sub_steps, size=size, sync=args.sync, progress=True)
    if not args.no_log:
        summary["mlflow_run_id"] = log_evaluation(cfg, summary, args.experiment)
    print(format_summary(summary))
    print(json.dumps({k: summary[k] for k in ("out_dir", "num_samples", "dataset_kind", "mlflow_run_id") if k in summary},
                     indent=2))
    return 0


def cmd_tune(args) -> int:
    import os

    from fmolab.search_space import load_space
    from fmolab.tune import run_search

    if args.resume:
        from fmolab.runtime import use_work_dir

        work = Path(args.work_dir or os.environ.get("FMOLAB_HOME") or "fmolab-work").absolute()
        cfg = load_config([], [f"runtime.work_dir={work}"])
        use_work_dir(cfg.work_dir)
        out = run_search(cfg, None, name=args.resume, resume=True)
    else:
        if not args.space:
            raise ConfigError("give --space FILE (see search_spaces/README.md), or --resume NAME")
        if not args.preset:  # the space may name a default preset
            import yaml

            try:
                data = yaml.safe_load(Path(args.space).read_text()) if Path(args.space).exists() else None
            except yaml.YAMLError:
                data = None
            if isinstance(data, dict) and data.get("preset"):
                args.preset = str(data["preset"])
        overrides, args.overrides = list(args.overrides), []
        cfg = _load(args)  # preset and files; the command line's overrides win over the space's
        space = load_space(args.space, cfg)
        space.metric = args.metric or space.metric
        space.mode = args.mode or space.mode
        if args.print_space:
            print(f"ranked by {space.metric} ({space.mode})")
            for p in space.params:
                print(f"{p.name:28} {p.describe()}" + (f"  when {p.when}" if p.when else ""))
            for k, t in space.templates.items():
                print(f"{k:28} = {t}")
            return 0
        out = run_search(cfg, space, args.trials, overrides=overrides, name=args.name, max_concurrent=args.max_concurrent,
                         study_storage=args.study_storage, seed=args.seed, grace_steps=args.grace_steps,
                         reduction_factor=args.reduction_factor)
    keys = ("name", "parent_run_id", "best_trial", "best_params", "metric", "best_value", "best_run_id", "model_uri",
            "registered", "table", "plots")
    print(json.dumps({k: out[k] for k in keys if k in out}, indent=2, default=str))
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
    p.add_argument("--resume", metavar="RUN_NAME", help="resume a run from its last checkpoint with its saved config")
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
    p.add_argument("--data", required=True, help="fmolab shard dataset, or a Falling Objects / TbD / TbD-3D folder")
    p.add_argument("--kind", default="auto", choices=["auto", "shards", "falling", "tbd", "tbd3d"],
                   help="dataset layout (default: detected)")
    p.add_argument("--out", help="output folder (default <work>/eval/<data>-<time>)")
    p.add_argument("--max", type=int, help="evaluate at most N samples")
    p.add_argument("--num-frames", type=int, help="sub-frames per sample for shards (default: the model's "
                   "data.frames_per_sample; benchmarks fix it: 8, or 12 for '-12' sequences)")
    p.add_argument("--sub-steps", type=int, default=1, help="benchmarks: renders averaged per sub-frame "
                   "(DeFMO used 5 to imitate the ground truth's short exposure)")
    p.add_argument("--size", help="benchmarks: model input WIDTHxHEIGHT (default: the training resolution)")
    p.add_argument("--sync", default="first", choices=["first", "all"],
                   help="direction synchronisation: first sub-frame (benchmark) or whole sequence")
    p.add_argument("--experiment", default="fmolab-eval", help="MLflow experiment of the evaluation run")
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    p.add_argument("--work-dir", help="work folder (MLflow store)")
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
    p.add_argument("--work-dir", help="work folder (MLflow store)")
    p.set_defaults(func=cmd_deblur)

    p = sub.add_parser("runs", help="list and compare runs, move registry aliases")
    p.add_argument("--work-dir", help="work folder (MLflow store)")
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
    p.add_argument("--address", default="", help="Ray dashboard/job server (default $RAY_ADDRESS or http://127.0.0.1:8265)")
    p.add_argument("--no-wait", action="store_true", help="print the submission id and return")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides appended to the entrypoint")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("jobs", help="list, inspect, follow and stop Ray jobs")
    p.add_argument("--address", default="", help="Ray dashboard/job server (default $RAY_ADDRESS or http://127.0.0.1:8265)")
    jsub = p.add_subparsers(dest="jobs_cmd", required=True)
    jsub.add_parser("list", help="all jobs of the cluster")
    for name, text in (("status", "status of a job"), ("logs", "log of a job"), ("stop", "stop a job")):
        q = jsub.add_parser(name, help=text)
        q.add_argument("id", help="submission id")
        if name == "logs":
            q.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("list", help="list registered parts by name")
    p.add_argument("kind", nargs="?", default="all", choices=["all", "encoders", "renderers", "losses", "formats"])
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
