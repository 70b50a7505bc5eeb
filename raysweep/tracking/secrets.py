"""Secrets stay out of everything raysweep logs.

MLflow credentials come from the environment only (MLFLOW_TRACKING_USERNAME/PASSWORD or
MLFLOW_TRACKING_TOKEN, which MLflow itself reads), never from a config file, a flag or a URI, and
`scrub_secrets` runs on everything before it is logged as params or tags. (Shared checkpoint
storage, the other thing that changes when a sweep leaves one machine, is raysweep.sweep.storage.)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from raysweep.errors import UserError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# MLflow credentials and secret scrubbing


@dataclass(frozen=True)
class TrackingAuth:
    """Where runs go and as whom; the password itself is never kept here."""

    tracking_uri: str | None
    username: str | None
    has_password: bool
    has_token: bool

    def describe(self) -> str:
        target = self.tracking_uri or "the local SQLite store"
        if self.username:
            return f"{target} as {self.username!r} (basic auth)"
        if self.has_token:
            return f"{target} (bearer token)"
        return target


def tracking_auth_from_env(environ: Mapping[str, str] | None = None) -> TrackingAuth:
    """Read and check the MLflow target and credentials from the environment only.

    MLflow reads MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN itself; this checks they are coherent
    and that no credential hides in MLFLOW_TRACKING_URI, where it would be printed and logged.
    """
    env = os.environ if environ is None else environ
    uri = env.get("MLFLOW_TRACKING_URI") or None
    user = env.get("MLFLOW_TRACKING_USERNAME") or None
    password = env.get("MLFLOW_TRACKING_PASSWORD") or None
    token = env.get("MLFLOW_TRACKING_TOKEN") or None
    if uri:
        parts = urlsplit(uri)
        if parts.scheme in ("http", "https") and (parts.username or parts.password):
            raise UserError(
                "MLFLOW_TRACKING_URI contains credentials; they would be printed and logged",
                where=f"MLFLOW_TRACKING_URI={redact_uri(uri)}",
                fix="remove 'user:password@' from the URI and set MLFLOW_TRACKING_USERNAME "
                    "and MLFLOW_TRACKING_PASSWORD instead",
            )
    if bool(user) != bool(password):
        missing = "MLFLOW_TRACKING_PASSWORD" if user else "MLFLOW_TRACKING_USERNAME"
        raise UserError(
            f"MLflow basic auth is half configured: {missing} is not set",
            where="the environment of the search process",
            fix="set both MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (on a cluster: "
                "in the head node's environment or a Kubernetes Secret, see infra/README.md)",
        )
    if (user or token) and uri and urlsplit(uri).scheme == "http" and \
            urlsplit(uri).hostname not in ("127.0.0.1", "localhost", "::1"):
        log.warning("MLflow credentials go in clear text to %s: use https or a tunnel", uri)
    return TrackingAuth(uri, user, bool(password), bool(token))


_SECRET_WORDS = frozenset({"password", "passwd", "pwd", "secret", "token", "apikey",
                           "credential", "credentials", "passphrase"})
_SECRET_PAIRS = ("api_key", "access_key", "private_key", "auth_key", "secret_key")
REDACTED = "***"
# Shell variables whose names contain a secret word but hold no secret: PWD is the working
# directory (`pwd` is a secret word for keys like db_pwd), and scrubbing its value blanked every
# path under it out of the logged params.
_NOT_SECRET_ENV = frozenset({"PWD", "OLDPWD"})


def is_secret_key(key: str) -> bool:
    words = [w for w in re.split(r"[^a-z0-9]+", key.lower()) if w]
    joined = "_".join(words)
    return any(w in _SECRET_WORDS for w in words) or any(p in joined for p in _SECRET_PAIRS)


def redact_uri(value: str) -> str:
    """'https://u:pw@host/x' -> 'https://u:***@host/x'; anything else is returned as is."""
    parts = urlsplit(value)
    if not parts.scheme or parts.password is None:
        return value
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{REDACTED}@{host}"))


def scrub_secrets(d: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict:
    """A copy of `d` that is safe to log: secret-looking keys, passwords in URIs, and any value
    equal to a secret in the environment are replaced by '***'. Nested dicts/lists included."""
    env = os.environ if environ is None else environ
    known = {v for k, v in env.items()
             if v and len(v) >= 6 and k.upper() not in _NOT_SECRET_ENV and is_secret_key(k)}

    def clean(key: str | None, value: Any) -> Any:
        if key is not None and is_secret_key(key) and value not in (None, ""):
            return REDACTED
        if isinstance(value, Mapping):
            return {k: clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(clean(None, v) for v in value)
        if isinstance(value, str):
            if value in known:
                return REDACTED
            redacted = redact_uri(value)
            for secret in known:  # a secret pasted inside a longer string
                redacted = redacted.replace(secret, REDACTED)
            return redacted
        return value

    return {k: clean(str(k), v) for k, v in d.items()}
