"""The Tune callback that logs a sweep's trials to MLflow from the driver, behind Tune's loop.

One nested MLflow run per trial under the sweep's parent run (raysweep.tracking.store holds the
conventions and the failure policy). A trial waits in `tune.report` until the driver has taken
its result, so the hooks only hand their step to the writer thread
(raysweep.tracking.background) and return; the steps run there in order, each in
`Tracker.best_effort` (a tracking failure is retried, circuit-broken and said once, and never
reaches Tune), and their writes go out as one `log_batch` per run. At the end of the sweep
(`on_experiment_end`) the driver waits for the queue, reconciles MLflow with Tune's records
(raysweep.tracking.reconcile) and copies the top-K trials' weights into MLflow
(raysweep.tracking.checkpoints); every other run carries its checkpoint's URI.

Why not Ray's `MLflowLoggerCallback` or MLflow's autologging: they cannot do what a resumable
sweep on a cluster needs, which is all the custom code here is for:
- nested child runs under one parent per sweep, found again by a resumed driver (`run_id`);
- epochs replayed after a restart from an older checkpoint (a killed worker or driver) must not
  be logged twice (`last_epoch`), and the ones a killed driver still had queued must not be
  lost (reconciled from result.json when the run is adopted, and at the end);
- runs orphaned by a driver killed before Tune's snapshot are retired (`Tracker.retire_orphans`);
- the best (not the last) checkpoint, wherever the storage is.

This is the only tracking module that imports Ray.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from pathlib import Path

from ray import tune

from raysweep.tracking import checkpoints, datasets, reconcile
from raysweep.tracking.background import Writer
from raysweep.tracking.store import Tracker, epoch_metrics, flat_params
from raysweep.train.transfer import surviving_checkpoint

log = logging.getLogger(__name__)
FLUSH_S = 900.0  # the end of a sweep waits this long for MLflow's backlog, at most
_LOAD_LOCK = threading.Lock()  # not per callback: Tune pickles the callback, not a lock


def _error_text(trial) -> str:
    text = trial.get_error() if hasattr(trial, "get_error") else None
    if not text and trial.error_file and os.path.exists(trial.error_file):
        text = Path(trial.error_file).read_text()
    return text or reconcile.diverged(trial) or "the trial failed without an error message"


def _summary(text: str) -> str:
    """The line that says what went wrong (the last exception line of a traceback)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if not line.startswith(("File ", "^", "~")) and ("Error" in line or "Exception" in line
                                                          or ":" in line):
            return line[:500]
    return lines[-1][:500] if lines else text[:500]


def hook(fn):
    """A Tune hook as a step of the writer thread: Tune's loop only hands it over. The hand-over
    is timed (tracker.seconds): it is what logging costs every running trial."""
    @functools.wraps(fn)
    def wrapper(self, iteration, trials, trial, *args, **kwargs):
        self.hand_over(f"{fn.__name__} of trial {trial.trial_id}",
                       functools.partial(fn, self, trial, *args, **kwargs), key=trial.trial_id)

    return wrapper


