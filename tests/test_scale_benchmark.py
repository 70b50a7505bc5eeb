"""The scale benchmark's per-run figures from what its stand-in trials recorded, and its count
of bare Tune's failed trials (shared with benchmarks.throughput)."""

from __future__ import annotations

import json
import math

import pandas as pd

from benchmarks.scale import failed_trials, first_results, trial_flow, trials_by_run
from raysweep.config import DIVERGED


def test_first_result_wait_and_trials_running_per_run(tmp_path):
    waits = tmp_path / "waits.jsonl"
    waits.write_text("".join(json.dumps(t) + "\n" for t in [
        {"waits": [0.01, 0.03], "ends": [10.5, 11.0], "start": 10.0},
        {"waits": [0.02, 0.04], "ends": [12.0, 13.0], "start": 11.5},
        {"waits": [0.5], "ends": [30.0], "start": 29.0},
        {"waits": [], "ends": [], "start": 35.0}]))  # a trial that never reported
    spans = {"first": (9.0, 14.0), "second": (20.0, 31.0), "empty": (40.0, 50.0)}
    runs = trials_by_run(waits, spans)
    assert [len(runs[k]) for k in spans] == [2, 1, 0]
    starts = first_results(runs, spans)
    assert starts["first"] == 1.5 and starts["second"] == 10.0 and math.isnan(starts["empty"])
    flow = trial_flow(runs, spans)
    # the upper median of 10, 20, 30, 40 ms; 1.0 + 1.5 s of trials over a 5 s run
    assert flow["first"] == {"median_wait_ms": 30.0, "in_flight": 0.5}
    assert flow["second"]["median_wait_ms"] == 500.0
    assert math.isclose(flow["second"]["in_flight"], 1.0 / 11.0)
    assert math.isnan(flow["empty"]["median_wait_ms"]) and math.isnan(flow["empty"]["in_flight"])


def test_a_diverged_trial_counts_as_failed_as_a_raised_one_does(tmp_path):
    from ray.tune import Result

    def result(name, metrics, error=None):
        history = pd.DataFrame([{**metrics, "training_iteration": 1}])
        return Result(metrics=metrics, checkpoint=None, error=error, path=str(tmp_path / name),
                      metrics_dataframe=history)

    ok = {"epoch": 1, "val_de00_mean": 2.5}
    grid = [result("finished", ok),
            result("raised", ok, error=RuntimeError("worker died")),
            # ended by the loop, not raised, so that Tune does not retry it
            result("diverged", {"epoch": 1, "val_de00_mean": math.nan,
                                DIVERGED: "NonFiniteLoss: non-finite training loss"})]
    assert failed_trials(grid) == 2
    assert failed_trials(grid[:1]) == 0
