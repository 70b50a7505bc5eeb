"""Floors: the generator's oracle tiers on the evaluated photos, each with what it knows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysweep.evaluate import floors
from raysweep.evaluate.stats import errors_of
from tests.helpers.fakes import make_prepared


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from raysweep.data.pipeline import load_prepared
    from raysweep.synth import ensure_default_dataset

    root = tmp_path_factory.mktemp("synth")
    card = ensure_default_dataset(root / "data", sets=3, tones=6, size=96, progress=False)
    return load_prepared(card, crop="adaptive_bg", size=32, progress=False, workers=1)


def test_not_synthetic_means_no_floor_and_says_why():
    f = floors.run_floors(make_prepared(n=12))
    assert not f.preds and list(f.skipped) == ["floors"]
    assert "not synthetic" in f.skipped["floors"]


def test_latents_floor_on_the_evaluated_rows(synthetic):
    test = synthetic.subset(np.arange(len(synthetic))[::-1][:8])  # any order, any subset
    f = floors.run_floors(test)
    assert "oracle:latents" in f.preds
    for name, pred in f.preds.items():
        assert pred.shape == (len(test), 3) and np.isfinite(pred).all()
        assert f.knows[name] and name not in f.skipped
    for name in set(f"oracle:{t}" for t in floors.TIERS) - set(f.preds):
        assert f.skipped[name]  # a tier the oracle lacks is named, not dropped silently
    # the latents oracle reads the colour back far better than the camera does
    e = errors_of(f.preds["oracle:latents"], test.target)[0]
    naive = errors_of(test.mean_lab, test.target)[0]
    assert e.mean() < 0.5 * naive.mean()


def test_tiers_are_asked_by_name_and_state_what_they_know(synthetic, monkeypatch):
    from raysweep.synth import oracle

    asked = []

    def fake_evaluate(card, rows=None, tier="latents"):
        asked.append(tier)
        frame = pd.read_csv(card.parent / "manifest.csv").iloc[np.asarray(rows)]
        out = frame[["sample_id"]].copy()
        out[["oracle_L", "oracle_a", "oracle_b"]] = {"latents": 1.0, "exif": 2.0,
                                                      "observable": 3.0}[tier]
        return out

    monkeypatch.setattr(oracle, "evaluate", fake_evaluate)
    monkeypatch.setattr(oracle, "TIERS", ("latents", "observable"), raising=False)
    monkeypatch.setattr(oracle, "KNOWS", {"observable": "ring and EXIF only"}, raising=False)
    f = floors.run_floors(synthetic)
    assert asked == ["latents", "observable"]
    assert f.preds["oracle:observable"][0, 0] == 3.0 and f.preds["oracle:latents"][0, 0] == 1.0
    assert f.knows["oracle:observable"] == "ring and EXIF only"
    assert f.knows["oracle:latents"] == floors.KNOWS["latents"]
    assert "no 'exif' tier" in f.skipped["oracle:exif"]


def test_yardsticks_put_baselines_and_floors_side_by_side(synthetic):
    from raysweep.evaluate.yardsticks import yardsticks

    table, notes, errs = yardsticks(synthetic, names=["naive", "per_session", "gbm_context"],
                                    n_boot=50)
    t = table.set_index("model")
    assert {"baseline:naive", "baseline:per_session", "baseline:gbm_context",
            "oracle:latents"} <= set(t.index)
    assert t.loc["oracle:latents", "kind"] == "floor" and t.loc["oracle:latents", "knows"]
    assert t.loc["oracle:latents", "mean"] < t.loc["baseline:naive", "mean"]
    n_test = int((synthetic.split == "test").sum())
    assert all(len(e) == n_test for e in errs.values())
    fake, notes, _ = yardsticks(make_prepared(n=24), names=["naive"], n_boot=20)
    assert list(fake["model"]) == ["baseline:naive"] and "not synthetic" in notes["floors"]


def test_study_tables_show_floors_with_what_they_know():
    from benchmarks.study_analysis import floor_table, yardstick_table

    rows = pd.DataFrame([{"model": "oracle:latents", "kind": "floor", "mean": 0.5,
                          "mean_lo": 0.4, "mean_hi": 0.6, "median": 0.3, "median_lo": 0.2,
                          "median_hi": 0.4, "knows": "everything"},
                         {"model": "baseline:per_session", "kind": "baseline", "mean": 1.6,
                          "mean_lo": 1.4, "mean_hi": 1.8, "median": 1.2, "median_lo": 1.1,
                          "median_hi": 1.3, "knows": ""}])
    f = floor_table(rows[rows.kind == "floor"], {"oracle:latents": "everything"}, 2.0)
    assert f.iloc[0].tolist() == ["oracle:latents", "0.50 [0.40, 0.60]", "4.0x", "everything"]
    y = yardstick_table(rows)
    assert y["yardstick"].tolist() == ["baseline:per_session", "oracle:latents"]
    assert y.iloc[1]["what it knows"] == "everything"
