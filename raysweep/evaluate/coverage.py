"""Coverage of the error bound: how often the test photos really fall within it.

A bound calibrated at 90% should hold for about 90% of photos the calibration never saw, overall
and in every group a user cares about (camera, ITA skin-tone group, session). `coverage_table`
gives the observed share with a bootstrap interval per group; `reliability` the observed share
against the nominal level over a range of levels (the reliability plot); `flag_rates` how often
each OOD flag was raised. Groups with fewer than MIN_GROUP photos are reported but marked.

Photos of one session share its light and photos of one tone its skin, so the intervals resample
sessions and tones (stats.cluster_bootstrap_ci, two-way), not photos, wherever the data names them:
a photo-level interval on two test sessions would claim a precision the two sessions cannot give.
Each bound is for one regime (raysweep.serve.bounds: new or seen sessions); the table says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.evaluate import stats
from raysweep.evaluate.breakdowns import group_labels
from raysweep.serve import bounds, ood

MIN_GROUP = 30
LEVELS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


def _ci(values: np.ndarray, clusters, n_boot: int, seed: int) -> tuple[float, float, float]:
    if clusters is None:
        return stats.bootstrap_ci(values, "mean", n_boot=n_boot, seed=seed)
    return stats.cluster_bootstrap_ci(values, clusters[0], clusters[1], n_boot, seed)


def _row(dimension: str, group: str, err: np.ndarray, bound: np.ndarray, level: float,
         n_boot: int, seed: int, clusters=None) -> dict:
    covered = (err <= bound).astype(np.float64)
    point, lo, hi = _ci(covered, clusters, n_boot, seed)
    return {"dimension": dimension, "group": group, "n": len(err), "coverage": point,
            "coverage_lo": lo, "coverage_hi": hi, "nominal": level,
            "median_bound": float(np.median(bound)), "median_error": float(np.median(err)),
            "enough": len(err) >= MIN_GROUP}


def coverage_table(err: np.ndarray, bound: np.ndarray, groups: dict[str, np.ndarray],
                   level: float, n_boot: int = 1000, seed: int = 0, clusters=None
                   ) -> pd.DataFrame:
    """One row overall, then one per (dimension, group): n, coverage [95% CI], nominal, the
    median bound and median error (their ratio is how sharp the bound is). `clusters` is
    (session per photo, tone per photo or None) for cluster intervals; None: photo intervals."""
    err, bound = np.asarray(err, np.float64), np.asarray(bound, np.float64)
    rows = [_row("overall", "all", err, bound, level, n_boot, seed, clusters)]
    for dim, labels in groups.items():
        labels = np.asarray(labels).astype(str)
        for g in sorted(set(labels)):
            m = labels == g
            sub = None if clusters is None else tuple(
                None if c is None else np.asarray(c)[m] for c in clusters)
            rows.append(_row(dim, g, err[m], bound[m], level, n_boot, seed, sub))
    return pd.DataFrame(rows)


def clusters_of(data) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(session, tone) per row where the data names them (None: photos are the only unit)."""
    frame = data.frame
    if "set_id" not in frame.columns:
        return None
    tone = frame["tone_id"].astype(str).to_numpy() if "tone_id" in frame.columns else None
    return frame["set_id"].astype(str).to_numpy(), tone


