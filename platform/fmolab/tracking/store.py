"""MLflow set-up: the store (SQLite by default, an HTTP server on a cluster), experiments and runs."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from fmolab.config import Config, derive, flatten, to_dict
from fmolab.runtime import MLFLOW_AUTH_VARS

RUN_NAME_TAG = "fmolab.run_name"


class TrackingError(RuntimeError):
    """The tracking server cannot be reached or refuses a request."""


def setup_tracking(cfg: Config) -> str:
    """Point MLflow at ``cfg.tracking_uri``; fail within ``tracking.timeout`` s if a server is down."""
    import mlflow

    uri = cfg.tracking_uri
    if uri.startswith(("http://", "https://")):
        check_server(uri, cfg.tracking.timeout)
        # Without these MLflow retries for minutes before giving up.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(cfg.tracking.timeout, 5))))
    elif uri.startswith("sqlite:///"):  # created by the first run (ensure_experiment), not by a reader
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # mlflow.set_tracking_uri and set_registry_uri also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI,
    # which would outlive this config (later configs in the process read them first, processes and jobs
    # started from it inherit them: a leaked registry URI sent a later model load to another store).
    # MLflow keeps the URIs itself; Ray workers get the tracking URI explicitly with their config.
    previous = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return uri


def create_sqlite_store(db: Path) -> None:
    """Create (or open) the SQLite store's tables under a lock beside the file. Two jobs started at once
    on one work folder both ran MLflow's schema migration without it, and one failed with "table
    registered_model_tags already exists" (tests/test_jobs.py); MLflow's own lock, a file in the
    temporary folder, did not keep them apart."""
    import fcntl

    import mlflow

    db.parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{db}"
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # the tracking tables
        client.search_registered_models(max_results=1)  # the registry's


def authorized(request: urllib.request.Request) -> urllib.request.Request:
    """``request`` with the credentials MLflow's client would send (basic user/password, or a token)."""
    user, password, token = (os.environ.get(k, "") for k in MLFLOW_AUTH_VARS)
    if user or password:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
    elif token:
        request.add_header("Authorization", f"Bearer {token}")
    return request


