"""The `ensemble:topK` candidate of eval_winners: mean of the leaders' Lab, scored on validation,
registered as one pyfunc model when it is best there, and loaded back by `predict`.

The sweep here has two trials trained on targets biased in opposite directions (one image model,
one tabular): each alone is far off, their mean is not, so the ensemble is best on validation
by construction and the test does not depend on how a few epochs happen to land.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest

from raysweep.errors import UserError
from raysweep.evaluate import stats
from raysweep.evaluate import winners as eval_winners
from raysweep.evaluate.leaders import Leader
from raysweep.evaluate.record import EvalSettings
from raysweep.evaluate.scoring import comparisons
from raysweep.serve import ensemble
from raysweep.tracking.store import Tracker
from raysweep.train import checkpoint, predictor
from tests.helpers.fakes import make_prepared
from tests.helpers.sweeps import log_sweep

SHIFT = np.array([12.0, 8.0, 0.0], np.float32)
TRIALS = {"t_up": dict(features="image+meta", fusion="concat", epochs=6),
          "t_down": dict(features="mean+meta", fusion="none", epochs=6)}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    old = os.getcwd()
    os.chdir(root)  # default store: sqlite:///<cwd>/mlruns.db
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        data = make_prepared(n=60, size=16, seed=3)
        biased = {"t_up": dataclasses.replace(data, target=data.target + SHIFT),
                  "t_down": dataclasses.replace(data, target=data.target - SHIFT)}
        logged = log_sweep(Tracker("ens-unit", "sweep-e"), data, root / "ckpt", TRIALS, biased)
        res = eval_winners.run_eval_winners(EvalSettings(
            experiment="ens-unit", top_k=2, data=data, out=root / "winners", n_boot=100,
            baseline_names=["naive"]))
        yield {"root": root, "data": data, "res": res, **logged}
    finally:
        os.chdir(old)


def _members(sweep):
    return [predictor.load(sweep["trials"][t][1].checkpoint_dir, device="cpu") for t in TRIALS]


def test_prediction_is_the_mean_of_members(sweep):
    data, members = sweep["data"], _members(sweep)
    ens = ensemble.EnsemblePredictor(members, list(TRIALS))
    want = np.mean([m.predict(data) for m in members], axis=0)
    np.testing.assert_allclose(ens.predict(data), want, atol=1e-5)
    spread = ens.spread(data)
    assert spread.shape == (len(data),) and (spread > 0).all()
    # the geometry and vocabulary come from the image member
    assert ens.cfg.uses_image and ens.meta["crop"] == "adaptive_bg" and ens.meta["size"] == 16


def test_members_with_other_geometry_or_data_are_refused(sweep):
    image, tabular = _members(sweep)
    other = predictor.Predictor(image.model, image.cfg, image.stats,
                                 {**image.meta, "crop": "patch_nobg"})
    with pytest.raises(UserError, match="crops/sizes"):
        ensemble.EnsemblePredictor([image, other])
    alien = predictor.Predictor(tabular.model, tabular.cfg, tabular.stats,
                                 {**tabular.meta, "content_hash": "other"})
    with pytest.raises(UserError, match="different data"):
        ensemble.EnsemblePredictor([image, alien])


def test_ensemble_best_on_validation_is_the_champion(sweep):
    res, data = sweep["res"], sweep["data"]
    s = res.summary.set_index("model")
    assert res.champion == "ensemble:top2"
    assert s.loc["ensemble:top2", "kind"] == "ensemble"
    members = _members(sweep)
    val = data.subset(data.indices("val"))
    mean_val = np.mean([m.predict(val) for m in members], axis=0)
    want_val = stats.errors_of(mean_val, val.target)[0].mean()
    assert s.loc["ensemble:top2", "val_de00_mean"] == pytest.approx(want_val, abs=1e-4)
    assert want_val < s.loc[s["kind"] == "model", "val_de00_mean"].min()
    # its test predictions in predictions.csv are the members' mean
    test = data.subset(data.indices("test"))
    pred = res.predictions[res.predictions["model"] == "ensemble:top2"]
    np.testing.assert_allclose(pred[["pred_L", "pred_a", "pred_b"]].to_numpy(),
                               np.mean([m.predict(test) for m in members], axis=0), atol=1e-3)
    # "champion vs best baseline" compares the crowned champion, not the best single leader
    row = res.comparisons.set_index("question").loc["champion vs best baseline"]
    assert row["a"] == "ensemble:top2"
    assert "the mean of" in (res.out_dir / "report.md").read_text()


def test_registered_ensemble_loads_and_predicts_like_in_memory(sweep):
    from raysweep.serve.loading import load_predictor

    res, data = sweep["res"], sweep["data"]
    assert res.model_uri == "models:/ens-unit@champion"
    reg = load_predictor(res.model_uri, device="cpu")
    assert isinstance(reg, ensemble.EnsemblePredictor) and len(reg.members) == 2
    mem = ensemble.EnsemblePredictor(_members(sweep))
    np.testing.assert_allclose(reg.predict(data), mem.predict(data), atol=1e-5)
    # its bound was calibrated on validation and travels with it
    assert reg.calibration is not None
    assert set(reg.calibration.info["champion_run"].split(",")) == {
        sweep["trials"][t][0] for t in TRIALS}
    from raysweep.serve import bounds

    cols = bounds.trust_columns(reg, data, reg.predict(data))
    assert np.isfinite(cols["de00_bound"]).all()


def test_save_load_round_trip(sweep, tmp_path):
    dirs = [sweep["trials"][t][1].checkpoint_dir for t in TRIALS]
    folder = ensemble.save(tmp_path / "ens", dirs, list(TRIALS))
    assert ensemble.is_ensemble(folder)
    assert not any(p.name == checkpoint.STATE_FILE for p in folder.rglob("*"))
    loaded = ensemble.load(folder, device="cpu")
    assert loaded.names == list(TRIALS)
    np.testing.assert_allclose(loaded.predict(sweep["data"]),
                               ensemble.EnsemblePredictor(_members(sweep)).predict(sweep["data"]),
                               atol=1e-6)
    spec = (folder / ensemble.FILE).read_text().replace("members/00", "../../etc")
    (folder / ensemble.FILE).write_text(spec)
    with pytest.raises(UserError, match="outside"):
        ensemble.load(folder)


def test_spread_is_a_difficulty_feature_of_the_bound():
    """Errors that grow with the members' disagreement: the fitted difficulty follows the
    spread, and a calibration loaded with the hook uses it for new photos."""
    from raysweep.serve import bounds

    data = make_prepared(n=240, size=8, seed=5)
    rng = np.random.default_rng(0)
    spread = rng.uniform(0.2, 6.0, len(data))
    pred = data.target + rng.normal(0, 1, data.target.shape).astype(np.float32) * spread[:, None]
    val, train = data.indices("val"), data.subset(data.indices("train"))
    cal = bounds.calibrate(data.subset(val), pred[val], train,
                           extras=bounds.Extras(spread=spread[val]))
    d = cal.difficulty
    assert d is not None and "log_spread" in d.names
    assert d.coef[d.names.index("log_spread")] > 0
    assert "ensemble spread" in cal.info["method"]
    test = data.indices("test")
    cal.spread_of = lambda _d: spread[test]
    sigma = cal.sigma(data.subset(test), pred[test])
    assert np.corrcoef(sigma, spread[test])[0, 1] > 0.5


def test_comparisons_use_the_crowned_champion():
    errs = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([0.5, 1.0, 1.5]),
            "baseline:naive": np.array([2.0, 2.0, 2.0])}
    leaders = [Leader("r1", "a", {}, 1.0, "p", label="a"),
               Leader("r2", "b", {}, 2.0, "p", label="b")]
    comp = comparisons(leaders, errs, "baseline:naive", 50, 0, champion="b")
    row = comp.set_index("question").loc["champion vs best baseline"]
    assert row["a"] == "b" and row["diff"] == pytest.approx(-1.0)
    default = comparisons(leaders, errs, "baseline:naive", 50, 0)
    assert default.set_index("question").loc["champion vs best baseline", "a"] == "a"
    assert isinstance(comp, pd.DataFrame)
