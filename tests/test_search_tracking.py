"""The MLflow side of a sweep, driven directly (no Ray cluster): runs, errors, resume, retries."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient

from raysweep.tracking import callback
from raysweep.tracking import store as tracking


class FakeTrial(SimpleNamespace):
    error_file = None
    num_failures = 0

    def __str__(self):
        return f"trial_{self.trial_id}"

    def get_error(self):
        return getattr(self, "error", None)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store per module (creating one costs seconds); the default one, in the cwd."""
    folder = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield folder


@pytest.fixture
def tracker(store, request):
    # A study per test: tests share the store but not their runs.
    t = tracking.Tracker(f"study-{request.node.name}", "sweep-1")
    t.start_parent(tags={"raysweep.space": "study"}, params={"seed": 0, "api_token": "abc123"})
    return t


def test_default_store_is_sqlite_in_cwd(tracker, store):
    assert tracker.uri == f"sqlite:///{store / 'mlruns.db'}"
    exp = MlflowClient(tracker.uri).get_experiment_by_name(tracker.experiment)
    assert exp.artifact_location == (store / "mlartifacts").as_uri()


def test_trial_lifecycle_finished_and_failed(tracker, tmp_path):
    logger = callback.TrialLogger(tracker, max_epochs=4)
    ok = FakeTrial(trial_id="aaa", config={"lr": 0.01, "backbone": "tinycnn", "epochs": 4,
                                           "db_password": "hunter22"})
    bad = FakeTrial(trial_id="bbb", config={"lr": 1.0, "fusion": "film"},
                    error="Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                          "raysweep.train.NonFiniteLoss: non-finite training loss at epoch 2")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.pt").write_bytes(b"weights")
    for trial in (ok, bad):
        logger.on_trial_start(0, [], trial)
    for epoch, value in ((1, 9.0), (2, 7.5)):
        logger.on_trial_result(0, [], ok, {"epoch": epoch, "val_de00_mean": value,
                                           "training_iteration": epoch, "time_total_s": 3.0,
                                           "train_loss": float("nan")})
    logger.on_checkpoint(0, [], ok, SimpleNamespace(path=str(ckpt)))
    logger.on_trial_complete(0, [], ok)
    logger.on_trial_result(0, [], bad, {"epoch": 1, "val_de00_mean": 30.0})
    logger.on_trial_error(0, [], bad)

    client = MlflowClient(tracker.uri)
    run_ok = client.get_run(logger.runs["aaa"])
    assert run_ok.info.status == "FINISHED"
    assert run_ok.data.tags["mlflow.parentRunId"] == tracker.parent_run_id
    assert run_ok.data.tags["raysweep.stopped_early"] == "true"  # 2 of 4 epochs
    assert run_ok.data.params["db_password"] == "***"  # secrets never reach MLflow
    assert run_ok.data.params["width"] == "32"  # TrainConfig defaults are logged too
    assert [m.value for m in client.get_metric_history(run_ok.info.run_id, "val_de00_mean")] \
        == [9.0, 7.5]
    assert "train_loss" not in run_ok.data.metrics  # non-finite values are skipped, not sent
    assert "time_total_s" not in run_ok.data.metrics  # Tune bookkeeping is not a metric
    # every run names its checkpoint; only the leaders' weights are copied, at the sweep's end
    assert run_ok.data.tags["raysweep.checkpoint_uri"] == str(ckpt)
    assert client.list_artifacts(run_ok.info.run_id, "checkpoint") == []
    ok.status = "TERMINATED"
    logger.on_experiment_end([ok, bad])
    assert [a.path for a in client.list_artifacts(run_ok.info.run_id, "checkpoint")] == \
        ["checkpoint/model.pt"]
    run_bad = client.get_run(logger.runs["bbb"])
    assert run_bad.info.status == "FAILED"
    assert run_bad.data.tags["raysweep.error"].endswith("non-finite training loss at epoch 2")
    assert "error.txt" in {a.path for a in client.list_artifacts(run_bad.info.run_id)}
    parent = client.get_run(tracker.parent_run_id)
    assert parent.data.params["api_token"] == "***" and parent.data.params["seed"] == "0"


def test_restored_logger_reuses_runs(tracker):
    logger = callback.TrialLogger(tracker, max_epochs=4)
    trial = FakeTrial(trial_id="ccc", config={"lr": 0.01})
    logger.on_trial_start(0, [], trial)
    first = logger.runs["ccc"]
    # What Tune does on --resume: the callback comes back from its pickle in a new process.
    restored = pickle.loads(pickle.dumps(logger))
    restored.runs.clear()  # as if the pickle was written before the trial started
    restored.on_trial_start(0, [], trial)
    restored.on_trial_start(0, [], FakeTrial(trial_id="ddd", config={"lr": 0.02}))
    assert restored.runs["ccc"] == first
    runs = MlflowClient(tracker.uri).search_runs(
        [tracker.experiment_id], filter_string="tags.`raysweep.role` = 'trial'")
    assert len(runs) == 2
    # and the parent run is found again by its sweep name
    assert tracking.Tracker(tracker.experiment, "sweep-1").find_parent() == \
        tracker.parent_run_id


def test_retry_backs_off_then_gives_up_on_permanent_errors(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("connection refused")
        return "ok"

    assert tracking.retry(flaky) == "ok" and len(calls) == 3

    def permanent():
        calls.append(1)
        raise MlflowException("bad param", error_code=INVALID_PARAMETER_VALUE)

    calls.clear()
    with pytest.raises(MlflowException):
        tracking.retry(permanent)
    assert len(calls) == 1


def test_unreachable_server_fails_before_the_sweep(monkeypatch, tmp_path):
    from raysweep.errors import UserError

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(UserError, match="cannot reach the MLflow tracking store"):
        tracking.Tracker("study", "s").start_parent(tags={}, params={})
