"""Run a raysweep command in a fresh interpreter, and check that its error is one clear paragraph."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: float = 180):
    # A tracking URI in the caller's environment must not leak into a case that sets none.
    base = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env = {**base, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", f"raysweep.{module}", *map(str, args)], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def assert_clear_error(r, *fragments: str, code: int = 2) -> str:
    err = r.stderr
    assert r.returncode == code, (r.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    paragraph = err[err.index("error: "):]
    assert "Where:" in paragraph, paragraph
    for fragment in fragments:
        assert fragment in paragraph, (fragment, paragraph)
    return paragraph
