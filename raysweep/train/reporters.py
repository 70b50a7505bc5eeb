"""Where the training loop's per-epoch results and checkpoints go: memory, Tune, or Train.

The loop calls `report(metrics, save)`, where `save(dir)` writes a checkpoint into a folder, and
`resume()` for the checkpoint to continue from. A reporter also owns what depends on where the
loop runs, so the loop never asks which reporter it has: `device(cfg)` (a Train worker gets the
GPU Ray assigned it), `prepare(model, device)` (a Train worker wraps the model in DDP) and
`best_checkpoint` (a folder only a local run has; under Ray the checkpoints are Ray's).
Three implementations:

- `LocalReporter`: plain Python (tests, eval, benchmarks); history in memory, the best
  checkpoint written atomically to a folder if one is given.
- `TuneReporter`: a Tune function trainable running the loop in its own process (single-worker
  trials, which must not pay a TorchTrainer start); `ray.tune.report` / `ray.tune.get_checkpoint`.
- `TrainReporter`: a Ray Train V2 worker (DDP); every rank calls `ray.train.report` (it is a
  barrier), only rank 0 writes a checkpoint and its metrics are the ones Ray keeps.

Diverged weights (NonFiniteLoss) are raised by `LocalReporter` and reported as the last result by
both Ray reporters (`diverged`); the loop makes the ranks of a DDP run agree on it first.

`pick_reporter()` chooses from the Ray context of the calling process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator

import torch

from raysweep import _compat
from raysweep.config import DIVERGED
from raysweep.fsutil import atomic_dir
from raysweep.train.checkpoint import CHECKPOINT_FILES
from raysweep.train.device import pick_device

log = logging.getLogger(__name__)
Save = Callable[[str], None]
# Generous: a loaded controller polls late, and waiting costs nothing once the queue is empty.
REPORT_FLUSH_S = 600.0


class Reporter:
    rank, world_size = 0, 1
    best_checkpoint: str | None = None  # the best checkpoint's folder, where the caller can read it

    def device(self, cfg) -> torch.device:
        return pick_device(cfg.device)

    def prepare(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        return model.to(device)

    def default_checkpoint_dir(self, path: str | None) -> None:
        """Where to write the best checkpoint when the caller did not say (local runs only)."""

    def report(self, metrics: dict, save: Save | None = None) -> None:
        raise NotImplementedError

    def diverged(self, error: Exception, metrics: dict) -> None:
        """The weights diverged (`error`, a NonFiniteLoss) in the epoch `metrics` describes: the
        run cannot go on. Raised here; under Ray it is reported instead (_RayReporter)."""
        raise error

    @contextlib.contextmanager
    def resume(self) -> Iterator[str | None]:
        yield None

    def close(self) -> None:
        """The loop is done: every result it reported must be where the caller reads it."""


class LocalReporter(Reporter):
    def __init__(self, checkpoint_dir: str | None = None, resume_from: str | None = None):
        self.checkpoint_dir = checkpoint_dir
        self.resume_from = resume_from
        self.history: list[dict] = []
        self.best_checkpoint: str | None = None

    def default_checkpoint_dir(self, path: str | None) -> None:
        if path and not self.checkpoint_dir:
            self.checkpoint_dir = path

    def report(self, metrics: dict, save: Save | None = None) -> None:
        self.history.append(dict(metrics))
        if save is not None and self.checkpoint_dir:
            final = os.path.abspath(self.checkpoint_dir)
            with atomic_dir(final, where="checkpoint folder", also=CHECKPOINT_FILES) as tmp:
                save(str(tmp))
            self.best_checkpoint = final

    @contextlib.contextmanager
    def resume(self):
        yield self.resume_from


class _RayReporter(Reporter):
    """Reports through `ray.tune` or `ray.train`: the two expose the same calls."""

    def __init__(self, api):
        self.api = api  # the ray.tune or ray.train module

    def report(self, metrics: dict, save: Save | None = None) -> None:
        if save is None or self.rank != 0:
            # In DDP every rank must call report (it is a barrier); only rank 0 saves.
            self.api.report(metrics, checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="raysweep-ckpt") as d:
            save(d)
            self.api.report(metrics, checkpoint=self.api.Checkpoint.from_directory(d))

    def diverged(self, error: Exception, metrics: dict) -> None:
        # Raised, the error would be retried (Tune's or Train's FailureConfig.max_failures) from
        # the last checkpoint, where the same seeds diverge the same way. As the last result it
        # ends the run, which the sweep then counts as failed (config.DIVERGED). In DDP every
        # rank gets here in the same epoch (loop._agree): the report is collective.
        self.api.report({**metrics, DIVERGED: f"{type(error).__name__}: {error}"}, checkpoint=None)

    @contextlib.contextmanager
    def resume(self):
        checkpoint = self.api.get_checkpoint()
        if checkpoint is None:
            yield None
        else:
            with checkpoint.as_directory() as d:
                yield d

    def device(self, cfg) -> torch.device:
        return pick_device(cfg.device, *ray_gpus())


class TuneReporter(_RayReporter):
    def __init__(self):
        import ray.tune

        super().__init__(ray.tune)


class TrainReporter(_RayReporter):
    def __init__(self):
        import ray.train

        super().__init__(ray.train)
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()

    def device(self, cfg) -> torch.device:
        if cfg.device == "cpu":
            return super().device(cfg)
        import ray.train.torch

        pick_device(cfg.device, *ray_gpus())  # a GPU it was given must be one torch can use
        return ray.train.torch.get_device()  # the GPU Ray assigned to this rank

    def prepare(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model, move_to_device=device)  # DDP

    def close(self) -> None:
        # Ray's controller reads a rank's report off a one-slot queue and then asks whether the
        # rank still runs; a rank that ends between the two loses its last report, and with it
        # the run's last result, a divergence included (_compat.train_report_queue; found by
        # reading ray 2.60, not caught in the act: the CI failures of the DDP divergence test
        # were the Tune-side race that sweep.trainable.fit_forwarding closes). A rank whose
        # queue is empty has had its report taken by a poll, which then says "running".
        q = _compat.train_report_queue()
        if q is not None and not wait_until_empty(q, REPORT_FLUSH_S):
            log.warning("rank %d: Ray Train did not take this rank's last report in %.0f s; "
                        "the run's last result may be missing", self.rank, REPORT_FLUSH_S)


def wait_until_empty(q, timeout_s: float, poll_s: float = 0.02) -> bool:
    """Wait until nothing is left in `q` (True) or `timeout_s` passed (False). A controller
    that stopped polling is ending the run anyway: the wait is bounded, not a hang."""
    deadline = time.monotonic() + timeout_s
    while not q.empty():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def ray_gpus() -> tuple[list, str]:
    """(the GPU ids Ray gave this process, "host (ip, node id)") inside a trial or worker."""
    import ray  # here, as everywhere in this module: a local run never loads Ray

    ctx = ray.get_runtime_context()
    node = f"{socket.gethostname()} ({ray.util.get_node_ip_address()}, " \
           f"{ctx.get_node_id()[:12]})"
    return ray.get_gpu_ids(), node


def _in_train_worker() -> bool:
    try:
        import ray.train

        ray.train.get_context()
        return True
    except (ImportError, RuntimeError, DeprecationWarning):
        return False


def pick_reporter(checkpoint_dir: str | None = None) -> Reporter:
    """The reporter for the calling process: Tune trial, Train worker, or plain Python."""
    if _compat.in_tune_session():
        return TuneReporter()
    if _in_train_worker():
        return TrainReporter()
    return LocalReporter(checkpoint_dir=checkpoint_dir)


__all__ = ["LocalReporter", "Reporter", "TrainReporter", "TuneReporter", "pick_reporter"]
