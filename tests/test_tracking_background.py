"""The background MLflow writer: Tune's thread only hands over, nothing is lost or logged twice.

A "killed driver" here is a TrialLogger whose writer thread is stuck in a write that never lands
(as if the process died with steps queued); the "resumed driver" is the callback restored from
the pickle Tune wrote before the trial started, as `--resume` restores it, with the trial's
result.json as Tune's JSON logger leaves it (one line per report, replayed epochs appended).
"""

from __future__ import annotations

import functools
import json
import pickle
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from raysweep.tracking import background, callback, checkpoints, reconcile
from raysweep.tracking import store as tracking


class FakeTrial(SimpleNamespace):
    error_file = None
    num_failures = 0
    status = "RUNNING"

    def __str__(self):
        return f"trial_{self.trial_id}"


@pytest.fixture(params=[1, 3], ids=["one-lane", "three-lanes"])
def tracker(mlflow_db, request, monkeypatch):
    """The sweep's tracker; its writer runs one lane (a local store) or three (as against a
    tracking server, where each trial's steps go to their own lane)."""
    monkeypatch.setattr(background, "lanes_for", lambda uri: request.param)
    t = tracking.Tracker("study", "sweep-bg")
    t.start_parent(tags={}, params={})
    return t


def result(epoch: int, value: float) -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "val_de00_mean": value,
            "train_loss": value / 2}


def report(logger, trial, epoch: int, value: float) -> None:
    """What Tune does with one result: the JSON logger's line, then our hook."""
    r = result(epoch, value)
    with open(Path(trial.local_path) / "result.json", "a") as fh:
        fh.write(json.dumps(r) + "\n")
    logger.on_trial_result(0, [], trial, r)


def history(tracker, run_id: str, key: str = "val_de00_mean") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(tracker.uri).get_metric_history(run_id, key))


def make_trial(tmp_path: Path, tid: str) -> FakeTrial:
    folder = tmp_path / f"trial_{tid}"
    folder.mkdir()
    return FakeTrial(trial_id=tid, config={"lr": 0.01, "epochs": 4}, local_path=str(folder))


class Stuck:
    """log_batch that blocks until released, then returns without writing (a dead driver)."""

    def __init__(self, client):
        self.real, self.gate, self.stuck = client.log_batch, threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        self.stuck.set()
        self.gate.wait(60)


class Dead:
    """The client of a process that no longer exists: every call fails at once."""

    def __getattr__(self, name):
        def refused(*args, **kwargs):
            raise ConnectionError("the driver is dead")

        return refused


def test_results_are_merged_into_one_write_per_run(tracker, tmp_path):
    logger = callback.TrialLogger(tracker, max_epochs=20, background=True)
    trials = [make_trial(tmp_path, t) for t in ("m1", "m2")]
    for trial in trials:
        logger.on_trial_start(0, [], trial)
    assert logger.writer.flush(120)
    calls, real = [], tracker.client.log_batch
    gate = threading.Event()

    def counted(*args, **kwargs):
        gate.wait(60)  # held, so that the next results queue up behind this write
        calls.append(len(kwargs.get("metrics", ())))
        return real(*args, **kwargs)

    tracker.client.log_batch = counted
    for epoch in range(1, 11):
        for trial in trials:
            report(logger, trial, epoch, 10.0 - epoch / 10)
    gate.set()
    assert logger.writer.flush(120)
    for trial in trials:
        assert [s for s, _ in history(tracker, logger.runs[trial.trial_id])] == list(range(1, 11))
    assert len(calls) < 20, calls  # 20 results, fewer requests: merged per run
    assert logger.writer.backlog() == 0


def test_the_runs_of_an_earlier_attempt_are_looked_up_once_whatever_the_lanes(tracker,
                                                                             tmp_path):
    """Every lane's first step needs the runs an earlier driver created; one asks MLflow."""
    asked, real = [], tracker.children

    def children():
        asked.append(threading.current_thread().name)
        time.sleep(0.5)  # a slow search, so that the other lanes' first steps arrive meanwhile
        return real()

    tracker.children = children
    logger = callback.TrialLogger(tracker, max_epochs=3, background=True)
    trials = [make_trial(tmp_path, f"l{i}") for i in range(6)]
    for trial in trials:
        logger.on_trial_start(0, [], trial)
    assert logger.writer.flush(120)
    assert len(asked) == 1, asked
    assert sorted(logger.runs) == sorted(t.trial_id for t in trials)


