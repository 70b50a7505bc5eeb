"""The analysis behind the search benchmark: best-so-far curves over wall time, the time each
search method takes to reach a target, medians and spreads over seeds, and the plot.

A run is one sweep of one method with one seed: every epoch result it reported, as seconds since
its first trial started (`t`) and validation dE00 (`val`), plus its span, its champion's test
error and the epochs it ran. Pure functions of those records: no Ray, no training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

BASELINE, DEFAULT = "random", "TPE + ASHA (default)"


def best_so_far(history: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(t, best validation up to t), in time order."""
    h = history.sort_values("t", kind="stable")
    return h["t"].to_numpy(float), np.fmin.accumulate(h["val"].to_numpy(float))


def best_at(curve: tuple[np.ndarray, np.ndarray], when: float) -> float:
    """The best validation reached by time `when` (inf before the first result)."""
    t, best = curve
    seen = np.flatnonzero(t <= when)
    return float(best[seen[-1]]) if len(seen) else float("inf")


def time_to(curve: tuple[np.ndarray, np.ndarray], target: float) -> float:
    """When the curve first reaches `target` or better (inf: never)."""
    t, best = curve
    hit = np.flatnonzero(best <= target + 1e-9)
    return float(t[hit[0]]) if len(hit) else float("inf")


def epochs_to(history: pd.DataFrame, target: float) -> float:
    """How many epochs (of every trial, in time order) the sweep ran until its best reached
    `target` (inf: never): the work, which other jobs on the machine do not stretch."""
    _, best = best_so_far(history)
    hit = np.flatnonzero(best <= target + 1e-9)
    return float(hit[0] + 1) if len(hit) else float("inf")


def per_seed(runs: pd.DataFrame, baseline: str, default: str) -> pd.DataFrame:
    """One row per (space, seed, method) with the comparisons against that seed's baseline run
    (random search without early stopping): its final best is the target, its span the unit."""
    rows = []
    for (space, seed), group in runs.groupby(["space", "seed"], sort=False):
        by = {r.method: r for r in group.itertuples()}
        if baseline not in by:
            continue
        base = by[baseline]
        target, base_span = base.final_best, base.span_s
        base_curve = best_so_far(base.history)
        for r in group.itertuples():
            curve = best_so_far(r.history)
            t_hit = time_to(curve, target)
            setup = getattr(r, "first_result_s", float("nan"))
            rows.append({"space": space, "seed": seed, "method": r.method,
                         "span_s": r.span_s, "epochs_run": r.epochs_run,
                         "first_result_s": setup,
                         "final_best": r.final_best, "test_de00": r.test_de00,
                         "target": target, "t_to_target_s": t_hit,
                         "t_to_target_frac": t_hit / base_span,
                         # the same with each sweep's set-up before its first result left out
                         "after_setup_frac": (t_hit - setup) / (base_span - getattr(
                             base, "first_result_s", float("nan"))),
                         "epochs_to_target_frac": epochs_to(r.history, target) / base.epochs_run,
                         # the baseline's best when this run ended: equal wall time
                         "baseline_best_at_end": best_at(base_curve, r.span_s),
                         "is_default": r.method == default})
    return pd.DataFrame(rows)


def summary(seeds: pd.DataFrame) -> pd.DataFrame:
    """Median [min, max] over seeds per (space, method); reached = seeds that hit the target."""
    def med(x: pd.Series) -> float:
        return float(np.median(x.to_numpy(float)))

    out = []
    for (space, method), g in seeds.groupby(["space", "method"], sort=False):
        out.append({"space": space, "method": method, "seeds": len(g),
                    "span_s": med(g.span_s), "epochs_run": med(g.epochs_run),
                    "first_result_s": med(g.first_result_s),
                    "final_best": med(g.final_best), "final_best_min": g.final_best.min(),
                    "final_best_max": g.final_best.max(),
                    "reached": int(np.isfinite(g.t_to_target_s).sum()),
                    "t_to_target_s": med(g.t_to_target_s),
                    "t_to_target_frac": med(g.t_to_target_frac),
                    "after_setup_frac": med(g.after_setup_frac),
                    "epochs_to_target_frac": med(g.epochs_to_target_frac),
                    "baseline_best_at_end": med(g.baseline_best_at_end),
                    "test_de00": med(g.test_de00), "test_de00_min": g.test_de00.min(),
                    "test_de00_max": g.test_de00.max()})
    return pd.DataFrame(out)


def median_curve(curves: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray):
    """(median, 25th, 75th percentile) of best-so-far over seeds on `grid`; NaN where fewer than
    half of the seeds have a result yet."""
    at = np.array([[best_at(c, x) for x in grid] for c in curves])
    at[~np.isfinite(at)] = np.nan
    enough = np.isfinite(at).sum(axis=0) * 2 >= len(curves)
    with np.errstate(all="ignore"):
        q = np.nanpercentile(np.where(np.isfinite(at), at, np.inf), [50, 25, 75], axis=0)
    q[:, ~enough] = np.nan
    q[~np.isfinite(q)] = np.nan
    return q


def plot(runs: pd.DataFrame, methods: list[str], path: Path) -> None:
    """One panel per space: median best validation over wall time, the 25-75% band over seeds,
    and the baseline's median final best (the target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = list(dict.fromkeys(runs["space"]))
    fig, axes = plt.subplots(1, len(spaces), figsize=(6 * len(spaces), 4.2), squeeze=False)
    for ax, space in zip(axes[0], spaces, strict=True):
        sub = runs[runs["space"] == space]
        grid = np.linspace(0, float(sub["span_s"].max()), 200)
        for method in methods:
            m = sub[sub["method"] == method]
            if not len(m):
                continue
            med, lo, hi = median_curve([best_so_far(h) for h in m["history"]], grid)
            ended = grid > float(np.median(m["span_s"]))  # the median sweep of it was over
            med[ended] = lo[ended] = hi[ended] = np.nan
            line, = ax.plot(grid, med, label=method)
            ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        finals = sub[sub["method"] == methods[0]]["final_best"]
        ax.axhline(float(np.median(finals)), color="grey", lw=0.8, ls="--",
                   label=f"{methods[0]}: median final best")
        lows = sub["final_best"]
        ax.set_ylim(float(lows.min()) - 0.1, float(np.percentile(lows, 90)) + 0.6)
        ax.set_title(f"space {space} ({sub['seed'].nunique()} seeds)")
        ax.set_xlabel("wall time since the sweep's first trial started (s)")
        ax.set_ylabel("best validation dE00 so far (median, 25-75%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
