"""Coverage tables and the reliability plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from raysweep.evaluate import coverage


def test_coverage_table_overall_and_per_group():
    err = np.array([1.0, 2.0, 3.0, 4.0] * 10)
    bound = np.full(40, 3.5)
    cam = np.array(["a", "b"] * 20)
    t = coverage.coverage_table(err, bound, {"camera": cam}, level=0.9, n_boot=200)
    overall = t.iloc[0]
    assert (overall["dimension"], overall["group"], overall["n"]) == ("overall", "all", 40)
    assert overall["coverage"] == 0.75 and overall["coverage_lo"] < 0.75 < overall["coverage_hi"]
    by = t[t["dimension"] == "camera"].set_index("group")
    assert by.loc["a", "coverage"] == 1.0  # errors 1 and 3
    assert by.loc["b", "coverage"] == 0.5  # errors 2 and 4
    assert not by.loc["a", "enough"]  # 20 photos < MIN_GROUP
    shown = coverage.table_for_report(t)
    assert shown["coverage [95% CI]"].iloc[0].startswith("75.0% [")


def test_reliability_follows_the_diagonal_for_a_calibrated_bound():
    # errors from a known chi distribution (|3-D standard normal|) and its exact quantiles
    err = np.linalg.norm(np.random.default_rng(0).normal(size=(4000, 3)), axis=1)
    curve = coverage.reliability(err, lambda lv: np.full(len(err), sps.chi.ppf(lv, 3)),
                                 n_boot=200)
    assert np.all(np.abs(curve["observed"] - curve["nominal"]) < 0.03)
    assert np.all(curve["lo"] <= curve["observed"]) and np.all(curve["observed"] <= curve["hi"])


def test_flag_rates_and_plot(tmp_path):
    flags = pd.DataFrame({"x": [True, False, False, False], "y": [True, True, False, False]})
    r = coverage.flag_rates(flags, ["x", "y"]).set_index("flag")
    assert r.loc["x", "photos"] == 1 and r.loc["any", "share"] == 0.5
    curve = pd.DataFrame({"nominal": [0.5, 0.9], "observed": [0.52, 0.88], "lo": [0.45, 0.84],
                          "hi": [0.58, 0.92]})
    path = coverage.plot_reliability(curve, tmp_path / "rel.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
