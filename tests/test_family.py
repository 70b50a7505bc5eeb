"""A crowned gradient-boosting family as a served model (raysweep.serve.family): written as a
folder, loaded back without pickle, predicting exactly what the fitted family predicted, alone,
inside an ensemble folder and through the MLflow registry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raysweep.data.prepared import RING_NAMES
from raysweep.errors import UserError
from raysweep.evaluate import baselines, selection
from raysweep.serve import ensemble, family
from tests.helpers.fakes import make_prepared


@pytest.fixture(scope="module")
def data():
    return make_prepared(n=80, size=16, seed=5)


@pytest.fixture(scope="module")
def train(data):
    return data.subset(data.indices("train"))


def _saved(tmp_path, name, train, data):
    fitted = baselines.make_baseline(name).fit(train)
    return fitted, family.save(tmp_path / name, name, fitted, data.info)


@pytest.mark.parametrize("name", selection.FAMILIES)
def test_a_saved_family_predicts_what_the_fitted_one_did(name, data, train, tmp_path):
    fitted, folder = _saved(tmp_path, name, train, data)
    assert family.is_family(folder) and not ensemble.is_ensemble(folder)
    loaded = ensemble.load_folder(folder)
    assert isinstance(loaded, family.FamilyModel)
    assert loaded.fitted.models[0].__class__.__module__ == "raysweep.serve.trees"
    want = fitted.predict(data)
    np.testing.assert_allclose(loaded.predict(data), want, rtol=0, atol=1e-4)
    # a camera it never saw and missing inputs take the trees' missing branches, as sklearn's do
    odd = data.subset(np.arange(6))
    odd.camera = np.array(["never-seen"] * 6)
    odd.mean_lab[:2] = np.nan
    np.testing.assert_allclose(loaded.predict(odd), fitted.predict(odd), rtol=0, atol=1e-4)
    assert loaded.stats.cameras == sorted(set(train.camera))
    assert not loaded.cfg.uses_image and loaded.cfg.features == name


def test_an_ensemble_folder_mixes_a_family_with_weights(data, train, tmp_path):
    """The cross-family mean of an ensemble of two and a family: each ensemble member a quarter,
    the family a half, as the session folds scored it."""
    names = ["gbm", "gbm_inv", "gbm_context"]
    fitted, dirs = zip(*(_saved(tmp_path, n, train, data) for n in names))
    folder = ensemble.save(tmp_path / "mix", list(dirs), names, weights=[0.25, 0.25, 0.5])
    loaded = ensemble.load_folder(folder)
    assert isinstance(loaded, ensemble.EnsemblePredictor) and loaded.names == names
    want = 0.25 * fitted[0].predict(data) + 0.25 * fitted[1].predict(data) + \
        0.5 * fitted[2].predict(data)
    np.testing.assert_allclose(loaded.predict(data), want, rtol=0, atol=1e-4)
    spec = json.loads((folder / ensemble.FILE).read_text())
    spec["members"][0]["weight"] = -1
    (folder / ensemble.FILE).write_text(json.dumps(spec))
    with pytest.raises(UserError, match="positive"):
        ensemble.load_folder(folder)


def test_a_broken_family_folder_is_a_clear_error(data, train, tmp_path):
    _, folder = _saved(tmp_path, "gbm", train, data)
    spec = json.loads((folder / family.FILE).read_text())
    (folder / family.FILE).write_text(json.dumps({**spec, "format": 99}))
    with pytest.raises(UserError, match="format 99") as e:
        family.load(folder)
    assert "eval_winners" in e.value.fix
    (folder / family.FILE).write_text(json.dumps({**spec, "family": "naive"}))
    with pytest.raises(UserError, match="not a gradient-boosting family"):
        family.load(folder)
    (folder / family.FILE).write_text(json.dumps({**spec, "keep": spec["keep"] + [True]}))
    with pytest.raises(UserError, match="does not fit"):
        family.load(folder)
    (folder / family.FILE).write_text("{not json")
    with pytest.raises(UserError, match="not a readable family"):
        family.load(folder)


def test_a_registered_family_loads_without_pickle_and_serves_tables(data, train, tmp_path,
                                                                     monkeypatch):
    from mlflow.tracking import MlflowClient

    from raysweep.serve import bounds
    from raysweep.serve.pyfunc import load_pyfunc_predictor, predict_frame, register_champion

    fitted, folder = _saved(tmp_path, "gbm_inv", train, data)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("fam", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp).info.run_id
    assert register_champion(folder, "fam", run, uri, scores={"test_de00_mean": 4.0}) == \
        "models:/fam@champion"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    served = load_pyfunc_predictor("models:/fam@champion", device="cpu")
    assert isinstance(served, family.FamilyModel) and served.calibration is None
    test = data.subset(data.indices("test"))
    np.testing.assert_allclose(served.predict(test), fitted.predict(test), rtol=0, atol=1e-4)
    # the pyfunc's tabular path: mean colour, metadata and ring columns are the whole input
    m = test.meta.astype(np.float64)
    frame = test.frame[["camera"]].assign(
        mean_L=test.mean_lab[:, 0], mean_a=test.mean_lab[:, 1], mean_b=test.mean_lab[:, 2],
        iso=2 ** m[:, 0], exposure_time_s=2 ** m[:, 1], brightness_ev=m[:, 2],
        exposure_bias_ev=m[:, 3], f_number=m[:, 4],
        **{n: test.ring[:, i] for i, n in enumerate(RING_NAMES)})  # gbm_inv reads the ring
    out = predict_frame(served, frame)
    np.testing.assert_allclose(out[["L", "a", "b"]].to_numpy(), fitted.predict(test), rtol=0,
                               atol=1e-3)
    assert np.isnan(out["de00_bound"]).all()  # no calibration.json written: no bound, not 0
    assert bounds.read(folder) is None
