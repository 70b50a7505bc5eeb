"""Assemble the Tune run: trainable, searcher (Optuna TPE or random), ASHA, callbacks, storage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search.optuna import OptunaSearch

from raysweep.config import DIVERGED
from raysweep.errors import UserError
from raysweep.sweep import progress, resources, spaces, strategy
from raysweep.sweep.console import FailureLines, quiet_tune
from raysweep.sweep.spec import SweepSpec
from raysweep.sweep.trainable import run_ddp_trial, run_trial, trial_name
from raysweep.tracking.callback import TrialLogger


class ReplayingOptunaSearch(OptunaSearch):
    """OptunaSearch that hands each epoch of a trial to Optuna once.

    A trial restored from its best checkpoint (a resumed sweep, a retried trial) trains again
    the epochs after that checkpoint, and Tune reports them with the training_iteration they
    had; Optuna ignores a step it already holds and warns once per replayed epoch. Those steps
    are known here (and saved with the searcher for --resume), so they are not re-reported.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        step = result.get("training_iteration")
        reported = self.__dict__.setdefault("_raysweep_last_step", {})
        if isinstance(step, int) and step <= reported.get(trial_id, 0):
            return  # a replayed epoch: Optuna has its first report of this step
        super().on_trial_result(trial_id, result)
        if isinstance(step, int):
            reported[trial_id] = step

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        # A trial whose weights diverged ends with a result saying so (config.DIVERGED), not an
        # error: Optuna is told it failed, as when the loop raised. Its NaN score would leave
        # the Optuna trial RUNNING (Optuna refuses NaN for a COMPLETE trial; Ray logs it).
        if result and result.get(DIVERGED):
            result, error = None, True
        super().on_trial_complete(trial_id, result=result, error=error)


@dataclass(frozen=True)
class TuneJob:
    """What a sweep's Tune run is built from (run_sweep assembles it)."""

    spec: SweepSpec
    space: spaces.Space  # resolved: the epochs budget in its FIXED
    overrides: dict  # the parsed --set values
    refs: dict  # the prepared data in the object store, one ref per (crop, size) variant
    plan: resources.Plan
    tracker: Any  # raysweep.tracking.store.Tracker (None: no MLflow, tests only)
    loop: Callable[[dict], Any] | None = None  # None: THE loop; tests pass a stand-in
    verbose: int = 0
    resume: bool = False
    callbacks: tuple = ()  # more Tune callbacks (the first-wave request's, which withdraws it)
    missing: dict = field(default_factory=dict)  # feature blocks the data lacks: not searched
    # build_tuner leaves a new sweep's MLflow callback here: its trial -> run map spares the
    # leaderboard a search over every child run (a restored Tuner unpickles its own callback)
    loggers: list = field(default_factory=list, compare=False, repr=False)


def build_tuner(job: TuneJob):
    """A new Tuner for the sweep `job.spec`, or (resume) the one saved at `spec.path`."""
    spec, pl, metric, mode = job.spec, job.plan, job.spec.metric, job.spec.mode
    quiet_tune(job.verbose)  # Tune reads its console settings when the run starts
    trainable = tune.with_resources(_trainable(job), pl.trial_resources())
    if job.resume:
        if not tune.Tuner.can_restore(spec.path):
            raise UserError(f"sweep {spec.name!r} has no Tune state to resume under "
                            f"{spec.storage}", fix="start it again without --resume")
        return tune.Tuner.restore(spec.path, trainable, resume_unfinished=True)
    define_by_run = spaces.DefineByRun(job.space.define_by_run, job.space.FIXED, job.overrides,
                                       job.missing)
    search_alg = ReplayingOptunaSearch(
        space=define_by_run, metric=metric, mode=mode,
        sampler=strategy.make_sampler(spec.searcher, spec.seed, spec.num_samples))
    stopping, max_epochs = spec.early_stopping, spec.epochs
    scheduler = strategy.make_scheduler(
        strategy.Rungs(min(stopping.grace_period, max_epochs), stopping.reduction_factor,
                       max_epochs, stopping.brackets) if stopping.enabled else None, metric, mode)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler,
                                    # Reuse is the point for in-process trials; a DDP trial's
                                    # process only waits on its TorchTrainer.
                                    num_samples=spec.num_samples, reuse_actors=pl.workers == 1,
                                    max_concurrent_trials=pl.max_concurrent,
                                    trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=spec.storage, callbacks=_callbacks(job),
            verbose=job.verbose,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures, fail_fast=False),
            # Keeping a few (not 1) avoids a forced experiment snapshot at every checkpoint.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=3,
                                                    checkpoint_score_attribute=metric,
                                                    checkpoint_score_order=mode)),
    )


def _trainable(job: TuneJob):
    """The trial function with its data refs and loop: in process, or a DDP TorchTrainer.
    No loop given: the trial imports THE loop itself (`default_loop`), so the driver, which
    trains nothing, never imports torch (seconds) for it."""
    pl, loop = job.plan, job.loop
    if pl.workers == 1:
        return tune.with_parameters(run_trial, data=job.refs, loop=loop,
                                    threads=max(1, int(pl.cpus_per_worker)))
    return tune.with_parameters(run_ddp_trial, data=job.refs, loop=loop, plan=pl,
                                storage=job.spec.storage, max_failures=job.spec.max_failures)


def _callbacks(job: TuneJob) -> list:
    spec = job.spec
    # Per-trial result files feed the leaderboard; named here so that an environment turning
    # Tune's default loggers off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS) cannot empty it.
    callbacks = [progress.Progress(spec.num_samples, spec.metric, spec.mode),
                 FailureLines(), CSVLoggerCallback(), JsonLoggerCallback()]
    if job.plan.workers > 1:
        callbacks.append(resources.PlacementGroupJanitor())
    callbacks += list(job.callbacks)
    # MLflow's last: a result is on disk (Tune's result.json) before the writer thread has it,
    # so what a killed driver still had queued is reconciled from there on --resume; and the
    # end of the sweep, which waits for MLflow, runs after every other callback's.
    logger = TrialLogger(job.tracker, spec.epochs, storage=spec.storage, background=True,
                         metric=spec.metric, mode=spec.mode)
    job.loggers.append(logger)
    callbacks.append(logger)
    return callbacks
