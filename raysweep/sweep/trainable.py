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
import threading
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
    from ray.util.queue import Queue

    ctx = tune.get_context()
    gpus_per_worker = plan.gpus_per_worker
    per_worker = {"CPU": plan.cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker
                                                  else {}),
                  **plan.pinned()}  # the node group's own resource
    # One slot, as Ray's own hand-over: Train waits until this trial took its last report, so
    # a trial that ASHA stopped (its thread gone) cannot train on and replace the checkpoint
    # its last result named until Tune ends its process.
    reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        loop or default_loop(),
        train_loop_config=loop_config(config, data or {}),
        scaling_config=ScalingConfig(num_workers=plan.workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker=per_worker,
                                     placement_strategy=plan.strategy),
        run_config=RunConfig(name=f"{ctx.get_experiment_name()}-{ctx.get_trial_id()}-ddp",
                             storage_path=storage, callbacks=[_forward_to(reports)],
                             failure_config=FailureConfig(max_failures=max_failures),
                             # The loop checkpoints only when validation improved, so the
                             # latest is the best: one copy per trial, not one per improvement.
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
    )
    fit_forwarding(trainer.fit, reports, tune.report)


def _forward_to(reports):
    """A Train callback that puts rank 0's metrics of every report (with the path of its
    checkpoint, if any, as Tune's own TuneReportCallback does) on `reports`."""
    # lazy: Ray Train loads only in a DDP trial's process
    from ray.train import UserCallback

    class ForwardToTune(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            out = dict(metrics[0])
            if checkpoint:
                out["checkpoint_path"] = checkpoint.path
            reports.put(out)

    return ForwardToTune()


def fit_forwarding(fit: Callable[[], Any], reports, report: Callable[[dict], None],
                   poll_s: float = 0.2) -> None:
    """Run `fit` on a helper thread and `report` each item of `reports` from this one, the
    trial's, until `fit` returned and all it reported is forwarded; `fit`'s error is raised here.

    Why not Ray's TuneReportCallback (ray 2.60): it hands reports over a one-slot queue that
    Tune's MAIN thread drains, while this thread, once fit() returns, reports Tune's end-of-trial
    marker into the session's own one-slot queue. When that marker gets there first, the main
    thread either takes it and ends the trial with Train's last report unread (a diverged DDP
    trial "completed after 0 iterations" in CI), or blocks forever putting that report behind it
    (the trial stayed RUNNING after its Train run ended). Reporting from this thread keeps one
    order: every Train report, then the marker."""
    # lazy: the queue's Empty comes with Ray, which only a trial's process has loaded
    from ray.util.queue import Empty

    outcome: dict[str, BaseException] = {}
    done = threading.Event()

    def run() -> None:
        try:
            fit()
        except BaseException as e:  # noqa: BLE001 - raised again on the trial's thread
            outcome["error"] = e
        finally:
            done.set()

    threading.Thread(target=run, name="raysweep-ddp-fit", daemon=True).start()
    while True:
        # Read before the queue: Train's callback has put every report before fit() returns,
        # so an empty queue after `done` was seen means nothing is left to forward.
        finished = done.is_set()
        try:
            report(reports.get_nowait())
            continue
        except Empty:
            if finished:
                break
        done.wait(poll_s)
    if "error" in outcome:
        raise outcome["error"]
