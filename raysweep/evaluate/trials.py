"""The trials of one or two sweeps, read from MLflow, scored by their best epoch.

A sweep is named by its experiment (all its sweeps), `EXPERIMENT@SWEEP_NAME`, or a parent run
id. A trial's score is its BEST validation dE00 over epochs (the epoch whose checkpoint was kept),
not the last one, which early stopping and noisy epochs make arbitrary; an unscored or diverged
trial sorts last. `runs_frame` is where eval_winners finds its candidates; `markdown` and
`group_table` are what `python -m raysweep.summarize` prints.
"""


from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.config import SELECT_METRIC
from raysweep.errors import UserError
from raysweep.evaluate.markdown import frame_markdown
from raysweep.tracking.store import TRIAL_TAGS, open_client, retry

log = logging.getLogger("raysweep.trials")
METRIC = SELECT_METRIC  # lower is better (SELECT_MODE)
GROUPS = ("fusion", "backbone", "features", "crop")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def client_for(uri: str | None = None):
    return open_client(uri)


def resolve_sweep(client, spec: str | None = None, experiment: str | None = None,
                  parent_run: str | None = None) -> tuple[str, str | None, str]:
    """(experiment id, parent run id or None for all sweeps, label) from any way of naming it."""
    spec_exp, spec_sweep = experiment, None
    if spec and _RUN_ID.match(spec):
        parent_run = spec
    elif spec:
        spec_exp, _, spec_sweep = spec.partition("@")
    if parent_run:
        try:
            run = retry(client.get_run, parent_run)
        except Exception as e:  # noqa: BLE001 - mlflow's "not found" is a generic exception
            raise UserError(f"no MLflow run {parent_run}: {e}", where="--parent-run",
                            fix="copy the parent run id from the MLflow UI") from None
        return run.info.experiment_id, parent_run, run.data.tags.get(
            "raysweep.sweep_name", run.info.run_name or parent_run)
    if not spec_exp:
        return latest_sweep(client)
    exp = retry(client.get_experiment_by_name, spec_exp)
    if exp is None:
        names = [e.name for e in retry(client.search_experiments)]
        raise UserError(f"no MLflow experiment {spec_exp!r} in {client.tracking_uri}",
                        where="--experiment",
                        fix=f"use one of: {', '.join(sorted(names)) or 'none (run a sweep first)'}"
                            "; or set MLFLOW_TRACKING_URI to the store the sweep used")
    if not spec_sweep:
        return exp.experiment_id, None, spec_exp
    runs = retry(client.search_runs, [exp.experiment_id],
                 filter_string=f"tags.`raysweep.sweep_name` = '{spec_sweep}' and "
                               "tags.`raysweep.role` = 'sweep'", max_results=1)
    if not runs:
        raise UserError(f"experiment {spec_exp!r} has no sweep named {spec_sweep!r}",
                        where=spec, fix="run `python -m raysweep.summarize --experiment "
                                        f"{spec_exp}` to see its sweeps")
    return exp.experiment_id, runs[0].info.run_id, spec


def latest_sweep(client) -> tuple[str, str, str]:
    """The most recently started sweep in the store, as resolve_sweep returns it; said in the
    log, so a command run without naming a sweep tells which one it used."""
    exps = [e.experiment_id for e in retry(client.search_experiments)]
    runs = retry(client.search_runs, exps, filter_string="tags.`raysweep.role` = 'sweep'",
                 order_by=["attributes.start_time DESC"], max_results=1) if exps else []
    if not runs:
        raise UserError(f"no sweep in {client.tracking_uri}", where="the MLflow store",
                        fix="run one (`python -m raysweep.search --space quickstart`), set "
                            "MLFLOW_TRACKING_URI to the store the sweep used, or pass "
                            "--experiment NAME / --parent-run ID")
    run = runs[0]
    name = run.data.tags.get("raysweep.sweep_name", run.info.run_name or run.info.run_id)
    exp = retry(client.get_experiment, run.info.experiment_id).name
    log.info("no sweep named: using the most recent one, %s@%s (parent run %s)", exp, name,
             run.info.run_id)
    return run.info.experiment_id, run.info.run_id, f"{exp}@{name}"


def best_metric(client, run_id: str, metric: str = METRIC) -> tuple[float, int]:
    """(best value, its epoch) from the run's metric history; (nan, 0) if never logged."""
    history = retry(client.get_metric_history, run_id, metric)
    # only finite epochs count: NaN or inf (diverged weights) is the worst score, never a best
    values = [(m.value, m.step) for m in history if np.isfinite(m.value)]
    if not values:
        return float("nan"), 0
    value, step = min(values)
    return float(value), int(step)


