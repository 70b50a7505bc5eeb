"""Where a thing is stored: a URI (s3://bucket/x, gs://..., file:///x) or a local path, told
apart here only, so that every part agrees on what counts as remote."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

LOCAL_SCHEMES = ("file", "local")  # URIs that name this machine's own file system


def is_uri(location: str | os.PathLike) -> bool:
    """It names a scheme ("s3://...", "file:///..."): not a plain path."""
    return "://" in os.fspath(location)


def is_remote(location: str | os.PathLike) -> bool:
    """A URI outside this machine's file system (file:// and local:// are local paths)."""
    text = os.fspath(location)
    return is_uri(text) and urlsplit(text).scheme.lower() not in LOCAL_SCHEMES


def local_path(location: str | os.PathLike) -> str:
    """A local location as a path: its file:// or local:// prefix removed."""
    text = os.fspath(location)
    for scheme in LOCAL_SCHEMES:
        if text.lower().startswith(f"{scheme}://"):
            return text[len(scheme) + 3:]
    return text
