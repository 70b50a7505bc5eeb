"""The new-session bound's calibration choices, compared in seconds on the last saved run.

`python -m benchmarks.new_sessions` keeps every seed's crowned out-of-fold predictions and test
predictions (its pickle under ~/.cache/raysweep); this re-runs `bounds.calibrate_sessions` on them
with each variant below and measures, per variant:

- on the test sessions: coverage per seed and its mean, the lowest camera / true ITA group
  (seeds pooled, n >= 30), the median bound against the median error;
- on the out-of-fold errors themselves: each session fold covered by the bound the OTHER folds
  calibrate (the check that a "90%" bound is 90% where the test sessions are too few to tell).

    python -m benchmarks.new_sessions_bounds [--quick]   (the saved --quick or full run)
"""

from __future__ import annotations

import contextlib
import pickle

import numpy as np
import pandas as pd

from benchmarks import Section, load_note, md_table
from benchmarks import main as bench_main

# name -> (calibrate_sessions' `scaled`, FLOOR_GAP (None: no floor), a quantile per ITA group)
VARIANTS = {
    "folds' choice, per ITA group, floor at level - 0.10 (the default)": (None, 0.10, True),
    "folds' choice, per ITA group, floor at level - 0.08": (None, 0.08, True),
    "folds' choice, per ITA group, floor at level - 0.12": (None, 0.12, True),
    "folds' choice, per ITA group, no floor": (None, None, True),
    "folds' choice, one quantile, no floor": (None, None, False),
    "constant sigma, per ITA group, floor at level - 0.10": (False, 0.10, True),
    "scaled sigma, per ITA group, floor at level - 0.10": (True, 0.10, True),
}


@contextlib.contextmanager
def _gap(gap: float | None):
    """FLOOR_GAP for one variant; no floor is a gap as wide as the level (a floor at 0)."""
    from raysweep.serve import bounds

    old = bounds.FLOOR_GAP
    bounds.FLOOR_GAP = 1.0 if gap is None else gap
    try:
        yield
    finally:
        bounds.FLOOR_GAP = old


def _bound(data, oof, rows, pred, variant, seed: int) -> np.ndarray:
    """The variant's 90% bound, calibrated on `oof`, for the dataset's `rows` predicted `pred`."""
    from raysweep.serve import bounds

    scaled, gap, grouped = variant
    train = data.subset(data.indices("train"))
    with _gap(gap):
        cal = bounds.calibrate_sessions(data, oof, train, 0.9, sorted(set(train.camera)),
                                        scaled=scaled, seed=seed)
        if not grouped:
            cal.groups = None
        return cal.bound(data.subset(rows), pred)


def _folds(data, oof, variant, seed: int) -> pd.DataFrame:
    """Each fold's photos against the bound the other folds calibrate."""
    from raysweep.evaluate.breakdowns import group_labels
    from raysweep.evaluate.stats import errors_of

    out = []
    for j in range(len(oof.folds)):
        m = oof.fold == j
        b = _bound(data, oof.without(j), oof.rows[m], oof.pred[m], variant, seed)
        g = group_labels(data.subset(oof.rows[m]))
        out.append(pd.DataFrame({"fold": f"{seed}:{j}", "camera": g["camera"],
                                 "skin_tone": g["skin_tone"],
                                 "covered": errors_of(oof.pred[m], data.target[oof.rows[m]])[0]
                                 <= b}))
    return pd.concat(out, ignore_index=True)


def _lowest(frame: pd.DataFrame) -> str:
    worst = min((float(part["covered"].mean()), str(g)) for dim in ("camera", "skin_tone")
                for g, part in frame.groupby(dim) if len(part) >= 30)
    return f"{worst[1]} {worst[0]:.1%}"


def compare(m: dict) -> pd.DataFrame:
    from benchmarks.new_sessions import _load

    loaded = [(r, _load(m["card"], r["seed"], m["scale"])) for r in m["runs"]]
    rows = []
    for name, variant in VARIANTS.items():
        test, folds = [], []
        for r, data in loaded:
            oof = r["oof"][r["champion"]]
            ph = r["photos"].assign(bound=_bound(data, oof, data.indices("test"), r["pred_test"],
                                                 variant, r["seed"]))
            test.append(ph.assign(covered=ph["err:champion"] <= ph["bound"]))
            folds.append(_folds(data, oof, variant, r["seed"]))
        ph, fo = pd.concat(test, ignore_index=True), pd.concat(folds, ignore_index=True)
        per_seed = ph.groupby("seed")["covered"].mean()
        per_fold = fo.groupby("fold")["covered"].mean()
        rows.append({"variant": name, "test coverage (mean of seeds)": f"{per_seed.mean():.1%}",
                     "per seed": ", ".join(f"{c:.1%}" for c in per_seed),
                     "lowest test group": _lowest(ph),
                     "median bound / median dE00": f"{ph['bound'].median():.2f} / "
                                                   f"{ph['err:champion'].median():.2f}",
                     "fold coverage (mean of folds)": f"{per_fold.mean():.1%}",
                     "fold range": f"{per_fold.min():.0%}-{per_fold.max():.0%}",
                     "lowest fold group": _lowest(fo)})
    return pd.DataFrame(rows)


def run(quick: bool = False) -> Section:
    from benchmarks.new_sessions import SAVED

    with open(SAVED.with_suffix(f".{'quick' if quick else 'full'}.pkl"), "rb") as f:
        m = pickle.load(f)
    table = compare(m)
    cmd = "python -m benchmarks.new_sessions_bounds" + (" --quick" if quick else "")
    text = "\n".join([
        "## The new-session bound's calibration, variant by variant\n",
        f"The saved run of `python -m benchmarks.new_sessions{' --quick' if quick else ''}` "
        f"(split seeds {', '.join(map(str, m['seeds']))}, {m['synth']}): each variant "
        "recalibrates the crowned model's 90% bound on its out-of-fold errors "
        "(`bounds.calibrate_sessions`), then covers the test sessions and, fold by fold, the "
        "out-of-fold errors of the session fold the other folds calibrated on. Groups: camera "
        "and TRUE ITA group, n >= 30, seeds (folds) pooled.\n",
        md_table(table) + "\n", f"{load_note()}.\n", f"Command: `{cmd}`"])
    return Section(text + "\n", {"variants": table})


if __name__ == "__main__":
    bench_main("new_sessions_bounds", run)
