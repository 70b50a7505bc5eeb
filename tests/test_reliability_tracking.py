"""Tracking that cannot lose or duplicate: replayed epochs are logged once, and a tracking server
that dies mid-sweep costs neither the sweep nor its results.

tests/test_search_tracking.py covers retry with backoff and the unreachable-at-start error; these
tests cover what happens after the sweep has started.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from raysweep.tracking import background, callback
from raysweep.tracking import store as tracking


class FakeTrial(SimpleNamespace):
    error_file = None
    num_failures = 0

    def __str__(self):
        return f"trial_{self.trial_id}"


def result(epoch: int, value: float) -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "val_de00_mean": value,
            "train_loss": value / 2}


@pytest.fixture
def tracker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    t = tracking.Tracker("study", "sweep-1")
    t.start_parent(tags={}, params={})
    return t


def steps(tracker, run_id: str, key: str = "val_de00_mean") -> list[tuple[int, float]]:
    history = MlflowClient(tracker.uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def test_epochs_replayed_after_a_worker_restart_are_logged_once(tracker):
    logger = callback.TrialLogger(tracker, max_epochs=4)
    trial = FakeTrial(trial_id="t1", config={"lr": 0.01})
    logger.on_trial_start(0, [], trial)
    for epoch in (1, 2, 3):
        logger.on_trial_result(0, [], trial, result(epoch, 10.0 - epoch))
    # killed after epoch 3; the newest checkpoint was epoch 1's: epochs 2 and 3 come again
    logger.on_trial_recover(0, [], trial)
    for epoch in (2, 3, 4):
        logger.on_trial_result(0, [], trial, result(epoch, 20.0 - epoch))
    logger.on_trial_complete(0, [], trial)
    run_id = logger.runs["t1"]
    assert steps(tracker, run_id) == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 16.0)]
    assert [s for s, _ in steps(tracker, run_id, "epoch")] == [1, 2, 3, 4]
    assert MlflowClient(tracker.uri).get_run(run_id).data.tags["raysweep.epochs_run"] == "4"


def test_a_new_driver_does_not_relog_what_the_killed_one_logged(tracker):
    first = callback.TrialLogger(tracker, max_epochs=4)
    trial = FakeTrial(trial_id="t2", config={"lr": 0.01})
    saved = pickle.dumps(first)  # Tune's tuner.pkl: written before any trial ran
    first.on_trial_start(0, [], trial)
    for epoch in (1, 2):
        first.on_trial_result(0, [], trial, result(epoch, 10.0 - epoch))
    # the driver is SIGKILLed; --resume restores the callback from that old pickle
    second = pickle.loads(saved)
    second.tracker = pickle.loads(pickle.dumps(tracker))
    for epoch in (2, 3):  # the trial restarts from its epoch-1 checkpoint
        second.on_trial_result(0, [], trial, result(epoch, 20.0 - epoch))
    assert second.runs["t2"] == first.runs["t2"]
    assert steps(tracker, first.runs["t2"]) == [(1, 9.0), (2, 8.0), (3, 17.0)]


def test_orphaned_runs_are_retired_so_each_trial_has_one(tracker):
    logger = callback.TrialLogger(tracker, max_epochs=2)
    for tid in ("a", "b", "lost"):
        logger.on_trial_start(0, [], FakeTrial(trial_id=tid, config={}))
    retired = tracker.retire_orphans({"a", "b"})
    assert retired == [logger.runs["lost"]]
    assert set(tracker.children()) == {"a", "b"}  # what the UI and eval_winners see
    gone = MlflowClient(tracker.uri).get_run(logger.runs["lost"])  # kept, recoverable
    assert gone.info.lifecycle_stage == "deleted" and gone.info.status == "KILLED"
    assert gone.data.tags["raysweep.orphaned"] == "true"


def test_a_dead_store_trips_the_breaker_and_hooks_never_raise(tracker, monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def refused(*args, **kwargs):
        calls.append(1)
        raise ConnectionError("connection refused")

    client = tracker.client
    monkeypatch.setattr(client, "log_batch", refused)
    monkeypatch.setattr(client, "create_run", refused)
    logger = callback.TrialLogger(tracker, max_epochs=2)
    logger.runs["known"] = tracker.parent_run_id  # any existing run
    logger._loaded = True
    logger._adopted.add("known")
    t0 = time.perf_counter()
    logger.on_trial_result(0, [], FakeTrial(trial_id="known", config={}), result(1, 5.0))
    assert len(calls) == 4 and tracker.failures == 1  # retried, then gave up
    for epoch in (2, 3):  # within the cool-down: skipped without a single attempt
        logger.on_trial_result(0, [], FakeTrial(trial_id="known", config={}), result(epoch, 5.0))
    logger.on_trial_start(0, [], FakeTrial(trial_id="new", config={}))  # cannot create: no raise
    logger.on_trial_complete(0, [], FakeTrial(trial_id="new", config={}))
    assert len(calls) == 4 and time.perf_counter() - t0 < 5
    tracker._down_until = 0.0  # the cool-down is over: the next call tries again
    logger.on_trial_result(0, [], FakeTrial(trial_id="known", config={}), result(4, 5.0))
    assert len(calls) == 8


def test_an_outage_is_said_once_and_its_end_once(tracker, monkeypatch, caplog):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    client = tracker.client
    real = client.log_batch
    down = [True]

    def flaky(*args, **kwargs):
        if down[0]:
            raise ConnectionError("connection refused")
        return real(*args, **kwargs)

    logger = callback.TrialLogger(tracker, max_epochs=9)
    trial = FakeTrial(trial_id="o", config={})
    logger.on_trial_start(0, [], trial)
    monkeypatch.setattr(client, "log_batch", flaky)
    caplog.set_level("DEBUG", logger="raysweep")
    for epoch in (1, 2, 3):
        logger.on_trial_result(0, [], trial, result(epoch, 5.0))
        tracker._down_until = 0.0  # every call tries again: still one warning
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, [w.getMessage() for w in warnings] and "unreachable" in warnings[0].getMessage()
    assert tracker.skipped == 3
    down[0] = False
    logger.on_trial_result(0, [], trial, result(4, 5.0))
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "answers again" in warnings[1].getMessage()
    assert steps(tracker, logger.runs["o"]) == [(4, 5.0)]


def test_a_refused_write_still_ends_the_run(tracker, monkeypatch):
    """One hook, one policy: a permanent error in the tags does not leave the run RUNNING."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    client = tracker.client
    real = client.log_batch

    def refuse_tags(run_id, metrics=(), params=(), tags=()):
        if tags:
            raise MlflowException("tag refused", error_code=INVALID_PARAMETER_VALUE)
        return real(run_id, metrics=metrics, params=params, tags=tags)

    logger = callback.TrialLogger(tracker, max_epochs=2)
    trial = FakeTrial(trial_id="r", config={})
    logger.on_trial_start(0, [], trial)
    monkeypatch.setattr(client, "log_batch", refuse_tags)
    logger.on_trial_complete(0, [], trial)  # must not raise
    assert MlflowClient(tracker.uri).get_run(logger.runs["r"]).info.status == "FINISHED"
    assert tracker.failures == 0 and tracker.skipped == 1  # refused, not unreachable


