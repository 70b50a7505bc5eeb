"""The live progress bar of a sweep (a Tune callback): trials finished, running, best so far."""

from __future__ import annotations

import math

from ray import tune
from tqdm import tqdm


class Progress(tune.Callback):
    """tqdm on stderr: trials finished / total, trials running, best metric so far."""

    def __init__(self, total: int, metric: str, mode: str = "min"):
        self.total, self.metric, self.sign = total, metric, 1 if mode == "min" else -1
        self.best = math.inf
        self._bar = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_bar": None}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            self.best = min(self.best, self.sign * value)

    def on_step_end(self, iteration, trials, **info):
        if self._bar is None:
            self._bar = tqdm(total=self.total, desc="trials", unit="trial", dynamic_ncols=True,
                             mininterval=1.0)
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        failed = sum(t.status == "ERROR" for t in trials)
        running = sum(t.status == "RUNNING" for t in trials)
        best = "-" if math.isinf(self.best) else f"{self.sign * self.best:.3f}"
        self._bar.set_postfix_str(f"running={running} failed={failed} best {self.metric}={best}",
                                  refresh=False)
        self._bar.update(done - self._bar.n)

    def on_experiment_end(self, trials, **info):
        if self._bar is not None:
            self.on_step_end(0, trials)
            self._bar.close()
            self._bar = None
