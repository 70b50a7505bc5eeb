"""Writing folders so that a reader sees the old one or the new one, never half of either, and
so that nothing a user put in a folder is ever deleted by a raysweep command.

Checkpoints, reports and generated datasets are folders; an interrupted command must not leave a
half-written one where a later command would trust it. Replacing a folder is only allowed when it
is empty or was written by raysweep (it holds the marker file): a user who points `--out` at a
folder of their own gets a refusal, never an empty folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from raysweep.errors import UserError

MARKER = ".raysweep-output"


def is_ours(path: Path, also: Sequence[str] = ()) -> bool:
    """True when `path` is a folder that raysweep wrote: it holds the marker, or (a folder
    written before the marker existed) nothing but the file names in `also`."""
    if not path.is_dir():
        return False
    if (path / MARKER).is_file():
        return True
    names = {p.name for p in path.iterdir()}
    return bool(also) and bool(names) and names <= set(also)


def check_replaceable(final: str | os.PathLike, where: str = "--out",
                      also: Sequence[str] = ()) -> Path:
    """Refuse, before any work, an output folder whose replacement would delete a user's files.

    Allowed: a path that does not exist, an empty folder, or a folder a raysweep command wrote
    earlier. Refused: a file, a folder holding anything else, and the working directory or one
    of its parents (replacing those would pull the ground from under the user's shell).
    """
    final = Path(final).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if final == cwd or final in cwd.parents:
        raise UserError(f"{final} is the working directory or one of its parents; raysweep "
                        "writes its output as a folder it may later replace", where=where,
                        fix="name a new folder inside it, e.g. --out winners")
    if final.exists() and not final.is_dir():
        raise UserError(f"{final} exists and is a file, not a folder", where=where,
                        fix="choose another path, or move the file away first")
    if final.is_dir() and any(final.iterdir()) and not is_ours(final, also):
        raise UserError(f"{final} holds files that raysweep did not write (no {MARKER} marker); "
                        "replacing the folder would delete them", where=where,
                        fix="choose a new or empty folder, or move its contents away first")
    return final


def check_writable(path: str | os.PathLike, where: str = "--out", folder: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written: a file whose folder is a
    file or refuses writes, a file path that is a folder, a folder path that is a file. A
    missing folder is fine when its nearest existing parent takes a new entry."""
    path = Path(path).expanduser().resolve()
    if path.is_dir() != folder and path.exists():
        kind = "a folder" if path.is_dir() else "a file"
        raise UserError(f"{path} is {kind}; a {'folder' if folder else 'file'} is written there",
                        where=where, fix="choose another path")
    probe = path if folder else path.parent
    while not probe.exists():
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        raise UserError(f"cannot write to {probe} ({e.strerror or e})", where=where,
                        fix="choose a folder you can write to, or fix its permissions") from None
    return path


def replace_dir(src: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move folder `src` to `final`; an existing `final` is removed only after the move."""
    src, final = Path(src), Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(src, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, where: str = "--out",
               also: Sequence[str] = ()) -> Iterator[Path]:
    """Yield an empty temp folder beside `final`; on success it takes `final`'s place.

    `final` must pass `check_replaceable` (checked before and again just before the swap, since
    the caller's work may take minutes); the new folder carries the marker that lets a later
    run replace it.
    """
    final = check_replaceable(final, where, also)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps({"written_by": "raysweep", "pid": os.getpid(),
                                              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        check_replaceable(final, where, also)
        replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
