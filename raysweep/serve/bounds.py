"""Error bounds: "dE00 <= B with 90% confidence" on every prediction (split-conformal).

Calibration uses the VALIDATION split only (the test split measures coverage, it never tunes it).
The validation photos are cut in two by tone (or by row where there is no tone id):

1. on the first half a small ridge regression learns a per-photo difficulty sigma(x) from what
   a new photo also has (camera, metadata, patch mean, the prediction, the size of the correction
   the model made, background statistics, clipping): log(dE00 + c) ~ features;
2. on the second half the conformal scores s = dE00 / sigma(x) are kept, and the bound for a new
   photo is B(x) = q * sigma(x) with q the ceil((n+1) level)-th smallest score.

Two regimes, named in calibration.json and in every output: "new sessions" (a capture session the
model never trained on, the normal case of a user's new photo) and "seen sessions" (a new tone in a
session that was in training: a fixed lab setup). `calibrate` above is the seen-sessions bound
when the validation sessions were all in training (a tone split). `calibrate_sessions` is the
new-session bound: cross-conformal over session folds, on errors of sessions the fold models never
saw; it keeps the seen-sessions bound beside it, used only for a photo that names (`set_id`) a
training session.

Step 2 alone carries the guarantee: for a photo exchangeable with the calibration half, P(dE00 <=
B) >= level whatever sigma is, so a poor difficulty model makes the bound wider, never wrong.
That guarantee is an average over random splits: with a split grouped by tone, the unit of
exchange is the tone, and one split's validation tones (about 20 on the default dataset) can be
lighter or darker than its test tones, so the coverage of one split moves by several points
(benchmarks/results/trust.md shows three). The sorted scores are stored, so any level can be
asked for later; with too few validation photos to split, sigma is 1 (one constant bound). `calibration.json` next to a checkpoint's
`checkpoint.json` holds all of it plus the training ranges for the OOD flags (raysweep.serve.ood).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raysweep.color import ITA_CATEGORIES, delta_e00, ita, ita_category
from raysweep.data.prepared import Prepared
from raysweep.errors import UserError
from raysweep.serve import mondrian, ood

FILE = "calibration.json"
LEVEL = 0.9
FORMAT = 3  # 2: the regime each bound is for, the seen-sessions bound beside the new-session one;
# 3: the new-session bound's quantile per predicted ITA group, its known groups floored (`groups`)
NEW, SEEN = "new sessions", "seen sessions"
LEGACY = "validation photos (calibrated before regimes were recorded)"
MIN_SPLIT = 40  # below this many validation photos, no difficulty model: a constant bound
ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # ridge penalties tried by 5-fold CV
GROUP_PREFIXES = ("camera=", "ita=")  # the group bound's sigma: camera and predicted ITA group
MIN_GROUP_ROWS = 30  # a group smaller than this takes no part in the folds' choice of bound
# the new-session bound: the quantile per predicted ITA group at level - CELL_GAP, each group then
# lifted (raysweep.serve.mondrian) until every camera and true ITA group of its calibration photos
# reaches level - FLOOR_GAP and all of them the level, judged as a test photo is: each fold's
# scores against the cell quantiles of the OTHER folds. Chosen on the session folds of the saved
# new_sessions run (benchmarks/results/new_sessions_bounds_quick.md: the narrowest bound whose
# folds, each covered by the bound the other folds calibrate, reach 90% on average and 80% in
# every camera and ITA group). On the 9ca5398 run that rule chose a floor of 85% (0.05) and cells
# at 75% (0.15); on the 8-seed run with the 3-column inv block (session 28, tree champions) a
# floor of 80% and cells at the level; on the same leaders crowned as blends (session 30) a floor
# of 88% and cells at 75%. Three runs, three choices: the rule separates near-equals (in the
# last, fold median bound 10.66 against 11.13 for the previous default), and a user's data may
# prefer others
FLOOR_GAP = 0.02
CELL_GAP = 0.15


@dataclass
class Extras:
    """What a calibration may carry beyond the errors: `info` (recorded as is), `spread` (an
    ensemble's per-photo member disagreement on the calibration rows) and `seen` (a
    seen-sessions bound kept beside a new-session one)."""

    info: dict | None = None
    spread: np.ndarray | None = None
    seen: Calibration | None = None


def conformal_quantile(scores, level: float, weights=None) -> float:
    """The ceil((n + 1) level)-th smallest score: the split-conformal threshold (inf if n is too
    small for the level). With `weights` (aligned with `scores`, see `session_weights`) the
    cross-conformal one over sessions: the smallest score with a `level` share of the weight
    (each session weighs the same), inf when the m sessions are too few for a bound at that level
    (m / (m + 1) < level). The share is of the m sessions, not of m + 1: that (m + 1) correction
    is the finite-sample guarantee of ONE split, and with 13 sessions it set the quantile at 97%
    of the out-of-fold errors (the folds covered 94-100% of their own errors at "90%")."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if weights is not None:
        w = np.asarray(weights, np.float64)
        if w.sum() < level - 1e-12:
            return float("inf")
        return mondrian.quantile(np.asarray(scores, np.float64), w, level)
    s = np.sort(np.asarray(scores, np.float64))
    k = math.ceil((len(s) + 1) * level)
    return float("inf") if k > len(s) else float(s[k - 1])


