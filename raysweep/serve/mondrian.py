"""Group-conditional (Mondrian) quantiles of the new-session bound's conformal scores.

The scores are out-of-fold: each is a photo's dE00 over its difficulty sigma, from a fold model
that never saw the photo's session. Photos of one session share its light, so the session is the
unit of exchange: in every set of scores below each session weighs the same, shared by its photos
there (a session that shot many photos of one tone does not outweigh the others in that tone's
cell). The bound's multiplier for a new photo is:

1. the weighted `level` quantile of the scores in the photo's cell (its PREDICTED ITA group, known
   for a new photo: dark tones err more), when the cell holds at least `MIN_ROWS` photos of at
   least `MIN_SESSIONS` sessions; else the pooled quantile (a small cell's quantile is noise);
2. times one factor >= 1 that lifts every KNOWN group of the calibration photos (their TRUE ITA
   group, from their labels, and their camera) to at least `floor` coverage: a tone that the
   model mistakes for a lighter one errs like neither cell, and only the labels see it. With a
   "fold" in the groups, each fold's scores are judged against the cell quantiles of the OTHER
   folds (as a new session's are against all of them): in-sample, the cells fit their own
   scores and the lift comes out too small.
"""

from __future__ import annotations

import numpy as np

MIN_ROWS = 30  # a cell or known group smaller than this takes the pooled quantile / no part
MIN_SESSIONS = 5  # a cell needs photos of this many sessions: the unit of exchange is the session


def quantile(scores: np.ndarray, weights: np.ndarray, level: float) -> float:
    """The smallest score whose share of the (renormalised) weight reaches `level`."""
    order = np.argsort(scores, kind="stable")
    cum = np.cumsum(weights[order])
    k = int(np.searchsorted(cum, level * cum[-1] - 1e-12))
    return float(scores[order][min(k, len(cum) - 1)])


def session_quantile(scores: np.ndarray, sessions: np.ndarray, level: float) -> float:
    """The `level` quantile with every session of `sessions` weighing the same."""
    _, inv, counts = np.unique(sessions, return_inverse=True, return_counts=True)
    return quantile(scores, 1.0 / counts[inv], level)


def cell_quantiles(scores: np.ndarray, cells: np.ndarray, sessions: np.ndarray,
                   level: float) -> dict[str, float]:
    """{cell: its `level` quantile} for the cells large enough to have their own."""
    out = {}
    for c in np.unique(cells):
        m = cells == c
        if m.sum() >= MIN_ROWS and len(np.unique(sessions[m])) >= MIN_SESSIONS:
            out[str(c)] = session_quantile(scores[m], sessions[m], level)
    return out


def multipliers(cells: np.ndarray, table: dict[str, float], pooled: float) -> np.ndarray:
    """(N,) each row's quantile: its cell's, or the pooled one where the cell has none."""
    return np.array([table.get(str(c), pooled) for c in cells], np.float64)


def floor_factor(ratio: np.ndarray, sessions: np.ndarray, known: dict[str, np.ndarray],
                 floor: float) -> float:
    """The least factor >= 1 with which every known group (of MIN_ROWS photos or more) has at
    least `floor` of its weight at ratio (score over its cell quantile) <= factor."""
    f = 1.0
    if floor <= 0:  # no floor asked
        return f
    for labels in known.values():
        for g in np.unique(labels):
            m = labels == g
            if m.sum() >= MIN_ROWS:
                f = max(f, session_quantile(ratio[m], sessions[m], floor))
    return f


def fit(scores, groups: dict, level: float, floor: float) -> tuple[dict[str, float], float, float]:
    """(cell table, pooled quantile, floor factor) from scores and their `groups`: "cell" (the
    predicted ITA group), "session", the known groups ("tone", "camera") and optionally "fold"."""
    s = np.asarray(scores, np.float64)
    cells, sessions = np.asarray(groups["cell"]), np.asarray(groups["session"])
    pooled = session_quantile(s, sessions, level)
    table = cell_quantiles(s, cells, sessions, level)
    ratio = s / np.maximum(multipliers(cells, table, pooled), 1e-12)
    if "fold" in groups and len(np.unique(groups["fold"])) > 1:
        fold = np.asarray(groups["fold"])
        for f in np.unique(fold):
            m = fold == f
            t = cell_quantiles(s[~m], cells[~m], sessions[~m], level)
            p = session_quantile(s[~m], sessions[~m], level)
            ratio[m] = s[m] / np.maximum(multipliers(cells[m], t, p), 1e-12)
    known = {k: np.asarray(v) for k, v in groups.items() if k in ("tone", "camera")}
    return table, pooled, floor_factor(ratio, sessions, known, floor)
