"""Training: THE loop (loop.py), where it reports (reporters.py), checkpoints and losses.

The loop is the only one in the project: search, evaluation, benchmarks and tests all call
`fit(cfg, data)` or, under Ray, `train_loop_per_worker(config)`.

These names load their module (and torch, seconds) when first asked for, not with the package:
the sweep's driver trains nothing, yet reads the torch-free `transfer.py` and `checkpoint_files.py`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raysweep.train.loop import FitResult, NonFiniteLoss, fit, train_loop_per_worker
    from raysweep.train.reporters import LocalReporter

_HOMES = {"FitResult": "loop", "NonFiniteLoss": "loop", "fit": "loop",
          "train_loop_per_worker": "loop", "LocalReporter": "reporters"}
__all__ = ["FitResult", "LocalReporter", "NonFiniteLoss", "fit", "train_loop_per_worker"]


def __getattr__(name: str):
    if name not in _HOMES:  # also how `from raysweep.train import loop` finds the submodule
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
