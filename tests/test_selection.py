"""Selection across sessions: when validation holds few unseen sessions, leaders are re-scored by
grouped k-fold over sessions (the test split never takes part)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from raysweep.config import TrainConfig
from raysweep.evaluate import selection
from tests.helpers.fakes import make_prepared


def session_split(n=96, seed=0):
    """make_prepared's 6 sessions (camera = session % 3): session 1 val, 2 test, others train."""
    p = make_prepared(n=n, size=16, seed=seed, missing_rate=0.0)
    s = p.frame["set_id"].to_numpy()
    p.split = np.where(s == 1, "val", np.where(s == 2, "test", "train")).astype(str)
    return p


@dataclass
class FakePredictor:
    cfg: TrainConfig
    meta: dict = field(default_factory=dict)


@dataclass
class FakeLeader:
    name: str
    val: float
    data: object
    predictor: FakePredictor


def test_rescoring_is_asked_for_only_when_validation_sessions_are_few_and_unseen():
    assert selection.why_rescore(make_prepared(n=48)) is None  # tone split: sessions all seen
    why = selection.why_rescore(session_split())
    assert "1 capture session(s) that training never saw" in why


def test_folds_cover_train_and_val_sessions_never_test_and_keep_every_camera():
    p = session_split()
    folds = selection.session_folds(p, k=3, seed=0)
    held = sorted(sum(folds, []))
    # sessions 0,3 (cam_a), 1,4 (cam_b), 5 (cam_c; its other session 2 is test): 5 is alone
    assert held == ["0", "1", "3", "4"]
    for f in folds:
        d = selection.fold_data(p, f)
        assert "test" not in set(d.split) and set(d.split) == {"train", "val"}
        assert set(d.camera[d.split == "train"]) == {"cam_a", "cam_b", "cam_c"}
        assert set(d.frame["set_id"].astype(str)[d.split == "val"]) == set(f)
    assert selection.session_folds(p, k=3, seed=0) == folds  # deterministic


def test_the_leader_that_generalizes_is_crowned_and_the_table_says_how_stable():
    p = session_split()
    cfg = TrainConfig(features="mean+meta", epochs=9)
    lucky = FakeLeader("lucky", 1.0, p, FakePredictor(cfg, {"epoch": 1}))
    solid = FakeLeader("solid", 1.5, p, FakePredictor(cfg, {"epoch": 7}))
    worse = FakeLeader("worse", 2.0, p, FakePredictor(cfg, {"epoch": 9}))
    seen = []

    def fit_score(c, d):  # lucky was only good on the one validation session
        seen.append((c.epochs, sorted(set(d.split))))
        return {1: 5.0, 7: 2.0, 9: 3.0}[c.epochs] + 0.01 * len(seen)

    sel = selection.rescore([worse, lucky, solid], "few sessions", k=2, top=3,
                            fit_score=fit_score)
    assert sel.champion == 2  # solid, by index into the list given
    assert {e for e, _ in seen} == {1, 7, 9}  # each leader at its recorded epoch count
    assert all(s == ["train", "val"] for _, s in seen)  # never the test split
    t = sel.table.set_index("leader")
    assert t.loc["solid", "rank_cv"] == 1 and t.loc["lucky", "rank_val"] == 1
    assert {"fold_1", "fold_2", "cv_mean", "cv_sd"} <= set(sel.table.columns)
    assert "best in 2 of 2 folds" in sel.stability and "is NOT" in sel.stability
    sel2 = selection.rescore([worse, lucky, solid], "few", k=2, top=2, fit_score=fit_score)
    assert set(sel2.table["leader"]) == {"lucky", "solid"}  # only the top-k by validation


def test_rescoring_runs_the_real_loop_on_tiny_data():
    p = session_split(n=60)
    cfg = TrainConfig(features="mean+meta", fusion="none", epochs=5, batch_size=16, lr=3e-3,
                      warmup_epochs=0.5)
    ld = FakeLeader("mlp", 1.0, p, FakePredictor(cfg, {"epoch": 2}))
    sel = selection.rescore([ld], "few sessions", k=2)
    assert sel.champion == 0 and np.isfinite(sel.table["cv_mean"]).all()
    assert sel.table["epochs"].iloc[0] == 2