def test_read_only_commands_do_not_import_ray_or_touch_the_environment():
    """summarize and eval_winners' reading path start without Ray (seconds, and no Ray needed
    on a laptop that only reads a tracking server); no import changes os.environ."""
    import subprocess
    import sys

    code = ("import os, sys; before = dict(os.environ); "
            "import raysweep.summarize, raysweep.evaluate.trials, raysweep.tracking.store; "
            "sys.argv = ['summarize', '--help']; import runpy\n"
            "try: runpy.run_module('raysweep.summarize', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')), "
            "sorted(k for k in os.environ if before.get(k) != os.environ[k]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=240, check=True).stdout.strip().splitlines()[-1]
    assert out == "[] []", out


def test_a_server_store_prints_no_view_run_lines_unless_the_user_asks(monkeypatch):
    """MLflow 3 prints two 'View run' lines per ended run on a tracking server (and fetches the
    run again for them): raysweep turns that off when it opens a store, never over the user's
    own setting. Nothing listens on port 9: an attempt to build the link would fail."""
    key = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
    monkeypatch.delenv(key, raising=False)
    client = tracking.open_client("http://127.0.0.1:9")
    assert client._tracking_client._log_url("0" * 32) is None  # returned before any request
    monkeypatch.setenv(key, "false")
    client = tracking.open_client("http://127.0.0.1:9")
    assert os.environ[key] == "false"
    with pytest.raises(MlflowException):  # the user's choice: MLflow tries to fetch the run
        client._tracking_client._log_url("0" * 32)


@pytest.mark.slow
@pytest.mark.cluster
def test_tracking_server_dying_mid_sweep_loses_no_results(ray_local, tmp_path, monkeypatch):
    from raysweep.sweep.run import run_sweep
    from raysweep.sweep.spec import Request
    from tests.helpers.fakes import make_prepared
    from tests.helpers.servers import mlflow_server
    from tests.helpers.sweeps import RELIABILITY_SPACE

    space = tmp_path / "reliability_study.py"
    space.write_text(RELIABILITY_SPACE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # ours retry; keep it short
    server = contextlib.ExitStack()
    url = server.enter_context(mlflow_server(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    original = callback.TrialLogger.on_trial_complete
    killed_after: list[str] = []

    def complete_then_kill_the_server(self, iteration, trials, trial, **info):
        original(self, iteration, trials, trial, **info)
        if not killed_after:
            killed_after.append(trial.trial_id)
            server.close()  # SIGTERM to the server's process group; it is gone for good

    monkeypatch.setattr(callback.TrialLogger, "on_trial_complete", complete_then_kill_the_server)
    # What must not happen: every tracking step trying the dead server in turn (a round of
    # retries each) and stalling the sweep. Counted, not timed: once a round has failed, the
    # breaker skips every call without trying for the rest of the sweep.
    monkeypatch.setattr(tracking.Tracker, "COOLDOWN_S", 3600.0)
    rounds_after_kill: list[str] = []
    real_retry = tracking.retry

    def counted_retry(fn, *args, **kwargs):
        if killed_after:
            rounds_after_kill.append(getattr(fn, "__name__", str(fn)))
        return real_retry(fn, *args, **kwargs)

    monkeypatch.setattr(tracking, "retry", counted_retry)
    try:
        out = run_sweep(Request(space=str(space), data=make_prepared(n=48, size=16), num_samples=3,
                                max_concurrent=1, storage=str(tmp_path / "runs"), name="dead",
                                seed=0, early_stopping=False))
    finally:
        server.close()
    assert killed_after and out.complete
    table = pd.read_csv(Path(out.path) / "results.csv", dtype={"trial_id": str})
    assert len(table) == 3 and (table["status"] == "FINISHED").all()
    assert table["val_de00_mean"].notna().all()
    for tid in table["trial_id"]:  # Tune's own per-trial record holds every epoch
        lines = (Path(out.path) / f"trial_{tid}" / "result.json").read_text().splitlines()
        epochs = [json.loads(line)["epoch"] for line in lines]
        assert epochs == [1, 2, 3], (tid, epochs)
        assert all("val_de00_mean" in json.loads(line) for line in lines)
    # a failed round per writer lane at most (they may be in flight together), plus the
    # driver's own first call after the sweep; then the breaker: nothing more tried
    assert 1 <= len(rounds_after_kill) <= background.LANES + 1, rounds_after_kill
