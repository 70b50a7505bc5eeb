"""The one record an evaluation of a sweep's winners carries through its stages.

`run_eval_winners` (winners.py) fills the settings; each stage (leaders.py, scoring.py,
crowning.py, publish.py) reads what the stages before it left and adds its own part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from raysweep.data.prepared import Prepared
from raysweep.evaluate import floors, selection
from raysweep.tracking.store import TRIAL_TAGS


@dataclass
class EvalResult:
    out_dir: Path
    champion: str
    summary: pd.DataFrame
    breakdown: pd.DataFrame
    comparisons: pd.DataFrame
    predictions: pd.DataFrame
    eval_run_id: str | None = None
    model_uri: str | None = None
    coverage: pd.DataFrame | None = None  # the champion's bound on the split (evaluate.coverage)
    regime: str = ""  # which photos the split's scores stand for (selection.split_regime)


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate and how: the command's flags, or a caller's own values."""

    experiment: str | None = None  # a study: all its sweeps (default: the most recent sweep)
    parent_run: str | None = None  # one sweep, by its MLflow parent run id
    top_k: int = 3
    per_group: Sequence[str] = TRIAL_TAGS  # also the best run of each value of these
    split: str = "test"
    data: Any = None  # a path, a URI, an in-memory Prepared, or None (the sweep's own)
    out: str | Path = "winners"
    log_run: bool = True  # an evaluation run in MLflow
    register: bool = True  # the champion registered as NAME@champion
    n_boot: int = 2000
    seed: int = 0
    tracking_uri: str | None = None
    baseline_names: Sequence[str] | None = None  # None: every baseline
    level: float = 0.9  # confidence of the champion's error bound
    with_floors: bool = True
    select_folds: int = selection.DEFAULT_FOLDS
    select_top: int = selection.DEFAULT_TOP

    @classmethod
    def from_args(cls, args) -> EvalSettings:
        """The command line (`python -m raysweep.eval_winners`'s parsed flags)."""
        return cls(experiment=args.experiment, parent_run=args.parent_run, top_k=args.top_k,
                   per_group=tuple(g.strip() for g in args.per_group.split(",") if g.strip()),
                   split=args.split, data=args.data, out=args.out,
                   log_run=not args.no_mlflow, register=not args.no_register,
                   n_boot=args.n_boot, seed=args.seed, tracking_uri=args.tracking_uri,
                   level=args.level)


@dataclass
class EvalRun:
    """The settings, then what each stage adds."""

    settings: EvalSettings
    work: Path  # a temporary folder for downloaded checkpoints
    # the sweep (leaders.find_leaders)
    client: Any = None
    uri: str = ""
    exp_id: str = ""
    label: str = ""
    study: str = ""
    picked: pd.DataFrame | None = None
    # leaders.load_leaders
    leaders: list = field(default_factory=list)  # of leaders.Leader, best validation first
    refused: list[str] = field(default_factory=list)
    eval_data: Prepared | None = None  # the evaluated split, as the first leader saw it
    base_data: Prepared | None = None  # the whole dataset, as the first leader saw it
    # scoring.add_candidates, scoring.score_candidates
    preds: dict = field(default_factory=dict)
    kinds: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    ens: Any = None  # the ensemble candidate (a leaders.Leader) or None
    skipped: dict = field(default_factory=dict)
    fl: floors.Floors | None = None
    summary: pd.DataFrame | None = None
    errs: dict = field(default_factory=dict)
    best_base: str | None = None
    table: pd.DataFrame | None = None
    # crowning.crown, crowning.calibrate
    champion: Any = None  # a leaders.Leader
    chosen: str = ""
    sel: selection.Selection | None = None
    fold_crown: selection.FoldCrown | None = None  # every candidate on the session folds
    comp: pd.DataFrame | None = None
    cal: Any = None
    trust: Any = None
    trust_note: str | None = None
