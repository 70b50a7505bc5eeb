"""Writing folders so that a reader sees the old one or the new one, never half of either.

Checkpoints, reports and generated datasets are folders; an interrupted command must not leave a
half-written one where a later command would trust it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside `final`; on success it takes `final`'s place."""
    final = Path(final).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
