"""benchmarks.synth_screen (issue 27): its per-frame emulations change only what they name, and its
light spread is the across-session spread of a camera's session-median exposure."""

from __future__ import annotations

import colour
import numpy as np
import pandas as pd

from benchmarks.synth_screen import exposure_written_low, light_spread, unrecorded_gain


def _frame() -> pd.DataFrame:
    # camera A: two sessions whose median log2(time x ISO) are 2 EV apart; camera B: one level
    return pd.DataFrame({
        "camera": ["A"] * 6 + ["B"] * 4,
        "set_id": ["s0"] * 3 + ["s1"] * 3 + ["s2"] * 2 + ["s3"] * 2,
        "exposure_time_s": [1 / 100, 1 / 100, 1 / 50, 1 / 25, 1 / 25, 1 / 400] + [1 / 60] * 4,
        "iso": [100] * 10,
    })


def test_light_spread_is_the_sd_of_session_medians_per_camera():
    assert light_spread(_frame()) == f"A {np.sqrt(2):.1f}, B 0.0"


def test_exposure_written_low_lowers_the_written_exposure_only():
    frame, lab = _frame(), np.tile([60.0, 12.0, 16.0], (10, 1))
    out, lab_out = exposure_written_low(frame, lab, np.random.default_rng(0))
    assert (out["exposure_time_s"] <= frame["exposure_time_s"]).all()
    assert (out["exposure_time_s"] < frame["exposure_time_s"]).any()
    assert out["iso"].equals(frame["iso"]) and lab_out is lab
    assert (frame["exposure_time_s"] == _frame()["exposure_time_s"]).all()  # input untouched


def test_unrecorded_gain_changes_lightness_not_chromaticity():
    frame = _frame()
    lab = np.column_stack([np.linspace(30, 80, 10), np.full(10, 12.0), np.full(10, 16.0)])
    out, lab_out = unrecorded_gain(frame, lab, np.random.default_rng(0))
    assert out is frame
    assert np.abs(lab_out[:, 0] - lab[:, 0]).max() > 0.5
    xy, xy_out = (colour.XYZ_to_xy(colour.Lab_to_XYZ(v)) for v in (lab, lab_out))
    np.testing.assert_allclose(xy_out, xy, atol=1e-9)
