"""`run_sweep`: a sweep (or with `request.resume` its continuation) as one library call.

resolve (flags + space, or the saved `SweepSpec` on --resume -> the frozen spec, `resolve.py`)
-> prepare_parent, prepare_data (parent run, data, the spec and its parent run on disk)
-> run_tune (Tune) -> finalize (the leaderboard). The ids known only once the sweep runs (the
parent run, the tracking URI) are in the `SweepResult`, not put back into the spec.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import ray

from raysweep import _compat
from raysweep.sweep import files, first_wave, lease, resources, results, schedulable
from raysweep.sweep.data import load_data
from raysweep.sweep.interrupts import Interrupts
from raysweep.sweep.resolve import Sweep, resolve
from raysweep.sweep.spec import SPEC_FILE, Request, SweepSpec
from raysweep.sweep.storage import check_storage
from raysweep.sweep.tuner import TuneJob, build_tuner
from raysweep.tracking import datasets, importance
from raysweep.tracking.secrets import is_secret_key
from raysweep.tracking.store import Tracker, code_version

log = logging.getLogger("raysweep.search")


@dataclass
class SweepResult:
    name: str
    path: str  # the sweep's folder (Tune experiment) under --storage
    parent_run_id: str
    table: pd.DataFrame  # one row per trial, best first (also in <path>/results.csv)
    tracking_uri: str
    metric: str
    searched: list[str]  # the parameters the space searches
    complete: bool = True  # False: interrupted, continue with --resume
    tracking_s: float = 0.0  # driver time spent logging trials to MLflow
    early_stopping: bool = True  # whether ASHA could stop trials (the summary line's wording)

    @property
    def finished(self) -> int:
        """Trials that ended normally (FINISHED); none: the sweep failed."""
        return self._count("FINISHED")

    @property
    def failed(self) -> int:
        return self._count("FAILED")

    def _count(self, status: str) -> int:
        return int((self.table["status"] == status).sum()) if len(self.table) else 0

    def summary(self) -> str:
        """The line under the leaderboard: how many trials ran, stopped early and failed."""
        stopped = int(self.table["stopped_early"].sum()) if len(self.table) else 0
        stopping = f"{stopped} stopped early by ASHA" if self.early_stopping else \
            "early stopping off"
        return f"{len(self.table)} trials ({stopping}, {self.failed} failed)"


def run_sweep(request: Request, *, loop: Callable[[dict], Any] | None = None,
              verbose: int = 0) -> SweepResult:
    """Run (or with `request.resume`, continue) a sweep; see `python -m raysweep.search --help`.

    `loop` replaces THE training loop in every trial (tests inject faults, benchmarks simulate
    trials): a module-level function, which Ray pickles by reference. `request.searcher`
    "random" and `request.early_stopping=False` exist for baselines (benchmarks): the same space
    sampled at random, every trial run to its last epoch.
    """
    spec, sweep = resolve(request)
    # One writer per sweep (a second fails at once, naming the first), and Ctrl-C or SIGTERM
    # end it as interrupted, not as done: both settled before Ray and MLflow hear of it.
    with lease.hold(spec.path), Interrupts() as stop:
        return _run_sweep(request, spec, sweep, stop, loop=loop, verbose=verbose)


def _run_sweep(request: Request, spec: SweepSpec, sweep: Sweep, stop: Interrupts, *,
               loop: Callable[[dict], Any] | None, verbose: int) -> SweepResult:
    # Keeping 3 checkpoints per trial makes Tune snapshot its state more often than it likes;
    # the snapshot is cheap here (small state) and the warning would drown the progress bar.
    # Set when a sweep runs (Tune reads it when the run starts), not when this module loads.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    tracker = Tracker(spec.tracking.experiment, spec.name, uri=spec.tracking.uri)
    # -- Ray: the cluster decides the storage check and the plan, before MLflow hears of it --
    workers = spec.resources.workers_per_trial
    started = resources.connect(dashboard=workers > 1, log_to_driver=verbose > 0)
    try:
        check_storage(spec.storage)  # a refused sweep costs no data work and leaves no FAILED run
        pl = resources.plan(spec.num_samples, spec.resources)
        log.info("%s", pl.describe())
        if not pl.grows:  # a worker no node can hold would wait forever in Tune's queue
            schedulable.check_fits_a_node(pl)
        parent = prepare_parent(spec, sweep, tracker)
        status = "FAILED"
        try:
            # The autoscaler request lives until the first wave runs, and ends first however
            # the sweep ends: before the leaderboard and MLflow's close (first_wave.py).
            with first_wave.for_plan(pl, resume=request.resume) as wave:
                refs = prepare_data(spec, sweep, tracker, pl, parent, resume=request.resume)
                job = TuneJob(spec, sweep.space, sweep.overrides, refs, pl, tracker, loop=loop,
                              verbose=verbose, resume=request.resume,
                              callbacks=(wave.callback(),), missing=sweep.missing)
                grid = run_tune(job, stop)
            out = finalize(spec, sweep, grid, tracker, resume=request.resume,
                           interrupted=stop.signal is not None, known_runs=logged_runs(job))
            # An interrupted sweep (Ctrl-C, a lost driver) stays open for --resume; one in
            # which no trial finished failed, whatever each trial's reason.
            status = "KILLED" if not out.complete else "FINISHED" if out.finished else "FAILED"
            return out
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            tracker.end(parent, status)
    finally:
        if started:
            ray.shutdown()


# -- prepare: the parent run, the data, the spec on disk -------------------------------------------

def prepare_parent(spec: SweepSpec, sweep: Sweep, tracker) -> str:
    """Open (or with --resume reopen) the sweep's MLflow parent run."""
    return tracker.start_parent(tags={"raysweep.space": spec.space,
                                      "raysweep.sweep_name": spec.name,
                                      "raysweep.code_version": code_version(),
                                      "raysweep.question": sweep.space.question},
                                params=spec.params(), run_id=sweep.parent_run_id)