def runs_frame(client, experiment_id: str, parent_run: str | None = None,
               label: str = "") -> pd.DataFrame:
    """One row per trial run: ids, status, the four group tags, best val metric, params."""
    flt = "tags.`raysweep.role` = 'trial'"
    if parent_run:
        flt += f" and tags.mlflow.parentRunId = '{parent_run}'"
    runs = retry(client.search_runs, [experiment_id], filter_string=flt, max_results=50000)
    parents: dict[str, str] = {}
    rows = []
    for r in runs:
        tags, params = r.data.tags, r.data.params
        parent = tags.get("mlflow.parentRunId", "")
        if parent and parent not in parents:
            try:
                parents[parent] = retry(client.get_run, parent).data.tags.get(
                    "raysweep.sweep_name", parent)
            except Exception:  # noqa: BLE001 - a deleted parent leaves its children readable
                parents[parent] = parent
        best, epoch = best_metric(client, r.info.run_id)
        groups = {k: tags.get(k, params.get(k, "")) for k in TRIAL_TAGS}
        rows.append({
            "sweep": label or parents.get(parent, parent), "sweep_name": parents.get(parent, ""),
            "parent_run_id": parent, "run_id": r.info.run_id,
            "trial_id": tags.get("raysweep.trial_id", ""), "status": r.info.status,
            **used_groups(groups),
            METRIC: best, "best_epoch": epoch,
            "val_de00_median": r.data.metrics.get("val_de00_median", np.nan),
            "epochs_run": tags.get("raysweep.epochs_run", ""),
            "stopped_early": tags.get("raysweep.stopped_early", ""),
            "error": tags.get("raysweep.error", ""),
            **{f"param.{k}": v for k, v in sorted(params.items())},
        })
    cols = ["sweep", "sweep_name", "parent_run_id", "run_id", "trial_id", "status", *TRIAL_TAGS,
            METRIC, "best_epoch", "val_de00_median", "epochs_run", "stopped_early", "error"]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=cols)
    # finished runs first, then the rest (a failed run's best epoch may be finite); unscored last
    df = df.sort_values(METRIC, na_position="last", kind="stable")
    return df.sort_values("status", key=lambda s: s != "FINISHED", kind="stable"
                          ).reset_index(drop=True)


def used_groups(groups: dict) -> dict:
    """A tabular trial's (no image in its features) backbone and crop are config defaults it
    never used: shown as "-", so that no tabular model is labelled or grouped as a CNN."""
    features = str(groups.get("features") or "")
    if features and "image" not in features.split("+"):
        return {**groups, "backbone": "-", "crop": "-"}
    return groups


def group_table(df: pd.DataFrame, by: str, per_sweep: bool = False) -> pd.DataFrame:
    """Per value of `by`: trials, finished, best and median of the best-epoch validation dE00,
    and the best trial's id; with `per_sweep`, one column block per sweep, side by side."""
    if df.empty:
        return pd.DataFrame()
    keys = ["sweep", by] if per_sweep else [by]
    rows = []
    for key, g in df.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = g[g["status"] == "FINISHED"]
        scored = ok[METRIC].dropna()
        best_row = ok.loc[scored.idxmin()] if len(scored) else None
        rows.append({**dict(zip(keys, key)), "trials": len(g), "finished": len(ok),
                     f"best {METRIC}": scored.min() if len(scored) else np.nan,
                     f"median {METRIC}": scored.median() if len(scored) else np.nan,
                     "best trial": "" if best_row is None else best_row["trial_id"]})
    out = pd.DataFrame(rows)
    if per_sweep:
        out = out.pivot_table(index=by, columns="sweep", aggfunc="first", sort=False)
        out.columns = [f"{a} [{b}]" for a, b in out.columns]
        out = out.reset_index()
    return out


# What a trial's validation score stands for, by how its split was drawn: a score on new sessions
# and one on seen sessions differ several-fold, so a summary must not leave it to be guessed
VAL_REGIMES = {
    "set_id": "new sessions (whole capture sessions held out of training)",
    "tone_id": "seen sessions (held-out tones photographed in sessions that were in training)",
    "camera": "a camera held out of training (its sessions are new too)",
    "column": "the dataset's own split column (eval_winners' report names the regime)",
}


def regime_line(df: pd.DataFrame) -> str:
    """One line: which regime the validation scores of these trials are for (param.split_by)."""
    col = "param.split_by"
    got = df[col].fillna("").astype(str) if col in df.columns else pd.Series([""] * len(df))
    parts = [f"{VAL_REGIMES.get(k, f'split_by={k}')}: {n} trial{'s' if n != 1 else ''}"
             if k else f"not recorded: {n} trial{'s' if n != 1 else ''}"
             for k, n in got.value_counts().items()]
    return "Validation scores are for " + "; ".join(parts) + "." if parts else ""


def markdown(df: pd.DataFrame, title: str, per_sweep: bool = False) -> str:
    lines = [f"# {title}\n", f"{len(df)} trial runs; {int((df['status'] == 'FINISHED').sum())} "
             f"finished. Score: best-epoch {METRIC} (lower is better). {regime_line(df)}\n"]
    for by in GROUPS:
        table = group_table(df, by, per_sweep)
        lines += [f"## By {by}\n", frame_markdown(table.round(3))]
    top = df.head(10)[["sweep", "trial_id", *TRIAL_TAGS, METRIC, "best_epoch", "status"]]
    lines += ["## Top 10 trials\n", frame_markdown(top.round(3))]
    return "\n".join(lines)


def summarize(experiment: str | None = None, compare: Sequence[str] = (),
              parent_run: str | None = None, uri: str | None = None) -> pd.DataFrame:
    client = client_for(uri)
    specs = list(compare) or [None]
    frames = []
    for spec in specs:
        exp_id, parent, label = resolve_sweep(client, spec, experiment, parent_run)
        frames.append(runs_frame(client, exp_id, parent, label if compare else ""))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_outputs(df: pd.DataFrame, out: Path, title: str, per_sweep: bool = False
                  ) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("runs.csv", df.to_csv(index=False)), ("summary.md", markdown(df, title, per_sweep))):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out / name)
        written.append(out / name)
    return written
