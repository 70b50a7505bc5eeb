"""`python -m raysweep.synth`: the command (usage in cli.py).

It adds one row to `--calibrate` that the synth library cannot compute itself: the order of the
project's baselines (raysweep.evaluate.baselines) on the dataset's tabular export. evaluate sits
above synth in the layers, so the command, which may use every layer, runs them and hands the
comparison to the library's CLI.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..data import features
from ..data.prepared import Prepared
from ..data.splits import assign
from ..errors import run_cli
from .calibration import Row, order_row
from .cli import main as cli_main

SPLIT_SEEDS = (0, 1, 2)


def tabular_export(frame: pd.DataFrame, measured: np.ndarray, split: np.ndarray):
    """The dataset as a spreadsheet would carry it: the measured patch Lab, EXIF and camera, no
    ring columns (the real phone dataset has none)."""
    return Prepared(
        sample_id=frame["sample_id"].astype(str).to_numpy(), images=None,
        mean_lab=np.asarray(measured, np.float32), meta=features.meta_matrix(frame),
        camera=features.camera_ids(frame), device=features.device_text(frame),
        target=frame[["target_L", "target_a", "target_b"]].to_numpy(np.float32),
        split=split, frame=frame.reset_index(drop=True))


def baseline_order(frame: pd.DataFrame, measured: np.ndarray) -> Row:
    """Mean test dE00 of gradient boosting and of the per-session regression on held-out tones
    (the tone-grouped split, seeds 0-2), as for the real photos."""
    from ..evaluate.baselines import run_baselines  # lazy: torch, seconds; generating needs none
    from ..evaluate.stats import errors_of  # lazy: torch, seconds; generating needs none

    means = {"gbm": [], "per_session": []}
    for seed in SPLIT_SEEDS:
        data = tabular_export(frame, measured, assign(frame, "tone_id", seed=seed))
        train, test = data.subset(data.indices("train")), data.subset(data.indices("test"))
        preds, skipped = run_baselines(train, test, list(means))
        if skipped:
            raise RuntimeError(f"baselines skipped on the synthetic export: {skipped}")
        for name, pred in preds.items():
            means[name].append(float(np.mean(errors_of(pred, test.target)[0])))
    return order_row(float(np.mean(means["gbm"])), float(np.mean(means["per_session"])))


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(argv, compare=baseline_order)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
