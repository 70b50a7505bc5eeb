"""One writer per sweep: a lease on the sweep's folder, taken before Ray starts.

Two `search --name X --storage S` started a second apart both passed the "already exists" check
(the spec is written later), then shared one MLflow parent, overwrote one results.csv and left two
Tune states. The lease closes that window: the second writer fails at once, naming the holder.

- A local (or mounted, shared) folder: `fcntl.flock` on `<sweep>/.raysweep-lease`. The kernel
  releases it when the holder dies, even by SIGKILL, so a killed driver never blocks `--resume`.
  The file also says who holds it (host, pid, start time), for the refusal message.
- S3 (`s3://`, `s3a://`): an object written with a conditional put (`If-None-Match: *`), which S3
  creates for one writer only. The holder renews it every RENEW_S; a lease not renewed for TTL_S,
  or one whose holder process is gone from this very host, is stale and may be taken over.
- Other remote schemes (gs://, abfs://, ...) have no lease: a warning says so (RELIABILITY.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

from raysweep import uri
from raysweep.errors import UserError

log = logging.getLogger(__name__)

LEASE_FILE = ".raysweep-lease"
TTL_S = 120.0  # an S3 lease not renewed for this long belongs to a dead driver
RENEW_S = 30.0


def holder_record(token: str) -> dict:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": token,
            "started": now, "renewed": now}


def describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {when}"


def busy(sweep_path: str, holder: dict) -> UserError:
    return UserError(f"sweep {sweep_path} is being written by another raysweep search "
                     f"({describe(holder)}); two writers would share one MLflow parent run and "
                     "overwrite each other's results", where="--name / --storage",
                     fix="wait for that sweep to end (or stop it), then `--resume` it; or pick "
                         "another --name")


@contextlib.contextmanager
def hold(sweep_path: str) -> Iterator[dict]:
    """Hold the sweep's lease for the block; raise UserError (busy) when another writer has it."""
    scheme = urlsplit(sweep_path).scheme.lower()
    if not uri.is_remote(sweep_path):
        with _local(uri.local_path(sweep_path)) as h:
            yield h
    elif scheme in ("s3", "s3a"):
        with _s3(sweep_path) as h:
            yield h
    else:
        log.warning("no writer lease on %s storage: do not start two sweeps with the same "
                    "--name at once (RELIABILITY.md)", scheme)
        yield {}


@contextlib.contextmanager
def _local(folder: str) -> Iterator[dict]:
    created = _missing_ancestors(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LEASE_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_json(os.read(fd, 65536))
            os.close(fd)
            raise busy(folder, holder) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder before us removed the file we locked: lock the new one
    try:
        holder = holder_record(uuid.uuid4().hex)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.fsync(fd)
        yield holder
    finally:
        # A sweep refused before it wrote anything leaves no folder behind. The file goes while
        # the lock is held; a waiter that locked the old file sees it gone and retries.
        if created and os.listdir(folder) == [LEASE_FILE]:
            os.unlink(path)
            for d in created:
                with contextlib.suppress(OSError):
                    os.rmdir(d)
        os.close(fd)


def _missing_ancestors(folder: str) -> list[str]:
    """`folder` and its parents that do not exist yet, deepest first."""
    out, d = [], os.path.abspath(folder)
    while not os.path.exists(d):
        out.append(d)
        d = os.path.dirname(d)
    return out


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_json(raw: bytes) -> dict:
    try:
        d = json.loads(raw.decode() or "{}")
        return d if isinstance(d, dict) else {}
    except (ValueError, UnicodeDecodeError):
        return {}


@contextlib.contextmanager
def _s3(sweep_path: str) -> Iterator[dict]:
    import boto3

    parts = urlsplit(sweep_path)
    bucket, key = parts.netloc, f"{parts.path.strip('/')}/{LEASE_FILE}".lstrip("/")
    s3 = boto3.client("s3")
    holder = holder_record(uuid.uuid4().hex)
    for _ in range(2):
        if _put_if_absent(s3, bucket, key, holder):
            break
        other = _s3_read(s3, bucket, key)
        if other is not None and not stale(other):
            raise busy(sweep_path, other)
        log.warning("taking over the stale lease of %s (%s)", sweep_path,
                    describe(other or {}))
        s3.delete_object(Bucket=bucket, Key=key)
    else:
        raise busy(sweep_path, _s3_read(s3, bucket, key) or {})
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(s3, bucket, key, holder, stop),
                               name="raysweep-lease", daemon=True)
    renewer.start()
    try:
        yield holder
    finally:
        stop.set()
        renewer.join(timeout=5)
        with contextlib.suppress(Exception):  # an expired lease is stale anyway
            if (_s3_read(s3, bucket, key) or {}).get("token") == holder["token"]:
                s3.delete_object(Bucket=bucket, Key=key)


def _put_if_absent(s3, bucket: str, key: str, holder: dict) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(holder).encode(), IfNoneMatch="*")
        return True
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412",
                                                         "ConditionalRequestConflict"):
            return False
        raise


def _s3_read(s3, bucket: str, key: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        return _read_json(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError:
        return None


def stale(holder: dict, now: float | None = None) -> bool:
    """Not renewed for TTL_S, or held by a process of this host that no longer exists."""
    now = time.time() if now is None else now
    if now - float(holder.get("renewed") or 0) > TTL_S:
        return True
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid") or 0), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, OverflowError):
            return False
    return False


def _renew(s3, bucket: str, key: str, holder: dict, stop: threading.Event) -> None:
    while not stop.wait(RENEW_S):
        with contextlib.suppress(Exception):  # a missed renewal is retried; TTL_S allows 3
            holder["renewed"] = time.time()
            s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(holder).encode())
