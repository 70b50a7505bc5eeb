"""The live progress bar of a sweep (a Tune callback): trials finished, running, best so far."""

from __future__ import annotations

import math
import time
from collections import Counter

from ray import tune
from tqdm import tqdm

from raysweep.tracking.reconcile import diverged

# Tune calls on_step_end after every event (each result of each trial), and counting the trials'
# states walks all of them: work that grows with the sweep, done per result, for a bar that
# tqdm redraws once a second anyway.
REFRESH_S = 0.5
DIVERGED_STATE = "DIVERGED"  # ours, not a Tune status: see _state


class Progress(tune.Callback):
    """tqdm on stderr: trials finished / total, trials running, best metric so far."""

    # time.monotonic() of the last count; a class default, so that a Progress unpickled from
    # a sweep saved before it existed (--resume) has it too
    _drawn = -math.inf

    def __init__(self, total: int, metric: str, mode: str = "min"):
        self.total, self.metric, self.sign = total, metric, 1 if mode == "min" else -1
        self.best = math.inf
        self._bar = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_bar": None, "_drawn": -math.inf}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            self.best = min(self.best, self.sign * value)

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self._drawn >= REFRESH_S:
            self._drawn = now
            self._draw(trials)

    def _draw(self, trials) -> None:
        if self._bar is None:
            self._bar = tqdm(total=self.total, desc="trials", unit="trial", dynamic_ncols=True,
                             mininterval=1.0)
        states = Counter(_state(t) for t in trials)
        failed = states["ERROR"] + states[DIVERGED_STATE]
        done, running = states["TERMINATED"] + failed, states["RUNNING"]
        best = "-" if math.isinf(self.best) else f"{self.sign * self.best:.3f}"
        self._bar.set_postfix_str(f"running={running} failed={failed} best {self.metric}={best}",
                                  refresh=False)
        self._bar.update(done - self._bar.n)

    def on_experiment_end(self, trials, **info):
        if self._bar is not None:
            self._draw(trials)  # the final counts, however recent the last redraw
            self._bar.close()
            self._bar = None


def _state(trial) -> str:
    """Tune's status of `trial`, read once; DIVERGED for one that ended with a result saying its
    weights diverged (such a trial ends TERMINATED, not ERROR, so that Tune does not retry it)."""
    status = trial.status
    return DIVERGED_STATE if status == "TERMINATED" and diverged(trial) else status
