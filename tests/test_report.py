"""The report renders every section, embeds its images, and prints the numbers it was given."""

import base64
import re

import numpy as np
import pandas as pd
import pytest

from raysweep.evaluate import breakdowns, report, stats
from tests.helpers.fakes import make_prepared


@pytest.fixture(scope="module")
def inp():
    data = make_prepared(n=40, size=8, seed=1, missing_rate=0.0)
    rng = np.random.default_rng(0)
    preds = {"trial_1": data.target + rng.normal(0, 1.0, data.target.shape),
             "trial_2": data.target + rng.normal(0, 2.0, data.target.shape),
             "naive": data.target + rng.normal(0, 5.0, data.target.shape)}
    errors = {k: np.linalg.norm(v - data.target, axis=1) for k, v in preds.items()}
    rows = []
    for name, err in errors.items():
        rows.append({"model": name, "kind": "baseline" if name == "naive" else "model",
                     **stats.summarize(err, n_boot=100),
                     **stats.summarize(err * 1.3, n_boot=100, prefix="de76_")})
    comp = pd.DataFrame([{"question": "fusion vs fusion", "a": "trial_1", "b": "trial_2",
                          **stats.paired_bootstrap(errors["trial_1"], errors["trial_2"])}])
    return report.ReportInput(
        title="Winners: unit", champion="trial_1", summary=pd.DataFrame(rows),
        breakdown=breakdowns.breakdown(errors, data, n_boot=50), comparisons=comp,
        target=data.target, preds=preds, errors=errors,
        context={"dataset": "fake", "split": "test"}, notes=["gbm skipped: unit"])


def test_render_writes_everything(tmp_path, inp):
    written = report.render(inp, tmp_path)
    assert set(written) == set(report.PLOTS) | {"report.md", "report.html"}
    for name in report.PLOTS:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report.md").read_text()
    for name in report.PLOTS:
        assert f"]({name})" in md
    best = inp.summary.set_index("model").loc["trial_1"]
    assert f"{best['mean']:.2f} [{best['mean_lo']:.2f}, {best['mean_hi']:.2f}]" in md
    assert "Breakdown by skin_tone" in md and "Breakdown by camera" in md
    assert "A better" in md  # trial_1 has half the noise of trial_2: a clear paired verdict
    assert "gbm skipped: unit" in md


def test_html_is_self_contained(tmp_path, inp):
    report.render(inp, tmp_path)
    html = (tmp_path / "report.html").read_text()
    images = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(images) == len(report.PLOTS)
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert "<table" in html and "Winners: unit" in html


def test_comparison_verdicts(inp):
    c = pd.DataFrame([
        {"question": "q", "a": "x", "b": "y", "diff": -1.0, "lo": -1.5, "hi": -0.5, "p_value": 0.0},
        {"question": "q", "a": "x", "b": "y", "diff": 0.1, "lo": -0.2, "hi": 0.4, "p_value": 0.5},
        {"question": "q", "a": "x", "b": "y", "diff": 1.0, "lo": 0.5, "hi": 1.5, "p_value": 0.0},
    ])
    table = report.comparison_table(report.ReportInput(**{**inp.__dict__, "comparisons": c}))
    assert table["verdict"].tolist() == ["A better", "no clear difference", "B better"]


def test_floors_and_selection_are_shown_with_what_they_know(tmp_path, inp):
    import dataclasses

    from raysweep.evaluate.selection import Selection

    data = make_prepared(n=40, size=8, seed=1, missing_rate=0.0)
    floor = np.linalg.norm(np.full(data.target.shape, 0.2), axis=1)
    row = {"model": "oracle:latents", "kind": "floor", **stats.summarize(floor, n_boot=50),
           **stats.summarize(floor, n_boot=50, prefix="de76_")}
    table = pd.DataFrame([{"leader": "trial_1", "val_de00_mean": 1.0, "epochs": 3,
                           "fold_1": 2.0, "fold_2": 2.2, "cv_mean": 2.1, "cv_sd": 0.14,
                           "rank_val": 1, "rank_cv": 1}])
    sel = Selection(0, table, "validation holds 2 session(s)", "best in 2 of 2 folds")
    with_floor = dataclasses.replace(
        inp, summary=pd.concat([inp.summary, pd.DataFrame([row])], ignore_index=True),
        preds={**inp.preds, "oracle:latents": data.target},
        errors={**inp.errors, "oracle:latents": floor},
        floors={"oracle:latents": "every per-photo hidden variable"}, selection=sel)
    report.render(with_floor, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| oracle:latents | 0.35 [0.35, 0.35] |" in md
    assert "every per-photo hidden variable" in md and "champion / floor" in md
    assert "validation holds 2 session(s)" in md and "best in 2 of 2 folds" in md
    assert "| trial_1 | 1.000 | 3 | 2.000 | 2.200 | 2.100 (0.140) | 1 | 1 |" in md