def session_weights(sessions: np.ndarray) -> np.ndarray:
    """Per-score weights for a bound on a photo of a NEW session (Dunn, Wasserman & Ramdas 2022):
    photos of one session share its light, so the unit of exchange is the session: each of the
    m sessions weighs 1 / (m + 1), shared by its photos. The weights sum to m / (m + 1): a level
    above that has no finite bound (14 calibration sessions reach 93%); below it the quantile is
    taken over the m sessions (`conformal_quantile`)."""
    sid = np.asarray(sessions).astype(str)
    uniq, inv, counts = np.unique(sid, return_inverse=True, return_counts=True)
    return 1.0 / (counts[inv] * (len(uniq) + 1))


def needed_scores(level: float) -> int:
    """The fewest calibration scores with ceil((n + 1) level) <= n, i.e. a finite bound."""
    n = max(1, math.floor(level / (1 - level)) - 1)
    while math.ceil((n + 1) * level) > n:
        n += 1
    return n


def errors(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    return delta_e00(torch.as_tensor(np.asarray(pred, np.float64)),
                     torch.as_tensor(np.asarray(target, np.float64))).numpy()


def features(data: Prepared, pred: np.ndarray, cameras: list[str], background: str = "none",
             spread: np.ndarray | None = None, shift: np.ndarray | None = None
             ) -> tuple[np.ndarray, list[str]]:
    """(N, F) raw difficulty features (NaN where unknown) and their names; `spread` is an
    ensemble's per-photo disagreement of its members (raysweep.serve.ensemble), `shift` how far
    the photo's light is from the training sessions (raysweep.serve.ood.shift_distance)."""
    cols: dict[str, np.ndarray] = {}
    cam = np.asarray(data.camera).astype(str)
    for c in cameras:
        cols[f"camera={c}"] = (cam == c).astype(np.float64)
    for j, name in enumerate(data.meta_names):
        v = data.meta[:, j].astype(np.float64)
        cols[name] = v
        cols[f"{name}_missing"] = (~np.isfinite(v)).astype(np.float64)
    for j, ch in enumerate("Lab"):
        cols[f"mean_{ch}"] = data.mean_lab[:, j].astype(np.float64)
        cols[f"pred_{ch}"] = np.asarray(pred, np.float64)[:, j]
    # the ITA group of the PREDICTED colour: known for a new photo, and dark tones err more
    tone = ita_groups(pred)
    for g in ITA_CATEGORIES:
        cols[f"ita={g}"] = (tone == g).astype(np.float64)
    # how far the model moved the measured colour: a big correction is a hard photo
    ok = np.isfinite(data.mean_lab).all(1)
    corr = np.full(len(data), np.nan)
    if ok.any():
        corr[ok] = errors(pred[ok], data.mean_lab[ok])
    cols["log_correction"] = np.log1p(corr)
    if spread is not None:  # members that disagree: a photo the ensemble finds hard
        cols["log_spread"] = np.log1p(np.asarray(spread, np.float64))
    if shift is not None:  # light unlike the training sessions': a new session's hard case
        cols["log_shift"] = np.log1p(np.asarray(shift, np.float64))
    if background != "none":
        bg, _ = ood.background_features(data, background)
        if bg is not None:
            for j, name in enumerate(("bg_log_r_g", "bg_log_b_g", "bg_texture")):
                cols[name] = bg[:, j]
    share = ood.clipped_share(data)
    if share is not None:
        cols["clipped_share"] = share
    names = list(cols)
    return np.stack([cols[n] for n in names], axis=1), names


def ita_groups(lab: np.ndarray) -> np.ndarray:
    """(N,) the ITA skin-tone group of each Lab row (raysweep.color's categories)."""
    angles = ita(torch.as_tensor(np.asarray(lab, np.float64))).numpy()
    return np.array([ita_category(float(a)) for a in angles], dtype=object)


def group_columns(names: list[str]) -> np.ndarray:
    """Which feature columns the group bound's sigma uses (camera, predicted ITA group)."""
    return np.array([n.startswith(GROUP_PREFIXES) for n in names])


@dataclass
class Difficulty:
    """sigma(x) = max(floor, exp(intercept + standardised(x) @ coef)): a ridge on log error."""

    names: list[str]
    mean: list[float]
    std: list[float]
    coef: list[float]
    intercept: float
    floor: float
    alpha: float = 1.0

    def sigma(self, x: np.ndarray, names: list[str]) -> np.ndarray:
        # a feature the fit saw but this data lacks (e.g. no background) is its training mean
        idx = {n: i for i, n in enumerate(names)}
        z = np.zeros((len(x), len(self.names)))
        for j, n in enumerate(self.names):
            if n in idx:
                v = (x[:, idx[n]] - self.mean[j]) / self.std[j]
                z[:, j] = np.where(np.isfinite(v), v, 0.0)
        return np.maximum(self.floor, np.exp(self.intercept + z @ np.asarray(self.coef)))

    @classmethod
    def fit(cls, x: np.ndarray, names: list[str], err: np.ndarray, seed: int = 0) -> Difficulty:
        mean = np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.nanstd(np.where(np.isfinite(x), x, np.nan), axis=0)
        std = np.where(np.isfinite(std) & (std > 1e-9), std, 1.0)
        z = np.nan_to_num((x - mean) / std)
        c = 0.1 * max(float(np.median(err)), 1e-3)  # keeps log() of near-zero errors finite
        y = np.log(err + c)
        alpha = _cv_alpha(z, y, seed)
        coef, b = _ridge(z, y, alpha)
        fitted = np.exp(b + z @ coef)
        return cls(names=list(names), mean=mean.tolist(), std=std.tolist(), coef=coef.tolist(),
                   intercept=float(b), floor=float(0.25 * np.median(fitted)), alpha=alpha)


def _ridge(z: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    b = float(y.mean())
    a = z.T @ z + alpha * np.eye(z.shape[1])
    return np.linalg.solve(a, z.T @ (y - b)), b


def _cv_alpha(z: np.ndarray, y: np.ndarray, seed: int) -> float:
    folds = np.random.default_rng(seed).permutation(len(y)) % 5
    best, best_err = ALPHAS[0], np.inf
    for alpha in ALPHAS:
        sse = 0.0
        for k in range(5):
            tr, te = folds != k, folds == k
            coef, b = _ridge(z[tr], y[tr], alpha)
            sse += float(((b + z[te] @ coef - y[te]) ** 2).sum())
        if sse < best_err:
            best, best_err = alpha, sse
    return best


@dataclass
class Calibration:
    level: float  # the default level; any other can be asked of `bound`
    scores: list[float]  # sorted conformal scores dE00 / sigma on the calibration photos
    ranges: ood.TrainingRanges
    difficulty: Difficulty | None = None  # None: sigma = 1, a constant bound
    info: dict = field(default_factory=dict)
    # an ensemble's spread per photo (EnsemblePredictor.spread), set when loaded, never stored
    spread_of: object = field(default=None, repr=False, compare=False)
    regime: str = SEEN  # the photos this bound is for: NEW or SEEN sessions (LEGACY: unknown)
    seen: Calibration | None = None  # a seen-sessions bound kept beside a new-session one
    sessions: list[str] = field(default_factory=list)  # the training split's sessions
    weights: list[float] | None = None  # per score (session_weights), aligned with `scores`
    # per score, aligned with `scores`: "cell" (predicted ITA group), "session", and the known
    # groups "tone" (true ITA group) and "camera" (raysweep.serve.mondrian); None: one quantile
    groups: dict[str, list[str]] | None = None
    _fitted: dict = field(default_factory=dict, repr=False, compare=False)  # level -> mondrian fit

    def regimes(self, data: Prepared) -> np.ndarray:
        """(N,) the regime of each row's bound: the seen-sessions one only where the row names a
        session the model trained on (a `set_id`) and that bound exists; else this one."""
        out = np.full(len(data), self.regime, dtype=object)
        if self.seen is not None and self.sessions and "set_id" in data.frame.columns:
            sid = data.frame["set_id"].astype(str).str.strip().to_numpy()
            out[np.isin(sid, self.sessions)] = self.seen.regime
        return out

    def quantile(self, level: float | None = None) -> float:
        return conformal_quantile(self.scores, level or self.level, self.weights)

    def why_no_bound(self, level: float | None = None) -> str | None:
        """None when `level` has a finite bound; else why not, and the highest level that has
        one (split-conformal needs ceil((n + 1) level) <= n calibration scores)."""
        level = level or self.level
        if np.isfinite(self.quantile(level)):
            return None
        if self.weights is not None:  # sessions weighted equally: m sessions reach m / (m + 1)
            top_w = float(np.sum(self.weights))
            m = int(round(top_w / max(1 - top_w, 1e-12)))
            return (f"no error bound at level {level:g}: the new-session bound weighs its {m} "
                    f"calibration session(s) equally, and m sessions give a finite bound only up "
                    f"to level m / (m + 1) = {math.floor(top_w * 1000) / 1000:g}; level "
                    f"{level:g} needs at least {math.ceil(level / (1 - level) - 1e-9)} sessions")
        n = len(self.scores)
        top = math.floor(n / (n + 1) * 1000) / 1000
        return (f"no error bound at level {level:g}: the calibration holds {n} validation "
                f"score(s), and a split-conformal bound at that level needs at least "
                f"{needed_scores(level)}; the highest level these give is {top:g}")

    def multiplier(self, pred: np.ndarray, level: float | None = None) -> np.ndarray:
        """(N,) the score quantile each row's bound multiplies its sigma by: one quantile, or
        with `groups` its predicted ITA group's times that group's lift (`fit_cells`)."""
        level = level or self.level
        q = self.quantile(level)
        if self.groups is None or not np.isfinite(q):
            return np.full(len(pred), q)
        key = (level, FLOOR_GAP, CELL_GAP)
        if key not in self._fitted:  # the lifts' search is not free: once per level
            self._fitted[key] = fit_cells(np.asarray(self.scores), self.groups, level)
        return self._fitted[key].multipliers(ita_groups(pred))

    def sigma(self, data: Prepared, pred: np.ndarray) -> np.ndarray:
        if self.difficulty is None:
            return np.ones(len(data))
        spread = None
        if self.spread_of is not None and "log_spread" in self.difficulty.names:
            spread = self.spread_of(data)
        shift = ood.shift_distance(data, self.ranges) if "log_shift" in self.difficulty.names \
            else None
        x, names = features(data, pred, self.ranges.cameras, self.ranges.background_kind, spread,
                            shift)
        return self.difficulty.sigma(x, names)

    def bound(self, data: Prepared, pred: np.ndarray, level: float | None = None) -> np.ndarray:
        """(N,) dE00 bound per row at `level` (default: the calibrated level), each from the
        bound of its regime (`regimes`)."""
        out = self.multiplier(pred, level) * self.sigma(data, pred)
        if self.seen is not None:
            rows = np.flatnonzero(self.regimes(data) == self.seen.regime)
            if len(rows):
                self.seen.spread_of = self.spread_of
                out[rows] = self.seen.bound(data.subset(rows), np.asarray(pred)[rows], level)
        return out

    def to_dict(self) -> dict:
        d = self.difficulty
        seen = None if self.seen is None else {k: v for k, v in self.seen.to_dict().items()
                                               if k != "ranges"}  # one copy: the outer one
        return {"format": FORMAT, "level": self.level, "regime": self.regime,
                "scores": [round(s, 6) for s in self.scores], "ranges": self.ranges.to_dict(),
                "info": self.info, "difficulty": None if d is None else d.__dict__,
                "sessions": self.sessions, "seen": seen,
                "weights": None if self.weights is None else [round(w, 8) for w in self.weights],
                "groups": self.groups}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        diff = d.get("difficulty")
        seen = d.get("seen")
        return cls(level=float(d["level"]), scores=list(d["scores"]),
                   ranges=ood.TrainingRanges.from_dict(d["ranges"]),
                   difficulty=None if diff is None else Difficulty(**diff),
                   info=dict(d.get("info", {})), regime=str(d.get("regime", LEGACY)),
                   seen=None if seen is None else cls.from_dict({**seen, "ranges": d["ranges"]}),
                   sessions=[str(x) for x in d.get("sessions", [])],
                   weights=None if d.get("weights") is None else list(d["weights"]),
                   groups=None if d.get("groups") is None else {
                       k: [str(x) for x in v] for k, v in d["groups"].items()})


def _halves(val: Prepared, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation rows -> (fit, calibrate) index arrays, split by tone so that the calibration
    half's tones are new to the difficulty model, as the test tones are."""
    rng = np.random.default_rng(seed)
    groups = val.frame["tone_id"].astype(str).to_numpy() if "tone_id" in val.frame.columns \
        else np.arange(len(val)).astype(str)
    uniq = np.unique(groups)
    chosen = set(rng.permutation(uniq)[: len(uniq) // 2])
    fit = np.array([g in chosen for g in groups])
    return np.flatnonzero(fit), np.flatnonzero(~fit)


def calibrate(val: Prepared, pred_val: np.ndarray, train: Prepared, level: float = LEVEL,
              cameras: list[str] | None = None, scaled: bool = True, seed: int = 0,
              extras: Extras | None = None) -> Calibration:
    """Calibrate the bound on the validation rows `val` (with the model's predictions) and
    record the training split's ranges for the OOD flags. `extras.spread` (an ensemble's
    members' disagreement on `val`) joins the difficulty features."""
    extras = extras or Extras()
    info, spread = extras.info, extras.spread
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    ranges = ood.fit_ranges(train, cameras, seed=seed)
    err = errors(pred_val, val.target)
    if not np.isfinite(err).all():
        raise ValueError("validation errors are not finite: the model or targets hold NaN")
    info = {**(info or {}), "n_val": len(val)}
    if scaled and len(val) >= MIN_SPLIT:
        fit_idx, cal_idx = _halves(val, seed)
        x, names = features(val, pred_val, ranges.cameras, ranges.background_kind, spread)
        diff = Difficulty.fit(x[fit_idx], names, err[fit_idx], seed)
        sigma = diff.sigma(x[cal_idx], names)
        scores = np.sort(err[cal_idx] / sigma)
        info.update(method="scaled split-conformal" + " (with ensemble spread)" * (
            spread is not None), n_fit=len(fit_idx), n_cal=len(cal_idx))
    else:
        diff, scores = None, np.sort(err)
        info.update(method="constant split-conformal", n_fit=0, n_cal=len(err))
    regime, sessions = _regime(val, train)
    return Calibration(level=level, scores=scores.tolist(), ranges=ranges, difficulty=diff,
                       info=info, regime=regime, sessions=sessions)


def _sessions(data: Prepared) -> set[str]:
    if "set_id" not in data.frame.columns:
        return set()
    return set(data.frame["set_id"].astype(str).str.strip())


def _regime(val: Prepared, train: Prepared) -> tuple[str, list[str]]:
    """Which photos a bound calibrated on `val` is for: seen sessions when every validation
    session is also a training one (a tone split), new sessions when none is; without session
    ids there is no telling (LEGACY)."""
    v, t = _sessions(val), _sessions(train)
    if not v:
        return LEGACY, sorted(t)
    return (SEEN if v <= t else NEW if not v & t else LEGACY), sorted(t)


METHODS = ("constant", "scaled", "group")  # the new-session bound's sigma: 1, ridge, by group
# the ones the folds choose from: the ridge on every feature (scaled) only when asked, because its
# fold coverage did not carry to the test sessions (benchmarks/results/new_sessions_bounds_quick.md
# as of b0325a0: a whole seed at 68.8%): several of its features (the correction, the light's distance to the
# training sessions) depend on which model and which sessions, and a fold model is not the final one
AUTO = ("group",)
# what `scaled=None` asks for: "folds" (the folds choose between constant and AUTO) or one of
# METHODS; chosen with FLOOR_GAP and CELL_GAP by the same rule on the folds (see FLOOR_GAP):
# constant (fold median bound 9.92) over the folds' choice (11.05) at the same gaps. The group
# sigma stays one `scaled="folds"` or `scaled="group"` away (a camera whose sessions err more)
DEFAULT_SIGMA = "constant"
CHOICE_LEVELS = (0.5, 0.7)  # with `level`, where the folds compare the bounds' shapes


def calibrate_sessions(data: Prepared, oof, train: Prepared, level: float = LEVEL,
                       cameras: list[str] | None = None, scaled: bool | str | None = None,
                       seed: int = 0, extras: Extras | None = None) -> Calibration:
    """The new-session bound, from out-of-fold errors (raysweep.evaluate.selection.OutOfFold:
    each train + val photo predicted by a fold model that never saw its session), never from the
    validation photos that picked epochs, leaders or ensembles.

    Cross-conformal over session folds, sessions weighted equally: the scores of fold j are its
    errors over a difficulty sigma fitted on the OTHER folds' errors, so a score is as honest as
    the test photo's; the stored sigma is refitted on all folds. The sigma is one of `METHODS`:
    1 (constant), the ridge on every difficulty feature (scaled), or the ridge on the camera
    and the predicted ITA group alone (group: a Mondrian-like bound, wider for a camera or a
    tone whose new sessions err more, both known for a new photo). `scaled` True / False / a
    method name forces one; "folds" lets the folds choose (`_fold_choice`); None is
    DEFAULT_SIGMA. Over the scores, the quantile is taken per predicted ITA group at level -
    CELL_GAP, and each group's quantile is lifted, where the lift costs the least width, until
    every camera and true ITA group reaches level - FLOOR_GAP and all photos the level, judged
    out of fold (`fit_cells`, raysweep.serve.mondrian). `extras.seen` (the validation bound of a
    split whose validation sessions were all in training) is kept beside it for photos of those
    sessions. The same folds choose the light_unlike_training threshold (`_choose_shift`) that
    the stored ranges carry.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    extras = extras or Extras()
    ranges = ood.fit_ranges(train, cameras, seed=seed)
    sub = data.subset(oof.rows)
    err = errors(oof.pred, sub.target)
    if not np.isfinite(err).all():
        raise ValueError("out-of-fold errors are not finite: a fold model or the targets hold NaN")
    folds = np.unique(oof.fold)
    groups = _score_groups(sub, oof)
    want = _wanted(scaled)
    diff, method, chosen, crosses = None, "constant", "", {"constant": err}
    if want != "constant" and len(err) >= MIN_SPLIT and len(folds) >= 2:
        shift = _fold_shift(data, oof) if ranges.shift_names else None
        x, names = features(sub, oof.pred, ranges.cameras, ranges.background_kind,
                            extras.spread, shift)
        cols = {"scaled": np.ones(len(names), bool), "group": group_columns(names)}
        for name in [want] if want else AUTO:
            crosses[name] = _cross_scores(x[:, cols[name]], [n for n, c in zip(names, cols[name])
                                                                if c], err, oof.fold, seed)
        method, chosen = (want, "") if want else _fold_choice(crosses, oof.fold, groups, level)
        if method != "constant":
            keep = cols[method]
            diff = Difficulty.fit(x[:, keep], [n for n, c in zip(names, keep) if c], err, seed)
    scores = crosses[method]
    if ranges.shift_names and len(folds) >= 2:  # light_unlike_training, by the folds' rule
        _choose_shift(ranges, sub, train, scores, oof.fold, groups, level, seed)
    held = sorted({s for f in oof.folds for s in f})
    order = np.argsort(scores, kind="stable")
    info = {**(extras.info or {}), "method": _method_line(method, len(folds), level),
            "n_fit": len(err), "n_cal": len(err),
            "sessions_held_out": len(held), **({"chosen_by_folds": chosen} if chosen else {})}
    return Calibration(level=level, scores=scores[order].tolist(), ranges=ranges,
                       difficulty=diff, info=info, regime=NEW, seen=extras.seen,
                       sessions=sorted(_sessions(train)),
                       weights=session_weights(groups["session"])[order].tolist(),
                       groups={k: np.asarray(v).astype(str)[order].tolist()
                               for k, v in groups.items()})


def _wanted(scaled) -> str | None:
    """calibrate_sessions' `scaled` as a method name, None for the folds' choice."""
    want = {None: DEFAULT_SIGMA, True: "scaled", False: "constant"}.get(scaled, scaled)
    want = None if want == "folds" else want
    if want not in (None, *METHODS):
        raise ValueError(f"scaled must be True, False, None, 'folds' or one of {METHODS}, got "
                         f"{scaled!r}")
    return want


def _method_line(method: str, folds: int, level: float) -> str:
    return (f"{method} cross-conformal over {folds} session folds, sessions weighted equally, the "
            f"quantile per predicted ITA group at {level - CELL_GAP:.0%} lifted group by group "
            f"until every camera and ITA group reaches {level - FLOOR_GAP:.0%} and all photos "
            f"{level:.0%}")


def fit_cells(scores: np.ndarray, groups: dict, level: float) -> mondrian.Fitted:
    """The new-session bound's quantile per predicted ITA group at level - CELL_GAP and each
    group's lift: every camera and true ITA group to level - FLOOR_GAP, all photos to `level`."""
    return mondrian.fit(scores, groups, level, level - FLOOR_GAP,
                        max(level - CELL_GAP, level / 2))


def _score_groups(sub: Prepared, oof) -> dict[str, np.ndarray]:
    """Per out-of-fold photo: its cell (the predicted ITA group: what a new photo has), session,
    known groups (true ITA group from the labels, camera) and fold (so that the lift to the
    floor is judged out of fold), as raysweep.serve.mondrian takes them."""
    return {"cell": ita_groups(oof.pred),
            "session": sub.frame["set_id"].astype(str).str.strip().to_numpy(),
            "tone": ita_groups(sub.target), "camera": np.asarray(sub.camera).astype(str),
            "fold": oof.fold.astype(str)}


def _cross_scores(x: np.ndarray, names: list[str], err: np.ndarray, fold: np.ndarray,
                  seed: int) -> np.ndarray:
    """Each fold's errors over the sigma fitted on the other folds' (cross-conformal scores)."""
    out = np.empty(len(err))
    for j in np.unique(fold):
        m = fold == j
        out[m] = err[m] / Difficulty.fit(x[~m], names, err[~m], seed).sigma(x[m], names)
    return out


def _fold_covered(s: np.ndarray, fold: np.ndarray, groups: dict[str, np.ndarray],
                  level: float) -> np.ndarray:
    """Whether each score is within the bound that the OTHER folds calibrate (the quantile per
    predicted ITA group, the known groups floored: as `calibrate_sessions` stores it)."""
    covered = np.zeros(len(s), bool)
    for j in np.unique(fold):
        m = fold == j
        rest = {k: v[~m] for k, v in groups.items()}
        fitted = fit_cells(s[~m], rest, level)
        covered[m] = s[m] <= fitted.multipliers(groups["cell"][m])
    return covered


def _fold_choice(crosses: dict[str, np.ndarray], fold: np.ndarray,
                 groups: dict[str, np.ndarray], level: float) -> tuple[str, str]:
    """Which sigma? Each fold in turn is a new session set, covered by the bound the OTHER folds
    calibrate (the scores in `crosses` already divide by a sigma fitted without it). At `level`
    and the lower `CHOICE_LEVELS` (at 90% a few sessions put the quantile at their largest
    score, which tells little about the bound's shape) a bound is charged how far each fold's
    coverage strays from the level plus how far each camera and true ITA group (of at least
    MIN_GROUP_ROWS photos, folds pooled) falls short of it. The least charged wins; a tie goes
    to the constant one (fewer things to go wrong on a session unlike the others)."""
    charge, shown = {}, {}
    for name, s in crosses.items():
        total, at_level = 0.0, []
        for lv in (*CHOICE_LEVELS, level):
            covered = _fold_covered(s, fold, groups, lv)
            cov = [float(covered[fold == j].mean()) for j in np.unique(fold)]
            off = [abs(lv - float(covered[lab == g].mean()))
                   for lab in (groups["camera"], groups["tone"]) for g in np.unique(lab)
                   if (lab == g).sum() >= MIN_GROUP_ROWS]
            total += float(np.mean(np.abs(np.asarray(cov) - lv))) + float(np.mean(off or [0]))
            at_level = cov
        charge[name], shown[name] = total, at_level
    best = min(charge, key=lambda k: (round(charge[k], 9), k != "constant"))
    line = "; ".join(f"{k}: charge {charge[k]:.3f}, fold coverage at {level:.0%} "
                     f"{', '.join(f'{c:.0%}' for c in shown[k])}" for k in charge)
    return best, f"{best} ({line})"


def _fold_shift(data: Prepared, oof) -> np.ndarray:
    """Each out-of-fold photo's light distance to the sessions its fold model trained on (as a
    test photo's is to the training split's): the difficulty feature, beside the fold model's
    error. The flag's threshold reads `ood.shift_distance_loso` instead (`_choose_shift`)."""
    out = np.full(len(oof.rows), np.nan)
    keep = data.split != "test"
    sid = data.frame["set_id"].astype(str).str.strip().to_numpy()
    for j, held in enumerate(oof.folds):
        fold_train = data.subset(np.flatnonzero(keep & ~np.isin(sid, held)))
        ranges = ood.TrainingRanges(cameras=[], meta={})
        ood.fit_shift(fold_train, ranges)
        m = oof.fold == j
        out[m] = ood.shift_distance(data.subset(oof.rows[m]), ranges)
    return out


def _choose_shift(ranges: ood.TrainingRanges, sub: Prepared, train: Prepared, scores: np.ndarray,
                  fold: np.ndarray, groups: dict[str, np.ndarray], level: float, seed: int) -> None:
    """`ranges`' shift threshold chosen on the session folds (ood.choose_shift_threshold) over
    the out-of-fold photos `sub`: each photo's miss is judged as a test photo's is, against the
    bound the OTHER folds calibrate; its light distance is the one the threshold will be
    compared with, to every training session's centre in `ranges`, its own session's left out
    (ood.shift_distance_loso), not `_fold_shift`'s. The fold distance also drops the other
    sessions of the photo's fold, its neighbours among them, so it reads farther than the
    predict-time distance of the same photo (on the 8-seed new-session benchmark's folds the
    thresholds chosen on it flagged 13-15% of the calibration photos by fold distance, 0.0-0.1%
    of the same photos by this one): a threshold chosen on it sits where a new photo's distance
    seldom reaches. The miss stays out of fold: the error a new photo makes is a model's that
    never saw its session."""
    missed = ~_fold_covered(scores, fold, groups, level)
    ranges.shift_threshold, ranges.shift_rule = ood.choose_shift_threshold(
        ood.shift_distance_loso(sub, train, ranges), missed, groups["session"],
        ranges.shift_floor, seed)


def write(cal: Calibration, directory: str | os.PathLike) -> Path:
    path = Path(directory) / FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(cal.to_dict(), indent=1, default=float))
    tmp.replace(path)
    return path


def read(directory: str | os.PathLike) -> Calibration | None:
    """The calibration stored next to a checkpoint, or None when it has none."""
    path = Path(directory) / FILE
    if not path.is_file():
        return None
    try:
        return Calibration.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a readable calibration ({type(e).__name__}: {e})",
                        where=str(path), fix="re-run `python -m raysweep.eval_winners`, which "
                        "writes it, or delete the file to predict without bounds") from None


def attach(predictor, directory: str | os.PathLike):
    """Give a loaded Predictor its stored calibration (None when the checkpoint has none)."""
    predictor.calibration = read(directory)
    if predictor.calibration is not None and hasattr(predictor, "spread"):  # an ensemble
        predictor.calibration.spread_of = predictor.spread
    return predictor


def trust_columns(predictor, data: Prepared, lab: np.ndarray,
                  statuses: list[str] | None = None, level: float | None = None) -> pd.DataFrame:
    """de00_bound, bound_level, bound_regime (the photos the bound is for: new or seen
    sessions), one column per OOD flag, `shift_score`, `flags` and `unchecked` per row.

    Without a calibration the bound is NaN and only the flags that need no training ranges
    (camera vocabulary, patch found, clipping) are checked.
    """
    cal = getattr(predictor, "calibration", None)
    if cal is None:
        ranges = ood.TrainingRanges(cameras=list(predictor.stats.cameras), meta={})
        bound, lvl = np.full(len(data), np.nan), float("nan")
    else:
        ranges, lvl = cal.ranges, float(level or cal.level)
        bound = cal.bound(data, lab, lvl)
        bound[~np.isfinite(np.asarray(lab, np.float64)).all(axis=1)] = np.nan  # no colour, no bound
    regime = cal.regimes(data) if cal is not None else np.full(len(data), "")
    out = pd.DataFrame({"de00_bound": bound, "bound_level": lvl, "bound_regime": regime})
    flags = ood.flag(data, ranges, statuses)
    if cal is None:
        flags["unchecked"] = [";".join(filter(None, [u, "metadata ranges (no calibration)"]))
                              for u in flags["unchecked"]]
    return pd.concat([out, flags], axis=1)


def regime_line(regimes) -> str:
    """One line for a person: which photos the bounds of these rows are for."""
    got = pd.Series(np.asarray(regimes).astype(str)).value_counts()
    what = {NEW: "a NEW capture session (calibrated on sessions the model never trained on)",
            SEEN: "a capture session the model trained on (a fixed setup; calibrated on new "
                  "tones of training sessions)",
            LEGACY: "photos like the validation ones (an old calibration.json that does not say "
                    "which; re-run eval_winners)"}
    parts = [f"{n} photo{'s' if n != 1 else ''}: {what.get(k, k)}" for k, n in got.items() if k]
    return "error bounds are for " + "; ".join(parts) if parts else "no error bounds"
