"""`python -m raysweep.summarize` ends with each sweep's most important parameters, computed
from the trial runs MLflow holds (params come back as strings)."""

from __future__ import annotations

import numpy as np

from raysweep import summarize
from raysweep.tracking.store import Tracker


def test_summarize_prints_the_top_parameters_with_their_importance(tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = Tracker("imp-study", "sweep-a", uri=uri)
    tracker.start_parent(tags={"raysweep.space": "imp-study"}, params={})
    rng = np.random.default_rng(0)
    for i in range(14):
        lr, head = 10 ** rng.uniform(-4, -1), str(rng.choice(["ccm", "residual"]))
        run = tracker.start_child(f"t{i}", f"trial_{i}", {"lr": lr, "head": head,
                                                          "features": "image+mean+meta"})
        score = 2 + (np.log10(lr) + 2.5) ** 2  # lr decides; head does not
        for epoch, v in enumerate((score + 1, score), start=1):
            tracker.log(run, metrics={"val_de00_mean": v, "epoch": epoch}, step=epoch)
        tracker.end(run, "FINISHED", strict=True)
    assert summarize.main(["--experiment", "imp-study", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    section = out[out.index("## Parameter importance"):]
    assert "fANOVA over 14 finished trials" in section
    first = section.split("```")[1].strip().splitlines()[0]
    assert first.split()[0] == "lr" and float(first.split()[1]) > 0.5, section
