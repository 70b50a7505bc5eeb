"""A quiet sweep console: no TensorBoard line, no traceback; a failed trial is one line with its
reason (the traceback stays in the trial's error.txt and on its MLflow run); the closing lines
say where the results, the MLflow store and the report are."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from raysweep.config import DIVERGED
from raysweep.sweep import console

REASON = ("non-finite training loss at epoch 3, batch 0 (lr=0.5, backbone=smallcnn, "
          "fusion=concat); lower lr, enable grad_clip, or check the data for NaN targets")
TRACEBACK = f"""Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/ray/air/execution/_internal/event_manager.py", line 110, in resolve_future
    result = ray.get(future)
             ^^^^^^^^^^^^^^^
  File "/venv/lib/python3.11/site-packages/ray/_private/worker.py", line 1053, in get_objects
    raise value.as_instanceof_cause()
ray.exceptions.RayTaskError(NonFiniteLoss): ray::ImplicitFunc.train() (pid=21848, ip=10.0.0.2)
  File "/work/raysweep/train/loop.py", line 304, in _train_one_epoch
    raise NonFiniteLoss(
raysweep.train.loop.NonFiniteLoss: {REASON}
"""


class FakeTrial(SimpleNamespace):
    def __str__(self) -> str:
        return "trial_3f2a_00004"

    def get_error(self) -> str:
        return TRACEBACK


def test_a_failed_trial_is_one_line_with_its_reason():
    trial = FakeTrial(trial_id="3f2a_00004", path="/results/sweep/trial_3f2a_00004",
                      error_file=None, last_result={"epoch": 2, "training_iteration": 2})
    line = console.failure_line(trial)
    assert "\n" not in line and "Traceback" not in line and "File " not in line
    assert line.startswith("trial_3f2a_00004 failed after epoch 2: ")
    assert f"NonFiniteLoss: {REASON}" in line
    assert "/results/sweep/trial_3f2a_00004/error.txt" in line
    assert "(retrying from its last checkpoint)" in console.failure_line(trial, retrying=True)


def test_a_diverged_trial_is_one_line_that_says_it_is_not_retried(monkeypatch):
    """A diverged trial ends with a last result saying why (config.DIVERGED), not an error:
    FailureLines says it when the trial completes, and no traceback file is promised."""
    said = []
    trial = FakeTrial(trial_id="3f2a_00004", path="/results/sweep/trial_3f2a_00004",
                      error_file=None, status="TERMINATED", get_error=lambda: None,
                      last_result={"epoch": 3, "training_iteration": 3,
                                   DIVERGED: f"NonFiniteLoss: {REASON}"})
    line = console.failure_line(trial)
    assert line.startswith("trial_3f2a_00004 diverged in epoch 3, not retried: ")
    assert f"NonFiniteLoss: {REASON}" in line and "error.txt" not in line
    finished = FakeTrial(trial_id="1", status="TERMINATED", last_result={"epoch": 3})
    monkeypatch.setattr(console, "_say", said.append)
    for t in (trial, finished):
        console.FailureLines().on_trial_complete(0, [], t)
    assert said == [line]


def test_the_closing_lines_say_where_everything_is():
    out = SimpleNamespace(path="/home/u/raysweep_results/quickstart-1", parent_run_id="abc",
                          tracking_uri="sqlite:////home/u/mlruns.db")
    lines = console.where(out, "/home/u/winners/report.html").splitlines()
    assert lines == [
        "results: /home/u/raysweep_results/quickstart-1/results.csv",
        "MLflow parent run: abc in sqlite:////home/u/mlruns.db (browse with `mlflow ui "
        "--backend-store-uri sqlite:////home/u/mlruns.db`)",
        "report:  /home/u/winners/report.html"]
    assert "python -m raysweep.eval_winners --parent-run abc" in console.where(out)
    server = SimpleNamespace(path="s3://b/r/q-1", parent_run_id="abc", tracking_uri="http://m:5000")
    assert "open it in a browser" in console.where(server)


def _diverges(config):
    from ray import tune

    for epoch in range(1, 4):
        if config["lr"] > 0.1 and epoch == 3:
            from raysweep.train.loop import NonFiniteLoss

            raise NonFiniteLoss(REASON)
        tune.report({"epoch": epoch, "val_de00_mean": 3.0 - epoch * config["lr"]})


@pytest.mark.slow
def test_tune_prints_no_traceback_and_no_tensorboard_line(ray_local, tmp_path, monkeypatch,
                                                          capfd):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    for key in {**console.QUIET_ENV, **console.QUIET_UNLESS_DEBUG}:
        monkeypatch.delenv(key, raising=False)  # restored after the test
    applied = console.quiet_tune(verbose=0)
    assert applied == {**console.QUIET_ENV, **console.QUIET_UNLESS_DEBUG}
    try:
        tuner = tune.Tuner(
            _diverges, param_space={"lr": tune.grid_search([0.01, 0.5])},
            tune_config=tune.TuneConfig(metric="val_de00_mean", mode="min"),
            run_config=tune.RunConfig(
                name="quiet", storage_path=str(tmp_path), verbose=0,
                callbacks=[console.FailureLines(), CSVLoggerCallback(), JsonLoggerCallback()],
                failure_config=tune.FailureConfig(max_failures=0)))
        grid = tuner.fit()
    finally:
        logging.getLogger("ray.tune.tune").removeFilter(console.DROP_INCOMPLETE)
    assert grid.num_errors == 1
    captured = capfd.readouterr()
    text = captured.out + captured.err
    failed = [ln for ln in text.splitlines() if " failed after epoch " in ln]
    assert len(failed) == 1, text
    assert f"NonFiniteLoss: {REASON}" in failed[0]
    error_file = failed[0].split("[traceback: ")[1].split(",")[0]
    assert "NonFiniteLoss" in open(error_file).read()  # the traceback is where the line says
    for noise in ("Traceback", "TensorBoard", "errored after", "Trials did not complete",
                  "Configuration for experiment"):
        assert noise not in text, f"{noise!r} on the console:\n{text}"
