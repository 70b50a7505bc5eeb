"""Background-ring statistics: measured around the found patch, cached, loaded into Prepared."""

from __future__ import annotations

import numpy as np
import pandas as pd

from raysweep.data.crop import analyse, srgb_to_linear
from raysweep.data.demo import draw_photo, make_folder
from raysweep.data.pipeline import load_prepared
from raysweep.data.prepared import RING_NAMES
from raysweep.data.ring import p50, ring_mask
from tests.helpers.photos import write_card


def test_ring_is_the_background_and_the_ratio_the_patch_over_it():
    rng = np.random.default_rng(0)
    skin, bg = (200, 140, 110), (90, 120, 170)
    rgb, truth = draw_photo(rng, 160, skin=skin, bg=bg, shadow=False, specular=False)
    a = analyse(rgb)
    assert a.status == "patch found" and a.ring.shape == (len(RING_NAMES),)
    bg_lin = srgb_to_linear(np.array(bg) / 255)
    skin_lin = srgb_to_linear(np.array(skin) / 255)
    med = p50(a.ring[None])[0]
    # the drawn vignette darkens the surround (about 13% in linear light here); the
    # chromaticity stays the background's
    np.testing.assert_allclose(med, bg_lin, rtol=0.2)
    np.testing.assert_allclose(med / med.sum(), bg_lin / bg_lin.sum(), rtol=0.03)
    lo, hi = a.ring[0:3], a.ring[6:9]
    assert (lo <= med).all() and (med <= hi).all()
    ratio = a.ring[9:12]
    want = np.log(skin_lin / bg_lin)
    np.testing.assert_allclose(ratio, want, atol=0.2)
    np.testing.assert_allclose(ratio - ratio.mean(), want - want.mean(), atol=0.04)
    # no swatch pixel is in the ring
    mask = ring_mask(rgb.shape[:2], a.patch_box, a.boxes["adaptive_bg"])
    assert mask.sum() > 500 and not (mask & truth["swatch"]).any()


def test_no_patch_no_ring():
    rng = np.random.default_rng(4)
    rgb = np.clip(rng.normal((190, 130, 100), 3, (120, 120, 3)), 0, 255).astype(np.uint8)
    a = analyse(rgb)
    assert a.status.startswith("no patch found") and np.isnan(a.ring).all()


def test_ring_is_prepared_and_cached(tmp_path, monkeypatch):
    make_folder(tmp_path, n=8, size=96)
    card = write_card(tmp_path)
    data = load_prepared(card, crop="adaptive_bg", size=32, progress=False)
    assert data.ring is not None and data.ring.shape == (8, len(RING_NAMES))
    assert data.ring.dtype == np.float32 and np.isfinite(data.ring).all()
    from raysweep.data import images as images_mod

    monkeypatch.setattr(images_mod, "process", lambda task: 1 / 0)  # the cache must answer
    again = load_prepared(card, crop="adaptive_nobg", size=32, progress=False)
    assert again.info["cached"]
    np.testing.assert_array_equal(again.ring, data.ring)
    sub = again.subset(np.array([1, 3]))
    np.testing.assert_array_equal(sub.ring, data.ring[[1, 3]])


def _sheet(tmp_path, ring_columns: bool):
    rng = np.random.default_rng(0)
    n = 12
    df = pd.DataFrame({"sample_id": [f"r{i}" for i in range(n)],
                       "tone_id": [f"t{i // 2}" for i in range(n)],
                       "target_L": rng.uniform(30, 70, n), "target_a": rng.uniform(5, 15, n),
                       "target_b": rng.uniform(8, 20, n), "mean_L": rng.uniform(30, 70, n),
                       "mean_a": rng.uniform(5, 15, n), "mean_b": rng.uniform(8, 20, n)})
    if ring_columns:
        for j, name in enumerate(RING_NAMES):
            df[name] = 0.1 * j + np.arange(n)
    df.to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "dataset.yaml").write_text("manifest: m.csv\n")
    return tmp_path


def test_tabular_ring_only_from_named_columns(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    assert load_prepared(_sheet(tmp_path / "a", False), progress=False).ring is None
    sheet = load_prepared(_sheet(tmp_path / "b", True), progress=False)
    assert sheet.ring.shape == (12, len(RING_NAMES))
    np.testing.assert_allclose(sheet.ring[:, 4], 0.4 + np.arange(12), rtol=1e-6)
