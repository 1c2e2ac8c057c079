"""Why a run ended, where a person looks: the ``fmolab.end_reason`` tag, the run's description, its
status, and the ``end`` column of ``fmolab runs list``.

====================  =========  ==================================================================
reason                status     when
====================  =========  ==================================================================
steps_done            FINISHED   every ``train.steps`` step ran
time_limit            FINISHED   ``train.time_limit`` stopped it earlier (checkpointed, validated)
nan_stop              FAILED     a non-finite loss with ``train.nan_policy=stop``
no_workers            FAILED     no worker group could run for ``train.start_timeout_s`` (lost nodes)
asha_stop             KILLED     a search's ASHA scheduler stopped the trial
interrupted           KILLED     Ctrl-C or SIGTERM on the driver
failure               FAILED     any other error (its first line is in the description)
====================  =========  ==================================================================
"""
from __future__ import annotations

import math

END_TAG = "fmolab.end_reason"
STEPS_TAG = "fmolab.steps_done"
STATUS = {"steps_done": "FINISHED", "time_limit": "FINISHED", "nan_stop": "FAILED", "no_workers": "FAILED",
          "asha_stop": "KILLED",
          "interrupted": "KILLED", "failure": "FAILED"}
WORDS = {"steps_done": "all steps done", "time_limit": "stopped at its time limit", "nan_stop": "stopped on a non-finite loss",
         "no_workers": "no worker group could run within train.start_timeout_s",
         "asha_stop": "stopped early by ASHA (worse than its rung)", "interrupted": "interrupted",
         "failure": "failed"}


def error_text(error: BaseException) -> str:
    """``Type: message`` of what went wrong, unwrapped from Ray Train's worker-group error (whose own
    message is a truncated traceback snippet) to the worker's exception."""
    failures = getattr(error, "worker_failures", None) or {}
    controller = getattr(error, "controller_failure", None)  # a controller callback's own error
    if controller is not None:
        error = controller
    elif failures:
        error = failures[min(failures)]
        error = getattr(error, "cause", None) or error  # a RayTaskError carries the original as its cause
    return f"{type(error).__name__}: {error}"


def reason_of_error(error: BaseException | str) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    text = error if isinstance(error, str) else error_text(error)
    if "TrainStartTimeout" in text:
        return "no_workers"
    return "nan_stop" if "non-finite loss" in text else "failure"


def reason_of_metrics(metrics: dict, steps: int) -> str:
    """A run that returned: all steps, or fewer (only the time limit stops a healthy run early)."""
    return "steps_done" if int(metrics.get("step", steps)) >= steps else "time_limit"


def describe(reason: str, metrics: dict | None = None, steps: int = 0, monitor: str = "", detail: str = "") -> str:
    """The run's description, e.g. "Ended: stopped at its time limit after 1159 of 5000 steps; best
    val/loss 0.1234 at step 1000." (Markdown, shown on the run page)."""
    m = metrics or {}
    text = f"**Ended: {WORDS[reason]}**"
    if "step" in m and steps:
        text += f" after {int(m['step'])} of {steps} steps"
    best = m.get("best_metric")
    if monitor and best is not None and math.isfinite(float(best)):
        text += f"; best {monitor} {float(best):.5g} at step {int(m.get('best_step', -1))}"
    text += "."
    if "animation_step" in m or "val/animation_step" in m:
        text += " " + animation_note(m)
    if detail:
        text += f"\n\n{detail.strip().splitlines()[0][:500]}"
    return text


def animation_note(metrics: dict) -> str:
    """"Animation point at step N." or the warning that the model never animated (its renders are one
    image at every instant): said wherever a user reads about a run or a registered model."""
    step = int(metrics.get("animation_step", metrics.get("val/animation_step", -1)))
    if step < 0:
        return ("**Never animated**: every instant renders the same image (val/animation_ratio never above "
                "0.5), so this model does not deblur; train longer or see docs/studies.md for recipes that animate.")
    text = f"Animation point at step {step}."
    if "best_animated" in metrics and not float(metrics["best_animated"]):
        text += f" The best checkpoint (step {int(metrics.get('best_step', -1))}) is from before it: a static model."
    return text


def end_run(run_id: str, reason: str, metrics: dict | None = None, steps: int = 0, monitor: str = "",
            detail: str = "") -> None:
    """Tag, describe and close ``run_id`` (status from the reason)."""
    import mlflow

    from fmolab.tracking.store import NOTE_TAG

    client = mlflow.MlflowClient()
    tags = {END_TAG: reason, NOTE_TAG: describe(reason, metrics, steps, monitor, detail)}
    if metrics and "step" in metrics and steps:
        tags[STEPS_TAG] = f"{int(metrics['step'])}/{steps}"
    for k, v in tags.items():
        client.set_tag(run_id, k, v)
    client.set_terminated(run_id, STATUS[reason])
