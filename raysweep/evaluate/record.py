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


@dataclass
class EvalRun:
    """Settings first (see `run_eval_winners`), then what each stage adds."""

    experiment: str | None
    parent_run: str | None
    top_k: int
    per_group: Sequence[str]
    split: str
    data: Any  # a path, a URI, an in-memory Prepared, or None (the sweep's own)
    out: str | Path
    log_run: bool
    register: bool
    n_boot: int
    seed: int
    tracking_uri: str | None
    baseline_names: Sequence[str] | None
    level: float
    with_floors: bool
    select_folds: int
    select_top: int
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
    comp: pd.DataFrame | None = None
    cal: Any = None
    trust: Any = None
    trust_note: str | None = None
