"""The Tune trainables: what one trial runs.

A single-worker trial runs THE training loop (`raysweep.train.loop.train_loop_per_worker`, handed
to Ray as the function itself: tests and benchmarks pass a stand-in) directly in the Tune trial
process. With `reuse_actors=True` that process, its warmed-up torch (and CUDA
context) and its cached copy of the dataset serve trial after trial; starting a TorchTrainer per
trial instead costs tens of seconds against sub-second epochs on this data. Only a trial that
asks for several workers builds a Ray Train TorchTrainer (DDP) inside the trial.

The prepared data reach trials as object-store refs, one per (crop, image_size) variant, via
`tune.with_parameters`, so a resumed sweep hands new refs to old trials.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from raysweep.config import TrainConfig
from raysweep.sweep.resources import Plan

FIELDS = frozenset(TrainConfig.field_names())


def variant_key(crop: str, image_size: int) -> str:
    return f"{crop}@{int(image_size)}"


def trial_name(trial) -> str:
    """Short trial names and folders ("trial_3f2a1b0c") instead of Tune's param-laden ones."""
    return f"trial_{trial.trial_id}"


def default_loop() -> Callable[[dict], Any]:
    """THE training loop. Ray pickles it by reference (module and name), as any module-level
    function, so a trial process imports it from the same module."""
    # lazy: the loop brings torch (seconds), which `python -m raysweep.search --help` never needs
    from raysweep.train.loop import train_loop_per_worker

    return train_loop_per_worker


def loop_config(config: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The Tune trial config (flat TrainConfig overrides + the space's helper choices) -> the
    `{"train": ..., "data": ref}` dict the loop takes."""
    train = {k: v for k, v in config.items() if k in FIELDS}
    cfg = TrainConfig.from_dict(train, where="trial config")
    key = variant_key(cfg.crop, cfg.image_size)
    if key not in data:
        # Cannot happen for spaces that passed the dry run, unless a space picks crop/size from
        # a value it computed; say which variants exist rather than failing with a KeyError.
        raise KeyError(f"no prepared data for {key}; the sweep prepared {sorted(data)}")
    return {"train": cfg.to_dict(), "data": data[key]}


def run_trial(config: dict[str, Any], data: dict[str, Any] | None = None,
              loop: Callable[[dict], Any] | None = None, threads: int = 1) -> None:
    """Function trainable: one trial, `loop` (default: THE loop) in this (reused) process."""
    fn = loop or default_loop()
    torch = sys.modules.get("torch")
    # Only for a loop whose module brought torch: importing it here anyway would add some
    # 250 MiB to every trial process of a loop that does not use it (a stand-in loop).
    if torch is not None:
        torch.set_num_threads(max(1, int(threads)))
    fn(loop_config(config, data or {}))


def run_ddp_trial(config: dict[str, Any], data: dict[str, Any] | None = None,
                  loop: Callable[[dict], Any] | None = None, plan: Plan | None = None,
                  storage: str | None = None, max_failures: int = 1) -> None:
    """Function trainable for a multi-worker trial: a TorchTrainer reporting back to Tune.

    A dead worker restarts the worker group from the run's latest checkpoint (Train's
    FailureConfig), inside the same trial, instead of failing the trial.
    """
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    ctx = tune.get_context()
    gpus_per_worker = plan.gpus_per_worker
    per_worker = {"CPU": plan.cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker
                                                  else {}),
                  **plan.pinned()}  # the node group's own resource
    trainer = TorchTrainer(
        loop or default_loop(),
        train_loop_config=loop_config(config, data or {}),
        scaling_config=ScalingConfig(num_workers=plan.workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker=per_worker,
                                     placement_strategy=plan.strategy),
        run_config=RunConfig(name=f"{ctx.get_experiment_name()}-{ctx.get_trial_id()}-ddp",
                             storage_path=storage, callbacks=[TuneReportCallback()],
                             failure_config=FailureConfig(max_failures=max_failures),
                             # The loop checkpoints only when validation improved, so the
                             # latest is the best: one copy per trial, not one per improvement.
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    # A diverged run's reason reaches Tune as the run's last result (reporters._RayReporter
    # .diverged; TrainReporter.close makes sure Train took it). It is not reported again from
    # here: Tune's function session moves Train's reports into a one-slot queue from its main
    # thread, which deadlocks if this thread filled that slot first (ray 2.60 session.py).
    trainer.fit()
