"""The commands of ``fmolab``: each parses nothing (the parser did) and calls one function of its stage."""
from __future__ import annotations

import json

from fmolab.config import Config, dump_yaml, load_config, preset_path


def load(args) -> Config:
    """The config of a command: preset, files, overrides; its work folder pinned and in use."""
    from fmolab.runtime import use_config

    files = [preset_path(n) for n in (getattr(args, "preset", None), getattr(args, "scale", None)) if n] + args.config
    cfg = load_config(files, list(args.overrides) + ([f"runtime.work_dir={args.work_dir}"] if args.work_dir else []))
    return use_config(cfg)  # the work folder pinned (workers must not guess it), the cache bound


def printed(args, cfg: Config) -> bool:
    """``--print-config``: print the resolved tree instead of running."""
    if getattr(args, "print_config", False):
        print(dump_yaml(cfg))
        return True
    return False


def show(result: dict, keys=None) -> None:
    print(json.dumps({k: v for k, v in result.items() if keys is None or k in keys}, indent=2, default=str))


def cmd_demo(args) -> int:
    from fmolab.demo import run_demo

    run_demo(load(args), fresh=args.fresh)
    return 0


def cmd_render(args) -> int:
    from render_cluster.pipeline import render_dataset

    cfg = load(args)
    if not printed(args, cfg):
        show(render_dataset(cfg, progress=True), ("path", "num_rows", "rejections", "shards", "timing"))
    return 0


def cmd_dataset_inspect(args) -> int:
    from render_cluster.inspect import inspect_dataset

    info = inspect_dataset(args.path, args.out, n=args.n, check_rows=args.verify)
    show(info)
    return 0 if info["complete"] or not args.verify else 1  # --verify: a broken dataset fails the command


def cmd_train(args) -> int:
    from fmolab.train import load_run_config, train

    from fmolab.train.preflight import preflight

    cfg = load_run_config(load(args), args.resume, args.overrides) if args.resume else load(args)
    if printed(args, cfg):
        print(f"preflight: {preflight(cfg, data=False)}")  # the config builds (or the error, exit 2)
    else:
        show({k: v for k, v in train(cfg).items() if k != "metrics"})
    return 0


def cmd_deblur(args) -> int:
    from fmolab.inference.deblur import deblur
    from fmolab.inference.options import DeblurOptions, VideoOptions

    video = VideoOptions(window=args.window, threshold=args.threshold, min_area=args.min_area,
                         max_objects=args.max_objects, chunk_frames=args.chunk_frames, animations=args.animations,
                         crops=args.crops)
    options = DeblurOptions(num_frames=args.num_frames, workers=args.workers, ensemble=args.ensemble, video=video)
    result = deblur(args.model, args.out, frames=args.frames, image=args.image, background=args.background,
                    video=args.video, videos=args.videos, options=options, address=args.address,
                    work_dir=args.work_dir, overwrite=args.overwrite)
    show({k: v for k, v in result.items() if k != "results"})
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
        show(res)
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
    from fmolab.inference.options import EvaluateOptions

    options = EvaluateOptions(kind=args.kind, num_frames=args.num_frames, max_samples=args.max,
                              sub_steps=args.sub_steps, size=EvaluateOptions.parse_size(args.size or ""),
                              sync=args.sync, workers=args.workers, protocol=args.protocol, ensemble=args.ensemble)
    summary = run_evaluation(args.model, args.data, args.out or "", options, work_dir=args.work_dir or "",
                             experiment=args.experiment, log=not args.no_log, address=args.address)
    print(format_summary(summary))
    show(summary, ("out_dir", "num_samples", "dataset_kind", "mlflow_run_id", "mlflow_ui"))
    return 0


def cmd_tune(args) -> int:
    from fmolab.tune import SearchOptions, run_search, start_search

    if args.resume:  # the saved search is looked up in runtime.storage (an override), else the work folder
        out = run_search(load(args), None, name=args.resume, resume=True)
    else:
        scale = [str(preset_path(args.scale))] if args.scale else []  # after the preset, before the files
        options = SearchOptions(trials=args.trials, max_concurrent=args.max_concurrent, study_storage=args.study_storage,
                                seed=args.seed, grace_steps=args.grace_steps, reduction_factor=args.reduction_factor)
        out = start_search(args.space, scale + args.config, args.preset, args.overrides, options, name=args.name,
                           work_dir=args.work_dir or "", metric=args.metric, mode=args.mode,
                           print_space=args.print_space)
        if isinstance(out, str):  # --print-space
            print(out)
            return 0
    show(out, ("name", "parent_run_id", "best_trial", "best_params", "metric", "best_value", "best_run_id",
                "model_uri", "registered", "table", "plots", "mlflow_ui"))
    return 0


def cmd_study(args) -> int:
    from fmolab.config import parse_override
    from fmolab.runtime import use_config
    from fmolab.study import load_study
    from fmolab.study.report import study_report
    from fmolab.study.run import run_study
    from fmolab.tracking.store import setup_tracking

    overrides = dict(parse_override(o) for o in args.overrides)
    groups = [g for g in args.groups.split(",") if g] or None
    if args.study_command == "run":
        out = run_study(args.study, overrides, work_dir=args.work_dir or "", concurrency=args.max_concurrent,
                        groups=groups, seeds=args.seeds)
        show(out, ("name", "parent_run_id", "errors", "seconds"))
        return 1 if out["errors"] else 0
    study = load_study(args.study).subset(groups, args.seeds)
    extra = {**overrides, **({"runtime.work_dir": args.work_dir} if args.work_dir else {})}
    cfg = study.config(study.arms[0].name, 0, extra)
    cfg = use_config(cfg)
    setup_tracking(cfg)
    print(study_report(study, cfg, extra=extra)["markdown"])
    return 0


def cmd_import(args) -> int:
    from fmolab.inference.official import import_defmo

    show(import_defmo(args.encoder, args.rendering, args.register, args.alias, work_dir=args.work_dir or ""))
    return 0


def cmd_export(args) -> int:
    from fmolab.inference.official import export_defmo

    show(export_defmo(args.model, args.out, work_dir=args.work_dir or ""))
    return 0