def check_server(uri: str, timeout: float) -> None:
    """The server answers, and takes this process's credentials (if it asks for any): one request each,
    in seconds, before any run or Ray work starts."""
    base = uri.rstrip("/")
    try:
        with urllib.request.urlopen(base + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise TrackingError(f"MLflow server {uri} answered /health with HTTP {resp.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({exc}). Start it (see mlflow/README.md), "
            f"fix MLFLOW_TRACKING_URI / tracking.uri, or unset them to use the local SQLite store."
        ) from exc
    request = authorized(urllib.request.Request(base + "/api/2.0/mlflow/experiments/search?max_results=1"))
    user = os.environ.get(MLFLOW_AUTH_VARS[0], "")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise TrackingError(
                f"MLflow server {uri} refused the credentials of user '{user}' (HTTP 401); check "
                "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD" if user else
                f"MLflow server {uri} asks for a user (HTTP 401); set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (from your secret store, not a file)") from None
        if exc.code == 403:
            raise TrackingError(f"MLflow server {uri}: user '{user}' may not read experiments (HTTP 403); "
                                "ask the server's admin for a permission") from None
        raise TrackingError(f"MLflow server {uri} answered a search with HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(f"MLflow tracking server {uri} stopped answering ({exc})") from exc


# The MLflow UI opens an experiment by its kind: without this tag MLflow 3 infers a GenAI experiment
# (traces overview) and hides the runs table one click away.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# The MLflow UI (3.x) opens every experiment in the view last chosen in that browser, GenAI (traces)
# for a fresh one, whatever the experiment's kind: an address fmolab prints says which view.
ML_VIEW = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default


def ui_address(tracking_uri: str, experiment_id: str, run_id: str = "") -> str:
    """The MLflow UI's address of an experiment's runs table, or of a run's page, in the
    model-training view: on the tracking server itself, else where :func:`ui_command` serves it."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI
    return f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "") + f"?{ML_VIEW}"


def run_address(run_id: str) -> str:
    """:func:`ui_address` of a run of the current tracking store."""
    import mlflow

    return ui_address(mlflow.get_tracking_uri(), mlflow.MlflowClient().get_run(run_id).info.experiment_id, run_id)


def ui_command(tracking_uri: str) -> str:
    """How to serve a local store's UI at :data:`LOCAL_UI` ("" for a tracking server: it serves one)."""
    if tracking_uri.startswith(("http://", "https://")):
        return ""
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


NOTE_TAG = "mlflow.note.content"  # the description the UI shows on an experiment's or a run's page
DESCRIPTIONS = {
    "training": "fmolab training runs: DeFMO encoder + renderer on FMO sequences (losses, validation PSNR/SSIM/"
                "TIoU, preview animations, the best weights as a logged model).",
    "fmolab-eval": "fmolab evaluations: the FMO deblurring benchmark's metrics of a model on a dataset.",
    "fmolab-compare": "fmolab comparisons: parameter differences, metric tables and overlaid curves of runs.",
    "fmolab-import": "fmolab imports: published weights (the official DeFMO checkpoints) as registered models.",
}


def ensure_experiment(cfg: Config) -> str:
    """Experiment id; a new one is a model-training experiment with a description and the variant and
    dataset it was made for (an older one gets the kind tag); artifacts of a local store go below the
    work folder, not the current directory."""
    import mlflow

    if cfg.tracking_uri.startswith("sqlite:///"):
        create_sqlite_store(Path(cfg.tracking_uri[len("sqlite:///"):]))
    name = cfg.tracking.experiment
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        if "mlflow.experimentKind" not in exp.tags:
            mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        return exp.experiment_id
    location = None
    if not cfg.tracking_uri.startswith(("http://", "https://", "databricks")):
        location = (cfg.work_dir / "mlartifacts").absolute().as_uri()
    tags = {**EXPERIMENT_KIND, NOTE_TAG: DESCRIPTIONS.get(name, DESCRIPTIONS["training"])}
    if name not in DESCRIPTIONS:  # a training experiment: what it was made for
        tags.update(variant=cfg.variant, dataset=cfg.train_dir)  # the rendered one when data.train is ""
    return mlflow.create_experiment(name, artifact_location=location, tags=tags)


def source_tags(command: str) -> dict[str, str]:
    """What the UI shows as a run's Source and Created by: the fmolab command, the user, the commit."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"mlflow.source.name": f"fmolab {command}", "mlflow.source.type": "LOCAL", "mlflow.user": user,
            "mlflow.source.git.commit": git_commit()}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def start_or_resume_run(cfg: Config, run_name: str, tags: dict[str, str], command: str = "train") -> str:
    """The MLflow run of training ``run_name``: the existing one when resuming, else a new one."""
    import mlflow

    exp_id = ensure_experiment(cfg)
    found = mlflow.search_runs([exp_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
                               output_format="list", max_results=1)
    if found:
        _note_changes(found[0], cfg)
        return found[0].info.run_id
    client = mlflow.MlflowClient()
    run = client.create_run(exp_id, run_name=run_name,
                            tags={**source_tags(command), RUN_NAME_TAG: run_name, **tags})
    items = list(config_params(cfg).items())
    for i in range(0, len(items), 90):  # MLflow caps a batch at 100 params
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in items[i:i + 90]])
    return run.info.run_id


RESUMED_TAG = "fmolab.resumed_with"
WHERE = ("runtime.", "tracking.")  # where a run is, not what it trains


def _note_changes(run, cfg: Config) -> None:
    """A resumed run whose settings changed: MLflow params cannot change, so the current values go to
    the ``fmolab.resumed_with`` tag (each resume's changes on a line) and to the console."""
    import mlflow

    params = run.data.params
    changed = [f"{k}: {params[k]} -> {v}" for k, v in config_params(cfg).items()
               if k in params and params[k] != v and not k.startswith(WHERE)]
    if not changed:
        return
    import datetime as dt

    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    old = run.data.tags.get(RESUMED_TAG, "")
    line = f"{when}: {'; '.join(changed)}"
    mlflow.MlflowClient().set_tag(run.info.run_id, RESUMED_TAG, (old + "\n" if old else "") + line[:4000])
    print(f"[train] resuming {run.info.run_name} with other settings than its params say ({'; '.join(changed)}); "
          f"the run's tag {RESUMED_TAG} records them", flush=True)


def config_params(cfg: Config) -> dict[str, str]:
    """The config as a run's MLflow params: flat keys, lists and dicts as JSON, at most 6000 characters."""
    return {k: str(json.dumps(v) if isinstance(v, (list, dict)) else v)[:6000] for k, v in flatten(to_dict(cfg)).items()}


def create_run(cfg: Config, experiment: str, run_name: str, tags: dict[str, str], command: str = "") -> str:
    """A new run in ``experiment`` (created where it does not exist; evaluations and comparisons go to
    experiments of their own, so the training experiments stay clean); returns its id."""
    import mlflow

    cfg = derive(cfg, {"tracking.experiment": experiment})
    return mlflow.MlflowClient().create_run(ensure_experiment(cfg), run_name=run_name,
                                            tags={**source_tags(command), **tags}).info.run_id
