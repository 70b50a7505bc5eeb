"""Coverage of the error bound: how often the test photos really fall within it.

A bound calibrated at 90% should hold for about 90% of photos the calibration never saw, overall
and in every group a user cares about (camera, ITA skin-tone group, session). `coverage_table`
gives the observed share with a bootstrap interval per group; `reliability` the observed share
against the nominal level over a range of levels (the reliability plot); `flag_rates` how often
each OOD flag was raised. Groups with fewer than MIN_GROUP photos are reported but marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.evaluate import stats

MIN_GROUP = 30
LEVELS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


def _row(dimension: str, group: str, err: np.ndarray, bound: np.ndarray, level: float,
         n_boot: int, seed: int) -> dict:
    covered = (err <= bound).astype(np.float64)
    point, lo, hi = stats.bootstrap_ci(covered, "mean", n_boot=n_boot, seed=seed)
    return {"dimension": dimension, "group": group, "n": len(err), "coverage": point,
            "coverage_lo": lo, "coverage_hi": hi, "nominal": level,
            "median_bound": float(np.median(bound)), "median_error": float(np.median(err)),
            "enough": len(err) >= MIN_GROUP}


def coverage_table(err: np.ndarray, bound: np.ndarray, groups: dict[str, np.ndarray],
                   level: float, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row overall, then one per (dimension, group): n, coverage [95% CI], nominal, the
    median bound and median error (their ratio is how sharp the bound is)."""
    err, bound = np.asarray(err, np.float64), np.asarray(bound, np.float64)
    rows = [_row("overall", "all", err, bound, level, n_boot, seed)]
    for dim, labels in groups.items():
        labels = np.asarray(labels).astype(str)
        for g in sorted(set(labels)):
            m = labels == g
            rows.append(_row(dim, g, err[m], bound[m], level, n_boot, seed))
    return pd.DataFrame(rows)


def reliability(err: np.ndarray, bound_at, levels=LEVELS, n_boot: int = 1000, seed: int = 0
                ) -> pd.DataFrame:
    """Observed coverage per nominal level; `bound_at(level)` gives the (N,) bounds."""
    rows = []
    for level in levels:
        covered = (np.asarray(err) <= bound_at(level)).astype(np.float64)
        point, lo, hi = stats.bootstrap_ci(covered, "mean", n_boot=n_boot, seed=seed)
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
        "coverage [95% CI]": [f"{r.coverage:.1%} [{r.coverage_lo:.1%}, {r.coverage_hi:.1%}]"
                              for r in cov.itertuples()],
        "nominal": cov["nominal"].map(lambda v: f"{v:.0%}"),
        "median bound / median dE00": [f"{r.median_bound:.2f} / {r.median_error:.2f}"
                                       for r in cov.itertuples()],
        "note": ["" if e else f"fewer than {MIN_GROUP} photos" for e in cov["enough"]],
    })
