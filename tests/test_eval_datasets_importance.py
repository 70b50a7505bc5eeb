"""eval_winners shows the sweep's parameter importance in its report and links its evaluation
run to the dataset it scored (digest = the content hash), as the sweep's runs are."""

from __future__ import annotations

import pandas as pd
import pytest

from raysweep.evaluate import winners as eval_winners
from raysweep.evaluate.record import EvalSettings
from raysweep.tracking import datasets, importance
from raysweep.tracking.store import Tracker
from tests.helpers.fakes import make_prepared
from tests.helpers.sweeps import TRIALS, default_store_in, log_sweep


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    with default_store_in(tmp_path_factory.mktemp("sweep")) as root:
        data = make_prepared(n=60, size=16, seed=2)
        tracker = Tracker("unit-imp", "sweep-1")
        logged = log_sweep(tracker, data, root / "ckpt")
        trials = pd.DataFrame([{**over, "val_de00_mean": min(m["val_de00_mean"]
                                                              for m in res.history)}
                               for (_, res), over in zip(logged["trials"].values(),
                                                         TRIALS.values())])
        tracker.parent_run_id = logged["parent"]
        imp = importance.log_to_parent(tracker, logged["parent"], trials,
                                       ["features", "fusion"], "val_de00_mean")
        res = eval_winners.run_eval_winners(EvalSettings(
            parent_run=logged["parent"], top_k=2, data=data, out=root / "winners", n_boot=100,
            baseline_names=["naive"], register=False))
        yield {"data": data, "imp": imp, "res": res, "client": tracker.client}


def test_the_evaluation_run_links_to_the_dataset(evaluated):
    run = evaluated["client"].get_run(evaluated["res"].eval_run_id)
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.digest for i in inputs] == [evaluated["data"].info["content_hash"]]
    assert {t.key: t.value for t in inputs[0].tags} == {datasets.CONTEXT_TAG: "evaluation"}


def test_the_report_shows_the_sweeps_parameter_importance(evaluated):
    out, top = evaluated["res"].out_dir, evaluated["imp"].table.iloc[0]
    md = (out / "report.md").read_text()
    assert "which hyper-parameters mattered" in md
    assert f"| {top.parameter} | {top.importance:.2f} [{top.lo:.2f}, {top.hi:.2f}] |" in md
    for png in ("importance.png", "parallel_coordinates.png"):
        assert f"]({png})" in md and (out / png).read_bytes()[:4] == b"\x89PNG"
