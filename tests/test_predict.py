"""predict: a photo goes through exactly what `prepare` does, then through the model."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from raysweep import color, predict
from raysweep.data.pipeline import load_prepared
from raysweep.serve import inference, loading, output
from raysweep.train import predictor
from raysweep.train.loop import fit

META_COLS = ["camera", "make", "model", "exposure_time_s", "f_number", "iso", "brightness_ev",
             "exposure_bias_ev"]


def _synth(root, sets, tones, size=96):
    from raysweep.synth.context import GeneratorConfig
    from raysweep.synth.generate import generate

    return generate(root, GeneratorConfig(sets=sets, tones=tones, cameras=3, size=size),
                    progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    card = _synth(root / "syn", sets=3, tones=14)
    data = load_prepared(card, crop="adaptive_bg", size=32, progress=False)
    cfg = dict(backbone="smallcnn", width=8, image_size=32, epochs=2, batch_size=16,
               features="image+mean+meta", fusion="concat", device="cpu", meta_hidden=16)
    res = fit(cfg, data, checkpoint_dir=str(root / "ckpt"))
    return {"card": card, "data": data, "ckpt": res.checkpoint_dir, "root": root}


def _meta_csv(path, data, idx):
    rows = data.frame.iloc[idx]
    meta = rows[["image", *META_COLS]].rename(columns={"image": "photo"})
    meta.to_csv(path, index=False)
    return [str(data.info["card"]).rsplit("/", 1)[0] + "/" + r for r in rows["image"]]


def test_predict_matches_the_prepared_pipeline(trained, tmp_path):
    data, idx = trained["data"], np.arange(5)
    photos = _meta_csv(tmp_path / "meta.csv", data, idx)
    p = predictor.load(trained["ckpt"], device="cpu")
    want = p.predict(data.subset(idx))
    overrides = inference.read_meta_csv(str(tmp_path / "meta.csv"), photos)
    got = inference.predict_photos(p, [inference.read_photo(ph, 32) for ph in photos], overrides)
    np.testing.assert_allclose(got[["L", "a", "b"]].to_numpy(), want, atol=1e-4)
    assert list(got["camera"]) == list(data.camera[idx])
    # the model's inputs themselves, which a barely trained model might not show in its output
    photo_data, _ = inference.photos_to_prepared(
        [inference.read_photo(ph, 32) for ph in photos], "adaptive_bg", 32, overrides,
        p.stats.cameras)
    ref = data.subset(idx)
    np.testing.assert_array_equal(photo_data.images, ref.images)
    np.testing.assert_allclose(photo_data.mean_lab, ref.mean_lab, atol=1e-4)
    np.testing.assert_allclose(photo_data.meta, ref.meta, atol=1e-5)
    assert list(photo_data.device) == list(ref.device)


def test_cli_formats_and_exif_only(trained, capsys):
    data = trained["data"]
    photos = [str(trained["root"] / "syn" / r) for r in data.frame["image"][:3]]
    assert predict.main([*photos, "--model", trained["ckpt"], "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["photo"] for r in rows] == photos
    for r in rows:
        assert r["hex"].startswith("#") and len(r["hex"]) == 7
        assert r["ita_category"] in color.ITA_CATEGORIES
    # EXIF only (no --meta): the camera comes from Make/Model and maps onto the vocabulary
    assert [r["camera"] for r in rows] == list(data.camera[:3])
    assert predict.main([*photos, "--model", trained["ckpt"], "--format", "csv"]) == 0
    csv = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert list(csv.columns[:4]) == ["photo", "L", "a", "b"] and len(csv) == 3
    np.testing.assert_allclose(csv["L"], [r["L"] for r in rows], atol=1e-3)
    assert predict.main([photos[0], "--model", trained["ckpt"]]) == 0
    assert "ita_category" in capsys.readouterr().out


def test_unreadable_photo_is_a_clear_error(trained, tmp_path, capsys):
    from raysweep.errors import run_cli

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = str(trained["root"] / "syn" / trained["data"].frame["image"][0])
    assert run_cli(predict.main, [str(bad), "--model", trained["ckpt"]]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "Fix:" in err
    assert run_cli(predict.main, [str(tmp_path / "missing.jpg"), "--model", trained["ckpt"]]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    # batch mode keeps going past the bad one, and says so in the exit code
    assert run_cli(predict.main, [str(bad), good, "--model", trained["ckpt"], "--keep-going",
                                  "--format", "csv"]) == 1
    out = capsys.readouterr().out
    assert good in out and "broken.jpg" not in out


def test_unknown_camera_goes_to_the_unknown_bucket(trained, tmp_path, caplog):
    data = trained["data"]
    photos = _meta_csv(tmp_path / "meta.csv", data, np.arange(2))
    meta = pd.read_csv(tmp_path / "meta.csv")
    meta["camera"] = "Pixel 9 Pro"
    meta = meta.drop(columns=["make", "model"])
    p = predictor.load(trained["ckpt"], device="cpu")
    with caplog.at_level(logging.WARNING, logger="raysweep.predict"):
        out = inference.predict_photos(p, [inference.read_photo(ph, 32) for ph in photos],
                                     meta.drop(columns="photo"))
    assert "unknown-camera bucket" in caplog.text and "Pixel 9 Pro" in caplog.text
    assert out["notes"].str.contains("unknown camera").all()
    assert np.isfinite(out[["L", "a", "b"]].to_numpy()).all()


@pytest.fixture(scope="module")
def calibrated(trained, tmp_path_factory):
    """A copy of the fixture checkpoint with a calibration.json (plumbing, not statistics:
    calibrated on every non-training photo at 80% so that a few photos suffice)."""
    import shutil

    from raysweep.serve import bounds

    data = trained["data"]
    ckpt = tmp_path_factory.mktemp("calibrated") / "ckpt"
    shutil.copytree(trained["ckpt"], ckpt)
    p = predictor.load(ckpt, device="cpu")
    rest = data.subset(np.flatnonzero(data.split != "train"))
    cal = bounds.calibrate(rest, p.predict(rest), data.subset(data.indices("train")), level=0.8)
    bounds.write(cal, ckpt)
    return ckpt


def test_folder_input_writes_a_csv_with_bounds_flags_and_a_summary(trained, calibrated,
                                                                   tmp_path, capsys):
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    for r in trained["data"].frame["image"][:4]:
        shutil.copy(trained["root"] / "syn" / r, folder)
    out = tmp_path / "p.csv"
    assert predict.main([str(folder), "--model", str(calibrated), "--out", str(out)]) == 0
    got = pd.read_csv(out, keep_default_na=False)
    assert len(got) == 4 and (got["bound_level"] == 0.8).all()
    bound = got["de00_bound"].astype(float)
    assert np.isfinite(bound).all() and (bound > 0).all()
    assert {"flags", "unchecked", "unseen_camera", "iso_out_of_range"} <= set(got.columns)
    captured = capsys.readouterr()
    assert captured.out == ""  # a folder's table goes to the CSV; the summary to stderr
    assert "4 photos, " in captured.err and "flagged" in captured.err
    # another level from the same calibration: a wider bound at 95%
    assert predict.main([str(folder), "--model", str(calibrated), "--out", str(out),
                         "--level", "0.9"]) == 0
    assert (pd.read_csv(out)["de00_bound"] >= bound - 1e-6).all()


def test_manifest_input_flags_crafted_photos(trained, calibrated, tmp_path, capsys):
    data = trained["data"]
    rows = data.frame.iloc[:3]
    manifest = pd.DataFrame({"image": rows["image"], "camera": list(data.camera[:3]),
                             "iso": rows["iso"].astype(float)})
    manifest.loc[manifest.index[0], "camera"] = "Pixel 9 Pro"  # never seen in training
    manifest.loc[manifest.index[1], "iso"] = 16 * float(data.frame["iso"].max())
    path = trained["root"] / "syn" / "crafted.csv"
    manifest.to_csv(path, index=False)
    assert predict.main([str(path), "--model", str(calibrated), "--format", "json",
                         "--out", str(tmp_path / "p.csv")]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert "unseen_camera" in rows[0]["flags"] and isinstance(rows[0]["flags"], list)
    assert "iso_out_of_range" in rows[1]["flags"]
    assert "unseen_camera" in captured.err and "iso_out_of_range 1" in captured.err
    table = output.format_output(pd.read_csv(tmp_path / "p.csv", keep_default_na=False),
                                    "table")
    assert "<= " in table and "(80%, seen session)" in table  # the regime it holds for


def test_resolve_cameras():
    vocab = ["canon_eos_5d_mark_ii", "nikon_d5100"]
    cams, unknown = inference.resolve_cameras(
        np.array(["nikon_d5100", "NIKON-D5100", "Canon Canon EOS 5D Mark II", "Pixel"]), vocab)
    assert list(cams) == ["nikon_d5100", "nikon_d5100", "canon_eos_5d_mark_ii", "Pixel"]
    assert unknown == ["Pixel"]


def test_describe_hex_and_ita():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.6, 0.4, 0.2]], dtype=torch.float64)
    lab = color.srgb_to_lab(rgb).numpy()
    d = inference.describe(lab)
    assert list(d["hex"]) == ["#ffffff", "#ff0000", "#996633"]
    assert d["ita_category"][0] == color.ita_category(float(np.degrees(np.arctan2(
        lab[0, 0] - 50, lab[0, 2]))))


def test_meta_csv_errors(tmp_path):
    from raysweep.errors import UserError

    (tmp_path / "m.csv").write_text("file,iso\na.jpg,100\n")
    with pytest.raises(UserError, match="photo"):
        inference.read_meta_csv(str(tmp_path / "m.csv"), ["a.jpg"])
    (tmp_path / "m.csv").write_text("photo,isoo\na.jpg,100\n")
    with pytest.raises(UserError, match="isoo"):
        inference.read_meta_csv(str(tmp_path / "m.csv"), ["a.jpg"])


@pytest.mark.slow
def test_synthetic_photo_close_to_truth(tmp_path):
    """A model trained on the synthetic set reads held-out JPEGs better than the naive mean."""
    from raysweep.evaluate.baselines import make_baseline

    card = _synth(tmp_path / "syn", sets=6, tones=40)
    data = load_prepared(card, crop="adaptive_bg", size=32, progress=False)
    cfg = dict(backbone="smallcnn", width=16, image_size=32, epochs=25, batch_size=32, lr=3e-3,
               features="image+mean+meta", fusion="concat", device="cpu")
    res = fit(cfg, data, checkpoint_dir=str(tmp_path / "ckpt"))
    test = data.indices("test")
    photos = [str(tmp_path / "syn" / r) for r in data.frame["image"].iloc[test]]
    p = predictor.load(res.checkpoint_dir, device="cpu")
    out = inference.predict_photos(p, [inference.read_photo(ph, 32) for ph in photos])
    truth = torch.as_tensor(data.target[test], dtype=torch.float64)
    de = color.delta_e00(torch.as_tensor(out[["L", "a", "b"]].to_numpy()), truth).numpy()
    naive = make_baseline("naive").predict(data.subset(test))
    de_naive = color.delta_e00(torch.as_tensor(naive, dtype=torch.float64), truth).numpy()
    print(f"predict dE00 mean {de.mean():.2f} (naive {de_naive.mean():.2f}) on {len(test)} photos")
    assert de.mean() < 0.7 * de_naive.mean()
    assert np.median(de) < 6.0


@pytest.fixture(scope="module")
def registered(trained, tmp_path_factory):
    """The fixture checkpoint logged and registered as a pyfunc model (local SQLite store)."""
    from mlflow.tracking import MlflowClient

    from raysweep.serve import pyfunc

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("predict-unit", artifact_location=(root / "art").as_uri())
    run = client.create_run(exp).info.run_id
    model = pyfunc.register_champion(trained["ckpt"], "predict-unit", run, uri)
    return {"uri": uri, "model": model, "root": root}


def test_pyfunc_serves_photos_like_predict(trained, registered, monkeypatch):
    import base64

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    data = trained["data"]
    photos = [str(trained["root"] / "syn" / r) for r in data.frame["image"][:3]]
    model = mlflow.pyfunc.load_model(registered["model"])
    frame = pd.DataFrame({
        "image_b64": [base64.b64encode(open(p, "rb").read()).decode() for p in photos],
        "camera": list(data.camera[:3]), "iso": data.frame["iso"][:3].astype(float)})
    got = model.predict(frame)  # with the signature enforced, as `mlflow models serve` does
    assert list(got.columns[:6]) == ["L", "a", "b", "hex", "ita_deg", "ita_category"]
    # the trust columns: no calibration.json with this checkpoint, so no bound, but the flags
    assert {"de00_bound", "flags", "unseen_camera", "clipped_patch"} <= set(got.columns)
    assert got["de00_bound"].isna().all() and not got["unseen_camera"].any()
    p = predictor.load(trained["ckpt"], device="cpu")
    overrides = frame.drop(columns="image_b64")
    want = inference.predict_photos(p, [inference.read_photo(ph, 32) for ph in photos], overrides)
    np.testing.assert_allclose(got[["L", "a", "b"]].to_numpy(), want[["L", "a", "b"]].to_numpy(),
                               atol=1e-5)
    # the CLI accepts the registry URI too
    reg = loading.load_predictor(registered["model"], device="cpu")
    np.testing.assert_allclose(reg.predict(data), p.predict(data), atol=1e-6)


def test_pyfunc_rejects_bad_input(trained, registered, monkeypatch):
    import base64

    import mlflow

    from raysweep.errors import UserError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    model = mlflow.pyfunc.load_model(registered["model"])
    with pytest.raises(UserError, match="image_b64"):
        model.predict(pd.DataFrame({"iso": [100.0]}))
    with pytest.raises(UserError, match="base64"):
        model.predict(pd.DataFrame({"image_b64": ["%%% not base64"]}))
    # the photo path reads a number column as the tabular one does: text is not a number
    photo = (trained["root"] / "syn" / trained["data"].frame["image"][0]).read_bytes()
    with pytest.raises(UserError, match=r"iso='ISO 100' in row 1 is not a number"):
        model.predict(pd.DataFrame({"image_b64": [base64.b64encode(photo).decode()],
                                    "iso": ["ISO 100"]}))
    with pytest.raises(UserError, match="MLflow model"):
        loading.load_predictor("models:/no-such-model@champion")


def _two_regime_checkpoint(ckpt, data, dest):
    """A copy of `ckpt` whose calibration.json holds a new-session bound and, beside it, a
    seen-sessions one (plumbing, not statistics: the new-session scores are the seen ones
    tripled, so a photo's two bounds differ by exactly 3x)."""
    import dataclasses
    import shutil

    from raysweep.serve import bounds

    shutil.copytree(ckpt, dest)
    rest = data.subset(np.flatnonzero(data.split != "train"))
    seen = bounds.calibrate(rest, predictor.load(dest, device="cpu").predict(rest),
                            data.subset(data.indices("train")), level=0.8)
    assert seen.regime == bounds.SEEN and seen.sessions  # a tone split: val sessions trained on
    bounds.write(dataclasses.replace(seen, regime=bounds.NEW, seen=seen,
                                     scores=[3 * s for s in seen.scores]), dest)
    return dest, seen.sessions[0]


def test_pyfunc_takes_the_session_and_names_the_bound_regime(trained, tmp_path, monkeypatch):
    """Through MLflow's schema enforcement (`mlflow models serve` uses the same): a row whose
    set_id is a training session gets the seen-sessions bound, any other row the new-session
    one, and the output says which; on the image path and on the tabular one."""
    import base64

    import mlflow
    from mlflow.tracking import MlflowClient

    from raysweep.serve import bounds, pyfunc

    data = trained["data"]
    tab = fit(dict(features="mean+meta", fusion="none", epochs=1, batch_size=16, device="cpu",
                   meta_hidden=16), data, checkpoint_dir=str(tmp_path / "tab")).checkpoint_dir
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    exp = MlflowClient(uri).create_experiment("regimes", (tmp_path / "art").as_uri())
    models = {}
    for kind, ckpt in (("image", trained["ckpt"]), ("tabular", tab)):
        folder, known = _two_regime_checkpoint(ckpt, data, tmp_path / f"cal_{kind}")
        models[kind] = pyfunc.register_champion(
            folder, f"regimes-{kind}", MlflowClient(uri).create_run(exp).info.run_id, uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    idx = [0, 1, 2, 0]  # the first photo twice: once in its training session, once not
    rows = data.frame.iloc[idx].reset_index(drop=True)
    sessions = {"set_id": [f" {known} ", "elsewhere", None, "elsewhere"]}
    image = pd.DataFrame({"image_b64": [
        base64.b64encode((trained["root"] / "syn" / r).read_bytes()).decode()
        for r in rows["image"]], "camera": rows["camera"], **sessions})
    table = rows[META_COLS].assign(mean_L=data.mean_lab[idx, 0], mean_a=data.mean_lab[idx, 1],
                                   mean_b=data.mean_lab[idx, 2], **sessions)
    for kind, frame in (("image", image), ("tabular", table)):
        got = mlflow.pyfunc.load_model(models[kind]).predict(frame)
        assert list(got.columns) == [c.name for c in pyfunc.signature().outputs.inputs]
        assert list(got["bound_regime"]) == [bounds.SEEN, bounds.NEW, bounds.NEW, bounds.NEW]
        bound = got["de00_bound"].to_numpy()
        assert np.isfinite(bound).all()
        np.testing.assert_allclose(bound[3], 3 * bound[0], rtol=1e-5)


def test_cli_and_pyfunc_on_an_ensemble_champion(trained, tmp_path, capsys, monkeypatch):
    """An ensemble (image + tabular member) registered as the champion: `predict` and the
    pyfunc both give the members' mean, with the bound calibrated on the members' spread."""
    import base64

    import mlflow
    from mlflow.tracking import MlflowClient

    from raysweep.serve import bounds, ensemble, pyfunc

    data = trained["data"]
    tab = fit(dict(features="mean+meta", fusion="none", epochs=2, batch_size=16, device="cpu",
                   meta_hidden=16), data, checkpoint_dir=str(tmp_path / "tab")).checkpoint_dir
    folder = ensemble.save(tmp_path / "ens", [trained["ckpt"], tab], ["image", "tabular"])
    ens = ensemble.load(folder, device="cpu")
    rest = data.subset(np.flatnonzero(data.split != "train"))
    bounds.write(bounds.calibrate(rest, ens.predict(rest), data.subset(data.indices("train")),
                                  level=0.8, extras=bounds.Extras(spread=ens.spread(rest))), folder)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    exp = MlflowClient(uri).create_experiment("ens-predict", (tmp_path / "art").as_uri())
    model = pyfunc.register_champion(folder, "ens-predict", MlflowClient(uri).create_run(exp)
                                     .info.run_id, uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    photos = [str(trained["root"] / "syn" / r) for r in data.frame["image"][:3]]
    members = [predictor.load(trained["ckpt"], device="cpu"), predictor.load(tab, device="cpu")]
    read = [inference.read_photo(ph, 32) for ph in photos]
    want = np.mean([inference.predict_photos(m, read)[["L", "a", "b"]].to_numpy()
                    for m in members], axis=0)
    assert predict.main([*photos, "--model", model, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose([[r["L"], r["a"], r["b"]] for r in rows], want, atol=1e-3)
    assert all(np.isfinite(r["de00_bound"]) for r in rows)
    served = mlflow.pyfunc.load_model(model).predict(pd.DataFrame({
        "image_b64": [base64.b64encode(open(p, "rb").read()).decode() for p in photos]}))
    np.testing.assert_allclose(served[["L", "a", "b"]].to_numpy(), want, atol=1e-3)
    assert np.isfinite(served["de00_bound"]).all()


def test_predict_serves_a_crowned_gradient_boosting_family(trained, tmp_path, capsys):
    """The family folder eval_winners writes for a tree champion: `predict` reads photos for it
    as for any model (ring statistics included) and returns what the fitted family predicts."""
    from raysweep.evaluate import baselines
    from raysweep.serve import family

    data, idx = trained["data"], np.arange(4)
    fitted = baselines.make_baseline("gbm_inv").fit(data.subset(data.indices("train")))
    folder = family.save(tmp_path / "fam", "gbm_inv", fitted, data.info)
    photos = _meta_csv(tmp_path / "meta.csv", data, idx)
    assert predict.main([*photos, "--model", str(folder), "--meta", str(tmp_path / "meta.csv"),
                         "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    got = np.array([[r["L"], r["a"], r["b"]] for r in rows])
    np.testing.assert_allclose(got, fitted.predict(data.subset(idx)), atol=1e-3)
    assert [r["camera"] for r in rows] == list(data.camera[idx])


def test_a_spreadsheet_without_photos_is_predicted_row_by_row(trained, tmp_path, capsys):
    """The tabular path of `predict` (issue #22: real phone data is a spreadsheet of measured
    patch colours and EXIF, no photos, no ring_* columns): a CSV with mean_L/a/b and no photo
    column is served by a tabular model as the model predicts the same rows, each with its
    new-session bound; a row naming a training session is told why it still gets that bound.
    An image model refuses the sheet, and a sheet mixed with photos is refused."""
    import dataclasses
    import shutil

    from raysweep.errors import UserError
    from raysweep.serve import bounds

    data, idx = trained["data"], np.arange(4)
    ckpt = fit(dict(features="mean+meta", fusion="none", epochs=1, batch_size=16, device="cpu",
                    meta_hidden=16), data, checkpoint_dir=str(tmp_path / "tab")).checkpoint_dir
    model = predictor.load(ckpt, device="cpu")
    rest = data.subset(np.flatnonzero(data.split != "train"))
    seen = bounds.calibrate(rest, model.predict(rest), data.subset(data.indices("train")), 0.8)
    # a split by session keeps no seen-sessions bound: only the new-session one (plumbing)
    bounds.write(dataclasses.replace(seen, regime=bounds.NEW, seen=None), ckpt)
    rows = data.frame.iloc[idx][["sample_id", *META_COLS, "set_id"]].assign(
        mean_L=data.mean_lab[idx, 0], mean_a=data.mean_lab[idx, 1], mean_b=data.mean_lab[idx, 2])
    rows.loc[rows.index[0], "set_id"] = "a-new-session"
    sheet = tmp_path / "sheet.csv"
    rows.to_csv(sheet, index=False)
    assert predict.main([str(sheet), "--model", str(ckpt), "--format", "json",
                         "--out", str(tmp_path / "p.csv")]) == 0
    captured = capsys.readouterr()
    got = json.loads(captured.out)
    assert [r["photo"] for r in got] == list(rows["sample_id"])
    np.testing.assert_allclose([[r["L"], r["a"], r["b"]] for r in got],
                               model.predict(data.subset(idx)), atol=1e-3)
    assert all(np.isfinite(r["de00_bound"]) and r["bound_regime"] == bounds.NEW for r in got)
    assert "patch_not_found" in got[0]["unchecked"]  # no photo: the photo's checks not made
    assert "3 of them name a session the model trained on" in captured.err
    assert len(pd.read_csv(tmp_path / "p.csv")) == 4
    with pytest.raises(UserError, match="reads photos"):
        predict.main([str(sheet), "--model", str(trained["ckpt"])])
    photo = shutil.copy(trained["root"] / "syn" / data.frame["image"][0], tmp_path)
    with pytest.raises(UserError, match="mix photos and spreadsheet rows"):
        predict.main([str(sheet), str(photo), "--model", str(ckpt)])


@pytest.fixture(scope="module")
def tabular(trained, tmp_path_factory):
    """A tabular checkpoint (mean+meta) registered as a pyfunc model, as a phone sheet's
    champion is."""
    from mlflow.tracking import MlflowClient

    from raysweep.serve import pyfunc

    root = tmp_path_factory.mktemp("tabular")
    ckpt = fit(dict(features="mean+meta", fusion="none", epochs=1, batch_size=16, device="cpu",
                    meta_hidden=16), trained["data"], checkpoint_dir=str(root / "tab")
               ).checkpoint_dir
    uri = f"sqlite:///{root / 'mlruns.db'}"
    exp = MlflowClient(uri).create_experiment("sheet", (root / "art").as_uri())
    model = pyfunc.register_champion(ckpt, "sheet", MlflowClient(uri).create_run(exp)
                                     .info.run_id, uri)
    return {"ckpt": ckpt, "uri": uri, "model": model}


def _integer_sheet(data, path, n=6):
    """An ordinary phone sheet as pd.read_csv gives it back: whole-number iso and
    exposure_bias_ev (int64), sessions numbered 1..n (int64), an empty make (float NaN)."""
    idx = np.arange(n)
    rows = data.frame.iloc[idx][["sample_id", *META_COLS]].assign(
        mean_L=data.mean_lab[idx, 0], mean_a=data.mean_lab[idx, 1], mean_b=data.mean_lab[idx, 2],
        set_id=np.arange(1, n + 1), make="")
    rows["iso"] = rows["iso"].round().astype(int)
    rows["exposure_bias_ev"] = rows["exposure_bias_ev"].round().astype(int)
    rows.to_csv(path, index=False)
    sheet = pd.read_csv(path)
    assert sheet["iso"].dtype == np.int64 and sheet["exposure_bias_ev"].dtype == np.int64
    assert sheet["set_id"].dtype == np.int64 and sheet["make"].isna().all()
    return sheet


def test_the_pyfunc_takes_a_sheet_as_pandas_reads_it(trained, tabular, tmp_path, monkeypatch):
    """Through MLflow's schema enforcement (what `mlflow models predict -t csv` and `serve`
    do): a sheet read by pd.read_csv, integer columns and an empty one included, predicts what
    the same rows give as floats (the signature's double columns refused int64). Text in a
    number column is a UserError naming the column and row, not a silently missing value; a
    shutter speed written 1/60 is a number, as `prepare` reads it."""
    import mlflow

    from raysweep.errors import UserError
    from raysweep.serve import pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tabular["uri"])
    served = mlflow.pyfunc.load_model(tabular["model"])
    sheet = _integer_sheet(trained["data"], tmp_path / "sheet.csv").drop(columns="sample_id")
    floats = sheet.astype({"iso": float, "exposure_bias_ev": float, "set_id": str})
    got = served.predict(sheet)
    want = inference.predict_rows(predictor.load(tabular["ckpt"], device="cpu"), floats)
    np.testing.assert_allclose(got[["L", "a", "b"]].to_numpy(),
                               want[["L", "a", "b"]].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(served.predict(floats)[["L", "a", "b"]].to_numpy(),
                               got[["L", "a", "b"]].to_numpy(), atol=1e-6)
    fraction = served.predict(floats.assign(exposure_time_s="1/60"))
    np.testing.assert_allclose(fraction[["L", "a", "b"]].to_numpy(), served.predict(
        floats.assign(exposure_time_s=1 / 60))[["L", "a", "b"]].to_numpy(), atol=1e-6)
    text = sheet.astype({"iso": object})
    text.loc[2, "iso"] = "ISO 100"
    with pytest.raises(UserError, match=r"iso='ISO 100' in row 3 is not a number.*Fix: write iso"):
        served.predict(text)
    with pytest.raises(UserError, match=r"iso='ISO 100' in row 3"):
        pyfunc.predict_frame(predictor.load(tabular["ckpt"], device="cpu"), text)


def test_predict_refuses_text_in_a_number_column_of_a_sheet(trained, tabular, tmp_path):
    """`predict SHEET.csv` (and a sheet's dataset.yaml) stops on text in a number column,
    naming the column and the row, where the value used to become missing unnoticed; the
    same sheet with whole numbers predicts."""
    from raysweep.errors import UserError

    data = trained["data"]
    sheet = _integer_sheet(data, tmp_path / "sheet.csv")
    out = str(tmp_path / "p.csv")
    assert predict.main([str(tmp_path / "sheet.csv"), "--model", tabular["ckpt"], "--out", out,
                         "--format", "json"]) == 0
    sheet = sheet.astype({"f_number": object})
    sheet.loc[1, "f_number"] = "f/1.8"
    sheet.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(UserError, match=r"f_number='f/1.8' in row 2 \(sample_id "):
        predict.main([str(tmp_path / "bad.csv"), "--model", tabular["ckpt"], "--out", out])
    card = tmp_path / "card"
    card.mkdir()
    idx = np.arange(len(sheet))
    sheet.assign(target_L=data.target[idx, 0], target_a=data.target[idx, 1],
                 target_b=data.target[idx, 2]).to_csv(card / "sheet.csv", index=False)
    (card / "dataset.yaml").write_text("manifest: sheet.csv\n")
    with pytest.raises(UserError, match=r"row 2 \(sample_id .*\): f_number='f/1.8' is not a"):
        predict.main([str(card / "dataset.yaml"), "--model", tabular["ckpt"], "--out", out])


def test_sessions_numbered_with_blanks_keep_their_ids():
    """pandas reads sessions 1..n from a column with blanks as 1.0, 2.0, ...: the row must still
    name session "1" (as the manifest read it at training time), or a photo of a training
    session would get the new-session bound."""
    from raysweep.data.manifest import as_text
    from raysweep.serve.inference import rows_to_prepared

    assert [as_text(v) for v in (1.0, np.float64(12.0), 2.5, " s3 ", None, np.nan, 7)] == [
        "1", "12", "2.5", "s3", "", "", "7"]
    rows = pd.DataFrame({"mean_L": [50.0, 60.0], "mean_a": [10.0, 11.0], "mean_b": [15.0, 16.0],
                         "set_id": [1.0, np.nan]})
    data, _ = rows_to_prepared(rows)
    assert list(data.frame["set_id"]) == ["1", ""]
