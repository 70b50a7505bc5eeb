"""The eval_winners CLI end to end on a small synthetic dataset recorded by path (slow)."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from raysweep import eval_winners
from raysweep.data.pipeline import load_prepared
from raysweep.errors import run_cli
from raysweep.tracking.store import Tracker
from raysweep.train.loop import fit


@pytest.mark.slow
def test_cli_on_synthetic_sweep(tmp_path, monkeypatch, capsys):
    from raysweep.synth.context import GeneratorConfig
    from raysweep.synth.generate import generate

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    card = generate(tmp_path / "syn", GeneratorConfig(sets=4, tones=20, size=96), progress=False)
    tracker = Tracker("synthunit", "sweep-x")
    # the sweep records the dataset by path, as raysweep.search does
    parent = tracker.start_parent(tags={}, params={"data": str(card)})
    trials = {"t_nobg": dict(crop="adaptive_nobg", features="image+meta", fusion="film"),
              "t_bg": dict(crop="adaptive_bg", features="image+meta", fusion="concat"),
              "t_tab": dict(crop="adaptive_bg", features="mean", fusion="none")}
    for trial, over in trials.items():
        cfg = dict(backbone="smallcnn", width=8, image_size=32, epochs=3, batch_size=16,
                   device="cpu", **over)
        data = load_prepared(card, crop=cfg["crop"], size=32, progress=False)
        res = fit(cfg, data, checkpoint_dir=str(tmp_path / "ck" / trial))
        run = tracker.start_child(trial, trial, cfg)
        for m in res.history:
            tracker.log(run, metrics={k: v for k, v in m.items() if k != "epoch"},
                        step=int(m["epoch"]))
        tracker.log_artifacts(run, res.checkpoint_dir, "checkpoint")
        tracker.end(run)
    tracker.end(parent)

    rc = run_cli(eval_winners.main, ["--parent-run", parent, "--out", "winners", "--n-boot",
                                     "200", "--top-k", "3"])
    assert rc == 0, capsys.readouterr().err
    summary = pd.read_csv(tmp_path / "winners" / "summary.csv")
    # every baseline ran: bg_reference got an adaptive_bg copy of the data
    assert {f"baseline:{b}" for b in ("naive", "grey_world", "bg_reference", "root_poly", "gbm")
            } <= set(summary["model"])
    assert (summary["kind"] == "model").sum() == 3
    breakdown = pd.read_csv(tmp_path / "winners" / "breakdown.csv")
    assert {"camera", "set_id", "exposure", "illuminant", "skin_tone"} <= set(
        breakdown["dimension"])
    comp = pd.read_csv(tmp_path / "winners" / "comparisons.csv")
    assert {"background vs none", "metadata vs none"} <= set(comp["question"])
    html = (tmp_path / "winners" / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert os.path.getsize(tmp_path / "winners" / "report.html") > 20_000
    print(summary.sort_values("mean")[["model", "mean", "mean_lo", "mean_hi"]].to_string())


def test_the_console_names_the_regime_the_scores_stand_for(tmp_path, monkeypatch, capsys):
    """The console's closing lines say which photos the test scores stand for (new or seen
    sessions), as the report does: the table above them alone does not."""
    from raysweep.evaluate import winners
    from raysweep.evaluate.record import EvalResult, EvalSettings

    regime = "new sessions (none of the 2 test sessions was in training)"
    summary = pd.DataFrame({"model": ["m"], "kind": ["model"], "mean": [1.0], "mean_lo": [0.9],
                            "mean_hi": [1.1], "median": [1.0], "p95": [2.0]})
    done = EvalResult(tmp_path / "winners", "m", summary, pd.DataFrame(), pd.DataFrame(),
                      pd.DataFrame(), regime=regime)
    monkeypatch.setattr(winners, "run_eval_winners", lambda settings: done)
    settings = EvalSettings(out=tmp_path / "winners", log_run=False, register=False,
                            tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert eval_winners.evaluate(settings) == 0
    assert f"champion: m\nregime: {regime}\n" in capsys.readouterr().err
