"""load_prepared end to end: the Prepared contract, the cache, tabular mode."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest

from raysweep.data import images as images_mod
from raysweep.data.demo import make_folder
from raysweep.data.features import require_images
from raysweep.data.pipeline import load_prepared
from raysweep.data.prepared import META_NAMES, Prepared
from raysweep.errors import UserError
from tests.helpers.photos import write_card


@pytest.fixture()
def card(tmp_path):
    make_folder(tmp_path, n=8, size=96)
    return write_card(tmp_path)


def _no_processing(monkeypatch):
    def boom(task):
        raise AssertionError("the cache should have answered")
    monkeypatch.setattr(images_mod, "process", boom)


def test_prepared_contract(card):
    data = load_prepared(card, crop="adaptive_nobg", size=32, progress=False)
    assert isinstance(data, Prepared) and len(data) == 8
    assert data.images.shape == (8, 3, 32, 32) and data.images.dtype == np.uint8
    assert data.meta.shape == (8, len(META_NAMES)) and data.meta.dtype == np.float32
    assert data.target.dtype == np.float32 and data.mean_lab.shape == (8, 3)
    np.testing.assert_allclose(data.target[:, 0], 40 + 3 * np.arange(8))
    np.testing.assert_allclose(data.meta[:, 0], np.log2(100 * 2 ** (np.arange(8) % 4)))
    assert (data.camera == "Acme Phone 1").all() and (data.device == "Acme Phone 1").all()
    assert set(data.split) <= {"train", "val", "test"}
    for key in ("content_hash", "split_file", "split_id", "crop", "size", "card"):
        assert key in data.info, key
    assert os.path.exists(data.info["split_file"])
    assert data.frame["src_iso"].eq("exif").all() and "adaptive_nobg_x0" in data.frame
    assert (data.frame["mean_source"] == "crop").all() and not np.isnan(data.mean_lab).any()
    # tones are kept together
    assert (data.frame.groupby("tone_id")["split"].nunique() == 1).all()


def test_second_load_is_a_cache_read(card, monkeypatch):
    first = load_prepared(card, crop="center_bg", size=32, progress=False)
    _no_processing(monkeypatch)
    t0 = time.perf_counter()
    second = load_prepared(card, crop="center_bg", size=32, progress=False)
    elapsed = time.perf_counter() - t0
    assert second.info["cached"] and not first.info["cached"]
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.meta, second.meta)
    assert first.info["split_id"] == second.info["split_id"]
    pd.testing.assert_frame_equal(first.frame, second.frame, check_dtype=False)
    other = load_prepared(card, crop="adaptive_nobg", size=32, progress=False)  # all 4 cached
    assert not np.array_equal(other.images, first.images)
    assert elapsed < 2.0  # a read of a few small files (generous: the machine is shared)


def test_cache_notices_changed_labels_and_photos(card, monkeypatch):
    root = card.parent
    first = load_prepared(card, size=32, progress=False)
    labels = pd.read_csv(root / "labels.csv")
    labels.loc[0, "L-true"] = 77.0
    labels.to_csv(root / "labels.csv", index=False)
    second = load_prepared(card, size=32, progress=False)
    assert not second.info["cached"] and second.target[0, 0] == 77.0
    assert second.info["content_hash"] != first.info["content_hash"]
    st = os.stat(root / "photos/img_003.jpg")
    os.utime(root / "photos/img_003.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert not load_prepared(card, size=32, progress=False).info["cached"]
    _no_processing(monkeypatch)
    assert load_prepared(card, size=32, progress=False).info["cached"]


def test_interrupted_prepare_leaves_no_cache_entry(card, monkeypatch):
    def interrupted(task):
        raise KeyboardInterrupt
    monkeypatch.setattr(images_mod, "process", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_prepared(card, size=32, progress=False)
    cache = card.parent / ".raysweep_cache"
    leftovers = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert leftovers == []


def test_parallel_workers_match_serial(tmp_path):
    make_folder(tmp_path, n=70, size=64)  # >= 64 rows: the process pool is used
    card = write_card(tmp_path)
    par = load_prepared(card, size=16, workers=2, progress=False, cache_dir=tmp_path / "c1")
    ser = load_prepared(card, size=16, workers=1, progress=False, cache_dir=tmp_path / "c2")
    np.testing.assert_array_equal(par.images, ser.images)
    np.testing.assert_array_equal(par.sample_id, ser.sample_id)


def test_tabular_mode(tmp_path):
    rng = np.random.default_rng(0)
    n = 12
    pd.DataFrame({"sample_id": [f"r{i}" for i in range(n)], "tone_id": [f"t{i // 2}" for i in
                                                                      range(n)],
                  "target_L": rng.uniform(30, 70, n), "target_a": rng.uniform(5, 15, n),
                  "target_b": rng.uniform(8, 20, n), "mean_L": rng.uniform(30, 70, n),
                  "mean_a": rng.uniform(5, 15, n), "mean_b": rng.uniform(8, 20, n),
                  "iso": 100.0, "camera": "phoneA"}).to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "dataset.yaml").write_text("manifest: m.csv\n")
    data = load_prepared(tmp_path, crop="adaptive_bg", progress=False)
    assert data.images is None and data.info["crop"] is None and len(data) == n
    assert (data.frame["mean_source"] == "manifest").all()
    assert np.isnan(data.meta[:, 1]).all()
    np.testing.assert_allclose(data.meta[:, 0], np.log2(100), rtol=1e-6)
    with pytest.raises(UserError, match="tabular"):
        require_images(data, "image+meta")
    assert load_prepared(tmp_path, progress=False).info["cached"]