def test_a_step_without_a_key_runs_after_every_lane_s_earlier_steps(tracker):
    """The end of the sweep (no key) must see every trial's steps done, on every lane, and the
    steps queued after it must wait for it."""
    writer = background.Writer(tracker, lanes=3)
    done, seen = [], []

    def slow(i):
        time.sleep(0.05 * (i % 3))
        done.append(i)

    for i in range(12):
        writer.submit(f"step {i}", functools.partial(slow, i), key=f"trial-{i}")
    writer.submit("the end", lambda: seen.append(sorted(done)))
    writer.submit("after", lambda: done.append("after"), key="trial-0")
    assert writer.flush(120)
    assert seen == [list(range(12))] and done[-1] == "after"
    assert len({id(writer.lane_of(f"trial-{i}")) for i in range(12)}) > 1  # several lanes ran


def test_a_tracking_server_gets_several_lanes_a_local_store_one():
    assert background.LANES == 4
    assert background.lanes_for("http://127.0.0.1:5000") == 4
    assert background.lanes_for("https://mlflow.example.org") == 4
    assert background.lanes_for("sqlite:///tmp/mlruns.db") == 1
    assert background.lanes_for("file:///tmp/mlruns") == 1


def test_a_run_s_writes_wait_for_more_then_go_without_a_flush(tracker, tmp_path, monkeypatch):
    """A short trial's params and epochs go in one request (HOLD_S), and they go by themselves:
    the writer wakes up when they are due, with no flush and no further step."""
    monkeypatch.setattr(background, "HOLD_S", 5.0)
    logger = callback.TrialLogger(tracker, max_epochs=3, background=True)
    calls, real = [], tracker.client.log_batch
    tracker.client.log_batch = lambda *a, **kw: real(*a, **kw) or calls.append(kw)  # once in
    # The writer is held in the run's creation until both epochs are queued, so that the
    # params it then adds and the epochs come in separate drains: without the hold they would
    # be two requests.
    create, entered, gate = tracker.client.create_run, threading.Event(), threading.Event()

    def held_create(*args, **kwargs):
        entered.set()
        gate.wait(60)
        return create(*args, **kwargs)

    tracker.client.create_run = held_create
    trial = make_trial(tmp_path, "held")
    logger.on_trial_start(0, [], trial)
    assert entered.wait(60)
    report(logger, trial, 1, 9.0)
    report(logger, trial, 2, 8.0)
    gate.set()
    deadline = time.monotonic() + 120
    while not calls and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(calls) == 1 and calls[0]["params"], calls
    assert history(tracker, logger.runs["held"]) == [(1, 9.0), (2, 8.0)]


def test_a_full_queue_refuses_a_result_and_the_end_reconciles_it(tracker, tmp_path):
    logger = callback.TrialLogger(tracker, max_epochs=4, background=True)
    trial = make_trial(tmp_path, "full")
    logger.on_trial_start(0, [], trial)
    assert logger.writer.flush(120)
    stuck = Stuck(tracker.client)
    tracker.client.log_batch = stuck
    logger.writer.lane_of("full").queue.maxsize = 1
    report(logger, trial, 1, 9.0)  # taken by the writer thread, which then blocks
    assert stuck.stuck.wait(60)
    report(logger, trial, 2, 8.0)  # fills the queue
    report(logger, trial, 3, 7.0)  # refused: Tune's thread does not wait
    assert logger.writer.refused == 1 and "full" in logger.dirty
    tracker.client.log_batch = stuck.real
    stuck.gate.set()  # the blocked write of epoch 1 is lost too (never landed)
    logger.writer.lane_of("full").queue.maxsize = 0
    trial.status = "TERMINATED"
    logger.on_trial_complete(0, [], trial)
    logger.on_experiment_end([trial])
    run = logger.runs["full"]
    assert history(tracker, run) == [(1, 9.0), (2, 8.0), (3, 7.0)]
    assert [s for s, _ in history(tracker, run, "epoch")] == [1, 2, 3]
    tags = MlflowClient(tracker.uri).get_run(run).data.tags
    assert tags[reconcile.COMPLETE_TAG] == "true" and tags["raysweep.epochs_run"] == "3"


