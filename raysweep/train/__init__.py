"""Training: THE loop (loop.py), where it reports (reporters.py), checkpoints and losses.

The loop is the only one in the project: search, evaluation, benchmarks and tests all call
`fit(cfg, data)` or, under Ray, `train_loop_per_worker(config)`.
"""

from raysweep.train.loop import FitResult, NonFiniteLoss, fit, train_loop_per_worker
from raysweep.train.reporters import LocalReporter

__all__ = ["FitResult", "LocalReporter", "NonFiniteLoss", "fit", "train_loop_per_worker"]
