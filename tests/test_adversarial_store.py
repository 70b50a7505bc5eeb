"""A tracking store that is corrupt, locked or read-only: every MLflow reader (summarize,
eval_winners, predict) answers with one paragraph that says which, never a SQLAlchemy traceback,
and eval_winners says it before any work (it used to fail after re-scoring every leader)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess

import pytest

from tests.helpers.cli import assert_clear_error, cli

READERS = [("summarize", "--experiment", "x"),
           ("eval_winners", "--experiment", "x", "--out", "winners"),
           ("predict", "photo.jpg")]


def empty_store(path) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{path}"
    MlflowClient(uri).search_experiments()  # creates the schema
    return uri


@contextlib.contextmanager
def read_only(path):
    """root ignores file modes: an immutable file (chattr) is read-only for root too."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("chattr +i is not available here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        path.parent.chmod(0o555)
        try:
            yield
        finally:
            path.parent.chmod(0o755)
            path.chmod(0o644)


@pytest.mark.parametrize("cmd", READERS, ids=[c[0] for c in READERS])
def test_a_corrupt_store_is_one_paragraph(tmp_path, cmd):
    db = tmp_path / "mlruns.db"
    db.write_bytes(os.urandom(8192))
    r = cli(*cmd, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"})
    assert_clear_error(r, "not an SQLite database or is damaged", str(db))


# A command's start alone (torch, MLflow) took 99 s at load 23: the call may outlast the
# default 300 s test timeout on a machine loaded further, which is no error of the command's.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("cmd", READERS, ids=[c[0] for c in READERS])
def test_a_locked_store_is_one_paragraph(tmp_path, cmd):
    db = tmp_path / "mlruns.db"
    uri = empty_store(db)
    holder = sqlite3.connect(db)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        r = cli(*cmd, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri}, timeout=800)
    finally:
        holder.rollback()
        holder.close()
    assert_clear_error(r, "locked by another process", str(db))


@pytest.mark.parametrize("cmd", READERS[:2], ids=[c[0] for c in READERS[:2]])
def test_a_read_only_store_is_one_paragraph(tmp_path, cmd):
    db = tmp_path / "mlruns.db"
    uri = empty_store(db)
    with read_only(db):
        r = cli(*cmd, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    if cmd[0] == "summarize":  # reading works; there is nothing to read
        assert_clear_error(r, "no MLflow experiment")
    else:  # eval_winners would log and register at its end: refused before any work
        assert_clear_error(r, "read-only", str(db))
        assert not (tmp_path / "winners").exists()


def test_a_store_that_answers_no_is_not_called_unreachable(tmp_path):
    """The sweep's parent run: a refused request says what the store said; only a store that
    does not answer is 'cannot reach'."""
    from types import SimpleNamespace

    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from raysweep.errors import UserError
    from raysweep.tracking.store import Tracker

    def refuse(*a, **k):
        raise MlflowException("Invalid value \"it's\" for tag",
                              error_code=INVALID_PARAMETER_VALUE)

    def fail_locally(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "mlartifacts"))

    for create_run, said in ((refuse, "Invalid value"), (fail_locally, "Permission denied")):
        tracker = Tracker("e", "n", uri=f"sqlite:///{tmp_path / 'm.db'}")
        tracker._experiment_id = "1"
        tracker._client = SimpleNamespace(search_runs=lambda *a, **k: [], create_run=create_run)
        with pytest.raises(UserError) as e:
            tracker.start_parent(tags={}, params={})
        assert "could not open the sweep's run" in e.value.message() and said in str(e.value)
        assert "cannot reach" not in e.value.message()
