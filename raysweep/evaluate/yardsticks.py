"""Yardsticks without a sweep: the baselines and floors of one dataset and split, in one call.

    from raysweep.evaluate.yardsticks import yardsticks
    table = yardsticks(load_prepared(card, split=SplitSettings("set_id")))

What every learned result is judged against (raysweep.evaluate.baselines fitted on the training
split, raysweep.evaluate.floors on the evaluated photos), for a report section or a benchmark
that compares the tone-grouped and the set-grouped split without training anything.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raysweep.data.prepared import Prepared
from raysweep.evaluate import baselines, floors, stats


def yardsticks(data: Prepared, split: str = "test", names=None, with_floors: bool = True,
               n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, dict[str, str],
                                                          dict[str, np.ndarray]]:
    """(table: model, kind, n, mean, mean_lo, mean_hi, median, p95, knows; {name: why skipped};
    {name: per-photo dE00 on the split, in its row order})."""
    train, test = data.subset(data.indices("train")), data.subset(data.indices(split))
    preds, skipped = baselines.run_baselines(train, test, names)
    rows, errs, notes = [], {}, {f"baseline:{k}": v for k, v in skipped.items()}
    kinds = {f"baseline:{k}": "baseline" for k in preds}
    preds = {f"baseline:{k}": v for k, v in preds.items()}
    lines = {}
    if with_floors:
        fl = floors.run_floors(test)
        preds.update(fl.preds)
        kinds.update(fl.kinds)
        lines, notes = fl.knows, {**notes, **fl.skipped}
    for name, pred in preds.items():
        errs[name] = stats.errors_of(pred, test.target)[0]
        s = stats.summarize(errs[name], n_boot, seed)
        rows.append({"model": name, "kind": kinds[name], **s, "knows": lines.get(name, "")})
    table = pd.DataFrame(rows).sort_values(["kind", "mean"]).reset_index(drop=True)
    return table, notes, errs