def test_a_killed_driver_and_resume_lose_and_duplicate_nothing(tracker, tmp_path):
    first = callback.TrialLogger(tracker, max_epochs=4, background=True)
    saved = pickle.dumps(first)  # Tune's tuner.pkl: written before any trial ran
    trial = make_trial(tmp_path, "k1")
    done = make_trial(tmp_path, "k2")  # finishes before the kill; its last writes are queued
    for t in (trial, done):
        first.on_trial_start(0, [], t)
    report(first, trial, 1, 9.0)
    report(first, done, 1, 5.0)
    assert first.writer.flush(120)
    stuck = Stuck(tracker.client)
    tracker.client.log_batch = stuck  # from here on nothing the first driver queues lands
    for epoch, value in ((2, 8.0), (3, 7.0)):
        report(first, trial, epoch, value)
    report(first, done, 2, 4.0)
    done.status = "TERMINATED"
    first.on_trial_complete(0, [], done)
    assert stuck.stuck.wait(60)
    # SIGKILL: the first driver's queue is gone with it; nothing it still holds ever lands.
    second = kill_and_resume(tracker, saved, stuck)
    for epoch, value in ((2, 18.0), (3, 17.0), (4, 16.0)):  # restored from epoch 1's checkpoint
        report(second, trial, epoch, value)
    trial.status = "TERMINATED"
    second.on_trial_complete(0, [], trial)
    second.on_experiment_end([trial, done])
    client = MlflowClient(tracker.uri)
    runs = reconcile.run_states(second.tracker)
    assert set(runs) == {"k1", "k2"}  # one run per trial, the first driver's
    assert history(tracker, runs["k1"][0]) == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 16.0)]
    assert [s for s, _ in history(tracker, runs["k1"][0], "epoch")] == [1, 2, 3, 4]
    assert history(tracker, runs["k2"][0]) == [(1, 5.0), (2, 4.0)]
    for tid, (_run, status, complete) in runs.items():
        assert status == "FINISHED" and complete, tid
    assert client.get_run(runs["k2"][0]).data.tags["raysweep.epochs_run"] == "2"


def kill_and_resume(tracker, saved, stuck):
    """SIGKILL the first driver (its tracker goes dead, its blocked writer is released into a
    dead client) and resume: Tune's pickled callback with a fresh tracker for the same store."""
    second_tracker = pickle.loads(pickle.dumps(tracker))
    tracker.COOLDOWN_S = 3600.0
    tracker._client = Dead()
    stuck.gate.set()
    second = pickle.loads(saved)
    second.tracker = second_tracker
    return second


class StuckCreate:
    """create_run of a driver about to be killed: the writer thread blocks in it for good."""

    def __init__(self):
        self.gate, self.stuck = threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        self.stuck.set()
        self.gate.wait(60)
        raise ConnectionError("the driver is dead")


@pytest.mark.parametrize("restored", ["finished", "from_last_checkpoint"])
def test_a_trial_whose_run_the_killed_driver_never_created_keeps_its_history(
        tracker, tmp_path, restored):
    """The writer thread lags Tune (a loaded machine): a trial ran its three epochs (Tune's
    result.json has them, Tune's snapshot knows the trial) while its run's creation was still
    queued when the driver was SIGKILLed. The resumed driver creates the run: either at the
    end (the trial finished before the kill) or when Tune restores the trial from its epoch-3
    checkpoint, after which it reports nothing. Both runs must get epochs 1-3 from Tune's
    record (the old code created them empty: `('f2d4451b', [])` in CI)."""
    first = callback.TrialLogger(tracker, max_epochs=3, background=True)
    saved = pickle.dumps(first)  # Tune's tuner.pkl: written before any trial ran
    stuck = StuckCreate()
    tracker.client.create_run = stuck
    trial = make_trial(tmp_path, "late")
    first.on_trial_start(0, [], trial)
    assert stuck.stuck.wait(60)  # the writer is in the run's creation: nothing more lands
    for epoch in (1, 2, 3):
        report(first, trial, epoch, 10.0 - epoch)
    trial.status = "TERMINATED"
    first.on_trial_complete(0, [], trial)
    # SIGKILL. Tune's snapshot holds the trial with its last result.
    second = kill_and_resume(tracker, saved, stuck)
    second_tracker = second.tracker
    trial.last_result = result(3, 7.0)
    if restored == "from_last_checkpoint":
        ckpt = write_checkpoint(tmp_path / "checkpoint_000002", 7.0)
        trial.status, trial.checkpoint = "RUNNING", SimpleNamespace(path=str(ckpt))
        second.on_trial_start(0, [], trial)
        trial.status = "TERMINATED"
        second.on_trial_complete(0, [], trial)
    second.on_experiment_end([trial])
    runs = reconcile.run_states(second_tracker)
    assert list(runs) == ["late"]
    run_id, status, complete = runs["late"]
    assert history(second_tracker, run_id) == [(1, 9.0), (2, 8.0), (3, 7.0)]
    assert [s for s, _ in history(second_tracker, run_id, "epoch")] == [1, 2, 3]
    assert status == "FINISHED" and complete
    assert MlflowClient(second_tracker.uri).get_run(run_id).data.params["lr"] == "0.01"