def reliability(err: np.ndarray, bound_at, levels=LEVELS, n_boot: int = 1000, seed: int = 0,
                clusters=None) -> pd.DataFrame:
    """Observed coverage per nominal level; `bound_at(level)` gives the (N,) bounds."""
    rows = []
    for level in levels:
        covered = (np.asarray(err) <= bound_at(level)).astype(np.float64)
        point, lo, hi = _ci(covered, clusters, n_boot, seed)
        rows.append({"nominal": level, "observed": point, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def flag_rates(flags: pd.DataFrame, names) -> pd.DataFrame:
    """Share of photos with each flag raised, and with any."""
    n = max(len(flags), 1)
    rows = [{"flag": f, "photos": int(flags[f].sum()), "share": float(flags[f].sum()) / n}
            for f in names]
    anyf = flags[list(names)].any(axis=1)
    rows.append({"flag": "any", "photos": int(anyf.sum()), "share": float(anyf.sum()) / n})
    return pd.DataFrame(rows)


def plot_reliability(curve: pd.DataFrame, path: str | Path) -> Path:
    """Observed against nominal coverage with intervals; the diagonal is a perfect calibration."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    err = np.vstack([curve["observed"] - curve["lo"], curve["hi"] - curve["observed"]])
    ax.errorbar(curve["nominal"], curve["observed"], yerr=err, fmt="o-", capsize=3,
                label="observed (95% CI)")
    lo = float(min(curve["nominal"].min(), curve["lo"].min())) - 0.02
    ax.plot([lo, 1], [lo, 1], "k--", linewidth=0.8, label="nominal")
    ax.set_xlabel("nominal level of the dE00 bound")
    ax.set_ylabel("share of test photos within the bound")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)


def table_for_report(cov: pd.DataFrame) -> pd.DataFrame:
    """The coverage table as the report shows it (formatted strings)."""
    return pd.DataFrame({
        "dimension": cov["dimension"], "group": cov["group"], "n": cov["n"].astype(int),
        **({"bound for": cov["regime"]} if "regime" in cov.columns else {}),
        "coverage [95% CI]": [f"{r.coverage:.1%} [{r.coverage_lo:.1%}, {r.coverage_hi:.1%}]"
                              for r in cov.itertuples()],
        "nominal": cov["nominal"].map(lambda v: f"{v:.0%}"),
        "median bound / median dE00": [f"{r.median_bound:.2f} / {r.median_error:.2f}"
                                       for r in cov.itertuples()],
        "note": ["" if e else f"fewer than {MIN_GROUP} photos" for e in cov["enough"]],
    })


TRUST_DIMENSIONS = ("camera", "skin_tone", "set_id")


@dataclass
class Assessment:
    """A calibrated bound checked on photos it never saw (the test split)."""

    table: pd.DataFrame  # coverage_table
    curve: pd.DataFrame  # reliability
    flags: pd.DataFrame  # raysweep.serve.ood.flag per photo
    rates: pd.DataFrame  # flag_rates
    error: np.ndarray
    bound: np.ndarray
    photos: pd.DataFrame  # per photo: id, groups, de00, bound, covered, flags
    level: float = 0.9
    info: dict = field(default_factory=dict)  # the calibration's method and sizes


def assess(cal, data, pred: np.ndarray, n_boot: int = 1000, seed: int = 0) -> Assessment:
    """Coverage of `cal`'s bound on `data` (with ground truth) by camera, ITA group and session,
    the reliability curve, and how often each OOD flag fires on these photos."""
    err = bounds.errors(pred, data.target)
    bound = cal.bound(data, pred)
    groups = {k: v for k, v in group_labels(data).items() if k in TRUST_DIMENSIONS}
    clusters = clusters_of(data)
    table = coverage_table(err, bound, groups, cal.level, n_boot, seed, clusters)
    table.insert(2, "regime", _regime_label(cal, data))
    levels = sorted(set(LEVELS) | {cal.level})
    curve = reliability(err, lambda lv: cal.bound(data, pred, lv), levels, n_boot, seed, clusters)
    flags = ood.flag(data, cal.ranges)
    photos = pd.DataFrame({"sample_id": data.sample_id, **groups, "de00": err,
                           "de00_bound": bound, "covered": err <= bound,
                           "bound_regime": cal.regimes(data), "shift_score": flags["shift_score"],
                           "flags": flags["flags"], "unchecked": flags["unchecked"]})
    return Assessment(table, curve, flags, flag_rates(flags, ood.FLAGS), err, bound, photos,
                      cal.level, dict(cal.info))


def _regime_label(cal, data) -> str:
    """The regime(s) of the bounds these photos got, e.g. 'new sessions'."""
    got = pd.Series(cal.regimes(data)).value_counts()
    return " + ".join(f"{k}" if len(got) == 1 else f"{k} ({v})" for k, v in got.items())


def champion_trust(predictor, data, split: str, level: float, n_boot: int = 1000,
                   seed: int = 0, info: dict | None = None, oof=None):
    """Calibrate `predictor`'s bound and check it on `split`. Returns (Calibration or None,
    Assessment or None, note).

    With `oof` (raysweep.evaluate.selection.OutOfFold: the champion's errors on sessions its fold
    models never saw) the bound is the new-session one (bounds.calibrate_sessions), with the
    validation bound kept beside it for photos of training sessions when validation held only
    training sessions (a tone split). Without, the validation bound alone, of whichever regime
    the split makes it. A predictor with a `spread(data)` (an ensemble: how far its members
    disagree on a photo) hands that to the validation bound as one more sign of a hard photo.
    """
    val, train = data.subset(data.indices("val")), data.subset(data.indices("train"))
    cams = list(predictor.stats.cameras)
    spread_of = getattr(predictor, "spread", None)
    cal = None
    if len(val) >= math.ceil(1 / (1 - level)):
        cal = bounds.calibrate(val, predictor.predict(val), train, level, cameras=cams,
                               seed=seed, extras=bounds.Extras(
                                   info=info, spread=None if spread_of is None else spread_of(val)))
        cal.spread_of = spread_of  # the bound of a new photo asks the members again
    if oof is not None:
        seen = cal if cal is not None and cal.regime == bounds.SEEN else None
        cal = bounds.calibrate_sessions(data, oof, train, level, cams, seed=seed,
                                        extras=bounds.Extras(
                                            info={**(info or {}), "n_val": len(val)}, seen=seen))
        cal.spread_of = spread_of
    if cal is None:
        return None, None, (f"no error bound: {len(val)} validation photos cannot calibrate a "
                            f"{level:.0%} bound and no session folds were run")
    if split == "val":  # calibrated on these very photos (or their folds): coverage is circular
        return cal, None, "bound coverage is not reported on the validation split (it calibrates it)"
    ev = data.subset(data.indices(split))
    return cal, assess(cal, ev, predictor.predict(ev), n_boot, seed), None


def draw(a: Assessment, out: Path) -> dict[str, Path]:
    return {"reliability.png": plot_reliability(a.curve, Path(out) / "reliability.png")}


def report_sections(a: Assessment) -> list[tuple[str, object]]:
    """(heading, content) pairs for raysweep.evaluate.report: coverage, flags, reliability."""
    what = (f"Champion's {a.level:.0%} dE00 bound ({a.info.get('method', 'split-conformal')}, "
            f"calibrated on {a.info.get('n_cal', '?')} validation photos): share of these photos "
            "within their bound")
    return [(what, table_for_report(a.table)),
            ("OOD flags raised on these photos", a.rates.assign(
                share=a.rates["share"].map(lambda v: f"{v:.1%}"))),
            ("Reliability of the bound (observed vs nominal)", Path("reliability.png"))]


def write_files(a: Assessment, out: Path) -> None:
    a.table.to_csv(Path(out) / "coverage.csv", index=False)
    a.photos.to_csv(Path(out) / "trust.csv", index=False, float_format="%.4f")
