"""MLflow conventions in one place; every MLflow call of a sweep goes through here.

Experiment = study (search space) name. One parent run per sweep invocation, tagged with what is
needed to reproduce and compare it; one nested child run per Tune trial with the flattened
TrainConfig as params, per-epoch metrics (step = epoch), the tags people filter on (`backbone`,
`fusion`, `crop`, `features`) and the best checkpoint under artifact path `checkpoint/`.
Logged from the driver only (a Tune callback), so one store serves a whole cluster and trial
processes need no MLflow access. `MLFLOW_TRACKING_URI` wins; otherwise `sqlite:///<cwd>/mlruns.db`
with artifacts in `<cwd>/mlartifacts`.

A flaky tracking server must not kill a sweep that has been training for hours: calls are
retried with backoff, and a logging call that still fails is reported and skipped. Only the
first call (creating the parent run) fails loudly, before any trial starts.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from ray import tune

from raysweep.tracking.store import Tracker, TrackingUnavailable, epoch_metrics

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


def timed(hook):
    """Add the hook's run time to tracker.seconds: logging runs in Tune's driver loop, so its
    cost is part of every trial's fixed cost (reported by the benchmark). And never let a
    tracking failure reach Tune: an exception in a callback would end the whole sweep."""
    def wrapper(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        except TrackingUnavailable as e:
            log.debug("%s skipped: %s", hook.__name__, e)
        except Exception as e:  # noqa: BLE001 - the trial's results are in Tune's files
            log.warning("MLflow logging (%s) failed and was skipped: %s", hook.__name__, e)
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
            self._adopted.add(tid)
        elif tid not in self._adopted:
            # A run from an earlier driver: the restored trial replays the epochs after its
            # checkpoint, which that driver may already have logged.
            logged = self.tracker.last_logged_epoch(self.runs[tid])
            self.last_epoch[tid] = max(self.last_epoch.get(tid, 0), logged)
            self._adopted.add(tid)
        return self.runs[tid]

    @timed
    def on_trial_start(self, iteration, trials, trial, **info):
        try:
            run_id = self.run_id(trial)
            self.tracker.call(self.tracker.client.update_run, run_id, status="RUNNING")
        except Exception as e:  # noqa: BLE001 - tracking trouble must not stop the sweep
            log.warning("could not open the MLflow run of trial %s: %s", trial.trial_id, e)

    @timed
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
        self.tracker.log(run_id, metrics=epoch_metrics(result), step=step, strict=False)

    @timed
    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        # The loop reports a checkpoint only when validation improved: the last one is the best.
        # Kept whole: on S3 its path has no scheme, only its file system says where it is.
        self.checkpoints[trial.trial_id] = checkpoint

    @timed
    def on_trial_recover(self, iteration, trials, trial, **info):
        self.tracker.log(self.run_id(trial), strict=False,
                         tags={"raysweep.recoveries": str(trial.num_failures),
                               "raysweep.last_error": _summary(_error_text(trial))})

    @timed
    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        epochs = self.last_epoch.get(trial.trial_id, 0)
        planned = int(trial.config.get("epochs", self.max_epochs))
        self.tracker.log(run_id, strict=False, tags={
            "raysweep.stopped_early": str(epochs < min(planned, self.max_epochs)).lower(),
            "raysweep.epochs_run": str(epochs)})
        self._log_checkpoint(trial, run_id)
        self.tracker.end(run_id, "FINISHED")

    @timed
    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        text = _error_text(trial)
        self.tracker.log(run_id, strict=False, tags={"raysweep.error": _summary(text)})
        self.tracker.log_text(run_id, text, "error.txt")
        self._log_checkpoint(trial, run_id)
        self.tracker.end(run_id, "FAILED")

    def _log_checkpoint(self, trial, run_id: str) -> None:
        from raysweep.sweep.storage import fetch_checkpoint, local_checkpoint_dir

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
