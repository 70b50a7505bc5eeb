"""Checkpoints on any pyarrow file system: where one is, and a copy of it on this machine.

Below both `sweep` and `tracking`: the Tune callback (tracking) copies a remote trial's best
checkpoint before logging it, and a sweep's storage may be a URI.
"""

from __future__ import annotations

import os
from typing import Any

from raysweep.uri import is_remote, is_uri, local_path


def local_checkpoint_dir(ckpt: Any) -> str | None:
    """The folder of a checkpoint that is on this machine's disk, else None.

    `ckpt` is a Tune/Train Checkpoint (path + file system) or a path string.
    """
    fs = getattr(ckpt, "filesystem", None)
    path = getattr(ckpt, "path", ckpt)
    if fs is not None and getattr(fs, "type_name", "local") != "local":
        return None
    path = local_path(str(path))
    return path if not is_uri(path) and os.path.isdir(path) else None


def checkpoint_location(ckpt: Any, storage: str | None):
    """(pyarrow file system, path) of a checkpoint wherever it is.

    A Checkpoint carries its file system. A bare path is a URI, or (what Ray Train reports for
    DDP trials) a scheme-less path on the sweep's `storage` file system: on S3 Tune's paths are
    "bucket/prefix/...", which alone would be read as a local relative path.
    """
    import pyarrow.fs

    fs = getattr(ckpt, "filesystem", None)
    path = str(getattr(ckpt, "path", ckpt))
    if fs is not None:
        return fs, path
    if is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    if storage and is_remote(storage):
        fs, _ = pyarrow.fs.FileSystem.from_uri(storage)
        return fs, path
    return pyarrow.fs.LocalFileSystem(), path


def copy_checkpoint(ckpt: Any, storage: str | None, dst: str) -> str:
    """Copy a checkpoint (any file system) into the local folder `dst`; returns dst."""
    from ray.train import Checkpoint

    fs, path = checkpoint_location(ckpt, storage)
    return Checkpoint(path, filesystem=fs).to_directory(dst)


def surviving_checkpoint(ckpt: Any, storage: str | None) -> Any:
    """A DDP trial's checkpoint as Ray Train still holds it: `ckpt` while it exists, else the
    path of the latest checkpoint Train registered for the run (on the same file system), else
    `ckpt`.

    A DDP trial's Train run keeps one checkpoint (`num_to_keep=1`) and its workers run ahead
    of Tune: when ASHA stops the trial after the result that named checkpoint N, the workers
    may already have saved checkpoint N+1 (the loop saves only when validation improved), and
    Train deleted N. Tune's own checkpoints (single-worker trials) carry their file system and
    are kept by Tune: returned as they are.
    """
    if getattr(ckpt, "filesystem", None) is not None or not ckpt:
        return ckpt
    import pyarrow.fs
    from ray.train import Result

    try:  # a storage that cannot answer now leaves the checkpoint as Tune was told of it
        fs, path = checkpoint_location(ckpt, storage)
        if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
            return ckpt
        run_dir = path.rstrip("/").rsplit("/", 1)[0]  # <storage>/<sweep>-<trial>-ddp
        kept = Result.from_path(run_dir, storage_filesystem=fs).checkpoint
    except (RuntimeError, OSError, ValueError):  # also: not a Train run folder
        return ckpt
    return kept.path if kept is not None else ckpt
