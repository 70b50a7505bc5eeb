"""How much of a photo's colour error its capture session explains: the learnability statistics.

One definition each, used for the generated set here and stated beside the real phones' figures
in real_phones.yaml (issue 27). "error" is measured patch Lab minus true Lab, per photo; every
statistic is per camera, pooled over that camera's sessions.

- session share of an axis: 1 - pooled within-session variance / total variance of its error.
  A share near 1 means a session's photos all miss the same way, which a per-session model
  learns from a few labelled photos; real phones keep much of the error per photo.
- leftover a*b*: the RMS length of the a*b* error left after a least-squares fit, per session,
  of the error on [measured L*, a*, b*, 1]: what per-session learning cannot remove.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MEASURED = ("measured_L", "measured_a", "measured_b")
TARGET = ("target_L", "target_a", "target_b")
AXES = {"L": 0, "a": 1, "b": 2}


def errors(frame: pd.DataFrame) -> np.ndarray:
    """(N, 3) measured minus true Lab."""
    return frame[list(MEASURED)].to_numpy(np.float64) - frame[list(TARGET)].to_numpy(np.float64)


def session_share(err: np.ndarray, session: np.ndarray) -> float:
    """1 - pooled within-session variance / total variance of one error column."""
    groups = pd.Series(err).groupby(np.asarray(session))
    within = float(groups.apply(lambda s: ((s - s.mean()) ** 2).sum()).sum())
    dof = len(err) - groups.ngroups
    total = float(np.var(err, ddof=1))
    if dof <= 0 or total <= 0:
        return float("nan")
    return 1.0 - (within / dof) / total


def leftover_ab(measured: np.ndarray, err: np.ndarray, session: np.ndarray) -> float:
    """RMS a*b* error left after each session's least-squares fit of err on [L, a, b, 1]."""
    sq = []
    for sid in np.unique(session):
        rows = session == sid
        x = np.column_stack([measured[rows], np.ones(rows.sum())])
        coef, *_ = np.linalg.lstsq(x, err[rows][:, 1:], rcond=None)
        sq.append(((err[rows][:, 1:] - x @ coef) ** 2).sum(1))
    return float(np.sqrt(np.concatenate(sq).mean()))


def per_camera(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per camera: share_L, share_a, share_b, leftover_ab."""
    out = {}
    for cam, g in frame.groupby("camera", sort=True):
        err, sess = errors(g), g["set_id"].astype(str).to_numpy()
        row = {f"share_{k}": session_share(err[:, i], sess) for k, i in AXES.items()}
        row["leftover_ab"] = leftover_ab(g[list(MEASURED)].to_numpy(np.float64), err, sess)
        out[cam] = row
    return pd.DataFrame.from_dict(out, orient="index")
