"""Sweeps for tests: a tiny one logged the way search logs one (`log_sweep`), and the space of
the reliability tests."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from raysweep.evaluate import stats
from raysweep.tracking.store import Tracker
from raysweep.train import predictor
from raysweep.train.loop import fit

RELIABILITY_SPACE = '''"""Reliability study: lr only. Fixed: tinycnn at 16 px, 3 epochs."""
MAX_EPOCHS = 3
FIXED = {"backbone": "tinycnn", "width": 8, "crop": "adaptive_bg", "image_size": 16,
         "batch_size": 16, "features": "image+meta", "fusion": "concat", "device": "cpu"}

def define_by_run(trial):
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True)}
'''

TRIALS = {
    "t_concat": dict(features="image+meta", fusion="concat"),
    "t_image": dict(features="image", fusion="none"),
    "t_tabular": dict(features="mean+meta", fusion="none"),
}
BASE = dict(backbone="smallcnn", width=8, image_size=16, epochs=4, batch_size=16, lr=3e-3,
            device="cpu", crop="adaptive_bg", meta_hidden=16)


@contextlib.contextmanager
def default_store_in(root: Path):
    """MLflow's default store in `root` (sqlite:///<root>/mlruns.db, artifacts in
    <root>/mlartifacts): the working directory while the block runs, no MLFLOW_TRACKING_URI."""
    old = os.getcwd()
    os.chdir(root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield root
    finally:
        os.chdir(old)


def log_sweep(tracker: Tracker, data, root, trials: dict = TRIALS,
              train_on: dict | None = None) -> dict:
    """`trials` (id -> config overrides) trained on `data` and logged; `train_on` gives a trial
    other training rows (e.g. a biased target), and then its logged validation score is the
    checkpoint's on `data`, as eval_winners recomputes it."""
    parent = tracker.start_parent(tags={"raysweep.space": "unit"}, params={"data": "<in-memory>"})
    tracker.log(parent, tags={"raysweep.dataset_hash": data.info["content_hash"],
                              "raysweep.split_id": data.info["split_id"]})
    out = {}
    for trial_id, over in trials.items():
        cfg = {**BASE, **over}
        res = fit(cfg, (train_on or {}).get(trial_id, data),
                  checkpoint_dir=str(root / trial_id))
        run = tracker.start_child(trial_id, trial_id, cfg)
        if trial_id in (train_on or {}):
            val = data.subset(data.indices("val"))
            pred = predictor.load(res.checkpoint_dir, device="cpu").predict(val)
            res.history = [{"epoch": 0, "val_de00_mean": float(
                stats.errors_of(pred, val.target)[0].mean())}]
        for m in res.history:
            tracker.log(run, metrics={k: v for k, v in m.items() if k != "epoch"},
                        step=int(m["epoch"]))
        tracker.log_artifacts(run, res.checkpoint_dir, "checkpoint")
        tracker.end(run)
        out[trial_id] = (run, res)
    tracker.end(parent)
    return {"parent": parent, "trials": out}
