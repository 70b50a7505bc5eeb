"""A real sweep (Ray Tune, MLflow) with diverging trials: every run links to the training
data as an MLflow dataset (digest = the content hash), the parent run holds the parameter
importance and its plots, and the console has one line per failed trial, no traceback and
no TensorBoard line."""

from __future__ import annotations

import pandas as pd
import pytest

from raysweep.sweep.run import run_sweep
from raysweep.sweep.spec import Request
from raysweep.tracking import importance
from tests.helpers.fakes import make_prepared
from tests.helpers.sweeps import RELIABILITY_SPACE

DIVERGES_ABOVE = 3e-3  # 2 of the 6 learning rates the random sampler draws with seed 3


def diverging_loop(config):
    """The real loop, except that large learning rates 'diverge' after one epoch."""
    from raysweep.train.loop import NonFiniteLoss, train_loop_per_worker

    if config["train"]["lr"] > DIVERGES_ABOVE:
        raise NonFiniteLoss(f"non-finite training loss at epoch 1 (lr={config['train']['lr']:g})"
                            "; lower lr, enable grad_clip")
    train_loop_per_worker(config)


@pytest.mark.slow  # a real sweep
def test_sweep_links_every_run_to_its_dataset_and_logs_importance(ray_local, mlflow_db,
                                                                   tmp_path, capfd):
    space = tmp_path / "tiny_extras.py"
    space.write_text(RELIABILITY_SPACE)
    data = make_prepared(n=64, size=16)
    out = run_sweep(Request(space=str(space), data=data, num_samples=6, max_concurrent=2,
                            storage=str(tmp_path / "runs"), name="extras", seed=3,
                            searcher="random", max_failures=0, early_stopping=False),
                    loop=diverging_loop)
    text = "".join(capfd.readouterr())
    table = out.table
    failed = table[table["status"] == "FAILED"]
    assert len(failed) >= 1 and (table["status"] == "FINISHED").sum() >= 2, table

    # the console: one line per failed trial with its reason, no traceback, no TensorBoard
    lines = [ln.strip() for ln in text.splitlines() if "NonFiniteLoss" in ln]
    assert len(lines) == len(failed), text
    for trial_id, line in zip(sorted(failed["trial_id"]), sorted(lines)):
        assert f"trial_{trial_id} failed: NonFiniteLoss: non-finite training loss" in line
    for noise in ("Traceback", "TensorBoard", "errored after"):
        assert noise not in text, f"{noise!r} on the console:\n{text}"

    # the dataset: on the parent and on every trial, found by "runs on this dataset"
    digest = data.info["content_hash"]
    exp = mlflow_db.get_experiment_by_name("tiny_extras")
    runs = mlflow_db.search_runs([exp.experiment_id], max_results=100)
    assert len(runs) == 7  # the parent and 6 trials, failed ones included
    for run in runs:
        inputs = run.inputs.dataset_inputs
        assert [i.dataset.digest for i in inputs] == [digest], run.info.run_name
    linked = mlflow_db.search_runs([exp.experiment_id], f"dataset.digest = '{digest}'")
    assert len(linked) == 7

    # the importance: artifacts on the parent, over the finished trials
    names = {a.path for a in mlflow_db.list_artifacts(out.parent_run_id, "importance")}
    assert names == {"importance/importance.csv", "importance/importance.png",
                     "importance/parallel_coordinates.png"}
    folder = importance.fetch(mlflow_db, out.parent_run_id, tmp_path / "imp")
    imp = pd.read_csv(folder / importance.CSV)
    assert imp["parameter"].tolist() == ["lr"]
    assert (imp["trials"] == (table["status"] == "FINISHED").sum()).all()
    assert imp["importance"].sum() == pytest.approx(1.0, abs=1e-6)
