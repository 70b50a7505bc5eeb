"""Helpers shared by the data tests (the drawing itself lives in raysweep.data.demo)."""

from __future__ import annotations

import numpy as np

from raysweep.data.demo import draw_photo


def test_draw_photo_masks_are_consistent():
    rgb, truth = draw_photo(np.random.default_rng(1), 128)
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8
    assert truth["swatch"].mean() > 0.1
    assert (truth["shadow"] <= truth["swatch"]).all() and truth["shadow"].any()