class TrialLogger(tune.Callback):
    """Tune callback: one nested MLflow run per trial, written from the driver.

    `background=False` runs every step in Tune's thread (the unit tests' way: what a hook did
    is in MLflow when it returns); the sweep's tuner uses the writer thread. `metric`/`mode`
    rank the trials whose weights are copied at the end (`keep` of them)."""

    def __init__(self, tracker: Tracker, max_epochs: int, storage: str | None = None, *,
                 background: bool = False, metric: str = "val_de00_mean", mode: str = "min",
                 keep: int = 3):
        self.tracker, self.max_epochs = tracker, max_epochs
        self.storage = storage  # the sweep's --storage: the file system of DDP checkpoint paths
        self.background, self.metric, self.mode, self.keep = background, metric, mode, keep
        self.runs: dict[str, str] = {}
        # trial id -> its best checkpoint: a Tune Checkpoint (path + file system) or a path
        self.checkpoints: dict[str, object] = {}
        self.last_epoch: dict[str, int] = {}  # the last epoch logged per trial
        self.best: dict[str, float] = {}  # trial id -> its best `metric` so far
        self.dirty: set[str] = set()  # trials with a result the full queue refused
        self._loaded = False
        self._adopted: set[str] = set()  # runs this driver created or looked up
        self._writer: Writer | None = None

    def __getstate__(self) -> dict:
        # A restored callback must look up the runs that exist by then, not trust a stale map;
        # the writer thread belongs to the process that started it.
        return {**self.__dict__, "_loaded": False, "_adopted": set(), "dirty": set(),
                "_writer": None}

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            self._writer = Writer(self.tracker, background=self.background)
        return self._writer

    def hand_over(self, what: str, step, droppable_for: str | None = None,
                  key: str | None = None) -> None:
        """A trial's steps (`key`: its id) run in order on its writer lane; a step without a
        key after all of them (background.Writer.submit)."""
        t0 = time.perf_counter()
        try:
            refused = functools.partial(self.dirty.add, droppable_for) if droppable_for else None
            self.writer.submit(what, step, on_refused=refused, key=key or droppable_for)
        finally:
            self.tracker.seconds = getattr(self.tracker, "seconds", 0.0) + \
                time.perf_counter() - t0

    # -- the steps (run by the writer, in order) --------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        with _LOAD_LOCK:  # the writer's lanes start together: one of them asks MLflow
            if not self._loaded:  # first call in this process: runs of an earlier attempt
                self.runs.update(self.tracker.children())
                self._loaded = True

    def run_id(self, trial) -> str:
        tid = trial.trial_id
        self._load()
        if tid in self._adopted:
            return self.runs[tid]
        created = tid not in self.runs
        if created:
            self.runs[tid] = self.tracker.start_child(tid, str(trial), trial.config,
                                                      params=False)
            self.writer.add(self.runs[tid], params=flat_params(trial.config))
            datasets.log_like_parent(self.tracker, self.runs[tid])
        # A run from an earlier driver may miss epochs that driver still had queued, and the
        # restored trial replays the epochs after its checkpoint. A run created here may be
        # for a trial an earlier driver ran while its own start was still queued at the kill
        # (Tune's snapshot has the trial, MLflow never had its run): Tune holds its epochs,
        # and a restored trial reports only those after its checkpoint, or none.
        if not created or reconcile.has_results(trial):
            self._repair_history(trial, self.runs[tid], logged=set() if created else None)
        self._adopted.add(tid)
        return self.runs[tid]

    def _repair_history(self, trial, run_id: str, logged: set[int] | None = None) -> None:
        """Log the epochs of Tune's record that the run lacks (`logged`: the epochs it holds,
        None: ask MLflow); later reports of logged epochs are replays (`last_epoch`)."""
        tid = trial.trial_id
        logged = reconcile.logged_steps(self.tracker, run_id) if logged is None else logged
        history = reconcile.tune_history(trial)
        for step in sorted(set(history) - logged):
            self.writer.add(run_id, metrics=epoch_metrics(history[step]), step=step)
            logged.add(step)
        for result in history.values():
            self._note_best(tid, result)
        self.last_epoch[tid] = max(self.last_epoch.get(tid, 0), max(logged, default=0))

    def _note_best(self, tid: str, metrics: dict) -> None:
        value = metrics.get(self.metric)
        if isinstance(value, int | float) and value == value:
            old = self.best.get(tid)
            better = old is None or (value < old if self.mode == "min" else value > old)
            self.best[tid] = float(value) if better else old

    @hook
    def on_trial_start(self, trial, **info):
        self._load()
        known = trial.trial_id in self.runs
        run_id = self.run_id(trial)
        if known:  # a new run starts RUNNING; a run of an earlier attempt is reopened
            self.tracker.call(self.tracker.client.update_run, run_id, status="RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # Taken from the result here, in Tune's thread: the step must not hold Tune's dict.
        step, metrics = reconcile.epoch_of(result), epoch_metrics(result)
        now = int(time.time() * 1000)
        if result.get("checkpoint_path"):  # a DDP trial: Train reports its checkpoint's path
            self.checkpoints[trial.trial_id] = result["checkpoint_path"]
        self.hand_over(f"on_trial_result of trial {trial.trial_id}",
                       functools.partial(self._result, trial, step, metrics, now),
                       droppable_for=trial.trial_id)

    def _result(self, trial, step: int, metrics: dict, now: int) -> None:
        run_id = self.run_id(trial)
        if step <= self.last_epoch.get(trial.trial_id, 0):
            # An epoch replayed after a restart from an older checkpoint (a killed worker or
            # driver): it is logged already, and one history per trial must stay one history.
            log.debug("trial %s: epoch %d already logged, skipped", trial.trial_id, step)
            return
        self.last_epoch[trial.trial_id] = step
        self._note_best(trial.trial_id, metrics)
        self.writer.add(run_id, metrics=metrics, step=step, timestamp_ms=now)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        # The loop reports a checkpoint only when validation improved: the last one is the best.
        # Kept whole: on S3 its path has no scheme, only its file system says where it is.
        # Noted here, in Tune's thread, not handed over (a queue put costs Tune's loop more than
        # a dict write): the steps that read it (the trial's close, the leaders' copy) are
        # queued after it.
        self.checkpoints[trial.trial_id] = checkpoint

    @hook
    def on_trial_recover(self, trial, **info):
        self.writer.add(self.run_id(trial),
                        tags={"raysweep.recoveries": str(trial.num_failures),
                              "raysweep.last_error": _summary(_error_text(trial))})

    @hook
    def on_trial_complete(self, trial, **info):
        # a trial whose weights diverged ends with a result saying so, not an error (no retry)
        self._close(trial, self.run_id(trial), "FAILED" if reconcile.diverged(trial) else "FINISHED")

    @hook
    def on_trial_error(self, trial, **info):
        self._close(trial, self.run_id(trial), "FAILED")

    def _close(self, trial, run_id: str, status: str) -> None:
        """The run's last writes and its end status. The completeness tag goes in the same
        request as the last writes, so it is stored only if they are."""
        tid, tags, text = trial.trial_id, {}, None
        if status == "FINISHED":
            epochs = self.last_epoch.get(tid, 0)
            planned = int(trial.config.get("epochs", self.max_epochs))
            tags["raysweep.stopped_early"] = str(epochs < min(planned, self.max_epochs)).lower()
            tags["raysweep.epochs_run"] = str(epochs)
        elif status == "FAILED":  # KILLED (interrupted) has no error to say
            text = _error_text(trial)
            tags["raysweep.error"] = _summary(text)
        ckpt = self._checkpoint(trial)
        if ckpt:
            tags[checkpoints.URI_TAG] = checkpoints.checkpoint_uri(ckpt, self.storage)
        if tid not in self.dirty and run_id not in self.writer.lost:
            tags[reconcile.COMPLETE_TAG] = "true"
        self.writer.add(run_id, tags=tags)
        self.writer.send(run_id)  # a refused write must not leave the run RUNNING
        try:
            if text is not None:
                self.tracker.log_text(run_id, text, "error.txt", strict=True)
        finally:
            self.tracker.end(run_id, status, strict=True)

    def _checkpoint(self, trial):
        """The trial's best checkpoint, as it still exists (a DDP trial's Train run may have
        replaced the one Tune was told of: transfer.surviving_checkpoint)."""
        tid = trial.trial_id
        ckpt = self.checkpoints.get(tid) or getattr(trial, "checkpoint", None)
        kept = surviving_checkpoint(ckpt, self.storage)
        if kept != ckpt:
            log.info("trial %s: its checkpoint %s is gone; Train kept %s (a later, better "
                     "epoch than Tune's record)", tid, ckpt, getattr(kept, "path", kept))
            self.checkpoints[tid] = kept
        return kept

    def _settle_checkpoints(self, trials: list) -> None:
        """Re-tag the DDP trials whose checkpoint Train replaced after their run was closed:
        ASHA's stop ends the run before Train's workers stop."""
        for trial in trials:
            tid = trial.trial_id
            ckpt = self.checkpoints.get(tid)
            if isinstance(ckpt, str) and tid in self.runs:
                kept = self._checkpoint(trial)
                if kept != ckpt:
                    uri = checkpoints.checkpoint_uri(kept, self.storage)
                    self.writer.add(self.runs[tid], tags={checkpoints.URI_TAG: uri})

    # -- the end of the sweep ---------------------------------------------------------------

    def on_experiment_end(self, trials, **info):
        """Wait for the writer, reconcile, copy the leaders' weights: what the leaderboard and
        eval_winners read next must be in MLflow when Tune returns."""
        self.hand_over("reconciling MLflow with Tune's records", functools.partial(
            self._finish, list(trials)))
        t0 = time.perf_counter()
        if not self.writer.flush(FLUSH_S):
            log.warning("MLflow still had %d tracking step(s) queued after %.0f s; they are "
                        "reconciled by --resume. %s", self.writer.backlog(), FLUSH_S,
                        Tracker.NOTHING_LOST)
        self.tracker.seconds += time.perf_counter() - t0

    def _finish(self, trials: list) -> None:
        self.writer.send()
        self._load()
        states = None
        for trial in trials:
            tid = trial.trial_id
            if tid in self._adopted:
                if tid not in self.dirty and self.runs[tid] not in self.writer.lost:
                    continue  # this driver wrote all of it
            else:  # done before an earlier driver was killed: did that one write it all?
                states = reconcile.run_states(self.tracker) if states is None else states
                run = states.get(tid)
                if (run and run[2] and run[1] in ("FINISHED", "FAILED")) or \
                        (run is None and reconcile.terminal_status(trial) is None):
                    continue
            with self.tracker.best_effort(f"reconciling trial {tid}"):
                self._reconcile(trial)
        with self.tracker.best_effort("settling the DDP trials' checkpoints"):
            self._settle_checkpoints(trials)
            self.writer.send()
        with self.tracker.best_effort("copying the leaders' checkpoints into MLflow"):
            self._publish_leaders(trials)

    def _reconcile(self, trial) -> None:
        tid = trial.trial_id
        fresh = tid not in self._adopted
        run_id = self.run_id(trial)  # adopting a run repairs its history
        if not fresh:
            self._repair_history(trial, run_id)
        if run_id in self.writer.lost:  # its first batch may have been the one with params
            self.writer.add(run_id, params=flat_params(trial.config))
        self.dirty.discard(tid)
        self.writer.lost.discard(run_id)
        status = reconcile.terminal_status(trial)
        if status:
            self._close(trial, run_id, status)
        else:
            self.writer.send(run_id)

    def _publish_leaders(self, trials: list) -> None:
        finished = {t.trial_id: t for t in trials if reconcile.terminal_status(t) == "FINISHED"}
        for tid, trial in finished.items():
            if tid not in self.best:
                for result in reconcile.tune_history(trial).values():
                    self._note_best(tid, result)
        scores = {tid: self.best[tid] for tid in finished if tid in self.best}
        for tid in checkpoints.leaders(scores, self.mode, self.keep):
            ckpt = self._checkpoint(finished[tid])
            if ckpt and tid in self.runs:
                with self.tracker.best_effort(f"copying the checkpoint of trial {tid}"):
                    checkpoints.publish(self.tracker, self.runs[tid], ckpt, self.storage)
