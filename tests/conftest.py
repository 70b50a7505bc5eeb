"""Shared test fixtures.

`ray_local` is module-scoped: `ray.init` costs about 10 s, so each test module that needs Ray
shares one instance. `address="local"` makes sure a test never joins a cluster that another test
started with `ray start`; 8 logical CPUs keep Tune trials and their drivers from starving on a
2-core machine.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def mlflow_db(tmp_path, monkeypatch):
    """A private SQLite MLflow store that `MLFLOW_TRACKING_URI` points at; cwd is tmp_path."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)
