"""Group-conditional (Mondrian) quantiles of the new-session bound's conformal scores.

The scores are out-of-fold: each is a photo's dE00 over its difficulty sigma, from a fold model
that never saw the photo's session. Photos of one session share its light, so the session is the
unit of exchange: in every set of scores below each session weighs the same, shared by its photos
there (a session that shot many photos of one tone does not outweigh the others in that tone's
cell). The bound's multiplier for a new photo is:

1. the weighted `base` quantile of the scores in the photo's cell (its PREDICTED ITA group, known
   for a new photo: dark tones err more), when the cell holds at least `MIN_ROWS` photos of at
   least `MIN_SESSIONS` sessions; else the pooled one (a small cell's quantile is noise), with the
   small cells together one cell (`POOLED`) below;
2. times its cell's lift >= 1 (`lifts`): the lifts make every KNOWN group of the calibration
   photos (their TRUE ITA group, from their labels, and their camera) reach `floor` coverage and
   all photos `level`, raising first the cells where that costs the least bound width per photo
   covered. A dark tone that the model mistakes for a brown one errs like neither cell and only
   the labels see it; one lift for every cell (the previous design) widened the light cells,
   where dark photos are few, as much as the brown ones, where they are many, and the bound
   over-covered. With a "fold" in the groups, each fold's scores are judged against the cell
   quantiles of the OTHER folds (as a new session's are against all of them): in-sample, the
   cells fit their own scores and the lifts come out too small.

Cells at a `base` below the level leave the lifts to place the width where the misses are;
`raysweep.serve.bounds` sets base and floor (chosen on the session folds,
benchmarks/new_sessions_bounds.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_ROWS = 30  # a cell or known group smaller than this takes the pooled quantile / no part
MIN_SESSIONS = 5  # a cell needs photos of this many sessions: the unit of exchange is the session
POOLED = "*"  # the cells without a quantile of their own (and a cell calibration never saw)


def quantile(scores: np.ndarray, weights: np.ndarray, level: float) -> float:
    """The smallest score whose share of the (renormalised) weight reaches `level`."""
    order = np.argsort(scores, kind="stable")
    cum = np.cumsum(weights[order])
    k = int(np.searchsorted(cum, level * cum[-1] - 1e-12))
    return float(scores[order][min(k, len(cum) - 1)])


def session_weights(sessions: np.ndarray) -> np.ndarray:
    """Per row, 1 / (its session's rows): every session weighs the same."""
    _, inv, counts = np.unique(sessions, return_inverse=True, return_counts=True)
    return 1.0 / counts[inv]


def session_quantile(scores: np.ndarray, sessions: np.ndarray, level: float) -> float:
    """The `level` quantile with every session of `sessions` weighing the same."""
    return quantile(scores, session_weights(sessions), level)


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


def keys(cells: np.ndarray, table: dict[str, float]) -> np.ndarray:
    """(N,) the lift each row takes: its cell's, or POOLED's for a cell without a quantile."""
    return np.array([str(c) if str(c) in table else POOLED for c in cells], dtype=object)


@dataclass
class Fitted:
    """The cells' quantiles at the base level, the pooled one, and each cell's lift."""

    table: dict[str, float]
    pooled: float
    lifts: dict[str, float]

    def multipliers(self, cells: np.ndarray) -> np.ndarray:
        """(N,) the score quantile each row's bound multiplies its sigma by."""
        top = max(self.lifts.values(), default=1.0)  # a cell calibration never saw: the widest
        lift = np.array([self.lifts.get(k, top) for k in keys(cells, self.table)], np.float64)
        return lift * multipliers(cells, self.table, self.pooled)


def lifts(ratio: np.ndarray, key: np.ndarray, sessions: np.ndarray,
          targets: list[tuple[np.ndarray, float]], width: dict[str, float]) -> dict[str, float]:
    """The lift per key (>= 1) with which every target (rows, share) has at least that share of
    its weight (sessions equal within it) at ratio <= its key's lift, found greedily: while a
    target falls short, the most short one raises the key whose next lift covers the most of its
    weight per unit of bound width added (`width`: the key's share of the calibration weight
    times its quantile). Each step covers at least one more row, so it ends."""
    names = sorted(width)
    k = np.searchsorted(names, key.astype(str))
    lift = np.ones(len(names))
    share, weight = np.array([t for _, t in targets]), []
    for rows, _ in targets:
        w = np.zeros(len(ratio))
        w[rows] = session_weights(sessions[rows])
        weight.append(w / w.sum())
    weight = np.array(weight)
    while True:
        covered = ratio <= lift[k]
        short = share - weight @ covered
        if not len(short) or short.max() <= 1e-9:
            return dict(zip(names, lift.tolist()))
        w, best = weight[int(np.argmax(short))], (0.0, 0, 1.0)
        for j, name in enumerate(names):
            m = (k == j) & ~covered & (w > 0)
            if m.any():
                order = np.argsort(ratio[m], kind="stable")
                r, gain = ratio[m][order], np.cumsum(w[m][order])
                value = gain / np.maximum((r - lift[j]) * width[name], 1e-300)
                i = int(np.argmax(value))
                best = max(best, (float(value[i]), j, float(r[i])))
        lift[best[1]] = best[2]


def _ratios(s: np.ndarray, groups: dict, base: float, table: dict, pooled: float) -> np.ndarray:
    """Each score over its cell's quantile: the OTHER folds' quantile when groups has folds."""
    cells, sessions = np.asarray(groups["cell"]), np.asarray(groups["session"])
    ratio = s / np.maximum(multipliers(cells, table, pooled), 1e-12)
    if "fold" in groups and len(np.unique(groups["fold"])) > 1:
        fold = np.asarray(groups["fold"])
        for f in np.unique(fold):
            m = fold == f
            t = cell_quantiles(s[~m], cells[~m], sessions[~m], base)
            p = session_quantile(s[~m], sessions[~m], base)
            ratio[m] = s[m] / np.maximum(multipliers(cells[m], t, p), 1e-12)
    return ratio


def fit(scores, groups: dict, level: float, floor: float, base: float | None = None) -> Fitted:
    """The cells' `base` quantiles (default: `level`) and their lifts, from scores and their
    `groups`: "cell" (the predicted ITA group), "session", the known groups ("tone", "camera")
    and optionally "fold". The lifts reach `floor` in every known group of MIN_ROWS photos or
    more (none when floor <= 0) and `level` over all photos."""
    s = np.asarray(scores, np.float64)
    base = level if base is None else base
    cells, sessions = np.asarray(groups["cell"]), np.asarray(groups["session"])
    pooled = session_quantile(s, sessions, base)
    table = cell_quantiles(s, cells, sessions, base)
    key = keys(cells, table)
    w = session_weights(sessions)
    width = {str(c): float(w[key == c].sum() / w.sum()) * (table.get(str(c), pooled) or 1e-12)
             for c in np.unique(key)}
    targets = [(np.ones(len(s), bool), level)]
    if floor > 0:
        targets += [(labels == g, floor) for name in ("tone", "camera") if name in groups
                    for labels in [np.asarray(groups[name])] for g in np.unique(labels)
                    if (labels == g).sum() >= MIN_ROWS]
    ratio = _ratios(s, groups, base, table, pooled)
    return Fitted(table, pooled, lifts(ratio, key, sessions, targets, width))
