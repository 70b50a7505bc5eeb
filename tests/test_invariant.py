"""The session-invariant block (`inv`): a session's light and exposure cancel in it, and a
spreadsheet without ring columns still trains with it (ring columns missing and flagged)."""

from __future__ import annotations

import numpy as np
import torch

from raysweep import color
from raysweep.config import TrainConfig
from raysweep.data import invariant
from raysweep.data.invariant import INV_NAMES, N_RING_COLUMNS, invariant_matrix
from raysweep.data.prepared import META_NAMES, RING_NAMES
from raysweep.evaluate.baselines import make_baseline
from raysweep.models.build import build_model
from raysweep.models.inputs import encode, fit_stats
from tests.helpers.fakes import make_prepared


def _photo(patch_lin: np.ndarray, ring_lin: np.ndarray, log2_t: np.ndarray, log2_iso: np.ndarray):
    """mean_lab, meta and ring block of photos whose linear patch and ring medians are given."""
    n = len(patch_lin)
    mean_lab = color.linear_srgb_to_lab(torch.as_tensor(patch_lin)).numpy()
    meta = np.full((n, len(META_NAMES)), np.nan)
    meta[:, META_NAMES.index("log2_exposure_s")] = log2_t
    meta[:, META_NAMES.index("log2_iso")] = log2_iso
    ring = np.full((n, len(RING_NAMES)), np.nan)
    for k, c in enumerate("rgb"):
        ring[:, RING_NAMES.index(f"ring_{c}_p50")] = ring_lin[:, k]
        ring[:, RING_NAMES.index(f"log_patch_over_ring_{c}")] = np.log(patch_lin[:, k] /
                                                                      ring_lin[:, k])
    return mean_lab, meta, ring


def test_light_colour_and_exposure_cancel():
    rng = np.random.default_rng(0)
    n = 12
    skin = rng.uniform(0.1, 0.5, (n, 3))  # linear reflectance-like patch colours
    grey = np.full((n, 3), 0.18)  # a neutral surround
    t, iso = rng.uniform(-8, -4, n), rng.uniform(6, 9, n)
    base = invariant_matrix(*_photo(skin * 0.5, grey * 0.5, t, iso))
    assert np.isfinite(base).all() and base.shape == (n, len(INV_NAMES))
    # A warmer light (per-channel gains) on the same skin and surround: the ring columns do not
    # move; the raw patch colour does.
    gains = np.array([1.6, 1.0, 0.55])
    warm = invariant_matrix(*_photo(skin * 0.5 * gains, grey * 0.5 * gains, t, iso))
    np.testing.assert_allclose(warm[:, :N_RING_COLUMNS], base[:, :N_RING_COLUMNS], atol=1e-5)
    # The camera exposes 4x longer (or the light is 4x brighter and ISO 4x lower): the photo is
    # 4x brighter and the EXIF says why, so every column stays.
    bright = invariant_matrix(*_photo(skin * 0.5 * 4, grey * 0.5 * 4, t + 2, iso))
    np.testing.assert_allclose(bright, base, atol=1e-4)
    lower_iso = invariant_matrix(*_photo(skin * 0.5 * 4, grey * 0.5 * 4, t, iso + 2))
    np.testing.assert_allclose(lower_iso, base, atol=1e-4)
    # ... while what distinguishes two skins still shows.
    other = invariant_matrix(*_photo(skin[::-1] * 0.5, grey * 0.5, t, iso))
    assert np.abs(other - base).max() > 0.1


def test_a_spreadsheet_without_ring_columns_degrades_to_the_exposure_column(caplog):
    data = make_prepared(n=40, tabular=True, seed=4)
    data.ring = None
    x = invariant.invariant_inputs(data)
    assert np.isnan(x[:, :N_RING_COLUMNS]).all()
    assert np.isfinite(x[:, -1]).mean() > 0.5  # where the colour, exposure and ISO are known
    line = invariant.describe(data)
    assert "no ring statistics" in line and "inv_log2_patch_per_exposure" in line
    cfg = TrainConfig(features="mean+inv+meta", fusion="none", head="residual")
    with caplog.at_level("WARNING", logger="raysweep.models.inputs"):
        stats = fit_stats(data, cfg)
    assert "no ring statistics" in caplog.text  # the user is told what the block lost
    batch = encode(data, stats, cfg)
    k = len(INV_NAMES)
    assert batch["inv"].shape == (40, 2 * k) and torch.isfinite(batch["inv"]).all()
    assert (batch["inv"][:, k:k + N_RING_COLUMNS] == 1).all()  # flagged missing, every row
    pred = build_model(cfg, stats)(batch)
    assert pred.shape == (40, 3) and torch.isfinite(pred).all()
    # The gradient-boosting family takes the same block, ring or not.
    model = make_baseline("gbm_inv").fit(data.subset(data.indices("train")))
    assert np.isfinite(model.predict(data)).all()


def test_inv_statistics_come_from_the_training_split_only():
    data = make_prepared(n=40, tabular=True, seed=3)
    cfg = TrainConfig(features="mean+inv+meta", fusion="none")
    stats = fit_stats(data, cfg)
    assert len(stats.inv_mean) == len(INV_NAMES)
    poisoned = make_prepared(n=40, tabular=True, seed=3)
    poisoned.ring[poisoned.split != "train"] = 5.0
    assert fit_stats(poisoned, cfg) == stats
