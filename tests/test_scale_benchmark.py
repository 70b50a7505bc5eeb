"""The scale benchmark's per-run figures from what its stand-in trials recorded."""

from __future__ import annotations

import json
import math

from benchmarks.scale import first_results, trial_flow, trials_by_run


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
