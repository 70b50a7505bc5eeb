"""A sweep whose driver is SIGKILLed mid-sweep is finished by `--resume`, losing and repeating
nothing: one parent run, exactly N child runs (one per trial id, all FINISHED, each epoch logged
once) and a leaderboard shaped like an uninterrupted sweep's.

SIGKILL is harsher than the Ctrl-C of tests/test_search.py: no handler runs, Tune writes no final
snapshot, the MLflow runs stay RUNNING and the local Ray dies with its parent.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
N = 5
# Generous on purpose: beside another pytest worker a 2-core machine runs each of the three
# sweeps several times slower; a deadline only ends a test that hangs.
WAIT_S = 600


@pytest.fixture(scope="module")
def tiny_card(tmp_path_factory):
    """A tiny synthetic dataset: 2 sets x 10 tones at 64 px (20 photos, ~7 s to generate)."""
    from raysweep.synth import ensure_default_dataset

    return ensure_default_dataset(tmp_path_factory.mktemp("synth"), sets=2, tones=10, size=64,
                                  progress=False)


def search_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "raysweep.search", *args]


def sweep_args(card: Path, name: str, storage: Path) -> list[str]:
    # 1 trial at a time and no early stopping: a kill lands between trials or inside one.
    return ["--space", "quickstart", "--data", str(card), "--name", name, "--storage",
            str(storage), "--num-samples", str(N), "--max-concurrent", "1", "--set", "epochs=3",
            "--no-early-stopping"]


def finished_children(db: Path, sweep: str) -> int:
    """Trials of `sweep` whose MLflow run is FINISHED, read straight from the SQLite store."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute(
                "SELECT COUNT(*) FROM runs r JOIN tags a ON a.run_uuid = r.run_uuid "
                "JOIN tags b ON b.run_uuid = r.run_uuid WHERE r.status = 'FINISHED' "
                "AND a.key = 'raysweep.role' AND a.value = 'trial' "
                "AND b.key = 'raysweep.sweep_name' AND b.value = ?", (sweep,)).fetchone()[0]
    except sqlite3.Error:  # tables not created yet, or locked for a moment
        return 0


def kill_group(proc: subprocess.Popen) -> None:
    """Stop whatever is left of the process group this test started (the local Ray)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def sweep_runs(client, sweep: str):
    exp = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([exp.experiment_id], max_results=1000,
                              filter_string=f"tags.`raysweep.sweep_name` = '{sweep}'")
    parents = [r for r in runs if r.data.tags.get("raysweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("raysweep.role") == "trial"]
    return parents, children


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(3 * WAIT_S + 300)
def test_sigkilled_driver_resumes_without_lost_or_duplicated_runs(tiny_card, tmp_path):
    storage, db = tmp_path / "runs", tmp_path / "mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(search_cmd(*sweep_args(tiny_card, "killed", storage)), cwd=tmp_path,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + WAIT_S
        while proc.poll() is None and time.time() < deadline and \
                finished_children(db, "killed") < 2:
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before it could be killed:\n" + \
            (tmp_path / "killed.log").read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_group(proc)
        log.close()
    # At least 2 trials finished before the kill, and the sweep was not over (no leaderboard).
    # Not "< N runs FINISHED": on a loaded machine MLflow's writer lags Tune, so Tune may have
    # run every trial while the driver still had their runs queued; the resume must then
    # create and fill those runs from Tune's records (the case that lost a trial's history).
    done_before = finished_children(db, "killed")
    assert done_before >= 2, f"{done_before} trials finished before the kill"
    assert not (storage / "killed" / "results.csv").exists()

    # The documented way back: only the name and the storage.
    resumed = subprocess.run(search_cmd("--resume", "--name", "killed", "--storage", str(storage)),
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=WAIT_S,
                             start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    clean = subprocess.run(search_cmd(*sweep_args(tiny_card, "clean", storage)), cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=WAIT_S,
                           start_new_session=True)
    assert clean.returncode == 0, clean.stderr[-4000:]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    parents, children = sweep_runs(client, "killed")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trial_ids = [c.data.tags["raysweep.trial_id"] for c in children]
    assert len(children) == N and len(set(trial_ids)) == N, sorted(trial_ids)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    for child in children:  # one continuous history per trial: each epoch exactly once
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_de00_mean")]
        assert sorted(steps) == list(range(1, 4)), (child.data.tags["raysweep.trial_id"], steps)

    table = pd.read_csv(storage / "killed" / "results.csv", dtype={"trial_id": str})
    reference = pd.read_csv(storage / "clean" / "results.csv", dtype={"trial_id": str})
    assert list(table.columns) == list(reference.columns)
    assert len(table) == len(reference) == N
    assert set(table["trial_id"]) == set(trial_ids)
    assert (table["status"] == "FINISHED").all() and table["val_de00_mean"].notna().all()
    assert table["mlflow_run_id"].tolist() == [
        {c.data.tags["raysweep.trial_id"]: c.info.run_id for c in children}[t]
        for t in table["trial_id"]]
