"""The sweep's leaders, re-evaluated on photos no selection saw (`run_eval_winners`).

Leaders are chosen by their best VALIDATION dE00 (MLflow metric history of FINISHED trial runs):
the top k, plus the best run of each value of the per-group dimensions, so that the study's
questions (metadata or not, background or not, fusion vs fusion) each have a contender. Their
`checkpoint/` artifacts are loaded with weights_only, the dataset is reloaded with the crop, size
and split each was trained on (its content hash and split id must match the checkpoint's), and
all are scored on the test split next to the classical baselines: mean, median and p95 dE00 with
bootstrap intervals, dE76, breakdowns, and paired comparisons on the same photos, with the
floors (raysweep.evaluate.floors) on synthetic data. The champion is the leader with the best
validation score (the test split never picks anything), or, when validation holds few unseen
capture sessions, the best of the top leaders re-scored by grouped k-fold over sessions
(raysweep.evaluate.selection), or the `ensemble:topK` mean when it beats every single leader on
validation. Its error bound is calibrated on validation and its coverage checked on the test
split; it is registered as an MLflow pyfunc model NAME@champion.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from raysweep.errors import UserError, unknown_name
from raysweep.evaluate import crowning, leaders, publish, scoring
from raysweep.evaluate.record import EvalResult, EvalRun, EvalSettings
from raysweep.fsutil import check_replaceable
from raysweep.tracking.store import TRIAL_TAGS

GROUP_DIMS = TRIAL_TAGS  # backbone, fusion, crop, features


def run_eval_winners(settings: EvalSettings) -> EvalResult:
    """The stages over one record: load leaders, add candidates, score, crown, calibrate,
    publish (see the module docstring)."""
    for dim in settings.per_group:
        if dim not in GROUP_DIMS:
            raise unknown_name("--per-group dimension", dim, GROUP_DIMS)
    if settings.split not in ("test", "val"):
        raise UserError(f"--split must be test or val, got {settings.split!r}")
    check_replaceable(settings.out)  # before minutes of work: a refusal must cost nothing
    work = Path(tempfile.mkdtemp(prefix="raysweep-eval-"))
    r = EvalRun(settings, work)
    try:
        leaders.find_leaders(r)
        leaders.load_leaders(r)
        scoring.add_candidates(r)
        scoring.score_candidates(r)
        crowning.crown(r)
        crowning.calibrate(r)
        return publish.publish(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
