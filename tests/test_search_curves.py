"""The search benchmark's arithmetic: best-so-far curves, time and epochs to a target, and the
per-seed comparison against random search (on hand-made histories, no sweeps)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmarks.search_curves import (
    BASELINE,
    DEFAULT,
    best_at,
    best_so_far,
    epochs_to,
    per_seed,
    summary,
    time_to,
)


def history(points):
    return pd.DataFrame(points, columns=["t", "val"])


def run(method, seed, points, test=1.0):
    h = history(points)
    return {"space": "s", "method": method, "seed": seed, "history": h,
            "span_s": float(h["t"].max()), "epochs_run": len(h),
            "final_best": float(h["val"].min()), "test_de00": test}


def test_curve_reads():
    h = history([(3, 5.0), (1, 4.0), (2, 6.0), (4, 3.0)])
    t, best = best_so_far(h)
    assert list(t) == [1, 2, 3, 4] and list(best) == [4.0, 4.0, 4.0, 3.0]
    assert best_at((t, best), 0.5) == math.inf and best_at((t, best), 3.5) == 4.0
    assert time_to((t, best), 3.0) == 4 and time_to((t, best), 2.0) == math.inf
    assert epochs_to(h, 4.0) == 1 and epochs_to(h, 1.0) == math.inf


def test_per_seed_measures_against_that_seeds_random_run():
    runs = pd.DataFrame([
        run(BASELINE, 0, [(10, 3.0), (20, 2.5), (40, 2.0)], test=1.5),
        run(DEFAULT, 0, [(5, 2.8), (10, 1.9), (15, 1.8)], test=1.2),
        run(BASELINE, 1, [(10, 3.0), (30, 2.2)]),
        run(DEFAULT, 1, [(10, 2.5), (20, 2.4)]),  # never reaches 2.2
    ])
    seeds = per_seed(runs, BASELINE, DEFAULT).set_index(["seed", "method"])
    d0 = seeds.loc[(0, DEFAULT)]
    assert d0.target == 2.0 and d0.t_to_target_s == 10 and d0.t_to_target_frac == 10 / 40
    assert d0.epochs_to_target_frac == pytest.approx(2 / 3)
    assert d0.baseline_best_at_end == 3.0  # random's best when the default ended, at 15 s
    assert seeds.loc[(1, DEFAULT)].t_to_target_s == math.inf
    table = summary(per_seed(runs, BASELINE, DEFAULT)).set_index("method")
    assert table.loc[DEFAULT, "reached"] == 1 and table.loc[DEFAULT, "seeds"] == 2
    assert table.loc[BASELINE, "t_to_target_frac"] == 1.0
