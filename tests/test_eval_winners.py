"""eval_winners on a tiny sweep logged the way search logs one (raysweep.tracking.Tracker).

Three trials on one fake dataset (two image models, one tabular), trained with
raysweep.train.fit and logged as nested child runs: per-epoch metrics, params, tags, and the best
checkpoint under `checkpoint/`. The store is built once per module (SQLite, in a temp folder).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysweep.errors import UserError
from raysweep.evaluate import winners as eval_winners
from raysweep.evaluate.record import EvalSettings
from raysweep.tracking.store import Tracker
from raysweep.train import predictor
from tests.helpers.fakes import make_prepared
from tests.helpers.sweeps import default_store_in, log_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    with default_store_in(tmp_path_factory.mktemp("sweep")) as root:
        data = make_prepared(n=60, size=16, seed=2)
        logged = log_sweep(Tracker("unit", "sweep-1"), data, root / "ckpt")
        yield {"root": root, "data": data, **logged}


@pytest.fixture(scope="module")
def evaluated(sweep):
    return eval_winners.run_eval_winners(EvalSettings(
        experiment="unit", top_k=2, data=sweep["data"], out=sweep["root"] / "winners",
        n_boot=200, baseline_names=["naive", "root_poly", "gbm"]))


def test_val_split_reproduces_logged_val_metric(sweep):
    res = eval_winners.run_eval_winners(EvalSettings(
        parent_run=sweep["parent"], top_k=3, per_group=(), split="val", data=sweep["data"],
        out=sweep["root"] / "val_eval", log_run=False, n_boot=50, baseline_names=["naive"]))
    models = res.summary[res.summary["kind"] == "model"].set_index("run_id")
    assert len(models) == 3
    for run, fitres in sweep["trials"].values():
        logged = min(m["val_de00_mean"] for m in fitres.history)
        assert models.loc[run, "val_de00_mean"] == pytest.approx(logged, abs=1e-6)  # from MLflow
        assert models.loc[run, "mean"] == pytest.approx(logged, abs=1e-4)  # recomputed


def test_leaders_champion_and_report(sweep, evaluated):
    s = evaluated.summary
    models = s[s["kind"] == "model"]
    best_val = min(min(m["val_de00_mean"] for m in r.history)
                   for _, r in sweep["trials"].values())
    assert models.sort_values("val_de00_mean").iloc[0]["model"] == evaluated.champion
    assert models["val_de00_mean"].min() == pytest.approx(best_val, abs=1e-6)
    # top-2 plus the best of every group value: all three trials (each wins some group)
    assert len(models) == 3
    assert set(s.loc[s.kind == "baseline", "model"]) == {"baseline:naive", "baseline:root_poly",
                                                         "baseline:gbm"}
    out = evaluated.out_dir
    for name in ("report.md", "report.html", "predictions.csv", "summary.csv",
                 "breakdown.csv", "comparisons.csv", "hist_de00.png"):
        assert (out / name).is_file(), name
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".winners")]  # no temp left
    q = set(evaluated.comparisons["question"])
    assert {"metadata vs none", "fusion concat vs none", "champion vs best baseline"} <= q


def test_test_split_never_overlaps_training_tones(sweep, evaluated):
    data = sweep["data"]
    pred = pd.read_csv(evaluated.out_dir / "predictions.csv", dtype={"sample_id": str})
    split = dict(zip(data.sample_id, data.split))
    assert {split[s] for s in pred["sample_id"]} == {"test"}
    tone = dict(zip(data.sample_id, data.frame["tone_id"]))
    train_tones = {tone[s] for s in data.sample_id[data.split == "train"]}
    assert train_tones.isdisjoint({tone[s] for s in pred["sample_id"]})
    n_test = int((data.split == "test").sum())
    assert pred.groupby("model").size().eq(n_test).all()


def test_predictions_csv_matches_checkpoint(sweep, evaluated):
    run, fitres = sweep["trials"]["t_concat"]
    p = predictor.load(fitres.checkpoint_dir, device="cpu")
    data = sweep["data"]
    want = p.predict(data.subset(data.indices("test")))
    pred = pd.read_csv(evaluated.out_dir / "predictions.csv")
    name = evaluated.summary.set_index("run_id").loc[run, "model"]
    got = pred[pred["model"] == name][["pred_L", "pred_a", "pred_b"]].to_numpy()
    assert np.allclose(got, want, atol=1e-3)


def test_registry_round_trip_predicts_like_the_checkpoint(sweep, evaluated):
    from raysweep.serve.loading import load_predictor

    assert evaluated.model_uri == "models:/unit@champion"
    reg = load_predictor(evaluated.model_uri, device="cpu")
    champ_run = evaluated.summary.set_index("model").loc[evaluated.champion, "run_id"]
    ckpt_dir = next(r.checkpoint_dir for run, r in sweep["trials"].values() if run == champ_run)
    direct = predictor.load(ckpt_dir, device="cpu")
    data = sweep["data"]
    np.testing.assert_allclose(reg.predict(data), direct.predict(data), atol=1e-5)


def test_champion_calibration_coverage_and_registered_bound(sweep, evaluated):
    """The champion's bound is calibrated on validation, stored with it (report folder and the
    registered model) and its coverage on the test photos is in the report."""
    from raysweep.serve import bounds
    from raysweep.serve.loading import load_predictor

    out, data = evaluated.out_dir, sweep["data"]
    cal = bounds.read(out)
    assert cal is not None and cal.level == 0.9
    n_val = int((data.split == "val").sum())
    assert cal.info["n_val"] == n_val and cal.info["champion_run"]
    cov = pd.read_csv(out / "coverage.csv")
    assert cov.iloc[0]["dimension"] == "overall"
    assert cov.iloc[0]["n"] == int((data.split == "test").sum())
    assert {"camera", "skin_tone", "set_id"} <= set(cov["dimension"])
    trust = pd.read_csv(out / "trust.csv", dtype={"sample_id": str})
    assert set(trust["sample_id"]) == set(data.sample_id[data.split == "test"])
    assert (trust["covered"] == (trust["de00"] <= trust["de00_bound"])).all()
    md = (out / "report.md").read_text()
    assert "within their bound" in md and "reliability.png" in md
    assert (out / "reliability.png").is_file()
    reg = load_predictor(evaluated.model_uri, device="cpu")
    assert reg.calibration is not None and reg.calibration.scores == cal.scores
    from mlflow.tracking import MlflowClient

    from raysweep.tracking.store import tracking_uri

    # explicit store: MLflow's process-global default may point wherever an earlier test left it
    logged = MlflowClient(tracking_uri()).get_run(evaluated.eval_run_id).data.metrics
    assert logged["test_bound_coverage"] == pytest.approx(cov.iloc[0]["coverage"])


def test_no_coverage_on_the_split_that_calibrates(sweep):
    res = eval_winners.run_eval_winners(EvalSettings(
        parent_run=sweep["parent"], top_k=1, per_group=(), split="val", data=sweep["data"],
        out=sweep["root"] / "val_cov", log_run=False, n_boot=50, baseline_names=["naive"]))
    assert not (res.out_dir / "coverage.csv").exists()
    assert (res.out_dir / "calibration.json").is_file()
    assert "not reported on the validation split" in (res.out_dir / "report.md").read_text()


def test_evaluation_run_links_parent_and_holds_report(sweep, evaluated):
    from mlflow.tracking import MlflowClient

    from raysweep.tracking.store import tracking_uri

    client = MlflowClient(tracking_uri())
    run = client.get_run(evaluated.eval_run_id)
    assert run.data.tags["raysweep.parent_run"] == sweep["parent"]
    assert run.data.tags["raysweep.role"] == "evaluation"
    names = {a.path for a in client.list_artifacts(evaluated.eval_run_id, "report")}
    assert {"report/report.html", "report/predictions.csv"} <= names
    assert run.data.metrics["test_de00_mean"] == pytest.approx(
        evaluated.summary.set_index("model").loc[evaluated.champion, "mean"])


def test_mismatched_dataset_is_refused(sweep):
    other = make_prepared(n=60, size=16, seed=9)
    with pytest.raises(UserError, match="content_hash"):
        eval_winners.run_eval_winners(EvalSettings(
            experiment="unit", top_k=1, per_group=(), data=other, out=sweep["root"] / "bad",
            log_run=False, n_boot=20))
    assert not (sweep["root"] / "bad").exists()


def test_unknown_experiment_lists_valid(sweep):
    with pytest.raises(UserError, match="unit"):
        eval_winners.run_eval_winners(EvalSettings(experiment="nope", data=sweep["data"],
                                                   log_run=False))


@pytest.mark.slow  # re-trains leaders over session folds: 295 s at load 20-50, near the 300 s limit
def test_few_validation_sessions_crown_by_folds_over_sessions(sweep, monkeypatch):
    """One validation session selects noise: the top leaders are re-trained across sessions."""
    from raysweep.evaluate import selection

    data = make_prepared(n=60, size=16, seed=4)
    s = data.frame["set_id"].to_numpy()
    data.split = np.where(s == 1, "val", np.where(s == 2, "test", "train")).astype(str)
    data.frame["split"] = data.split
    data.info["split_id"] = "sessions-1"
    log_sweep(Tracker("unit-sessions", "sweep-s"), data, sweep["root"] / "ckpt_s")
    scored = []
    real = selection._fit_score

    def spy(cfg, d):
        scored.append(sorted(set(d.frame["set_id"].astype(str)[d.split == "val"])))
        assert "2" not in set(d.frame["set_id"].astype(str))  # the test session never selects
        return real(cfg, d)

    monkeypatch.setattr(selection, "_fit_score", spy)
    monkeypatch.setattr(selection.rescore, "__defaults__",
                        selection.rescore.__defaults__[:-1] + (spy,))
    res = eval_winners.run_eval_winners(EvalSettings(
        experiment="unit-sessions", top_k=3, data=data, out=sweep["root"] / "winners_s",
        n_boot=50, baseline_names=["naive"], log_run=False, select_folds=2, select_top=2))
    assert len(scored) == 4  # 2 leaders x 2 folds
    md = (res.out_dir / "report.md").read_text()
    assert "Selection across sessions" in md and "grouped k-fold over sessions" in md
    assert "1 capture session(s) that training never saw" in md
    folds = pd.read_csv(res.out_dir / "summary.csv")  # the champion is scored like any leader
    assert res.champion in set(folds["model"])
