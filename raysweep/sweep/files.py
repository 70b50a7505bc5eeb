"""Small text files (the sweep's spec, results.csv) on a local path or a storage URI."""

from __future__ import annotations

import os
from pathlib import Path

from raysweep.uri import is_remote, local_path


def write_text(path: str, text: str) -> None:
    """Write a small file to a local path or a storage URI; locally via a temp name + rename."""
    if is_remote(path):
        import pyarrow.fs

        fs, fs_path = pyarrow.fs.FileSystem.from_uri(path)
        with fs.open_output_stream(fs_path) as f:
            f.write(text.encode())
        return
    path = local_path(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_text(path: str) -> str | None:
    try:
        if is_remote(path):
            import pyarrow.fs

            fs, fs_path = pyarrow.fs.FileSystem.from_uri(path)
            with fs.open_input_stream(fs_path) as f:
                return f.readall().decode()
        return Path(local_path(path)).read_text()
    except (FileNotFoundError, OSError):
        return None
