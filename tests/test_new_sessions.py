"""The two regimes of the error bound on a generated set whose light changes from session to
session: a bound calibrated on seen sessions and one calibrated on unseen sessions (cross-conformal
over session folds) differ, and only the new-session bound holds its level on new sessions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from raysweep.data.prepared import META_NAMES, Prepared
from raysweep.evaluate import coverage, selection, stats
from raysweep.serve import bounds

SESSIONS, TONES, CAMERAS = 18, 24, 3
LIGHT_SD = 4.0  # Lab units a session's light moves the photographed colour
NOISE_SD = 0.6  # per photo


def lit_sessions(seed: int, held: int = 4, by: str = "set_id") -> Prepared:
    """Photos of TONES tones in each of SESSIONS sessions; each session's light adds its own
    offset to the measured patch colour. by="set_id": `held` sessions are test, 2 val; by
    "tone_id": a quarter of the tones are test and val, in every session."""
    rng = np.random.default_rng(seed)
    s, t = np.divmod(np.arange(SESSIONS * TONES), TONES)
    tone_lab = np.c_[rng.uniform(30, 75, TONES), rng.uniform(5, 20, TONES), rng.uniform(5, 30, TONES)]
    light = rng.normal(0, LIGHT_SD, (SESSIONS, 3))
    target = tone_lab[t]
    measured = target + light[s] + rng.normal(0, NOISE_SD, target.shape)
    if by == "set_id":
        order = rng.permutation(SESSIONS)
        # every camera keeps sessions in training: held-out sessions are drawn across cameras
        split = np.where(np.isin(s, order[:held]), "test",
                         np.where(np.isin(s, order[held:held + 2]), "val", "train"))
    else:
        ts = rng.permutation(TONES)
        split = np.where(np.isin(t, ts[:6]), "test", np.where(np.isin(t, ts[6:12]), "val", "train"))
    meta = np.full((len(s), len(META_NAMES)), np.nan, np.float32)
    meta[:, META_NAMES.index("log2_iso")] = 7 + rng.normal(0, 0.3, len(s))
    camera = np.array([f"cam{x % CAMERAS}" for x in s])
    frame = pd.DataFrame({"sample_id": [f"p{i}" for i in range(len(s))], "set_id": s.astype(str),
                          "tone_id": t.astype(str), "camera": camera, "split": split})
    return Prepared(sample_id=frame["sample_id"].to_numpy(), images=None,
                    mean_lab=measured.astype(np.float32), meta=meta, camera=camera,
                    device=camera, target=target.astype(np.float32), split=split.astype(str),
                    frame=frame, info={"content_hash": f"lit{seed}", "split_id": by})


def session_corrector(cfg, d: Prepared):
    """A model that learns each training session's light offset: exact for a seen session, the
    mean offset for one it never saw. Returns (validation dE00, validation predictions)."""
    sid = d.frame["set_id"].to_numpy()
    tr = d.split == "train"
    off = pd.DataFrame(d.mean_lab[tr] - d.target[tr]).groupby(sid[tr]).mean()
    val = d.indices("val")
    known = off.reindex(sid[val]).to_numpy()
    known = np.where(np.isfinite(known), known, off.to_numpy().mean(0))
    pred = d.mean_lab[val] - known
    return float(stats.errors_of(pred, d.target[val])[0].mean()), pred


def _bounds_on(data: Prepared, scaled=None):
    """(new-session bound, out-of-fold predictions, test rows, test predictions of the full
    model); `scaled` as calibrate_sessions takes it."""
    train = data.subset(data.indices("train"))
    full = data.subset(np.flatnonzero(data.split != "val"))  # the model: trained on train
    full.split = np.where(full.split == "test", "val", full.split).astype(str)
    _, pred_test = session_corrector(None, full)
    oof = selection.session_oof(None, data, k=4, seed=0, fit_score=session_corrector)
    new = bounds.calibrate_sessions(data, oof, train, level=0.9, seed=0, scaled=scaled)
    return new, oof, data.subset(data.indices("test")), pred_test


def test_seen_and_new_session_bounds_differ_and_the_new_one_holds_on_new_sessions():
    covered_new, covered_seen, ratio = [], [], []
    for seed in range(6):
        tone_split = lit_sessions(seed, by="tone_id")
        val = tone_split.subset(tone_split.indices("val"))
        _, pv = session_corrector(None, tone_split)
        seen = bounds.calibrate(val, pv, tone_split.subset(tone_split.indices("train")), 0.9)
        assert seen.regime == bounds.SEEN
        new, oof, test, pt = _bounds_on(lit_sessions(seed))
        assert new.regime == bounds.NEW and new.info["n_cal"] == len(oof.rows)
        # out-of-fold rows are train + val photos of held-out sessions, never a test photo
        assert set(lit_sessions(seed).split[oof.rows]) <= {"train", "val"}
        err = stats.errors_of(pt, test.target)[0]
        covered_new.append(np.mean(err <= new.bound(test, pt)))
        covered_seen.append(np.mean(err <= seen.bound(test, pt)))
        ratio.append(np.median(new.bound(test, pt)) / np.median(seen.bound(test, pt)))
    assert np.median(ratio) > 2.0  # a new session's light is the larger error
    assert np.mean(covered_new) >= 0.85, covered_new
    assert np.mean(covered_seen) < 0.6, covered_seen  # the seen bound fails on new sessions


def test_the_new_session_bound_covers_its_level_on_the_folds_own_errors():
    """Cross-conformal at 90%, not more: each session fold, covered by the bound calibrated on
    the other folds' out-of-fold errors, is covered about 90% of the time (mean of 6 generated
    sets). Dividing the sessions' weight by m + 1 (one split's finite-sample guarantee) put the
    quantile at 97% of the errors: these folds were covered 95.7% of the time."""
    covered = []
    for seed in range(6):
        data = lit_sessions(seed)
        train = data.subset(data.indices("train"))
        oof = selection.session_oof(None, data, k=4, seed=0, fit_score=session_corrector)
        for j in range(len(oof.folds)):
            m = oof.fold == j
            cal = bounds.calibrate_sessions(data, oof.without(j), train, 0.9, scaled=False)
            held = data.subset(oof.rows[m])
            err = stats.errors_of(oof.pred[m], held.target)[0]
            covered.append(np.mean(err <= cal.bound(held, oof.pred[m])))
    assert 0.86 <= np.mean(covered) <= 0.94, np.round(covered, 2)


def test_calibration_file_keeps_both_bounds_and_picks_by_session(tmp_path):
    data = lit_sessions(0, by="tone_id")
    train, val = data.subset(data.indices("train")), data.subset(data.indices("val"))
    _, pv = session_corrector(None, data)
    seen = bounds.calibrate(val, pv, train, 0.9)
    oof = selection.session_oof(None, data, k=4, seed=0, fit_score=session_corrector)
    cal = bounds.calibrate_sessions(data, oof, train, 0.9, extras=bounds.Extras(seen=seen))
    back = bounds.read(bounds.write(cal, tmp_path).parent)
    assert back.regime == bounds.NEW and back.seen.regime == bounds.SEEN
    assert back.groups is not None and len(back.groups["cell"]) == len(back.scores)
    assert back.sessions == sorted(set(train.frame["set_id"]))
    # a photo naming a training session gets the seen bound, one naming none the new bound
    rows = val.subset(np.arange(4))
    unknown = rows.subset(np.arange(4))
    unknown.frame = unknown.frame.assign(set_id=["", "elsewhere", "", ""])
    assert list(back.regimes(rows)) == [bounds.SEEN] * 4
    assert list(back.regimes(unknown)) == [bounds.NEW] * 4
    assert back.bound(unknown, pv[:4]).mean() > 2 * back.bound(rows, pv[:4]).mean()
    # the new-session bound's per-group quantiles survive the file
    np.testing.assert_allclose(back.bound(unknown, pv[:4]), cal.bound(unknown, pv[:4]), rtol=1e-5)


def test_cluster_bootstrap_is_wider_than_the_photo_bootstrap_when_sessions_share_errors():
    rng = np.random.default_rng(0)
    s, t = np.divmod(np.arange(12 * 40), 40)
    covered = (rng.random(12)[s] + 0.1 * rng.random(len(s)) > 0.3).astype(float)
    _, plo, phi = stats.bootstrap_ci(covered, n_boot=500, seed=0)
    point, lo, hi = stats.cluster_bootstrap_ci(covered, s, t, n_boot=500, seed=0)
    assert point == pytest.approx(covered.mean())
    assert (hi - lo) > 2 * (phi - plo)
    t = coverage.coverage_table(np.zeros(len(s)), covered, {"set_id": s}, 0.9, 200, 0, (s, t))
    assert len(t) == 13 and (t["coverage"] == 1.0).all()


def test_an_ensemble_is_scored_on_its_members_folds_and_predict_names_the_regime():
    from raysweep.serve import output

    data = lit_sessions(1)
    a = selection.session_oof(None, data, k=4, seed=0, fit_score=session_corrector)
    b = dataclasses.replace(a, pred=a.pred + 1.0)
    ens = selection.ensemble_oof([a, b])
    np.testing.assert_allclose(ens.pred, a.pred + 0.5)
    other = selection.session_oof(None, data, k=3, seed=0, fit_score=session_corrector)
    assert selection.ensemble_oof([a, other]) is None  # other folds: no common score
    assert selection.split_regime(data).startswith("new sessions")
    assert selection.split_regime(lit_sessions(1, by="tone_id")).startswith("seen sessions")
    out = pd.DataFrame({"photo": ["x.jpg", "y.jpg"], "L": [50.0, 60.0], "a": [10.0, 11.0],
                        "b": [15.0, 16.0], "hex": ["#aa8866", "#bb9977"], "ita_deg": [30.0, 40.0],
                        "ita_category": ["tan", "light"], "camera": ["c", "c"], "notes": ["", ""],
                        "de00_bound": [4.2, 1.5], "bound_level": [0.9, 0.9],
                        "bound_regime": [bounds.NEW, bounds.SEEN], "flags": ["", ""],
                        "unchecked": ["", ""]})
    table = output.format_output(out, "table")
    assert "<= 4.20 (90%, new session)" in table and "<= 1.50 (90%, seen session)" in table
    line = bounds.regime_line(out["bound_regime"])
    assert "1 photo: a NEW capture session" in line and "trained on" in line


def _one_camera_harder(seed: int, factor: float = 4.0) -> Prepared:
    """lit_sessions where the sessions of cam0 have `factor` times the light offset (a camera
    whose new sessions err more: its white balance drifts more)."""
    data = lit_sessions(seed)
    s = data.frame["set_id"].astype(int).to_numpy()
    hard = data.camera == "cam0"
    offset = data.mean_lab - data.target
    data.mean_lab = np.where(hard[:, None], data.target + factor * offset,
                             data.mean_lab).astype(np.float32)
    assert len(set(s[hard])) >= 4  # the camera keeps sessions in every fold's training
    return data


@pytest.mark.slow  # six generated splits, three bounds each
def test_group_bound_is_wider_for_the_harder_camera_and_holds_there():
    """The folds choose a bound that knows the camera (group or scaled) in half the draws or more,
    and the group bound
    (sigma by camera and predicted ITA group) gives the camera whose new sessions err more a
    wider bound whose coverage reaches the level there, where one constant bound over all
    cameras falls short."""
    cov_group, cov_const, width, aware = [], [], [], []
    for seed in range(6):
        data = _one_camera_harder(seed)
        chosen, oof, test, pt = _bounds_on(data, scaled="folds")
        aware.append(not chosen.info["method"].startswith("constant"))
        train = data.subset(data.indices("train"))
        new = bounds.calibrate_sessions(data, oof, train, 0.9, seed=0, scaled="group")
        assert new.info["method"].startswith("group")
        const = bounds.calibrate_sessions(data, oof, train, 0.9, seed=0, scaled=False)
        err = stats.errors_of(pt, test.target)[0]
        hard = test.camera == "cam0"
        b, c = new.bound(test, pt), const.bound(test, pt)
        width.append(np.median(b[hard]) / np.median(b[~hard]))
        cov_group.append(np.mean(err[hard] <= b[hard]))
        cov_const.append(np.mean(err[hard] <= c[hard]))
    # the folds see the camera in half the draws or more (18 sessions): 4 of 6 when one lift
    # served every ITA group, 3 of 6 since each group is lifted on its own toward every camera at
    # 85%, which brings the constant bound's fold charge nearer the group one's
    assert sum(aware) >= 3, aware
    assert np.nanmedian(width) > 2.0, width
    assert np.nanmean(cov_group) >= 0.85, cov_group
    assert np.nanmean(cov_const) < np.nanmean(cov_group) - 0.1, (cov_const, cov_group)


def test_the_folds_crown_a_gradient_boosting_family_or_the_cross_family_blend():
    """crown_on_folds crowns a baseline family when its out-of-fold error is the lowest, the
    cross-family blend when that is (weights chosen on the folds, among the best two
    families), and the learned leader on a tie; family_oof runs gbm on the same session folds
    (root_poly here: the same path as gbm, a fraction of its cost)."""
    data = lit_sessions(2)
    leader = selection.session_oof(None, data, k=4, seed=0, fit_score=session_corrector)
    fams = selection.family_oof(data, leader.folds, ("root_poly",))
    assert list(fams) == ["baseline:root_poly"] and fams["baseline:root_poly"].folds == leader.folds
    np.testing.assert_array_equal(fams["baseline:root_poly"].rows, leader.rows)
    exact = dataclasses.replace(leader, pred=data.target[leader.rows].astype(np.float64))

    def off(by):  # the exact answer moved by `by` in L, a and b
        return dataclasses.replace(exact, pred=exact.pred + by)

    fc = selection.crown_on_folds({"nn": off(3.0), "baseline:gbm": exact}, data, ["nn"])
    assert fc.champion == "baseline:gbm" and fc.fold_leader == "nn", fc.line
    # errors of opposite sign and equal size: the equal-weight blend is better than either
    fc = selection.crown_on_folds({"nn": off(3.0), "baseline:gbm": off(-3.0)}, data, ["nn"])
    assert fc.champion == "blend of 0.5 nn + 0.5 baseline:gbm", fc.line
    assert fc.members[fc.champion] == ["nn", "baseline:gbm"]
    assert fc.weights[fc.champion] == [0.5, 0.5]
    assert fc.cv[fc.champion] < min(fc.cv["nn"], fc.cv["baseline:gbm"])
    # unequal errors: the weights follow their sizes (0.7 x 3 = 0.3 x 7); a far third family
    # may join the blend but stays out
    fc = selection.crown_on_folds({"nn": off(3.0), "baseline:gbm": off(-7.0),
                                   "baseline:x": off(40.0), "baseline:y": off(41.0)}, data, ["nn"])
    assert fc.champion == "blend of 0.7 nn + 0.3 baseline:gbm", fc.line
    np.testing.assert_allclose(fc.oof[fc.champion].pred, exact.pred + 0.7 * 3.0 - 0.3 * 7.0)
    fc = selection.crown_on_folds({"nn": leader, "baseline:gbm": leader}, data, ["nn"])
    assert fc.champion == "nn" and not fc.members  # a tie: the learned one, no blend of equals


def test_a_spreadsheet_without_ring_columns_runs_the_same_crowning_and_serves_it(tmp_path):
    """The real-data path (a table of patch colours and EXIF, no ring_* columns): the folds run
    every family the data can feed (gbm_context needs the ring: skipped, not failed), the
    session-invariant families fall back to the patch and camera, the blend is scored on the
    same folds, and a crowned family folder serves what the fitted family predicted."""
    from raysweep.evaluate import baselines
    from raysweep.serve import ensemble, family

    data = lit_sessions(4)
    assert data.ring is None
    leader = selection.session_oof(None, data, k=4, seed=0, fit_score=session_corrector)
    fams = selection.family_oof(data, leader.folds)
    assert set(fams) == {f"baseline:{n}" for n in selection.FAMILIES} - {"baseline:gbm_context"}
    fc = selection.crown_on_folds({"nn": leader, **fams}, data, ["nn"])
    assert all(np.isfinite(v) for v in fc.cv.values()), fc.line
    train, test = data.subset(data.indices("train")), data.subset(data.indices("test"))
    fitted = baselines.make_baseline("gbm_inv").fit(train)
    served = ensemble.load_folder(family.save(tmp_path / "gbm_inv", "gbm_inv", fitted, data.info))
    np.testing.assert_allclose(served.predict(test), fitted.predict(test), atol=1e-4)


def test_blend_weights_are_tenths_on_the_simplex():
    assert len(list(selection._compositions(10, 3))) == 66
    assert next(selection._compositions(10, 3)) == (10, 0, 0)  # ties keep the first part
    assert all(sum(w) == 10 for w in selection._compositions(10, 3))


@pytest.mark.slow  # trains a 3-trial sweep and re-trains its leaders on 2 session folds
@pytest.mark.timeout(1800)  # 16 min on the shared 2-core machine at load 10-25 (its report included)
def test_eval_winners_crowns_gradient_boosting_when_the_session_folds_prefer_it(tmp_path,
                                                                               monkeypatch):
    """A family that the folds score best is the champion of eval_winners: scored on the split,
    its bound calibrated on ITS out-of-fold errors, reported, and kept as a model folder that
    `predict` serves (raysweep.serve.family), its bound with it.
    The family's fold fits are replaced by exact answers so that the folds must prefer it."""
    from raysweep.evaluate import winners
    from raysweep.evaluate.record import EvalSettings
    from raysweep.tracking.store import Tracker
    from tests.helpers.fakes import make_prepared
    from tests.helpers.sweeps import default_store_in, log_sweep

    seen = []

    def exact(name):
        def fit_score(cfg, d):
            val = d.subset(d.indices("val"))
            seen.append(name)
            return 0.0, val.target.astype(np.float64) + 0.05
        return fit_score

    monkeypatch.setattr(selection, "family_fit_score", exact)
    data = make_prepared(n=60, size=16, seed=4)
    s = data.frame["set_id"].to_numpy()
    data.split = np.where(s == 1, "val", np.where(s == 2, "test", "train")).astype(str)
    data.frame["split"] = data.split
    data.info["split_id"] = "sessions-fam"
    with default_store_in(tmp_path) as root:
        log_sweep(Tracker("unit-fam", "sweep-f"), data, root / "ckpt")
        res = winners.run_eval_winners(EvalSettings(
            experiment="unit-fam", top_k=2, data=data, out=root / "winners", n_boot=50,
            baseline_names=["naive", "gbm"], log_run=False, select_folds=2, select_top=2,
            per_group=(), with_floors=False))
    assert "gbm" in seen
    assert res.champion.startswith(("baseline:gbm", "blend of"))
    summary = pd.read_csv(res.out_dir / "summary.csv")
    assert res.champion in set(summary["model"])
    cal = bounds.read(res.out_dir)
    assert cal is not None and cal.regime == bounds.NEW
    # calibrated on the family's out-of-fold errors: tiny (its fold answers were exact)
    assert np.median(cal.scores) < 1.0
    from raysweep.serve.ensemble import load_folder

    served = bounds.attach(load_folder(res.out_dir / "champion"), res.out_dir / "champion")
    test = data.subset(data.indices("test"))
    kept = pd.read_csv(res.out_dir / "predictions.csv").query("model == @res.champion")
    assert list(kept["sample_id"]) == list(test.sample_id)
    np.testing.assert_allclose(served.predict(test), kept[["pred_L", "pred_a", "pred_b"]],
                               atol=2e-4)  # the scored model is the served one
    assert served.calibration is not None and served.calibration.regime == bounds.NEW
    assert "champion/" in (res.out_dir / "report.md").read_text()


def test_why_no_bound_names_the_session_count_for_a_new_session_bound():
    data = lit_sessions(3)
    oof = selection.session_oof(None, data, k=4, seed=0, fit_score=session_corrector)
    cal = bounds.calibrate_sessions(data, oof, data.subset(data.indices("train")), 0.9,
                                    scaled=False)
    m = len({s for f in oof.folds for s in f})  # 14: 18 sessions less 4 test
    assert cal.why_no_bound(0.9) is None
    why = cal.why_no_bound(0.95)
    assert f"its {m} calibration session(s)" in why and "at least 19 sessions" in why
    assert f"{m / (m + 1):.3f}"[:5] in why
