"""Killed training workers and trials that raise, inside a real sweep, as MLflow sees them.

tests/test_train.py::test_tune_trial_crashes_once_and_resumes proves the restart itself for a bare
Tune trial; here the full search stack runs (Tune + Optuna + MLflow callback), on both trial
paths, and the guarantee checked is the record: one MLflow run per trial with every epoch logged
exactly once, FINISHED, the recovery noted; and failing trials FAILED with their reason while the
others finish.
"""

from __future__ import annotations

import numpy as np
import pytest

from raysweep.sweep.run import run_sweep
from raysweep.sweep.spec import Request
from tests.helpers.fakes import make_prepared
from tests.helpers.faults import killed_once_loop
from tests.helpers.sweeps import RELIABILITY_SPACE

NAN_LR, OOM_LR = 3e-3, 5e-4  # trials above NAN_LR get NaN targets; below OOM_LR "run out"


def faulty_data_loop(config):
    """The real loop; large-lr trials get NaN training targets (the loop must detect the NaN
    loss itself) and small-lr trials fail as a CUDA out-of-memory would."""
    import ray
    import torch

    from raysweep.train.loop import train_loop_per_worker

    lr = config["train"]["lr"]
    if lr < OOM_LR:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB "
                                          "(simulated)")
    if lr > NAN_LR:
        data = ray.get(config["data"])
        data.target = data.target.copy()
        data.target[data.split == "train"] = np.nan
        data.info = {**data.info, "content_hash": "nan-" + data.info["content_hash"]}
        config = {**config, "data": data}
    train_loop_per_worker(config)


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "reliability_study.py"
    path.write_text(RELIABILITY_SPACE)
    return str(path)


def children_of(client, parent_run_id: str):
    exp = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def assert_one_history_per_trial(client, out, epochs: int):
    children = children_of(client, out.parent_run_id)
    by_trial = {c.data.tags["raysweep.trial_id"]: c for c in children}
    assert len(children) == len(by_trial) == len(out.table)
    for child in children:
        assert child.info.status == "FINISHED"
        for key in ("val_de00_mean", "train_loss", "epoch"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            assert steps == list(range(1, epochs + 1)), (key, steps)
    return by_trial


@pytest.mark.slow
@pytest.mark.cluster
def test_killed_trial_process_resumes_into_the_same_mlflow_run(ray_local, space_file, mlflow_db,
                                                                tmp_path):
    out = run_sweep(Request(space=space_file, data=make_prepared(n=48, size=16), num_samples=2,
                            max_concurrent=1, storage=str(tmp_path / "runs"), name="killed",
                            seed=0, early_stopping=False),
                            loop=killed_once_loop)
    assert out.complete and (out.table["status"] == "FINISHED").all()
    assert (out.table["epochs_run"] == 3).all()
    by_trial = assert_one_history_per_trial(mlflow_db, out, 3)
    for trial_id, child in by_trial.items():  # each trial really was killed and restarted
        assert child.data.tags.get("raysweep.recoveries") == "1", trial_id
        assert "worker process has died" in child.data.tags["raysweep.last_error"]
        # the once-per-trial marker sits in the trial's storage folder, whichever actor ran it
        assert (tmp_path / "runs" / "killed" / f"trial_{trial_id}" /
                "raysweep_fault_epoch2.marker").exists()


@pytest.mark.slow
@pytest.mark.cluster
def test_killed_ddp_rank0_restarts_the_worker_group_from_its_checkpoint(ray_local, space_file,
                                                                         mlflow_db, tmp_path):
    out = run_sweep(Request(space=space_file, data=make_prepared(n=48, size=16), num_samples=1,
                            workers_per_trial=2, max_concurrent=1, storage=str(tmp_path / "runs"),
                            name="ddpkill", seed=0, early_stopping=False),
                            loop=killed_once_loop)
    assert out.complete and (out.table["status"] == "FINISHED").all()
    by_trial = assert_one_history_per_trial(mlflow_db, out, 3)
    markers = list((tmp_path / "runs").glob("ddpkill-*-ddp/raysweep_fault_epoch2.marker"))
    assert len(markers) == 1, "rank 0 was not killed"
    # Train's FailureConfig restarted the workers inside the trial: Tune saw no failure.
    assert "raysweep.recoveries" not in next(iter(by_trial.values())).data.tags


@pytest.mark.slow
@pytest.mark.cluster
def test_nan_and_oom_trials_fail_with_their_reason_and_the_rest_finish(ray_local, space_file,
                                                                       mlflow_db, tmp_path):
    out = run_sweep(Request(space=space_file, data=make_prepared(n=48, size=16), num_samples=6,
                            max_concurrent=2, storage=str(tmp_path / "runs"), name="faulty",
                            seed=3, early_stopping=False),
                            loop=faulty_data_loop)
    table = out.table.set_index("trial_id")
    nan = table["lr"] > NAN_LR
    oom = table["lr"] < OOM_LR
    assert nan.any() and oom.any() and (~nan & ~oom).any(), table["lr"]  # seed 3: all three
    assert out.complete
    assert (table.loc[nan | oom, "status"] == "FAILED").all()
    assert (table.loc[~nan & ~oom, "status"] == "FINISHED").all()
    assert (table.loc[~nan & ~oom, "epochs_run"] == 3).all()
    assert table.loc[nan, "error"].str.contains("non-finite training loss at epoch 1").all()
    assert table.loc[oom, "error"].str.contains("out of memory").all()
    # the failed trials sort last on the leaderboard
    assert list(out.table["status"]).index("FAILED") == int((~nan & ~oom).sum())

    children = {c.data.tags["raysweep.trial_id"]: c for c in children_of(mlflow_db,
                                                                         out.parent_run_id)}
    assert set(children) == set(table.index)
    for tid, child in children.items():
        if nan[tid] or oom[tid]:
            assert child.info.status == "FAILED"
            reason = "non-finite training loss" if nan[tid] else "OutOfMemoryError"
            assert reason in child.data.tags["raysweep.error"], child.data.tags
            if nan[tid]:  # the message says what to do about it
                assert "lower lr" in child.data.tags["raysweep.error"]
            text = mlflow_db.download_artifacts(child.info.run_id, "error.txt", str(tmp_path))
            assert reason in open(text).read()
        else:
            assert child.info.status == "FINISHED"
    parent = mlflow_db.get_run(out.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["raysweep.best_trial_id"] in table.index[~nan & ~oom]

