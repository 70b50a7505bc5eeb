"""Which checkpoints MLflow holds: every trial's checkpoint URI as a tag, the leaders' weights.

Copying every finished trial's best checkpoint into MLflow made the driver move 128-318 MiB
per trial (weights and optimizer state) while trials waited, for runs nobody would load: ASHA
stops most trials early. Now a trial's run carries the URI of its best checkpoint on the
sweep's storage (`raysweep.checkpoint_uri`), and only the weights and metadata (`model.pt`,
`checkpoint.json`, never `train_state.pt`) of the top-K trials are copied under `checkpoint/`,
by the writer thread at the end of the sweep; `ensure_checkpoint` copies any other run's the
first time eval_winners asks for it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from raysweep.train.checkpoint_files import META_FILE, MODEL_FILE
from raysweep.train.transfer import checkpoint_location, local_checkpoint_dir

log = logging.getLogger(__name__)

URI_TAG = "raysweep.checkpoint_uri"
ARTIFACT = "checkpoint"
# pyarrow file system type -> URI scheme
SCHEMES = {"s3": "s3", "gcs": "gs", "hdfs": "hdfs", "abfs": "abfs"}


def served_files() -> tuple[str, ...]:
    """What a served or evaluated model needs: weights and metadata, no optimizer state."""
    return MODEL_FILE, META_FILE


def checkpoint_uri(ckpt: Any, storage: str | None) -> str:
    """Where a checkpoint (a Tune Checkpoint or a path Train reported) lives, as one string: a
    local path, or scheme://bucket/key on object storage."""
    local = local_checkpoint_dir(ckpt)
    if local:
        return local
    fs, path = checkpoint_location(ckpt, storage)
    kind = getattr(fs, "type_name", "local")
    return path if kind == "local" else f"{SCHEMES.get(kind, kind)}://{path}"


def copy_served(ckpt: Any, storage: str | None, dst: str | Path) -> Path:
    """Copy the served files of a checkpoint (any file system) into the local folder `dst`;
    the weights must be there, the metadata is copied when it is."""
    import pyarrow.fs

    fs, path = checkpoint_location(ckpt, storage)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    weights = served_files()[0]
    for name in served_files():
        src = f"{path.rstrip('/')}/{name}"
        if name != weights and fs.get_file_info(src).type == pyarrow.fs.FileType.NotFound:
            continue
        pyarrow.fs.copy_files(src, str(dst / name), source_filesystem=fs,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
    return dst


def publish(tracker, run_id: str, ckpt: Any, storage: str | None) -> None:
    """The served files of `ckpt` into the run's `checkpoint/` (raises on failure)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy_served(ckpt, storage, tmp)
        tracker.log_artifacts(run_id, tmp, ARTIFACT, strict=True)


def leaders(best: Mapping[str, float], mode: str, k: int) -> list[str]:
    """The k trial ids with the best score (`mode` "min" or "max"); NaN never leads."""
    scored = [(v, tid) for tid, v in best.items() if v == v]
    scored.sort(reverse=mode == "max")
    return [tid for _, tid in scored[:k]]


def ensure_checkpoint(tracker, run_id: str, dst: Path) -> Path:
    """A run's served checkpoint in the local folder `dst`: its `checkpoint/` artifact, or,
    for a run the sweep did not copy (not a top-K leader), a copy from its checkpoint URI,
    which is also logged to the run so that the next reader finds it in MLflow."""
    import mlflow.artifacts

    listed = tracker.call(tracker.client.list_artifacts, run_id)
    if any(a.path == ARTIFACT for a in listed):
        return Path(tracker.call(mlflow.artifacts.download_artifacts, run_id=run_id,
                                 artifact_path=ARTIFACT, dst_path=str(dst),
                                 tracking_uri=tracker.uri))
    uri = tracker.call(tracker.client.get_run, run_id).data.tags.get(URI_TAG)
    if not uri:
        raise FileNotFoundError(f"run {run_id} has no {ARTIFACT}/ artifact and no {URI_TAG} tag")
    local = copy_served(uri, None, Path(dst) / ARTIFACT)
    with tracker.best_effort(f"copying the checkpoint of run {run_id} into MLflow"):
        tracker.log_artifacts(run_id, str(local), ARTIFACT, strict=True)
    return local
