"""Assemble the Tune run: trainable, searcher (Optuna TPE or random), ASHA, callbacks, storage."""

from __future__ import annotations

from raysweep.errors import UserError
from raysweep.sweep import resources, results, spaces


def build_tuner(*, sp: spaces.Space, overrides: dict, refs: dict, pl: resources.Plan, loop: str,
                root: str, name: str, path: str, num_samples: int, seed: int, metric: str,
                mode: str, max_epochs: int, grace: int, rf: int, max_failures: int, tracker,
                verbose: int, resume: bool, searcher: str, early_stopping: bool):
    """A new Tuner for the sweep `name` under `root`, or (resume) the one saved at `path`."""
    import optuna
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from raysweep.sweep.trainable import run_ddp_trial, run_trial, trial_name
    from raysweep.tracking.callback import TrialLogger

    if pl.workers == 1:
        fn = tune.with_parameters(run_trial, data=refs, loop=loop,
                                  threads=max(1, int(pl.cpus_per_worker)))
    else:
        fn = tune.with_parameters(run_ddp_trial, data=refs, loop=loop, workers=pl.workers,
                                  cpus_per_worker=pl.cpus_per_worker,
                                  gpus_per_worker=pl.gpus_per_worker, storage=root,
                                  max_failures=max_failures)
    trainable = tune.with_resources(fn, pl.trial_resources())
    if resume:
        if not tune.Tuner.can_restore(path):
            raise UserError(f"sweep {name!r} has no Tune state to resume under {root}",
                            fix="start it again without --resume")
        return tune.Tuner.restore(path, trainable, resume_unfinished=True)
    # Per-trial result files feed the leaderboard; named here so that an environment turning
    # Tune's default loggers off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS) cannot empty it.
    callbacks = [TrialLogger(tracker, max_epochs, storage=root),
                 results.Progress(num_samples, metric, mode),
                 CSVLoggerCallback(), JsonLoggerCallback()]
    if pl.workers > 1:
        callbacks.append(resources.PlacementGroupJanitor())
    define_by_run = spaces.DefineByRun(sp.define_by_run, sp.FIXED, overrides)
    if searcher == "tpe":
        search_alg = OptunaSearch(space=define_by_run, metric=metric, mode=mode, seed=seed)
    else:
        search_alg = OptunaSearch(space=define_by_run, metric=metric, mode=mode,
                                  sampler=optuna.samplers.RandomSampler(seed=seed))
    scheduler = None
    if early_stopping:
        scheduler = ASHAScheduler(time_attr="training_iteration", metric=metric, mode=mode,
                                  max_t=max_epochs, grace_period=min(grace, max_epochs),
                                  reduction_factor=rf)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler,
                                    # Reuse is the point for in-process trials; a DDP trial's
                                    # process only waits on its TorchTrainer.
                                    num_samples=num_samples, reuse_actors=pl.workers == 1,
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
