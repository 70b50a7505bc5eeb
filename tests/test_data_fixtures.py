"""Helpers shared by the data tests (the drawing itself lives in raysweep.data.demo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raysweep.data.demo import FOREIGN, draw_photo, exif_bytes, make_folder  # noqa: F401


def write_card(root: Path, manifest: str = "labels.csv", extra: str = "") -> Path:
    cols = "\n".join(f"  {k}: {v}" for k, v in (kv.split("=") for kv in FOREIGN.split(",")))
    card = root / "dataset.yaml"
    card.write_text(f"name: test\nmanifest: {manifest}\ncolumns:\n{cols}\n{extra}")
    return card


def test_draw_photo_masks_are_consistent():
    rgb, truth = draw_photo(np.random.default_rng(1), 128)
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8
    assert truth["swatch"].mean() > 0.1
    assert (truth["shadow"] <= truth["swatch"]).all() and truth["shadow"].any()
