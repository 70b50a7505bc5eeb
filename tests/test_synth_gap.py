"""benchmarks.synth_gap (issue 27): the hidden columns it hands gradient boosting are the ones it
names, read from the generator's latents, on a canned manifest."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.synth_gap import _scores, hidden_columns
from raysweep.synth.exposure import FOOT_LAMBERT


def test_hidden_columns_are_the_named_latents():
    frame = pd.DataFrame({
        "set_id": ["set00", "set03", "set03"], "session_lux": [100.0, 8000.0, 8000.0],
        "lux": [110.0, 8000.0, 4000.0], "background_L": [50.0, 50.0, 50.0],
        "bv_session_offset_ev": [0.0, 4.0, 4.0], "bv_zeroed": [False, False, True],
        "hand_shade_depth": [0.0, 0.5, 0.0], "exposure_error_ev": [0.3, -0.2, 1.1],
    })
    cols = hidden_columns(frame)
    assert set(cols) == {"set id", "session lux", "photo lux", "scene BV", "background L*",
                         "hand shade", "exposure error"}
    np.testing.assert_array_equal(cols["set id"], [0, 3, 3])
    np.testing.assert_allclose(cols["session lux"], np.log2([100, 8000, 8000]))
    # the photo's own light, not its session's: two photos of one session differ by 1 EV
    np.testing.assert_allclose(cols["photo lux"][1] - cols["photo lux"][2], 1.0)
    grey = ((50 + 16) / 116) ** 3  # luminance of an L* 50 background
    want = np.log2(8000 * grey / np.pi / FOOT_LAMBERT) + 4.0
    assert abs(cols["scene BV"][1] - want) < 0.006  # written to 0.01 EV, as EXIF holds it
    assert cols["scene BV"][2] == 0.0  # a vendor that zeroes BV in the session writes 0
    np.testing.assert_array_equal(cols["background L*"], [50, 50, 50])
    np.testing.assert_array_equal(cols["hand shade"], [0.0, 0.5, 0.0])
    np.testing.assert_array_equal(cols["exposure error"], [0.3, -0.2, 1.1])


def test_scores_report_the_pull_toward_the_mean_lightness():
    truth = np.column_stack([np.linspace(30, 70, 9), np.full(9, 10.0), np.full(9, 15.0)])
    pred = truth.copy()
    pred[:, 0] = 50 + 0.5 * (truth[:, 0] - 50)  # half the true L* spread
    scores = _scores(pred, truth)
    assert abs(scores[-1] - 0.5) < 1e-9
    assert abs(_scores(truth, truth)[-1] - 1.0) < 1e-9 and _scores(truth, truth)[0] < 1e-6
