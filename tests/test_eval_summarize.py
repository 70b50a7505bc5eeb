"""summarize: trial runs of one or two sweeps, scored by their best epoch, grouped."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from raysweep import summarize as summarize_cli
from raysweep.errors import UserError
from raysweep.evaluate import trials as summarize
from raysweep.tracking.store import Tracker

# sweep -> [(trial, fusion, features, val curve per epoch, finished)]
SWEEPS = {
    "sw-a": [("a1", "concat", "image+meta", [5.0, 3.0, 4.0], True),  # best 3.0 at epoch 2
             ("a2", "film", "image+meta", [6.0, 5.5], True),
             ("a3", "film", "image+mean", [9.0], False)],
    "sw-b": [("b1", "none", "image", [4.0, 3.5, 3.2], True),
             ("b2", "concat", "image", [2.5, 2.9], True)],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("summ")
    old = os.getcwd()
    os.chdir(root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    parents = {}
    try:
        for sweep, trials in SWEEPS.items():
            t = Tracker("study", sweep)
            parents[sweep] = t.start_parent(tags={}, params={})
            for trial, fusion, features, curve, ok in trials:
                cfg = {"backbone": "smallcnn", "fusion": fusion, "features": features,
                       "crop": "adaptive_bg"}
                run = t.start_child(trial, trial, cfg)
                for epoch, v in enumerate(curve, 1):
                    t.log(run, metrics={"val_de00_mean": v}, step=epoch)
                t.end(run, "FINISHED" if ok else "FAILED")
            t.end(parents[sweep])
        yield {"root": root, "parents": parents}
    finally:
        os.chdir(old)


def test_runs_scored_by_best_epoch(store):
    df = summarize.summarize(experiment="study")
    assert len(df) == 5
    row = df.set_index("trial_id").loc["a1"]
    assert row["val_de00_mean"] == 3.0 and row["best_epoch"] == 2  # not the last epoch's 4.0
    assert df["trial_id"].tolist()[0] == "b2"  # best first
    assert df.set_index("trial_id").loc["a3", "status"] == "FAILED"
    assert (df.set_index("trial_id").loc["a1", "param.lr"]) == "0.001"  # flattened TrainConfig


def test_group_table_counts_and_best(store):
    df = summarize.summarize(experiment="study")
    by = summarize.group_table(df, "fusion").set_index("fusion")
    assert by.loc["film", "trials"] == 2 and by.loc["film", "finished"] == 1
    assert by.loc["film", "best val_de00_mean"] == 5.5
    assert by.loc["concat", "best val_de00_mean"] == 2.5
    assert by.loc["concat", "best trial"] == "b2"


def test_compare_two_sweeps_side_by_side(store):
    df = summarize.summarize(compare=["study@sw-a", store["parents"]["sw-b"]])
    assert set(df["sweep"]) == {"study@sw-a", "sw-b"}
    by = summarize.group_table(df, "features", per_sweep=True).set_index("features")
    assert by.loc["image", "trials [sw-b]"] == 2 and by.loc["image+meta", "trials [study@sw-a]"] == 2
    assert np.isnan(by.loc["image", "trials [study@sw-a]"])
    assert np.isnan(by.loc["image+meta", "best val_de00_mean [sw-b]"])


def test_cli_writes_csv_and_markdown(store, tmp_path, capsys):
    assert summarize_cli.main(["--experiment", "study", "--out", str(tmp_path / "s")]) == 0
    runs = pd.read_csv(tmp_path / "s" / "runs.csv")
    assert len(runs) == 5
    md = (tmp_path / "s" / "summary.md").read_text()
    for g in summarize.GROUPS:
        assert f"## By {g}" in md
    assert "## By fusion" in capsys.readouterr().out


def test_the_summary_names_the_regime_its_validation_scores_are_for(store):
    df = summarize.summarize("study")
    assert "are for seen sessions (held-out tones" in summarize.markdown(df, "t")  # the default
    assert "not recorded: 5 trials" in summarize.markdown(df.drop(columns="param.split_by"), "t")
    df["param.split_by"] = ["set_id"] * 3 + ["tone_id"] * 2
    md = summarize.markdown(df, "t")
    assert "new sessions (whole capture sessions held out of training): 3 trials" in md
    assert "seen sessions" in md and ": 2 trials" in md


def test_unknown_names(store):
    with pytest.raises(UserError, match="study"):
        summarize.summarize(experiment="nope")
    with pytest.raises(UserError, match="no sweep named"):
        summarize.summarize(compare=["study@missing", "study@sw-a"])
