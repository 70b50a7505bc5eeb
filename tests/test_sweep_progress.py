"""The sweep's progress bar: counted at most every REFRESH_S however often Tune steps, and the
final counts always shown (raysweep.sweep.progress)."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

from raysweep.config import DIVERGED
from raysweep.sweep import progress


class Counted(SimpleNamespace):
    """A trial whose status reads are counted: a count of the sweep's states reads each once."""

    reads = 0

    @property
    def status(self):
        Counted.reads += 1
        return self.state


def trials(*states: str) -> list[Counted]:
    return [Counted(state=s) for s in states]


def test_steps_faster_than_the_refresh_count_the_trials_once(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = progress.Progress(total=3, metric="val_de00_mean")
    ts = trials("TERMINATED", "RUNNING", "PENDING")
    Counted.reads = 0
    for _ in range(50):  # 50 Tune steps inside one refresh interval
        bar.on_step_end(0, ts)
    assert Counted.reads == len(ts)
    assert bar._bar.n == 1

    ts[1].state = "ERROR"
    clock[0] += progress.REFRESH_S  # the next step after the interval counts again
    bar.on_step_end(0, ts)
    assert Counted.reads == 2 * len(ts)
    assert bar._bar.n == 2
    bar.on_experiment_end(ts)


def test_the_end_shows_the_final_counts_right_after_a_refresh(monkeypatch):
    monkeypatch.setattr(progress.time, "monotonic", lambda: 5.0)
    bar = progress.Progress(total=2, metric="val_de00_mean")
    ts = trials("RUNNING", "RUNNING")
    bar.on_step_end(0, ts)
    shown = bar._bar
    ts[0].state, ts[1].state = "TERMINATED", "ERROR"
    bar.on_step_end(0, ts)  # inside the interval: not counted
    assert shown.n == 0
    bar.on_experiment_end(ts)
    assert shown.n == 2 and "failed=1" in shown.postfix
    assert bar._bar is None


def test_a_progress_pickled_before_the_refresh_limit_existed_still_steps():
    """--resume unpickles the callbacks Tune saved: an older Progress has no `_drawn`."""
    bar = progress.Progress(total=1, metric="val_de00_mean")
    state = bar.__getstate__()
    state.pop("_drawn")
    old = progress.Progress.__new__(progress.Progress)
    old.__dict__.update(state)
    old.on_step_end(0, trials("RUNNING"))
    assert old._bar.n == 0
    old.on_experiment_end(trials("TERMINATED"))
    restored = pickle.loads(pickle.dumps(bar))
    assert restored._bar is None and restored._drawn == -math.inf



def test_a_trial_ended_as_diverged_counts_as_failed(monkeypatch):
    """It ends TERMINATED (not ERROR, which Tune would retry) with a last result saying why."""
    monkeypatch.setattr(progress.time, "monotonic", lambda: 5.0)
    bar = progress.Progress(total=3, metric="val_de00_mean")
    ts = trials("TERMINATED", "TERMINATED", "RUNNING")
    ts[1].last_result = {DIVERGED: "NonFiniteLoss: non-finite training loss at epoch 1"}
    bar.on_step_end(0, ts)
    shown = bar._bar
    bar.on_experiment_end(ts)
    assert shown.n == 2 and "running=1 failed=1 " in shown.postfix