def prepare_data(spec: SweepSpec, sweep: Sweep, tracker, pl: resources.Plan, parent: str, *,
            resume: bool) -> dict:
    """Prepare the data into the object store and write the spec (with its parent run)."""
    prepared = load_data(sweep.data, sweep.checked.variants, sweep.checked.base)
    info = next(iter(prepared.values())).info
    datasets.log_input(tracker, parent, datasets.describe(next(iter(prepared.values()))))
    tracker.log(parent, tags={
        "raysweep.dataset_hash": str(info.get("content_hash", "")),
        "raysweep.split_file": str(info.get("split_file", "")),
        "raysweep.split_id": str(info.get("split_id", "")),
        "raysweep.cluster_cpus": f"{pl.cluster_cpus:g}",
        "raysweep.cluster_gpus": f"{pl.cluster_gpus:g}"})
    if not resume:
        files.write_text(f"{spec.path}/{SPEC_FILE}", spec.to_json(parent_run_id=parent))
    return {k: ray.put(v) for k, v in prepared.items()}


# -- run and finalize ------------------------------------------------------------------------------

def run_tune(job: TuneJob, stop: Interrupts | None = None):
    """Tune's run of the sweep: its ResultGrid (interrupted or complete)."""
    tuner = build_tuner(job)
    _compat.keep_secrets_out_of_tune_env(is_secret_key)  # Ray logs the runtime env in clear
    with stop.tune() if stop else contextlib.nullcontext():
        grid = tuner.fit()
    if job.plan.workers > 1:
        resources.free_orphaned_placement_groups(wait_s=10)
    return grid


def logged_runs(job: TuneJob) -> dict[str, str]:
    """trial id -> MLflow run id as the sweep's MLflow callback recorded them (none for a
    restored Tuner: Tune unpickled its own callback)."""
    return dict(job.loggers[-1].runs) if job.loggers else {}


def trial_runs(tracker, known: Mapping[str, str], trial_ids) -> dict[str, str]:
    """trial id -> MLflow run id for the leaderboard. The sweep's MLflow callback created or
    looked up every trial's run, so when it knows them all its map is MLflow's answer; asking
    MLflow is a search returning every child run whole: for 1,000 runs, 3.4-3.9 s through
    `mlflow server --workers 1` on SQLite (2.5-3.0 s of the server's CPU, 0.9 s of ours)."""
    ids = set(trial_ids)
    if ids and ids <= known.keys():
        return {t: known[t] for t in ids}
    return tracker.children()


def finalize(spec: SweepSpec, sweep: Sweep, grid, tracker, *, resume: bool,
             interrupted: bool = False, known_runs: Mapping[str, str] | None = None
             ) -> SweepResult:
    """The leaderboard: results.csv under the sweep and in MLflow, the best trial on the parent.
    `known_runs`: trial id -> MLflow run id, as far as the sweep's MLflow callback knows."""
    parent, metric, searched = tracker.parent_run_id, spec.metric, sorted(sweep.checked.names)
    table = results.table(grid, metric, spec.mode, spec.epochs, searched,
                          early_stopping=spec.early_stopping.enabled, interrupted=interrupted)
    if len(table):
        try:
            if resume:  # runs of trials that a killed driver started but Tune never recorded
                tracker.retire_orphans(set(table["trial_id"]))
            runs = trial_runs(tracker, known_runs or {}, table["trial_id"])
        except Exception as e:  # noqa: BLE001 - the leaderboard must not be lost to MLflow
            log.warning("could not list the sweep's MLflow runs: %s", e)
            runs = {}
        table["mlflow_run_id"] = table["trial_id"].map(runs).fillna("")
    files.write_text(f"{spec.path}/results.csv", results.to_csv(table))
    tracker.log_text(parent, results.to_csv(table), "results.csv")
    with tracker.best_effort("the sweep's parameter importance"):  # never worth the leaderboard
        importance.log_to_parent(tracker, parent, table, searched, metric, spec.mode)
    best = table.iloc[0] if len(table) else None
    if best is not None and pd.notna(best.get(metric)):
        tracker.log(parent, metrics={f"best_{metric}": float(best[metric])},
                    tags={"raysweep.best_trial_id": str(best["trial_id"]),
                          "raysweep.best_run_id": str(best["mlflow_run_id"])}, strict=False)
    if tracker.failures:
        log.warning("MLflow was unreachable during the sweep, so its runs miss some "
                    "metrics; the complete record is %s/results.csv and every trial's "
                    "result.json under %s", spec.path, spec.path)
    statuses = table["status"] if len(table) else pd.Series([], dtype=str)
    interrupted = interrupted or len(table) < spec.num_samples or \
        bool((statuses == "INTERRUPTED").any())
    if interrupted and len(table):  # Tune ended these without on_trial_complete
        close_interrupted(tracker, table)
    return SweepResult(spec.name, spec.path, parent, table, tracker.uri, metric, searched,
                       complete=not interrupted, tracking_s=tracker.seconds,
                       early_stopping=spec.early_stopping.enabled)


def close_interrupted(tracker, table: pd.DataFrame) -> None:
    """Mark the runs of INTERRUPTED trials KILLED (a resumed trial reopens its run)."""
    for run_id in table.loc[table["status"] == "INTERRUPTED", "mlflow_run_id"]:
        if run_id:
            tracker.end(run_id, "KILLED")
