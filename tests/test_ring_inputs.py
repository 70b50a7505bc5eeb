"""The ring block (background-ring statistics): normalised on train only, flagged where missing,
refused when absent, and informative (the fake data's ring carries the light)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from raysweep.config import FEATURES, TrainConfig
from raysweep.data.prepared import RING_NAMES
from raysweep.errors import UserError
from raysweep.models.inputs import FeatureStats, encode, fit_stats
from raysweep.models.pooling import PatchSurroundPool, centre_fraction
from raysweep.train.loop import fit
from tests.helpers.fakes import make_prepared


def test_every_preset_can_add_the_ring():
    for preset in ("mean+meta", "image+mean+meta", "meta", "image", "mean", "image+meta"):
        blocks = preset.split("+")
        with_ring = "+".join(b for b in ("image", "mean", "ring", "meta") if b in blocks + ["ring"])
        assert with_ring in FEATURES
        assert TrainConfig(features=with_ring, fusion="concat").uses_ring
    with pytest.raises(UserError, match="features"):
        TrainConfig(features="meta+ring").validate()  # one spelling per preset


def test_ring_stats_on_train_only_with_missing_flags():
    data = make_prepared(n=40, tabular=True, seed=3)
    data.ring[0, 2] = np.nan
    cfg = TrainConfig(features="mean+ring+meta", fusion="none")
    stats = fit_stats(data, cfg)
    poisoned = make_prepared(n=40, tabular=True, seed=3)
    poisoned.ring[0, 2] = np.nan
    poisoned.ring[poisoned.split != "train"] = 1e6
    assert fit_stats(poisoned, cfg) == stats
    ring = encode(data, stats, cfg)["ring"].numpy()
    r = len(RING_NAMES)
    assert ring.shape == (40, 2 * r) and np.isfinite(ring).all()
    assert ring[0, r + 2] == 1 and ring[0, 2] == 0 and ring[1:, r:].sum() == 0
    train = data.indices("train")
    assert np.abs(ring[train, :r].mean(0)).max() < 0.1
    # Statistics written before the ring existed still load (the new fields default to empty).
    old = {k: v for k, v in stats.to_dict().items()
           if k not in ("ring_mean", "ring_std", "image_mean", "image_std")}
    assert FeatureStats.from_dict(json.loads(json.dumps(old))).ring_mean == []


def test_a_ring_preset_without_ring_data_is_a_clear_error():
    data = make_prepared(n=20, tabular=True, seed=0)
    data.ring = None
    with pytest.raises(UserError, match="ring"):
        fit_stats(data, TrainConfig(features="mean+ring+meta", fusion="none"))


def test_the_ring_carries_the_light():
    """On the fake data log(patch/ring) is the true colour; the mean alone lacks the exposure."""
    data = make_prepared(n=160, tabular=True, seed=5, missing_rate=0.0)
    base = dict(fusion="none", epochs=60, batch_size=32, lr=3e-3, dropout=0.0, seed=0)
    ring = fit(TrainConfig(features="mean+ring", **base), data).best["val_de00_mean"]
    mean = fit(TrainConfig(features="mean", **base), data).best["val_de00_mean"]
    assert ring < 0.6 * mean, (ring, mean)


def test_patch_surround_pooling_separates_centre_and_border():
    assert centre_fraction("adaptive_bg") == pytest.approx(2 / 3)
    assert centre_fraction("center_bg") == pytest.approx(0.5)
    with pytest.raises(UserError):
        centre_fraction("adaptive_nobg")
    pool = PatchSurroundPool(2 / 3)
    fmap = torch.zeros(1, 2, 8, 8)
    fmap[:, :, 1:7, 1:7] = 1.0  # bright centre, dark one-cell border
    out = pool(fmap)
    assert out.shape == (1, 4)
    assert torch.allclose(out[0, :2], torch.ones(2)) and (out[0, 2:] < 0.1).all()
    # A 4x4 map (32 px smallcnn) still gets both parts, weighted by area.
    small = torch.zeros(1, 1, 4, 4)
    small[:, :, 1:3, 1:3] = 1.0
    p, s = pool(small)[0]
    assert p > 0.85 and s < 0.35
