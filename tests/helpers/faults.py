"""Fault injection through the loop's reporter: rank 0 kills its own process once per trial,
right after it reported epoch k-1 (so at the start of epoch k), with a marker file so that the
restarted trial runs on; and a loop slow enough for a sweep to be interrupted half-way. Production
code knows nothing of them."""

from __future__ import annotations

import os
import signal
import time

from raysweep.config import TrainConfig
from raysweep.train.loop import fit, train_loop_per_worker
from raysweep.train.reporters import LocalReporter, Reporter, TuneReporter, pick_reporter


class KillOnce:
    """Wraps a Reporter; everything but `report` goes to the wrapped one."""

    def __init__(self, reporter: Reporter, epoch: int):
        self._inner, self._epoch = reporter, epoch

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def report(self, metrics: dict, save=None) -> None:
        self._inner.report(metrics, save)
        if self._inner.rank == 0 and metrics.get("epoch") == self._epoch - 1:
            if not marker_exists_or_create(self._inner, f"raysweep_fault_epoch{self._epoch}.marker"):
                os.kill(os.getpid(), signal.SIGKILL)


def marker_exists_or_create(reporter: Reporter, name: str) -> bool:
    """True when this trial was already killed; otherwise leaves the marker and says False."""
    if isinstance(reporter, LocalReporter):
        return _local_marker(reporter, name)
    storage = reporter.api.get_context().get_storage()  # a Tune trial or a Train run
    # The trial's folder (Tune) or the run's (Train): the same for every attempt of the trial.
    # get_trial_dir() is not: a trial in a reused actor gets another working directory than the
    # same trial restarted in a fresh actor, so a marker there could kill it twice.
    base = storage.trial_fs_path if isinstance(reporter, TuneReporter) else \
        storage.experiment_fs_path
    return _storage_marker(storage.storage_filesystem, f"{base.rstrip('/')}/{name}")


def _local_marker(reporter: LocalReporter, name: str) -> bool:
    # Beside, not inside, the checkpoint folder: saving a checkpoint replaces that folder.
    path = f"{os.path.abspath(reporter.checkpoint_dir)}.{name}"
    if os.path.exists(path):
        return True
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("fault injected\n")
    return False


def _storage_marker(fs, path: str) -> bool:
    """The marker on the run's storage, which may be S3/GCS/NFS (a pyarrow file system)."""
    import pyarrow.fs

    if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        return True
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(b"fault injected\n")
    return False


def killed_once_loop(config: dict, epoch: int = 2) -> None:
    """The real loop (what `train_loop_per_worker` runs), rank 0 killed once at `epoch`."""
    cfg = TrainConfig.from_dict(config["train"], where="config['train']")
    fit(cfg, config["data"], reporter=KillOnce(pick_reporter(), epoch))


def slow_loop(config: dict) -> None:
    """The real loop behind a pause, so that a sweep can be interrupted half-way."""
    time.sleep(1.0)
    train_loop_per_worker(config)
