"""The private Ray and MLflow APIs raysweep relies on still exist and still behave.

Every one is reached through raysweep._compat; when an upgrade moves one, a test here fails with
the function's name instead of a sweep failing half-way on a cluster.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
from pathlib import Path

import pytest

from raysweep import _compat

ROOT = Path(__file__).resolve().parents[1]
# Files that still call a private API directly; each is a follow-up for the file's owner
# (replace the call with the raysweep._compat function named beside it). Empty when done.
PENDING: dict[str, str] = {}  # module -> the _compat call it still has to switch to


def _private_imports(path: Path) -> list[str]:
    """Module paths of Ray or MLflow with a private component that `path` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] in ("ray", "mlflow") and any(p.startswith("_") for p in parts[1:]):
                found.append(name)
    return found


def test_private_apis_are_used_only_through_compat():
    offenders = {}
    for path in sorted((ROOT / "raysweep").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "raysweep/_compat.py" or rel in PENDING:
            continue
        if hits := _private_imports(path):
            offenders[rel] = hits
    assert not offenders, f"private Ray/MLflow imports outside raysweep/_compat.py: {offenders}"


def test_upper_bound_pins_cover_the_tested_versions():
    """pyproject pins each dependency with a private API below its next minor release, and the
    installed version is the one _compat names as tested."""
    text = (ROOT / "pyproject.toml").read_text()
    for pkg, tested in _compat.TESTED.items():
        spec = re.search(rf'"{pkg}(\[[^\]]*\])?(?P<spec>[<>=!~][^"]*)"', text)
        assert spec and "<" in spec["spec"], f"{pkg} has no upper bound in pyproject.toml"
        upper = re.search(r"<\s*([\d.]+)", spec["spec"])[1]
        as_tuple = lambda v: tuple(int(x) for x in v.split(".")[:2])  # noqa: E731
        assert as_tuple(tested) < as_tuple(upper), (pkg, tested, upper)
        assert md.version(pkg) == tested, (
            f"{pkg} {md.version(pkg)} is installed but raysweep/_compat.py was tested with "
            f"{tested}: run this file, fix what fails in _compat, then update TESTED and the pin")


def test_in_tune_session_is_false_outside_a_trial():
    import ray.tune  # noqa: F401 - with Tune loaded the private probe itself is asked

    assert _compat.in_tune_session() is False


def test_gcs_accessors_exist():
    """Import paths and attributes, checked without starting Ray (the callers need a cluster)."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.experimental.internal_kv import _internal_kv_get

    assert callable(state._connect_and_get_accessor) and callable(_internal_kv_get)
    states = _compat.placement_group_live_states()
    assert len(set(states)) == 3 and all(isinstance(s, int) for s in states)
    fields = set(gcs_pb2.PlacementGroupTableData.DESCRIPTOR.fields_by_name)
    assert {"state", "is_detached", "creator_actor_id", "creator_actor_dead",
            "placement_group_id"} <= fields


def test_train_report_queue_is_where_ray_train_puts_a_ranks_reports():
    """Checked without a Train run (the DDP divergence test in test_train uses it in one)."""
    import inspect

    from ray.train.v2._internal.execution import context
    from ray.train.v2._internal.execution.worker_group import worker

    assert callable(context.get_train_context)
    assert _compat.train_report_queue() is None  # not in a Train worker: no queue, no error
    assert "get_result_queue().put(" in inspect.getsource(context.TrainContext._wait_then_report)
    poll = inspect.getsource(worker.RayTrainWorker.poll_status)
    assert "result_queue.get_nowait()" in poll  # the poll takes it: empty() means taken
    assert "result_queue=queue.Queue(maxsize=1)" in inspect.getsource(worker)


@pytest.mark.cluster
def test_gcs_tables_answer_on_a_live_cluster(ray_local):
    assert isinstance(list(_compat.placement_group_table()), list)
    import json

    status = _compat.autoscaler_status()  # the key and format raysweep.sweep.cluster reads
    assert status is None or isinstance(json.loads(status), dict)  # the monitor's JSON


def test_mlflow_store_uris_round_trip(tmp_path, monkeypatch):
    import mlflow

    # set_*_uri also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI: undone at teardown, or
    # every later test would register into this test's store.
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(key, "placeholder")
        monkeypatch.delenv(key)
    before = _compat.mlflow_store_uris()
    try:
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'a.db'}")
        mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'a.db'}")
        assert _compat.mlflow_store_uris() == (f"sqlite:///{tmp_path / 'a.db'}",) * 2
    finally:
        _compat.restore_mlflow_store_uris(before)
    assert _compat.mlflow_store_uris() == before
