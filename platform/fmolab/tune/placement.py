"""A workaround for one Ray behaviour: when ASHA stops a trial, its Train workers' placement group stays.

Tune ends the stopped trial's actor, and with it the Train controller and workers it owns, but not
their placement group: Ray Train's own cleaner watches the controller through the state API, which
needs the dashboard (off on small machines). The CPUs that group holds would starve the next trials.
So the trial's Train run notes its placement group id in every report it forwards to Tune
(:class:`PlacementGroupRecorder`, :func:`with_placement_group`), and the driver removes the group when
the trial ends (:func:`release_callback`).
"""
from __future__ import annotations

PG_KEY = "train_placement_group"


def recorder_callbacks(shared: dict) -> list:
    """Train callbacks that put the worker group's placement group id into ``shared["pg"]``."""
    try:  # an internal hook of Ray Train V2; without it only the dashboard-based cleanup remains
        from ray.train.v2._internal.execution.callback import WorkerGroupCallback
    except ImportError:
        return []

    class PlacementGroupRecorder(WorkerGroupCallback):
        def after_worker_group_start(self, worker_group):
            try:
                pg = worker_group.get_worker_group_state().placement_group_handle.placement_group
                shared["pg"] = pg.id.hex()
            except Exception:  # never fail a run for bookkeeping
                shared["pg"] = ""

    return [PlacementGroupRecorder()]


def with_placement_group(metrics: dict, shared: dict) -> dict:
    return {**metrics, PG_KEY: shared.get("pg", "")}


def release_placement_group(pg_hex: str) -> bool:
    """Remove a trial's Train placement group if it is still there; True when one was removed."""
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    if not pg_hex:
        return False
    try:
        from ray._raylet import PlacementGroupID

        pg = PlacementGroup(PlacementGroupID(bytes.fromhex(pg_hex)))
        state = ray.util.placement_group_table(pg).get("state", "")
        if state in ("", "REMOVED"):
            return False
        remove_placement_group(pg)
        return True
    except Exception:
        return False


def release_callback():
    import ray.tune

    class ReleaseStoppedTrials(ray.tune.Callback):
        """Driver side: when a trial ends (ASHA stop, error), free its Train workers' resources."""

        def _release(self, trial):
            if release_placement_group((trial.last_result or {}).get(PG_KEY, "")):
                print(f"[tune] trial {trial.trial_id} ended: released its Train placement group", flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._release(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._release(trial)

    return ReleaseStoppedTrials()
