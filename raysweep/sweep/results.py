"""What a sweep leaves behind: the leaderboard and results.csv."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from raysweep.config import DIVERGED
from raysweep.tracking.secrets import scrub_secrets

SHOWN = ("val_de00_mean", "val_de00_median", "val_de00_p95")


def table(results, metric: str, mode: str, max_epochs: int, searched: list[str],
          early_stopping: bool = True, interrupted: bool = False) -> pd.DataFrame:
    """One row per trial (best epoch by `metric`), best first; failed trials last.

    `early_stopping`: whether a scheduler (ASHA) could stop trials; without one, no trial is
    "stopped early", whatever its epoch count."""
    rows = []
    states = _tune_states(results)
    for r in results:
        config = r.config or {}
        history = r.metrics_dataframe
        metrics = r.metrics or {}
        # The folder name is set by us (trial_<id>); metrics can be empty for failed trials.
        trial_id = Path(r.path).name.removeprefix("trial_") if r.path else metrics.get("trial_id")
        row: dict[str, Any] = {"trial_id": trial_id}
        # Only finite epochs can be a trial's best: a NaN or inf score (diverged weights) is
        # the worst answer, never a small one, and must not rank anywhere.
        scored = _finite(history, metric)
        if scored is not None:
            best = scored.loc[scored[metric].idxmin() if mode == "min"
                              else scored[metric].idxmax()]
            epochs = int(history["training_iteration"].max())
            row.update({k: float(best[k]) for k in SHOWN if k in best})
            row[metric] = float(best[metric])
            row["best_epoch"] = int(best.get("epoch", best["training_iteration"]))
        else:
            epochs = int(history["training_iteration"].max()) if history is not None and \
                "training_iteration" in history and len(history) else 0
            row.update({k: math.nan for k in (*SHOWN, metric)})
        row["epochs_run"] = epochs
        planned = min(int(config.get("epochs", max_epochs)), max_epochs)
        row["status"] = trial_status(r, states, interrupted, ran_all=epochs >= planned)
        # only a trial that Tune ended before its budget was stopped early; one still running
        # when the sweep was interrupted is INTERRUPTED, whatever its epoch count
        row["stopped_early"] = early_stopping and row["status"] == "FINISHED" and epochs < planned
        row.update({k: config.get(k) for k in searched})
        row["error"] = _last_line(r.error) if r.error else str(metrics.get(DIVERGED) or "")
        row["mlflow_run_id"] = ""  # the sweep fills it in from MLflow (run.finalize)
        row["checkpoint"] = r.checkpoint.path if r.checkpoint else ""
        row["config"] = json.dumps(scrub_secrets(config), sort_keys=True, default=str)
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df) and metric in df:
        # finished trials first, then failed ones; within each, best first and unscored last
        df["_failed"] = df["status"] == "FAILED"
        df = df.sort_values(metric, ascending=mode == "min", na_position="last", kind="stable")
        df = df.sort_values("_failed", kind="stable").drop(columns="_failed")
    df.insert(0, "rank", range(1, len(df) + 1))
    return df.reset_index(drop=True)


def _tune_states(results) -> dict[str, str]:
    """Trial path -> Tune status (TERMINATED, ERROR, RUNNING, ...) when `results` is a ResultGrid;
    a plain list of Results carries none."""
    analysis = getattr(results, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None) or []
    return {str(t.path): str(t.status) for t in trials if getattr(t, "path", None)}


def trial_status(result, states: dict[str, str], interrupted: bool = False,
                 ran_all: bool = False) -> str:
    """FINISHED, FAILED (raised or diverged) or INTERRUPTED: what the summary and the
    benchmarks count a trial as."""
    if result.error or (result.metrics or {}).get(DIVERGED):  # diverged: ended, not raised
        return "FAILED"
    state = states.get(str(result.path), "TERMINATED")
    if state == "ERROR":
        return "FAILED"
    reported = result.metrics_dataframe is not None and len(result.metrics_dataframe) > 0
    if state != "TERMINATED" or not reported:  # still running, or never started
        return "INTERRUPTED"
    # After an interrupt Tune's clean-up marks the running trials TERMINATED too: then only a
    # trial whose last result says done (a stop by the scheduler) or that ran all its epochs
    # finished. Not always: Tune does not save `done` for a trial that ended on its own, so a
    # trial restored by --resume may say done=False.
    done = (result.metrics or {}).get("done", True)
    return "FINISHED" if not interrupted or done or ran_all else "INTERRUPTED"


def _finite(history: pd.DataFrame | None, metric: str) -> pd.DataFrame | None:
    """The epochs of `history` with a finite `metric`; None when there is none."""
    if history is None or metric not in history:
        return None
    values = pd.to_numeric(history[metric], errors="coerce")
    ok = history[values.map(lambda v: math.isfinite(v) if pd.notna(v) else False)]
    return ok if len(ok) else None


def _last_line(error: BaseException) -> str:
    lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(error).__name__


def leaderboard(df: pd.DataFrame, metric: str, searched: list[str], top: int = 10) -> str:
    cols = ["rank", "trial_id", "status", metric, *[c for c in SHOWN if c != metric],
            "best_epoch", "epochs_run", *searched]
    shown = df[[c for c in cols if c in df]].head(top).copy()
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def to_csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue()
