"""Parameter importance after a sweep: fANOVA over the finished trials, logged on the parent
run as importance.csv with its two plots, and read back for the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysweep.tracking import importance
from raysweep.tracking.store import Tracker

METRIC = "val_de00_mean"
PARAMS = ["head", "lr", "weight_decay"]


def trials(n: int = 30, seed: int = 0) -> pd.DataFrame:
    """`lr` decides the score, `head` a little, `weight_decay` not at all; params as MLflow
    hands them back (strings), one failed and one unscored trial that must not count."""
    rng = np.random.default_rng(seed)
    lr = 10 ** rng.uniform(-4, -1, n)
    head = rng.choice(["residual", "ccm"], n)
    score = 2 + (np.log10(lr) + 2.5) ** 2 + 0.1 * (head == "ccm") + rng.normal(0, 0.02, n)
    df = pd.DataFrame({"head": head, "lr": [f"{v:.6g}" for v in lr],
                       "weight_decay": [f"{v:.3g}" for v in 10 ** rng.uniform(-6, -3, n)],
                       METRIC: score, "status": "FINISHED"})
    extra = pd.DataFrame({"head": ["ccm", "ccm"], "lr": ["0.5", "0.5"],
                          "weight_decay": ["1e-4", "1e-4"], METRIC: [0.1, np.nan],
                          "status": ["FAILED", "FINISHED"]})
    return pd.concat([df, extra], ignore_index=True)


def test_the_parameter_that_decides_the_score_ranks_first():
    imp = importance.compute(trials(), PARAMS, METRIC)
    t = imp.table.set_index("parameter")
    assert imp.n_trials == 30  # the failed and the unscored trial are left out
    assert t.index[0] == "lr" and t.loc["lr", "importance"] > 0.8
    assert t.loc["weight_decay", "importance"] < 0.1
    assert t["importance"].sum() == pytest.approx(1.0, abs=1e-6)
    assert (t["lo"] <= t["hi"]).all() and t["lo"].min() >= 0 and t["hi"].max() <= 1 + 1e-9
    assert importance.top_lines(imp.table, 1)[0].startswith("lr ")


def test_nothing_to_rank_gives_none():
    assert importance.compute(trials().head(1), PARAMS, METRIC) is None
    constant = trials().assign(lr="0.01", head="ccm", weight_decay="1e-4")
    assert importance.compute(constant, PARAMS, METRIC) is None


def test_importance_artifacts_on_the_parent_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker("importance-test", "sweep-1", uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    parent = tracker.start_parent(tags={}, params={})
    imp = importance.log_to_parent(tracker, parent, trials(), PARAMS, METRIC)
    names = {f.path for f in tracker.client.list_artifacts(parent, importance.ARTIFACT_DIR)}
    assert names == {"importance/importance.csv", "importance/importance.png",
                     "importance/parallel_coordinates.png"}
    folder = importance.fetch(tracker.client, parent, tmp_path / "dl")
    back = pd.read_csv(folder / importance.CSV)
    assert back["parameter"].tolist() == imp.table["parameter"].tolist()
    assert np.allclose(back["importance"], imp.table["importance"])
    assert (back["trials"] == 30).all()
    for png in ("importance.png", "parallel_coordinates.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = tracker.start_child("t0", "trial_0", {})
    assert importance.fetch(tracker.client, other, tmp_path / "none") is None


def test_each_fit_is_bounded_whatever_the_sweep_s_size(monkeypatch):
    """A large sweep's fits see MAX_FIT_TRIALS trials each (200) and trees at most MAX_DEPTH
    (6) deep: unbounded, 10 fits over 600 trials took 50-72 s at the end of a sweep."""
    import optuna

    sizes, made = [], []
    fit, evaluator = importance._fanova, optuna.importance.FanovaImportanceEvaluator

    def counted(trials, *args):
        sizes.append(len(trials))
        return fit(trials, *args)

    def recorded(**kwargs):
        made.append(kwargs)
        return evaluator(**kwargs)

    monkeypatch.setattr(importance, "_fanova", counted)
    monkeypatch.setattr(optuna.importance, "FanovaImportanceEvaluator", recorded)
    imp = importance.compute(trials(1000), PARAMS, METRIC)
    assert sizes == [200] * importance.RESAMPLES
    assert [kw["max_depth"] for kw in made] == [6] * importance.RESAMPLES
    assert imp.n_trials == 1000 and imp.table["parameter"].iloc[0] == "lr"
    assert "subsets of 200 trials" in imp.note() and "at most 6 deep" in imp.note()
    sizes.clear()
    importance.compute(trials(100), PARAMS, METRIC)  # below the cap: 80% of the trials
    assert sizes == [80] * importance.RESAMPLES
