"""What changes when a sweep leaves one machine: shared checkpoint storage and secrets.

Two rules live here so that search.py and tracking.py only have to call them:

1. On a multi-node Ray cluster every trial must reach every checkpoint (a restored or resumed
   trial can land on another node), so the Tune `storage_path` must be a cloud URI or a file
   system that every node mounts. A node-local path works on the first node and silently loses
   checkpoints on the others, so `check_storage` refuses it before anything starts.
2. MLflow credentials come from the environment only (MLFLOW_TRACKING_USERNAME/PASSWORD or
   MLFLOW_TRACKING_TOKEN, which MLflow itself reads), never from a config file, a flag or a URI,
   and `scrub_secrets` runs on everything before it is logged as params or tags.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from raysweep.errors import UserError
from raysweep.sweep import cluster
from raysweep.uri import is_remote, local_path

log = logging.getLogger(__name__)

SHARED_ENV = "RAYSWEEP_SHARED_STORAGE"
# Schemes that pyarrow/fsspec (and so Ray Tune) resolve to storage outside any one node.
REMOTE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "hdfs", "viewfs"})
# File systems that are shared by construction: a path on them is the same on every node.
NETWORK_FSTYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "cephfs",
    "glusterfs", "fuse.glusterfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.mountpoint-s3",
    "fuse.juicefs", "fuse.sshfs", "fuse.cephfs", "fuse.lustre", "wekafs",
})
RAY_DEFAULT_STORAGE = "~/ray_results"  # where Tune writes when no storage_path is given


# ---------------------------------------------------------------------------------------------
# checkpoint storage


def storage_problem(storage_path: str | os.PathLike | None, multi_node: bool,
                    environ: Mapping[str, str] | None = None,
                    mounts: Sequence[tuple[str, str]] | None = None) -> str | None:
    """Why `storage_path` cannot hold checkpoints on this cluster, or None if it can.

    Pure (no Ray): `mounts` is a list of (mount point, fstype); None reads /proc/self/mounts.
    """
    if not multi_node:
        return None
    text = RAY_DEFAULT_STORAGE if storage_path in (None, "") else os.fspath(storage_path)
    scheme = urlsplit(text).scheme.lower()
    if scheme in REMOTE_SCHEMES:
        return None
    if scheme == "memory":
        return f"{text!r} is an in-memory file system of one process"
    if is_remote(text):
        # An fsspec URI we do not know (e.g. a custom protocol): its author knows it is remote.
        return None
    local = Path(urlsplit(text).path if scheme in ("file", "local") else text).expanduser()
    local = Path(os.path.abspath(local))
    env = os.environ if environ is None else environ
    if marked_shared(local, env.get(SHARED_ENV, "")):
        return None
    fstype = mount_fstype(local, read_mounts() if mounts is None else mounts)
    if fstype in NETWORK_FSTYPES:
        return None
    where = f"this node's own {fstype} file system" if fstype else "this node's local disk"
    default = " (Ray's default, since no storage path was given)" if not storage_path else ""
    return f"{text!r}{default} is on {where}"


def check_storage(storage_path: str | os.PathLike | None,
                  nodes: Sequence[Mapping[str, Any]] | None = None,
                  environ: Mapping[str, str] | None = None,
                  may_grow: bool | None = None, why_grow: str = "") -> None:
    """Refuse a node-local checkpoint path on a multi-node (or autoscaling) Ray cluster.

    Call it after `ray.init`, before the Tuner starts and before any MLflow run is opened.
    `nodes` defaults to `ray.nodes()`; a cluster counts as multi-node when more than one node
    is alive or when its autoscaler may add worker nodes (raysweep.sweep.cluster decides; a
    head-only cluster with GPU workers from 0 has one node at submit time).
    """
    if nodes is None or may_grow is None:
        if nodes is None:
            import ray

            if not ray.is_initialized():
                raise RuntimeError("check_storage() needs a connected Ray: call it after "
                                   "ray.init()")
            nodes = ray.nodes()
        if may_grow is None:
            found = cluster.observe(nodes, environ)
            may_grow, why_grow = found.may_grow, found.reason
    alive = sum(1 for n in nodes if n.get("Alive", n.get("alive", False)))
    multi = alive > 1 or may_grow
    problem = storage_problem(storage_path, multi, environ)
    if problem is None:
        return
    size = f"{alive} alive nodes" if alive > 1 else \
        "an autoscaler that can add worker nodes" + (f" ({why_grow})" if why_grow else "")
    raise UserError(
        f"checkpoints must live on shared storage, but {problem} and this Ray cluster has "
        f"{size}: trials on other nodes could not save or restore their checkpoints there",
        where="the search's --storage path (Tune storage_path)",
        fix="pass --storage s3://BUCKET/raysweep (or gs://..., abfs://...; the nodes need "
            "credentials for it, e.g. an instance profile), or a folder on a file system that "
            f"every node mounts at the same path (NFS, EFS, Lustre) and set {SHARED_ENV}=1 "
            f"(or {SHARED_ENV}=/that/mount) to say so",
    )


def check_writable(storage_path: str) -> None:
    """Refuse a local --storage that is not a writable folder, before Ray starts: found
    later, it costs a Ray start, the data preparation and a FAILED run in MLflow.

    Probes the folder, or the nearest existing folder above it, with a temporary file and creates
    nothing: a command refused later for another reason must leave no trace. Remote URIs are left
    to Tune.
    """
    if is_remote(storage_path):
        return
    path = Path(local_path(storage_path)).expanduser()
    fix = "pass --storage with a folder you can write to (it is created if missing)"
    if path.exists() and not path.is_dir():
        raise UserError(f"--storage {storage_path} is a file, not a folder",
                        where="--storage", fix=fix)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        raise UserError(f"--storage {storage_path} lies under {existing}, which is a file",
                        where="--storage", fix=fix)
    try:
        probe = existing / f".raysweep-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to --storage {storage_path}: {e.strerror or e}",
                        where="--storage", fix=fix) from None


def marked_shared(path: Path, flag: str) -> bool:
    """RAYSWEEP_SHARED_STORAGE=1 marks every path shared; a ':'-list marks paths under them."""
    flag = flag.strip()
    if flag.lower() in ("1", "true", "yes", "on"):
        return True
    if flag.lower() in ("", "0", "false", "no", "off"):
        return False
    for prefix in flag.split(os.pathsep):
        if prefix and path.is_relative_to(Path(os.path.abspath(Path(prefix).expanduser()))):
            return True
    return False


def read_mounts(table: str = "/proc/self/mounts") -> list[tuple[str, str]]:
    try:
        lines = Path(table).read_text().splitlines()
    except OSError:  # not Linux: no automatic detection, the env flag still works
        return []
    mounts = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:  # the table escapes spaces in mount points as \040
            mounts.append((parts[1].replace("\\040", " "), parts[2]))
    return mounts


def mount_fstype(path: Path, mounts: Sequence[tuple[str, str]]) -> str | None:
    """The fstype of the deepest mount point that contains `path` (None if unknown)."""
    best, fstype = -1, None
    for point, kind in mounts:
        if path.is_relative_to(point) and len(point) > best:
            best, fstype = len(point), kind
    return fstype
