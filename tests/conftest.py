"""Shared test fixtures, and the timeouts.

`ray_local` is SESSION-scoped: one Ray for the whole run, one per worker under `make test`'s
two pytest-xdist workers (`ray.init` costs about 10 s per start on 2 cores, and six modules used
to start their own). `address="local"` makes sure a test never
joins a cluster that another test started with `ray start`; 8 logical CPUs keep Tune trials and
their drivers from starving on a 2-core machine. Code under test that calls
`resources.connect()` finds this Ray running and leaves it up. A test that needs a Ray of
another shape runs it in a subprocess (`ray start` / a driver process), never `ray.init` here.

Every test has a timeout (pyproject: `timeout`), so a hung Ray test fails instead of hanging CI;
tests marked `slow` get SLOW_TIMEOUT_S unless they set their own `pytest.mark.timeout`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# One torch (OpenMP) thread in the tests and every process they start (commands, Ray workers;
# set before anything imports torch). The tests' models are tiny, and with two threads per
# process on 2 shared cores OpenMP's waiting threads spin for most of the CPU: test_models.py
# took 77 s of CPU with two threads and 15 s with one (330 s vs 41 s wall at load ~28). A
# trial still sets its own count from its CPUs (sweep/trainable.py); that is not changed.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# A `ray start --block` node that gets SIGTERM first drains for up to 30 s (Ray 2.60's grace for
# Serve replicas, which these tests never run) while the tests' stop_group waits 20 s and then
# SIGKILLs it: each test cluster's teardown cost 20 s. Without the drain it exits in seconds.
os.environ.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")

SLOW_TIMEOUT_S = 900


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
    items.sort(key=file_weight(items))


def file_weight(items):
    """Sort key: the files that start outside processes first, then those with the most slow
    tests, each file's tests in their own order. `make test` hands whole files to two workers
    in this order (Makefile: PARALLEL), so the long files start early and the short ones fill
    the end, instead of one worker running a long file alone at the end."""
    weight: dict[Path, int] = {}
    for item in items:
        outside = item.get_closest_marker("cluster") or item.get_closest_marker("browser")
        heavy = 100 if outside else 1 if item.get_closest_marker("slow") else 0
        weight[item.path] = weight.get(item.path, 0) + heavy
    return lambda item: -weight[item.path]


@pytest.fixture(scope="session")
def ray_local():
    import ray

    if ray.is_initialized():  # a test started one without this fixture: share it
        yield ray
        return
    # As resources.connect() does for a sweep: Train's controller polls workers every 2 s by
    # default, which blocks every per-epoch report of a sub-second epoch. Workers inherit it.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.05")
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _node_ip_address="127.0.0.1")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, its schema made once. A new store runs MLflow's schema
    migrations (1.5-3 s of CPU each); a copy of this one opens in milliseconds."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def fresh_store(template: Path, path: Path) -> str:
    """A copy of the template at `path`, with the default experiment's artifacts where a new
    store at `path` would put them (`<cwd>/mlruns/0`); its URI."""
    shutil.copyfile(template, path)
    with contextlib.closing(sqlite3.connect(path)) as con, con:
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                    (str(Path.cwd() / "mlruns" / "0"),))
    return f"sqlite:///{path}"


@pytest.fixture
def mlflow_db(tmp_path, monkeypatch, mlflow_template):
    """A private SQLite MLflow store that `MLFLOW_TRACKING_URI` points at; cwd is tmp_path."""
    monkeypatch.chdir(tmp_path)
    uri = fresh_store(mlflow_template, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)
