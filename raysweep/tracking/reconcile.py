"""MLflow against Tune's own record of each trial: what the writer thread never sent is sent.

Tracking runs behind Tune (raysweep.tracking.background), so MLflow can miss writes that Tune
recorded: a driver killed with steps still queued, a step refused by a full queue, a write the
failure policy gave up during an outage. Tune's JSON logger has every result on the driver's
disk before our callback sees it (`result.json` in the trial's folder, one line per report,
flushed per line; a restored trial appends the epochs it replays). The first line of each epoch
is the one MLflow keeps (raysweep.tracking.callback logs an epoch once), so reconciling a run
is: the epochs of result.json whose step MLflow lacks, logged; nothing logged twice.

A run whose every write went through carries `raysweep.tracking_complete`; a resumed sweep
reconciles only the runs of finished trials without it (one query for all, then one per run).
"""

from __future__ import annotations

import json
from pathlib import Path

from raysweep.config import DIVERGED

COMPLETE_TAG = "raysweep.tracking_complete"
RESULT_FILE = "result.json"  # Tune's JsonLoggerCallback (ray.air.constants.EXPR_RESULT_FILE)


def epoch_of(result: dict) -> int:
    return int(result.get("epoch", result.get("training_iteration", 0)) or 0)


def tune_history(trial) -> dict[int, dict]:
    """epoch -> the first result Tune recorded for it, from the trial's result.json ({} when
    neither the driver's folder nor the sweep's storage holds one)."""
    text = _result_text(trial)
    if text is None:
        return {}
    out: dict[int, dict] = {}
    for line in text.splitlines():
        try:
            result = json.loads(line)
        except ValueError:  # the last line of a killed driver, cut short
            continue
        step = epoch_of(result) if isinstance(result, dict) else 0
        if step > 0:
            out.setdefault(step, result)
    return out


def _result_text(trial) -> str | None:
    """result.json from the driver's staging folder, else from the sweep's storage. A resumed
    driver runs in a new Ray session whose staging folder is empty: the results of trials that
    ended before the kill are only in the storage (a folder, or S3) Tune synced them to."""
    folder = getattr(trial, "local_path", None)
    if folder:
        try:
            return (Path(folder) / RESULT_FILE).read_text()
        except OSError:
            pass
    storage = getattr(trial, "storage", None)
    try:
        fs, path = storage.storage_filesystem, f"{trial.path}/{RESULT_FILE}"
        with fs.open_input_stream(path) as fh:
            return fh.read().decode()
    except (AttributeError, RuntimeError, OSError, ValueError):  # no storage, or no file there
        return None


def has_results(trial) -> bool:
    """Whether Tune holds a result or a checkpoint of the trial: one restored from an earlier
    driver's snapshot, or one whose results went ahead of the writer thread. A new trial has
    neither when it starts, and its result.json is not read."""
    last = getattr(trial, "last_result", None) or {}
    return bool(int(last.get("training_iteration") or 0) > 0 or
                getattr(trial, "checkpoint", None))


def logged_steps(tracker, run_id: str) -> set[int]:
    """The epochs a run holds (every report logs `epoch`)."""
    history = tracker.call(tracker.client.get_metric_history, run_id, "epoch")
    return {int(m.step) for m in history}


def run_states(tracker) -> dict[str, tuple[str, str, bool]]:
    """trial id -> (run id, status, complete) for the sweep's child runs, in one query."""
    runs = tracker.call(tracker.client.search_runs, [tracker.experiment_id],
                        filter_string=f"tags.mlflow.parentRunId = '{tracker.parent_run_id}'",
                        max_results=50000)
    return {r.data.tags["raysweep.trial_id"]: (r.info.run_id, r.info.status,
                                               r.data.tags.get(COMPLETE_TAG) == "true")
            for r in runs if "raysweep.trial_id" in r.data.tags}


def diverged(trial) -> str:
    """Why the trial's weights diverged, from its last result ('' if they did not): the loop
    ends such a trial with that result instead of an error Tune would retry (config.DIVERGED)."""
    return str((getattr(trial, "last_result", None) or {}).get(DIVERGED) or "")


def terminal_status(trial) -> str | None:
    """The MLflow status of a trial Tune is done with; None while it can still run."""
    status = str(getattr(trial, "status", ""))
    last = getattr(trial, "last_result", None) or {}
    if status == "TERMINATED" and diverged(trial):
        return "FAILED"
    planned = (getattr(trial, "config", None) or {}).get("epochs")
    # Tune's clean-up after Ctrl-C or SIGTERM marks running trials TERMINATED, not done. (Tune
    # does not save `done` for a trial that ended on its own: a restored one that ran all its
    # epochs finished, whatever it says.)
    if status == "TERMINATED" and last.get("done") is False and \
            not (planned and int(last.get("training_iteration") or 0) >= int(planned)):
        return "KILLED"
    return {"TERMINATED": "FINISHED", "ERROR": "FAILED"}.get(status)
