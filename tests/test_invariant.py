"""The session-invariant block (`inv`): a session's light and exposure cancel in it, and a
spreadsheet without ring columns still trains with it (ring columns missing and flagged)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from raysweep.config import TrainConfig
from raysweep.data import invariant
from raysweep.data.invariant import INV_NAMES, invariant_matrix
from raysweep.data.prepared import RING_NAMES
from raysweep.errors import UserError
from raysweep.evaluate.baselines import make_baseline
from raysweep.models.build import build_model
from raysweep.models.inputs import encode, fit_stats
from tests.helpers.fakes import make_prepared


def _ring(patch_lin: np.ndarray, ring_lin: np.ndarray) -> np.ndarray:
    """The ring block of photos whose linear patch and ring medians are given."""
    ring = np.full((len(patch_lin), len(RING_NAMES)), np.nan)
    for k, c in enumerate("rgb"):
        ring[:, RING_NAMES.index(f"ring_{c}_p50")] = ring_lin[:, k]
        ring[:, RING_NAMES.index(f"log_patch_over_ring_{c}")] = np.log(patch_lin[:, k] /
                                                                      ring_lin[:, k])
    return ring


def test_light_colour_exposure_and_illuminance_cancel():
    rng = np.random.default_rng(0)
    n = 12
    skin = rng.uniform(0.1, 0.5, (n, 3))  # linear reflectance-like patch colours
    grey = np.full((n, 3), 0.18)  # a neutral surround
    base = invariant_matrix(_ring(skin * 0.5, grey * 0.5), n)
    assert np.isfinite(base).all() and base.shape == (n, len(INV_NAMES))
    # A warmer light (per-channel gains) on the same skin and surround: no column moves; the raw
    # patch colour does.
    gains = np.array([1.6, 1.0, 0.55])
    warm = invariant_matrix(_ring(skin * 0.5 * gains, grey * 0.5 * gains), n)
    np.testing.assert_allclose(warm, base, atol=1e-5)
    # A 4x brighter photo, whatever made it (a longer exposure, a higher ISO, or a 4x brighter
    # scene the camera did not fully expose for): no column moves either. A column that did
    # (the patch's brightness per unit of exposure moves with the scene's illuminance) would
    # name the session, which is what costs on new sessions (the module docstring).
    bright = invariant_matrix(_ring(skin * 0.5 * 4, grey * 0.5 * 4), n)
    np.testing.assert_allclose(bright, base, atol=1e-5)
    # ... while what distinguishes two skins still shows.
    other = invariant_matrix(_ring(skin[::-1] * 0.5, grey * 0.5), n)
    assert np.abs(other - base).max() > 0.1


def test_a_spreadsheet_without_ring_columns_still_trains_with_the_block_flagged(caplog):
    data = make_prepared(n=40, tabular=True, seed=4)
    data.ring = None
    assert np.isnan(invariant.invariant_inputs(data)).all()
    line = invariant.describe(data)
    assert "no ring statistics" in line and "carries nothing" in line
    cfg = TrainConfig(features="mean+inv+meta", fusion="none", head="residual")
    with caplog.at_level("WARNING", logger="raysweep.models.inputs"):
        stats = fit_stats(data, cfg)
    assert "no ring statistics" in caplog.text  # the user is told what the block lost
    batch = encode(data, stats, cfg)
    k = len(INV_NAMES)
    assert batch["inv"].shape == (40, 2 * k) and torch.isfinite(batch["inv"]).all()
    assert (batch["inv"][:, k:] == 1).all()  # flagged missing, every row
    pred = build_model(cfg, stats)(batch)
    assert pred.shape == (40, 3) and torch.isfinite(pred).all()
    # The gradient-boosting family takes the same block, ring or not.
    model = make_baseline("gbm_inv").fit(data.subset(data.indices("train")))
    assert np.isfinite(model.predict(data)).all()


def test_describe_names_rows_whose_ring_is_missing():
    data = make_prepared(n=40, tabular=True, seed=5)
    assert "missing on some rows" not in invariant.describe(data)
    data.ring[:3] = np.nan
    assert "missing on some rows" in invariant.describe(data)


def test_inv_statistics_come_from_the_training_split_only():
    data = make_prepared(n=40, tabular=True, seed=3)
    cfg = TrainConfig(features="mean+inv+meta", fusion="none")
    stats = fit_stats(data, cfg)
    assert len(stats.inv_mean) == len(INV_NAMES)
    poisoned = make_prepared(n=40, tabular=True, seed=3)
    poisoned.ring[poisoned.split != "train"] = 5.0
    assert fit_stats(poisoned, cfg) == stats


def test_a_model_trained_on_another_inv_block_is_refused_with_a_clear_error():
    """A checkpoint's statistics from the 4-column block (before the exposure column went) must
    not be loaded into the 3-column model: a UserError saying so, not a shape traceback."""
    data = make_prepared(n=40, tabular=True, seed=3)
    cfg = TrainConfig(features="mean+inv", fusion="none")
    stats = fit_stats(data, cfg)
    build_model(cfg, stats)
    old = dataclasses.replace(stats, inv_mean=[*stats.inv_mean, 0.0], inv_std=[*stats.inv_std, 1.0])
    with pytest.raises(UserError, match="retrain"):
        build_model(cfg, old)