def test_a_new_trial_s_result_file_is_not_read_when_its_run_starts(tracker, tmp_path,
                                                                  monkeypatch):
    """Reading Tune's record is for trials Tune already holds results of; a new trial's start
    costs no read (per-trial overhead)."""
    read = []
    monkeypatch.setattr(reconcile, "tune_history", lambda t: read.append(t.trial_id) or {})
    logger = callback.TrialLogger(tracker, max_epochs=3)
    logger.on_trial_start(0, [], make_trial(tmp_path, "new"))
    assert read == [] and "new" in logger.runs


def write_checkpoint(folder: Path, score: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights")
    (folder / "checkpoint.json").write_text(json.dumps({"score": score}))
    (folder / "train_state.pt").write_bytes(b"optimizer state")
    return folder


def test_only_the_leaders_weights_are_copied_and_every_run_has_its_uri(tracker, tmp_path):
    logger = callback.TrialLogger(tracker, max_epochs=1, background=True, keep=2)
    trials = []
    for i, score in enumerate((3.0, 1.0, 2.0, 4.0)):
        trial = make_trial(tmp_path, f"c{i}")
        logger.on_trial_start(0, [], trial)
        report(logger, trial, 1, score)
        ckpt = write_checkpoint(tmp_path / "ckpts" / trial.trial_id, score)
        logger.on_checkpoint(0, [], trial, checkpoint=SimpleNamespace(path=str(ckpt)))
        trial.status = "TERMINATED"
        logger.on_trial_complete(0, [], trial)
        trials.append(trial)
    logger.on_experiment_end(trials)
    client = MlflowClient(tracker.uri)
    copied = {}
    for trial in trials:
        run = logger.runs[trial.trial_id]
        assert client.get_run(run).data.tags[checkpoints.URI_TAG] == \
            str(tmp_path / "ckpts" / trial.trial_id)
        copied[trial.trial_id] = sorted(a.path for a in client.list_artifacts(run, "checkpoint"))
    served = ["checkpoint/checkpoint.json", "checkpoint/model.pt"]  # no optimizer state
    assert copied == {"c0": [], "c1": served, "c2": served, "c3": []}
    # eval_winners asks for a run that was not copied: fetched from its URI, then kept in MLflow
    run = logger.runs["c3"]
    local = checkpoints.ensure_checkpoint(tracker, run, tmp_path / "fetch")
    assert sorted(p.name for p in local.iterdir()) == ["checkpoint.json", "model.pt"]
    assert sorted(a.path for a in client.list_artifacts(run, "checkpoint")) == served


def test_the_writer_splits_what_mlflow_would_refuse():
    from mlflow.entities import Metric

    p = background.Pending(metrics=[Metric("m", 1.0, 0, s) for s in range(2500)],
                           params={f"p{i}": "x" for i in range(150)},
                           tags={f"t{i}": "y" for i in range(30)})
    chunks = list(p.chunks())
    assert sum(len(m) for m, _, _ in chunks) == 2500
    assert sum(len(pa) for _, pa, _ in chunks) == 150 and sum(len(t) for *_, t in chunks) == 30
    for m, pa, t in chunks:
        assert len(m) <= 1000 and len(pa) <= 100 and len(t) <= 100 and len(m) + len(pa) + len(t) <= 1000
    assert chunks[-1][2], "tags go in the last request"


def test_a_resumed_driver_reads_tune_s_record_from_the_storage(tmp_path):
    """A resumed driver runs in a new Ray session: its staging folder holds no result.json for a
    trial that ended before the kill. Tune synced that file to the sweep's storage (a folder or
    S3, through the trial's pyarrow filesystem); the history is read from there."""
    import pyarrow.fs

    stored = tmp_path / "storage" / "trial_t1"
    stored.mkdir(parents=True)
    stored.joinpath("result.json").write_text(
        "".join(json.dumps(result(e, 5.0 - e)) + "\n" for e in (1, 2)) + '{"epoch": 3, "cut')
    storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem())
    trial = FakeTrial(trial_id="t1", config={}, local_path=str(tmp_path / "empty_staging"),
                      storage=storage, path=str(stored))
    assert sorted(reconcile.tune_history(trial)) == [1, 2]
    assert reconcile.tune_history(FakeTrial(trial_id="t2", config={}, local_path=None,
                                            storage=None, path=None)) == {}
