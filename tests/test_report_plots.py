"""Plots people read: models grouped (learned, baselines, floors), the heatmap coloured relative
to the champion on a capped log scale with its numbers in the cells, intervals on the model
comparisons, and the sweep's parameter importance in the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysweep.evaluate import breakdowns, report, stats
from raysweep.tracking import importance, importance_plots
from tests.helpers.fakes import make_prepared

CHAMPION = "t2 (smallcnn)"
# the champion is not the lowest test mean: it is picked on validation, and is still listed first
MEANS = {"t1 (smallcnn)": 1.25, CHAMPION: 1.3, "baseline:per_session": 1.45,
         "baseline:naive": 27.0, "oracle:latents": 0.35}


def kind(name: str) -> str:
    return name.split(":")[0] if ":" in name else "model"


@pytest.fixture(scope="module")
def inp():
    data = make_prepared(n=120, size=8, seed=1, missing_rate=0.0)
    rng = np.random.default_rng(0)
    hard = rng.gamma(4.0, 0.25, len(data))  # the same photos are hard for every model
    errors = {k: m * hard for k, m in MEANS.items()}
    preds = {k: data.target + e[:, None] / np.sqrt(3) for k, e in errors.items()}
    kinds = {"baseline": "baseline", "oracle": "floor", "model": "model"}
    rows = [{"model": k, "kind": kinds[kind(k)], **stats.summarize(e, n_boot=100),
             **stats.summarize(e, n_boot=100, prefix="de76_")} for k, e in errors.items()]
    return report.ReportInput(
        title="plots", champion=CHAMPION, summary=pd.DataFrame(rows),
        breakdown=breakdowns.breakdown(errors, data, n_boot=50),
        comparisons=pd.DataFrame(columns=["question", "a", "b", "diff", "lo", "hi", "p_value"]),
        target=data.target, preds=preds, errors=errors, context={"dataset": "fake"})


def test_models_are_grouped_learned_baselines_floors_champion_first(inp):
    groups = report.grouped_models(inp)
    assert [names for _, names in groups] == [[CHAMPION, "t1 (smallcnn)"],
                                              ["baseline:per_session", "baseline:naive"],
                                              ["oracle:latents"]]
    assert [label for label, _ in groups][:2] == ["learned", "baselines"]


def test_heatmap_colour_is_relative_to_the_champion(inp):
    groups, mean, half, ratio = report.heatmap_cells(inp)
    rows = mean.index.tolist()
    assert rows == [m for _, names in groups for m in names]
    assert np.allclose(ratio[rows.index(CHAMPION)], 1.0)  # the champion's row is the neutral colour
    per_session = ratio[rows.index("baseline:per_session")]
    # 1.45 vs 1.3: 0.5% of the old linear 0..27 scale; here a quarter of the way to the cap in
    # every cell, and every cell of the weakest baseline saturates the colour
    assert (np.log(per_session) > 0.25 * np.log(report.HEATMAP_CAP)).all()
    assert (ratio[rows.index("baseline:naive")] > report.HEATMAP_CAP).all()
    assert (half.to_numpy() > 0).all()


def test_render_shows_the_sweeps_parameter_importance(inp, tmp_path):
    rng = np.random.default_rng(0)
    trials = pd.DataFrame({"lr": 10 ** rng.uniform(-4, -1, 12), "head": rng.choice(["a", "b"], 12)})
    trials["val_de00_mean"] = 2 + np.log10(trials["lr"]) ** 2 / 4
    imp = importance.compute(trials, ["lr", "head"], "val_de00_mean")
    folder = tmp_path / "importance"
    folder.mkdir()
    importance.write(imp, folder)
    importance_plots.draw(imp, folder)
    out = tmp_path / "report"
    out.mkdir()
    written = report.render(report.ReportInput(**{**inp.__dict__, "importance": folder}), out)
    md = (out / "report.md").read_text()
    top = imp.table.iloc[0]
    assert "which hyper-parameters mattered" in md
    assert f"| {top.parameter} | {top.importance:.2f} [{top.lo:.2f}, {top.hi:.2f}] |" in md
    assert "fANOVA over 12 finished trials" in md
    for name in (importance_plots.IMPORTANCE_PNG, importance_plots.PARALLEL_PNG):
        assert f"]({name})" in md and (out / name).read_bytes()[:4] == b"\x89PNG"
        assert name in written
    html = (out / "report.html").read_text()
    assert html.count("<img") == len(report.PLOTS) + 2
