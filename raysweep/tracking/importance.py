"""Which hyper-parameters mattered: fANOVA importances over a sweep's finished trials, logged
on the sweep's parent run under `importance/` and read back by the report and summarize.

The importances are Optuna's fANOVA (a random forest of the score on the searched parameters,
its variance split by parameter, normalised to sum to 1) over a study rebuilt from the trials,
so a sweep logged to MLflow gets them whatever ran it. Each importance is the mean of the same
fit on random subsets of the trials (80% of them, drawn without replacement: a bootstrap's
repeated trials make a forest overconfident), its interval the spread of those fits: with the
16 trials of a quick sweep the ranking of close parameters is often noise, and the interval
says so. (One fit on all trials beside intervals from the subsets fell outside its own
interval on a real 8-trial sweep: a point and an interval from the same fits cannot.) Every finished trial with a finite
score counts, ASHA's early-stopped ones included at their best epoch: their scores are lower
bounds of what they would have reached, as in any early-stopping sweep's importance.

The cost is bounded whatever the sweep's size: fANOVA's work grows with the leaves of each tree
(a variance per split value and leaf), and unbounded trees have about one leaf per trial, so 10
fits over a 600-trial sweep took 50 s on 2 idle cores (72 s in the scale benchmark's finalize).
Each fit sees at most MAX_FIT_TRIALS trials (a random subset; the ten fits draw 2,000, 98% of a
600-trial sweep's trials) and grows trees at most MAX_DEPTH deep (64 leaves). Measured on a
synthetic 600-trial sweep of the tabular space (7 parameters, two that matter): fits on 480
trials with unbounded trees gave 0.858 / 0.135 / 0.007 for the first three, in 37 s; on 200
trials at depth 6, 0.872 / 0.121 / 0.005 in 3.2 s: the same ranking, a slightly wider interval.
On 30 trials depth 6 changes the importances by under 0.002 (their trees are shallower).

Artifacts (under `importance/`): importance.csv (parameter, importance, lo, hi, trials),
importance.png (bars with intervals) and parallel_coordinates.png (raysweep.tracking.
importance_plots draws both).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
ARTIFACT_DIR = "importance"
CSV = "importance.csv"
RESAMPLES, SUBSET, LEVEL = 10, 0.8, 0.8  # subsets of the trials, their share, the interval
FEW_TRIALS = 10  # below this many trials the ranking is mostly noise (said with the numbers)
MAX_FIT_TRIALS, MAX_DEPTH = 200, 6  # per fit: trials and tree depth (see above)
N_TREES = 32


@dataclass
class Importance:
    table: pd.DataFrame  # parameter, importance, lo, hi: most important first
    trials: pd.DataFrame  # the scored trials it was computed from: the parameters + the metric
    metric: str
    mode: str = "min"

    @property
    def n_trials(self) -> int:
        return len(self.trials)

    def note(self) -> str:
        return note(self.n_trials, self.metric)


def note(n_trials: int, metric: str) -> str:
    """How the importances were computed, in one line (shown with them in every rendering)."""
    few = (f"; with fewer than {FEW_TRIALS} trials the ranking is mostly noise"
           if n_trials < FEW_TRIALS else "")
    return (f"fANOVA over {n_trials} finished trials (score: best-epoch {metric}); mean and "
            f"{LEVEL:.0%} interval of {RESAMPLES} fits on random subsets of "
            f"{fit_size(n_trials)} trials ({SUBSET:.0%}, at most {MAX_FIT_TRIALS}), trees at "
            f"most {MAX_DEPTH} deep{few}")


def fit_size(n_trials: int) -> int:
    """The trials each fit sees: SUBSET of them, at most MAX_FIT_TRIALS (the cost's bound)."""
    return min(MAX_FIT_TRIALS, max(2, round(SUBSET * n_trials)))


def compute(frame: pd.DataFrame, params: list[str], metric: str, mode: str = "min",
            seed: int = 0) -> Importance | None:
    """The importances of `params` for `metric` over the rows of `frame` (one per trial; a
    `status` column, when there is one, keeps the FINISHED rows); None when fewer than two
    trials are scored or no parameter varies."""
    trials = scored_trials(frame, params, metric)
    varying = [p for p in params if p in trials and trials[p].nunique(dropna=True) > 1]
    if len(trials) < 2 or not varying:
        return None
    with _quiet_optuna():
        dists = {p: _distribution(trials[p]) for p in varying}
        rng, n = np.random.default_rng(seed), len(trials)
        subs = np.array([_fanova(trials.iloc[rng.choice(n, fit_size(n), replace=False)], dists,
                                 metric, mode, seed + i) for i in range(RESAMPLES)])
    tail = (1 - LEVEL) / 2 * 100
    table = pd.DataFrame({"parameter": varying, "importance": subs.mean(axis=0),
                          "lo": np.percentile(subs, tail, axis=0),
                          "hi": np.percentile(subs, 100 - tail, axis=0)})
    table = table.sort_values("importance", ascending=False, kind="stable")
    return Importance(table.reset_index(drop=True), trials[[*varying, metric]], metric, mode)


def scored_trials(frame: pd.DataFrame, params: list[str], metric: str) -> pd.DataFrame:
    """The FINISHED rows with a finite `metric`, each parameter as numbers when every value is
    one (MLflow hands params back as strings), else as strings."""
    if metric not in frame or frame.empty:
        return pd.DataFrame(columns=[*params, metric])
    score = pd.to_numeric(frame[metric], errors="coerce")
    ok = np.isfinite(score.to_numpy(dtype=float))
    if "status" in frame:
        ok &= (frame["status"] == "FINISHED").to_numpy()
    out = pd.DataFrame({p: _coerce(frame.loc[ok, p]) for p in params if p in frame})
    out[metric] = score[ok].astype(float)
    return out.reset_index(drop=True)


def top_lines(table: pd.DataFrame, k: int = 5) -> list[str]:
    """`lr  0.62 [0.41, 0.80]` for the k most important parameters."""
    width = max((len(str(p)) for p in table["parameter"].head(k)), default=0)
    return [f"{r.parameter:<{width}}  {r.importance:.2f} [{r.lo:.2f}, {r.hi:.2f}]"
            for r in table.head(k).itertuples()]


def per_sweep(runs: pd.DataFrame, metric: str, prefix: str = "param.") -> dict[str, Importance]:
    """Each sweep's importances over the parameters that vary within it: `runs` holds one row
    per trial run, a `sweep` column and the params as `<prefix>NAME` (MLflow's runs, as
    raysweep.evaluate.trials reads them). Sweeps with nothing to rank are left out."""
    out = {}
    for sweep, g in runs.groupby("sweep", sort=True):
        params = {c.removeprefix(prefix): g[c] for c in g.columns if c.startswith(prefix)}
        keep = [c for c in (metric, "status") if c in g and c not in params]
        imp = compute(pd.DataFrame({**params, **{c: g[c] for c in keep}}), list(params), metric)
        if imp is not None:
            out[str(sweep)] = imp
    return out


def markdown(imps: dict[str, Importance], k: int = 5) -> str:
    """The top `k` parameters of each sweep, with their intervals and how they were computed."""
    lines = ["## Parameter importance (top parameters)\n"]
    if not imps:
        return "\n".join(lines + ["_none: fewer than 2 scored trials, or no parameter varied_\n"])
    for sweep, imp in imps.items():
        lines += [f"{sweep}: {imp.note()}\n", "```", *top_lines(imp.table, k), "```\n"]
    return "\n".join(lines)


def log_to_parent(tracker, parent_run_id: str, frame: pd.DataFrame, params: list[str],
                  metric: str, mode: str = "min") -> Importance | None:
    """Compute the sweep's importances and log them, with their plots, on its parent run."""
    from raysweep.tracking import importance_plots  # lazy: the plots load matplotlib

    imp = compute(frame, params, metric, mode)
    if imp is None:
        log.info("parameter importance skipped: fewer than 2 scored trials or nothing varied")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        write(imp, Path(tmp))
        importance_plots.draw(imp, Path(tmp))
        tracker.log_artifacts(parent_run_id, tmp, ARTIFACT_DIR, strict=True)
    return imp


def write(imp: Importance, out: Path) -> Path:
    path = out / CSV
    imp.table.assign(trials=imp.n_trials, metric=imp.metric).to_csv(path, index=False)
    return path


def fetch(client, parent_run_id: str, dst: Path) -> Path | None:
    """The parent run's `importance/` folder, downloaded into `dst`; None when it has none."""
    import mlflow.artifacts

    try:
        names = {Path(f.path).name for f in client.list_artifacts(parent_run_id, ARTIFACT_DIR)}
        if CSV not in names:
            return None
        return Path(mlflow.artifacts.download_artifacts(
            run_id=parent_run_id, artifact_path=ARTIFACT_DIR, dst_path=str(dst),
            tracking_uri=client.tracking_uri))
    except Exception as e:  # noqa: BLE001 - a report without importances is still a report
        log.warning("could not read the parameter importances of run %s: %s", parent_run_id, e)
        return None


def _coerce(values: pd.Series) -> pd.Series:
    if values.map(lambda v: isinstance(v, bool | np.bool_)).any():
        return values.astype(str)
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().sum() == values.notna().sum():
        return numbers
    return values.where(values.isna(), values.astype(str))


def _distribution(values: pd.Series):
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if pd.api.types.is_numeric_dtype(values):
        lo, hi = float(values.min()), float(values.max())
        if pd.api.types.is_integer_dtype(values):
            return IntDistribution(int(lo), int(hi))
        return FloatDistribution(lo, hi, log=lo > 0 and hi >= 10 * lo)
    return CategoricalDistribution(sorted(values.dropna().unique().tolist()))


def _fanova(trials: pd.DataFrame, dists: dict, metric: str, mode: str, seed: int
            ) -> np.ndarray:
    """fANOVA importances of `dists`' parameters (in their order) over the rows of `trials`."""
    import optuna

    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for row in trials.to_dict("records"):
        params = {p: _plain(row[p]) for p in dists if pd.notna(row[p])}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={p: dists[p] for p in params}, value=row[metric]))
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=N_TREES,
                                                            max_depth=MAX_DEPTH, seed=seed)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                        params=list(dists))
    except (ValueError, RuntimeError) as e:  # e.g. every score equal: nothing to split
        log.debug("fANOVA failed on %d trials: %s", len(trials), e)
        return np.zeros(len(dists))
    return np.nan_to_num(np.array([float(found.get(p, 0.0)) for p in dists]))


def _plain(v):
    """numpy scalars -> the Python ones Optuna's distributions accept."""
    return v.item() if isinstance(v, np.generic) else v


@contextlib.contextmanager
def _quiet_optuna():
    """Optuna says "A new study created in memory" at INFO for each study built here."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)
