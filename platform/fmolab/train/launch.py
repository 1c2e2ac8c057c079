"""Starting a Ray Train run: the one path that ``fmolab train`` and every Tune trial take, so both
record the same tags and train the same way."""
from __future__ import annotations

import hashlib

from fmolab import storage
from fmolab.config import Config, to_dict


def run_dir(cfg: Config, run_name: str) -> str:
    """``<storage>/runs/<name>``: the run's config, best weights and loss curves (a path or a URI)."""
    return cfg.output("runs", run_name)


def dataset_tags(cfg: Config) -> dict[str, str]:
    """Which data a run learned from: the training folder and its manifest's hash."""
    try:
        digest = hashlib.sha1(storage.read_bytes(storage.join(cfg.train_dir, "manifest.json"))).hexdigest()
    except FileNotFoundError:
        digest = "none"
    return {"dataset": cfg.train_dir, "dataset_manifest_sha1": digest}


def open_run(cfg: Config, tags: dict[str, str] | None = None, command: str = "train") -> str:
    """Save the config of run ``cfg.train.run_name`` and open (or, resuming, find) its MLflow run with
    the standard tags (variant, git commit, dataset) plus ``tags``, its data as dataset inputs;
    returns the MLflow run id."""
    from fmolab.tracking.datasets import log_dataset
    from fmolab.tracking.store import git_commit, start_or_resume_run

    storage.write_json(storage.join(run_dir(cfg, cfg.train.run_name), "config.json"), to_dict(cfg))
    standard = {"variant": cfg.variant, "git_commit": git_commit(), **dataset_tags(cfg)}
    run_id = start_or_resume_run(cfg, cfg.train.run_name, {**standard, **(tags or {})}, command=command)
    log_dataset(run_id, cfg.train_dir, "training")
    if cfg.data.val:
        log_dataset(run_id, cfg.data.val, "validation")
    return run_id


def torch_trainer(cfg: Config, loop_config: dict, run_config):
    """The ``TorchTrainer`` of :func:`fmolab.train.loop.train_loop` for ``cfg`` (``run_config`` is
    copied, not changed)."""
    import copy

    import ray.train
    from ray.train.torch import TorchTrainer

    from fmolab.train.elastic import scaling
    from fmolab.train.loop import train_loop

    train_cfg = cfg.train
    if train_cfg.keep_freed_memory:  # the workers' malloc, set as their processes start (fmolab.train.heap)
        from fmolab.train.heap import with_worker_env

        run_config = copy.copy(run_config)
        run_config.worker_runtime_env = with_worker_env(run_config.worker_runtime_env)
    datasets = None
    if cfg.data.pipeline == "ray_data":
        from fmolab.data.ray_pipeline import ray_dataset

        # enough passes for the whole run in one Ray Data execution (each start costs seconds)
        samples = train_cfg.steps * train_cfg.batch_size * train_cfg.grad_accum * train_cfg.workers
        datasets = {"train": ray_dataset(cfg, "train", batch_size=train_cfg.batch_size, samples=samples)}
    return _interruptible(TorchTrainer)(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            **scaling(cfg), use_gpu=train_cfg.use_gpu,
            resources_per_worker={"CPU": train_cfg.cpus_per_worker, **({"GPU": 1} if train_cfg.use_gpu else {})},
        ),
        run_config=run_config,
        datasets=datasets,
    )


def _interruptible(trainer_cls):
    """``trainer_cls`` whose Ctrl-C ends the run at once. Ray Train's own handler asks the controller
    to abort and waits for the answer, which never comes while the controller retries placing a
    worker group it cannot place (its loop does not yield); this one waits 5 s, then kills it."""
    if not hasattr(trainer_cls, "_register_sigint_handler"):  # another Ray: its own handling
        return trainer_cls

    class Interruptible(trainer_cls):
        def _register_sigint_handler(self, controller):
            import signal

            import ray

            def handler(signum, frame):
                ready, _ = ray.wait([controller.abort.remote()], timeout=5)
                if not ready:
                    ray.kill(controller, no_restart=True)
                raise KeyboardInterrupt("Ctrl-C during training")

            signal.signal(signal.SIGINT, handler)

    return Interruptible


def launch(cfg: Config, run_id: str, tracking_uri: str, storage_path: str, *, callbacks: list = (),
           keep: int = 2, end_on_error: bool = True):
    """Run ``cfg``'s training as Ray Train run ``cfg.train.run_name`` below ``storage_path`` (a folder
    or a URI: checkpoints, resume, ``train.max_failures`` restarts), logging to MLflow run ``run_id``;
    returns the Ray result. An error (or Ctrl-C) ends the MLflow run with its reason
    (:mod:`fmolab.tracking.ending`) unless ``end_on_error`` is off (a search's driver decides)."""
    import ray.train

    from fmolab.tracking.ending import end_run, error_text, reason_of_error
    from fmolab.train.elastic import start_bound, unwrap

    bound = start_bound(cfg)
    trainer = torch_trainer(cfg, {"config": to_dict(cfg), "run_id": run_id, "tracking_uri": tracking_uri},
                            ray.train.RunConfig(
                                name=cfg.train.run_name, **storage.ray_storage(storage_path),
                                callbacks=list(callbacks) + ([bound] if bound is not None else []),
                                failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
                                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep),
                                # Ray Train's INFO lines (worker group, DDP, each checkpoint) go to its log files only
                                logging_config=ray.train.LoggingConfig(log_level="WARNING")))
    import signal
    import threading

    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    try:
        try:
            result = trainer.fit()
        except SystemExit as exc:  # a signal inside Ray's ray.get surfaces as SystemExit(1), not as the
            raise KeyboardInterrupt(f"interrupted during training ({exc!r})") from exc  # handler's exception
        except Exception as exc:
            inner = unwrap(exc)
            if inner is not exc:
                raise inner from None
            raise
        if result.error:
            raise unwrap(result.error)
    except (Exception, KeyboardInterrupt) as exc:
        if end_on_error and run_id:
            end_run(run_id, reason_of_error(exc), steps=cfg.train.steps, detail=error_text(exc))
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)  # fit installed its own Ctrl-C handler
    return result
