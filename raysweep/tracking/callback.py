"""The Tune callback that logs a sweep's trials to MLflow from the driver (Tune's process).

One nested MLflow run per trial under the sweep's parent run (raysweep.tracking.store holds the
conventions and the failure policy). Each hook is one step of the policy: the hook's body runs
in `Tracker.best_effort`, so a tracking failure is retried, circuit-broken and said once there,
and never reaches Tune (an exception in a callback would end the whole sweep).

Why not Ray's `MLflowLoggerCallback` or MLflow's autologging: they cannot do what a resumable
sweep on a cluster needs, which is all the custom code here is for:
- nested child runs under one parent per sweep, found again by a resumed driver (`run_id`);
- epochs replayed after a restart from an older checkpoint (a killed worker or driver) must not
  be logged twice (`last_epoch`, `Tracker.last_logged_epoch`);
- runs orphaned by a driver killed before Tune's snapshot are retired (`Tracker.retire_orphans`);
- the best (not the last) checkpoint, wherever the storage is, as the run's artifact.

This is the only tracking module that imports Ray.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time
from pathlib import Path

from ray import tune

from raysweep.tracking import datasets
from raysweep.tracking.store import Tracker, epoch_metrics

log = logging.getLogger(__name__)


def _error_text(trial) -> str:
    text = trial.get_error() if hasattr(trial, "get_error") else None
    if not text and trial.error_file and os.path.exists(trial.error_file):
        text = Path(trial.error_file).read_text()
    return text or "the trial failed without an error message"


def _summary(text: str) -> str:
    """The line that says what went wrong (the last exception line of a traceback)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if not line.startswith(("File ", "^", "~")) and ("Error" in line or "Exception" in line
                                                          or ":" in line):
            return line[:500]
    return lines[-1][:500] if lines else text[:500]


def hook(fn):
    """A Tune hook as one step of the tracking policy (`Tracker.best_effort`), timed: logging
    runs in Tune's driver loop, so its cost is part of every trial's fixed cost (reported by
    the benchmark as tracker.seconds)."""
    @functools.wraps(fn)
    def wrapper(self, iteration, trials, trial, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            with self.tracker.best_effort(f"{fn.__name__} of trial {trial.trial_id}"):
                fn(self, iteration, trials, trial, *args, **kwargs)
        finally:
            self.tracker.seconds = getattr(self.tracker, "seconds", 0.0) + \
                time.perf_counter() - t0

    return wrapper


class TrialLogger(tune.Callback):
    """Tune callback: one nested MLflow run per trial, written from the driver."""

    def __init__(self, tracker: Tracker, max_epochs: int, storage: str | None = None):
        self.tracker, self.max_epochs = tracker, max_epochs
        self.storage = storage  # the sweep's --storage: the file system of DDP checkpoint paths
        self.runs: dict[str, str] = {}
        # trial id -> its best checkpoint: a Tune Checkpoint (path + file system) or a path
        self.checkpoints: dict[str, object] = {}
        self.last_epoch: dict[str, int] = {}  # the last epoch logged per trial
        self._loaded = False
        self._adopted: set[str] = set()  # runs of an earlier driver whose epochs were looked up

    def __getstate__(self) -> dict:
        # A restored callback must look up the runs that exist by then, not trust a stale map.
        return {**self.__dict__, "_loaded": False, "_adopted": set()}

    def run_id(self, trial) -> str:
        tid = trial.trial_id
        if not self._loaded:  # first call in this process: pick up runs of an earlier attempt
            self.runs.update(self.tracker.children())
            self._loaded = True
        if tid not in self.runs:
            self.runs[tid] = self.tracker.start_child(tid, str(trial), trial.config)
            datasets.log_like_parent(self.tracker, self.runs[tid])
            self._adopted.add(tid)
        elif tid not in self._adopted:
            # A run from an earlier driver: the restored trial replays the epochs after its
            # checkpoint, which that driver may already have logged.
            logged = self.tracker.last_logged_epoch(self.runs[tid])
            self.last_epoch[tid] = max(self.last_epoch.get(tid, 0), logged)
            self._adopted.add(tid)
        return self.runs[tid]

    @hook
    def on_trial_start(self, iteration, trials, trial, **info):
        self.tracker.call(self.tracker.client.update_run, self.run_id(trial), status="RUNNING")

    @hook
    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if result.get("checkpoint_path"):  # a DDP trial: Train reports its checkpoint's path
            self.checkpoints[trial.trial_id] = result["checkpoint_path"]
        run_id = self.run_id(trial)
        if step <= self.last_epoch.get(trial.trial_id, 0):
            # An epoch replayed after a restart from an older checkpoint (a killed worker or
            # driver): it is logged already, and one history per trial must stay one history.
            log.debug("trial %s: epoch %d already logged, skipped", trial.trial_id, step)
            return
        self.last_epoch[trial.trial_id] = step
        self.tracker.log(run_id, metrics=epoch_metrics(result), step=step)

    @hook
    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        # The loop reports a checkpoint only when validation improved: the last one is the best.
        # Kept whole: on S3 its path has no scheme, only its file system says where it is.
        self.checkpoints[trial.trial_id] = checkpoint

    @hook
    def on_trial_recover(self, iteration, trials, trial, **info):
        self.tracker.log(self.run_id(trial),
                         tags={"raysweep.recoveries": str(trial.num_failures),
                               "raysweep.last_error": _summary(_error_text(trial))})

    @hook
    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        epochs = self.last_epoch.get(trial.trial_id, 0)
        planned = int(trial.config.get("epochs", self.max_epochs))
        try:  # a refused tag or upload must not leave the run RUNNING
            self.tracker.log(run_id, tags={
                "raysweep.stopped_early": str(epochs < min(planned, self.max_epochs)).lower(),
                "raysweep.epochs_run": str(epochs)})
            self._log_checkpoint(trial, run_id)
        finally:
            self.tracker.end(run_id, "FINISHED", strict=True)

    @hook
    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        text = _error_text(trial)
        try:  # a refused tag or upload must not leave the run RUNNING
            self.tracker.log(run_id, tags={"raysweep.error": _summary(text)})
            self.tracker.log_text(run_id, text, "error.txt", strict=True)
            self._log_checkpoint(trial, run_id)
        finally:
            self.tracker.end(run_id, "FAILED", strict=True)

    def _log_checkpoint(self, trial, run_id: str) -> None:
        from raysweep.train.transfer import fetch_checkpoint, local_checkpoint_dir

        ckpt = self.checkpoints.get(trial.trial_id)
        if not ckpt:
            return
        local = local_checkpoint_dir(ckpt)
        if local:
            self.tracker.log_artifacts(run_id, local, "checkpoint")
            return
        with tempfile.TemporaryDirectory() as tmp:  # remote storage (s3://, gs://): fetch it
            try:
                fetch_checkpoint(ckpt, self.storage, tmp)
            except Exception as e:  # noqa: BLE001
                log.warning("could not fetch checkpoint %s: %s", getattr(ckpt, "path", ckpt), e)
                return
            self.tracker.log_artifacts(run_id, tmp, "checkpoint")
