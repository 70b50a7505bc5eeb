"""Assemble the Tune run: trainable, searcher (Optuna TPE or random), ASHA, callbacks, storage."""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch

from raysweep.errors import UserError
from raysweep.sweep import progress, resources, spaces, strategy
from raysweep.sweep.spec import SweepSpec


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


def build_tuner(spec: SweepSpec, sp: spaces.Space, overrides: dict, *, refs: dict,
                pl: resources.Plan, tracker, loop: str, verbose: int, resume: bool,
                callbacks: list = ()):
    """A new Tuner for the sweep `spec`, or (resume) the one saved at `spec.path`.

    `sp` is the resolved space (the epochs budget in its FIXED), `overrides` the parsed --set
    values, `refs` the prepared data in the object store, `pl` the resource plan, `callbacks`
    more Tune callbacks (the first-wave request's, which withdraws it)."""
    extra_callbacks = list(callbacks)
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from raysweep.sweep.console import FailureLines, quiet_tune
    from raysweep.sweep.trainable import run_ddp_trial, run_trial, trial_name
    from raysweep.tracking.callback import TrialLogger

    quiet_tune(verbose)  # Tune reads its console settings when the run starts
    root, name, metric, mode = spec.storage, spec.name, spec.metric, spec.mode
    max_epochs, max_failures, stopping = spec.epochs, spec.max_failures, spec.early_stopping
    if pl.workers == 1:
        fn = tune.with_parameters(run_trial, data=refs, loop=loop,
                                  threads=max(1, int(pl.cpus_per_worker)))
    else:
        fn = tune.with_parameters(run_ddp_trial, data=refs, loop=loop, workers=pl.workers,
                                  cpus_per_worker=pl.cpus_per_worker,
                                  gpus_per_worker=pl.gpus_per_worker, storage=root,
                                  extra_resources=pl.pinned(), placement_strategy=pl.strategy,
                                  max_failures=max_failures)
    trainable = tune.with_resources(fn, pl.trial_resources())
    if resume:
        if not tune.Tuner.can_restore(spec.path):
            raise UserError(f"sweep {name!r} has no Tune state to resume under {root}",
                            fix="start it again without --resume")
        return tune.Tuner.restore(spec.path, trainable, resume_unfinished=True)
    # Per-trial result files feed the leaderboard; named here so that an environment turning
    # Tune's default loggers off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS) cannot empty it.
    callbacks = [progress.Progress(spec.num_samples, metric, mode),
                 FailureLines(), CSVLoggerCallback(), JsonLoggerCallback()]
    if pl.workers > 1:
        callbacks.append(resources.PlacementGroupJanitor())
    callbacks += extra_callbacks
    # MLflow's last: a result is on disk (Tune's result.json) before the writer thread has it,
    # so what a killed driver still had queued is reconciled from there on --resume; and the
    # end of the sweep, which waits for MLflow, runs after every other callback's.
    callbacks.append(TrialLogger(tracker, max_epochs, storage=root, background=True,
                                 metric=metric, mode=mode))
    define_by_run = spaces.DefineByRun(sp.define_by_run, sp.FIXED, overrides)
    search_alg = ReplayingOptunaSearch(
        space=define_by_run, metric=metric, mode=mode,
        sampler=strategy.make_sampler(spec.searcher, spec.seed, spec.num_samples))
    scheduler = strategy.make_scheduler(
        strategy.Rungs(min(stopping.grace_period, max_epochs), stopping.reduction_factor,
                       max_epochs) if stopping.enabled else None, metric, mode)
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
            name=name, storage_path=root, callbacks=callbacks, verbose=verbose,
            failure_config=tune.FailureConfig(max_failures=max_failures, fail_fast=False),
            # Keeping a few (not 1) avoids a forced experiment snapshot at every checkpoint.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=3,
                                                    checkpoint_score_attribute=metric,
                                                    checkpoint_score_order=mode)),
    )
