"""Process environment: one work folder for every generated and temporary file, and Ray start-up.

Ray, Blender, MLflow, torch and matplotlib otherwise write to /tmp and the home directory. Calling
:func:`use_work_dir` first points them all below ``<work_dir>`` (``FMOLAB_HOME`` overrides).
"""
from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
from pathlib import Path

from fmolab.config import Config, derive, load_config, resolve_work_dir
from fmolab.storage import CREDENTIAL_VARS, SETTING_VARS

log = logging.getLogger("fmolab")

# AF_UNIX socket paths are limited to 107 bytes; Ray puts sockets ~70 characters below its temp dir.
_MAX_RAY_TMP = 40


def use_work_dir(work_dir: str | os.PathLike) -> Path:
    """Create ``work_dir`` and point temp/cache variables below it; returns its absolute path."""
    work = Path(work_dir).absolute()
    tmp = work / "tmp"
    cache = work / "cache"
    for d in (work, tmp, cache):
        d.mkdir(parents=True, exist_ok=True)
    os.environ["FMOLAB_HOME"] = str(work)
    os.environ["TMPDIR"] = str(tmp)  # Python tempfile, Blender, MLflow temp artifacts
    os.environ.setdefault("XDG_CACHE_HOME", str(cache))  # also Blender's thumbnails
    os.environ.setdefault("XDG_CONFIG_HOME", str(work / "config"))  # MLflow's and others' config files
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(work / "config" / "blender"))  # not ~/.config/blender
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MPLCONFIGDIR", str(cache / "matplotlib"))
    os.environ.setdefault("TORCH_HOME", str(cache / "torch"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_TMPDIR"] = str(ray_temp_dir(work))
    import tempfile

    tempfile.tempdir = None  # re-read TMPDIR
    return work


def use_config(cfg: Config) -> Config:
    """:func:`use_work_dir` for ``cfg`` plus its node cache bound (``runtime.cache_gb``, which Ray
    workers get with the storage settings); returns ``cfg`` with that work folder pinned (workers on
    other nodes must not guess it)."""
    cfg = derive(cfg, {"runtime.work_dir": str(use_work_dir(cfg.work_dir))})
    if cfg.runtime.cache_gb:
        os.environ["FMOLAB_CACHE_GB"] = str(cfg.runtime.cache_gb)
    return cfg


def work_config(work_dir: str | os.PathLike | None = None) -> Config:
    """The default config with its work folder pinned (``work_dir``, else $FMOLAB_HOME, else
    ./fmolab-work) and the process pointed below it: what commands without a config tree start from."""
    cfg = load_config([], [f"runtime.work_dir={work_dir}"] if work_dir else [])
    return derive(cfg, {"runtime.work_dir": str(use_work_dir(cfg.work_dir))})


# What a client of a server with MLflow's basic-auth app (mlflow/serve.sh AUTH=basic) sends; set from a
# secret, never written to a file or a log by fmolab.
MLFLOW_AUTH_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


# Third-party lines of a normal run that say nothing to a user, and fmolab's own lines say better.
QUIET_ENV = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # "Creating initial MLflow database tables...", per run
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # a bar per downloaded file
    # "View run at <address>" when a run ends: an address without the model-training view (fmolab's own
    # lines give the one that opens it, tracking.store.ui_address)
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "RAY_COLOR_PREFIX": "0",  # no ANSI colour codes around "(RayTrainWorker pid=...)" prefixes
    "RAY_DATA_LOG_LEVEL": "WARNING",  # "Dataset ... execution finished" per dataset (Ray Data resets its logger)
}
QUIET_LOGGERS = {
    "ray.train": logging.WARNING,  # INFO per step of starting a worker group, per checkpoint, per DDP wrap
    "ray.tune": logging.WARNING,  # INFO "trial ... completed" lines besides the report
    "ray.data._internal.progress": logging.ERROR,  # "Progress bars disabled": fmolab shows its own
    "ray._private.authentication": logging.ERROR,  # "Token authentication is enabled" on every start
}
# A WARNING that repeats for no fault of the user's: Ray Train's placement-group cleaner polls the
# State API, which needs the dashboard a local Ray does not start (187 lines in one demo run).
NOISE = ("Failed to query Ray Train Controller actor state",)


class _DropNoise(logging.Filter):
    """Drops :data:`NOISE`; Ray Train's warnings and errors (a lost node, a group restarted) become one
    line each: what Ray Train did and the error's first line, without tracebacks through Ray's own
    code (the driver's one error line says what to do when a run fails)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(part in message for part in NOISE):
            return False
        if record.name.startswith("ray.train") and (record.exc_info or "\n" in message):
            line = message.strip().splitlines()[0] if message.strip() else ""
            error = record.exc_info[1] if record.exc_info else None
            if error is not None and (str(error).splitlines() or [""])[0][:80] not in line:
                line += f" {type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            record.msg, record.args = line[:400], ()
            record.exc_info = record.exc_text = record.stack_info = None
        return True


def quiet_third_party() -> None:
    """Keep third-party INFO chatter and known-benign repeated warnings out of a normal run's output
    (their warnings and errors stay). Runs in the CLI and, as Ray's ``worker_process_setup_hook``, in
    every worker process of the job, Ray Train's own controller actors included."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    noise = _DropNoise()
    for name in ("ray", "ray.train", *[n for n in logging.root.manager.loggerDict if n.startswith("ray.")]):
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if noise not in target.filters:
                target.addFilter(noise)


def worker_env() -> dict[str, str]:
    """The settings of this process a Ray worker or job on another node needs: MLflow's URI, the
    storage of outputs, the object store's endpoint and region (:data:`fmolab.storage.SETTING_VARS`).
    No secret: Ray writes a runtime env in plain text to its logs on every node. Workers of a local
    Ray inherit this process's credentials; a cluster's nodes have their own (its Secret)."""
    names = ("MLFLOW_TRACKING_URI", "FMOLAB_STORAGE", *SETTING_VARS, *QUIET_ENV)
    return {k: os.environ[k] for k in names if os.environ.get(k)}


def secrets_not_sent() -> list[str]:
    """The credential variables set here that :func:`worker_env` leaves out (for a submit's notice)."""
    return [k for k in (*MLFLOW_AUTH_VARS, *CREDENTIAL_VARS) if os.environ.get(k) and k not in SETTING_VARS]


def ray_temp_dir(work: Path) -> Path:
    """``<work>/ray``, reached through a short link in /tmp when the real path is too long for sockets."""
    real = work / "ray"
    real.mkdir(parents=True, exist_ok=True)
    if len(str(real)) <= _MAX_RAY_TMP:
        return real
    link = Path("/tmp") / f"fmolab-ray-{hashlib.sha1(str(real).encode()).hexdigest()[:10]}"
    if not link.is_symlink() or os.readlink(link) != str(real):
        # made beside it, then renamed over it: two drivers starting at once (two users of one work
        # folder) both succeed, where unlink + symlink left one with FileExistsError
        tmp = link.with_name(f"{link.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(real)
        os.replace(tmp, link)
    return link


def use_auth_token_if_present() -> None:
    """Ray >= 2.5x clusters require a token (RAY_AUTH_MODE=token); like `ray start` and `ray job
    submit`, a client sends the local token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)
    when there is one (``ray.init(address=...)`` alone would not)."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except ImportError:  # a Ray without token authentication
        pass


def init_ray(address: str = "", num_cpus: int = 0, work_dir: str | os.PathLike | None = None):
    """Connect to ``address`` or start a local Ray whose files live in the work folder."""
    import ray

    if ray.is_initialized():
        return ray
    work = use_work_dir(resolve_work_dir(work_dir))
    address = address or os.environ.get("RAY_ADDRESS", "")
    # Workers get the work folder, the tracking URI and the storage's endpoint wherever they run (not
    # through a shared home folder: on a cluster there is none); credentials, see worker_env.
    env_vars = {"FMOLAB_HOME": str(work), **worker_env()}
    kwargs: dict = dict(log_to_driver=True, logging_level=logging.WARNING)
    # Inside a Ray job the job's runtime env applies already; Ray refuses to merge a second one.
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        kwargs["runtime_env"] = {"env_vars": env_vars, "worker_process_setup_hook": "fmolab.runtime.quiet_third_party"}
    if address:
        use_auth_token_if_present()
        ray.init(address=address, **kwargs)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            _temp_dir=str(ray_temp_dir(work)),
            **kwargs,
        )
    # Ray's core worker installs a C-level SIGTERM handler that ends the driver on the spot; put the
    # Python one back (the CLI's: a SIGTERM ends runs as KILLED, like Ctrl-C, and work stays resumable).
    handler = signal.getsignal(signal.SIGTERM)
    if callable(handler) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
    quiet_third_party()  # again: Ray has set up its loggers now
    # Ray Data's own progress bars would interleave with ours.
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except Exception:  # older/newer Ray without these knobs
        pass
    return ray


def progress(total: int | None, unit: str, desc: str, show: bool | None = None):
    """A tqdm bar with rate and ETA on stderr: on a terminal, or always with FMOLAB_PROGRESS=1 (a log
    file), never with FMOLAB_PROGRESS=0; ``show`` True/False decides instead (the render's
    ``progress`` argument); ``total`` None or 0 when unknown (rate only)."""
    from tqdm.auto import tqdm

    forced = os.environ.get("FMOLAB_PROGRESS", "")
    disable = (not show) if show is not None else None if forced == "" else forced == "0"  # None: a terminal?
    return tqdm(total=total or None, unit=unit, desc=desc, disable=disable, dynamic_ncols=True)
