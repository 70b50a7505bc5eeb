"""Out-of-distribution flags: which photos are unlike the ones the model was trained on.

A flag is a named reason not to trust a prediction as much as its error bound says (the bound
was calibrated on photos like the training ones). `fit_ranges` records what the training split
looked like (camera vocabulary, metadata ranges, background statistics); `flag` checks new rows
against it. Flags that cannot be checked for a row (no metadata, no background pixels) are named
in the `unchecked` column instead of being silently reported as fine.

Flags: unseen_camera, exposure_out_of_range, iso_out_of_range, brightness_out_of_range,
patch_not_found, clipped_patch, unusual_background, light_unlike_training.

`light_unlike_training` is the session-level shift: a photo whose light, as its background ring and
EXIF show it (ring chromaticity, scene brightness, exposure), is far from every training session.
A photo's distance is to the nearest training session's centre, in units of how much photos vary
within a session. Its threshold, where the bound was calibrated on session folds (the new-session
bound), is chosen there by `choose_shift_threshold`: the distance beyond which the folds' photos
missed their bound at least SHIFT_LIFT times as often as all of them. Without session folds (a
seen-session bound) it is the SHIFT_QUANTILE of the leave-one-session-out distances of the
training photos (each session measured against the others, as a new session is). Either way it
is at least `shift_floor`: a distance a training session's own photos reach is no shift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from raysweep.data.prepared import RING_NAMES, Prepared

FLAGS = ("unseen_camera", "exposure_out_of_range", "iso_out_of_range", "brightness_out_of_range",
         "patch_not_found", "clipped_patch", "unusual_background", "light_unlike_training")
# flag -> (META_NAMES column, margin beyond the training min/max). Margins are half a stop for
# ISO and shutter (the quantisation step of a camera is a third) and one EV for BrightnessValue,
# whose EXIF noise is large: a photo just past the edge of training is not yet "unlike" it.
META_RANGES = {"exposure_out_of_range": ("log2_exposure_s", 0.5),
               "iso_out_of_range": ("log2_iso", 0.5),
               "brightness_out_of_range": ("brightness_ev", 1.0)}
CLIP_LEVEL = 250  # uint8: a channel this high is (nearly) saturated
CLIP_SHARE = 0.25  # share of the patch's pixels that may be clipped before the patch is
BG_NEIGHBOURS = 5  # background distance = to the k-th nearest training photo
BG_MARGIN = 2.0  # times the training photos' own 99th-percentile neighbour distance
BG_MAX_POINTS = 3000  # training background points kept (stored in calibration.json)
EPS = 1e-4
SHIFT_META = ("brightness_ev", "log2_exposure_s", "log2_iso")  # what EXIF says of the light
SHIFT_QUANTILE = 0.99  # without session folds: the leave-one-session-out distances' quantile
SHIFT_OWN_MARGIN = 1.25
# the fold rule (`choose_shift_threshold`): the candidate thresholds flag these shares of the
# out-of-fold photos (the cap, 15%: a flag on more than one photo in seven is no longer a warning
# about an unusual photo but a statement that the bound is wrong, which the bound's own
# calibration answers); a candidate must flag photos that missed their bound at least SHIFT_LIFT
# times as often as all photos did, with a session-permutation p-value of at most SHIFT_ALPHA
SHIFT_SHARES = tuple(round(0.02 + 0.01 * i, 2) for i in range(14))  # 2% .. 15%
SHIFT_LIFT = 2.0
SHIFT_ALPHA = 0.05
SHIFT_PERMUTATIONS = 999
MIN_SESSIONS = 3  # fewer training sessions: no spread between sessions to compare against


@dataclass
class TrainingRanges:
    """What the training split looked like; JSON-serialisable, stored in calibration.json."""

    cameras: list[str]
    meta: dict[str, list[float]]  # META_NAMES column -> [lo, hi] (margins included)
    background_kind: str = "none"  # "ring" (Prepared.ring), "border" (crop border) or "none"
    background_points: list[list[float]] = field(default_factory=list)  # standardised
    background_center: list[float] = field(default_factory=list)
    background_scale: list[float] = field(default_factory=list)
    background_threshold: float = float("inf")
    n_train: int = 0
    # the session-level shift (light_unlike_training): feature names, one centre per training
    # session, the within-session scale, the threshold (inf: the flag is off), the least it may
    # be (what a training session's own photos reach) and how it was chosen (`shift_rule`: the
    # fold rule's numbers, or the leave-one-session-out quantile; empty in files before it)
    shift_names: list[str] = field(default_factory=list)
    shift_centers: list[list[float]] = field(default_factory=list)
    shift_scale: list[float] = field(default_factory=list)
    shift_threshold: float = float("inf")
    shift_floor: float = 0.0
    shift_rule: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainingRanges:
        return cls(**d)


def _linear(u8: np.ndarray) -> np.ndarray:
    c = u8.astype(np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _chroma(r: np.ndarray, g: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray
            ) -> np.ndarray:
    """(N, 3): the background's chromaticity log(r/g), log(b/g) and its texture log(p90/p10)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.stack([np.log((r + EPS) / (g + EPS)), np.log((b + EPS) / (g + EPS)),
                        np.log((hi + EPS) / (lo + EPS))], axis=1)
    out[~np.isfinite(out)] = np.nan
    return out


def background_features(data: Prepared, kind: str | None = None) -> tuple[np.ndarray | None, str]:
    """Background statistics per row and where they came from.

    The prepared ring statistics when the data has them (raysweep.data ring); otherwise the
    border of a crop that includes background context (`*_bg`); otherwise none.
    """
    if data.ring is not None and kind in (None, "ring"):
        ring = np.asarray(data.ring, np.float64)
        col = {n: i for i, n in enumerate(RING_NAMES)}
        return _chroma(ring[:, col["ring_r_p50"]], ring[:, col["ring_g_p50"]],
                       ring[:, col["ring_b_p50"]], ring[:, col["ring_g_p10"]],
                       ring[:, col["ring_g_p90"]]), "ring"
    crop = str(data.info.get("crop") or "")
    if data.images is not None and crop.endswith("_bg") and kind in (None, "border"):
        size = data.images.shape[-1]
        w = max(1, size // 8)
        mask = np.zeros((size, size), bool)
        mask[:w], mask[-w:], mask[:, :w], mask[:, -w:] = True, True, True, True
        px = _linear(data.images[:, :, mask])  # (N, 3, P)
        med = np.median(px, axis=2)
        g_lo, g_hi = np.percentile(px[:, 1], [10, 90], axis=1)
        return _chroma(med[:, 0], med[:, 1], med[:, 2], g_lo, g_hi), "border"
    return None, "none"


def clipped_share(data: Prepared) -> np.ndarray | None:
    """Share of the patch's pixels (the crop's central half) with a channel at CLIP_LEVEL or above."""
    if data.images is None:
        return None
    s = data.images.shape[-1]
    c = data.images[:, :, s // 4: s - s // 4, s // 4: s - s // 4]
    return (c >= CLIP_LEVEL).any(axis=1).reshape(len(c), -1).mean(axis=1)


def _knn_distance(queries: np.ndarray, points: np.ndarray, k: int, skip_self: bool = False
                  ) -> np.ndarray:
    k = min(k + int(skip_self), len(points))
    out = np.empty(len(queries))
    for start in range(0, len(queries), 512):  # bounded memory: 512 x 3000 distances at a time
        q = queries[start:start + 512]
        d = np.sqrt(((q[:, None, :] - points[None, :, :]) ** 2).sum(-1))
        out[start:start + 512] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return out


def fit_ranges(train: Prepared, cameras: Sequence[str] | None = None, seed: int = 0
               ) -> TrainingRanges:
    """The training split's camera vocabulary, metadata ranges and background cloud."""
    meta: dict[str, list[float]] = {}
    names = list(train.meta_names)
    for _, (col, margin) in META_RANGES.items():
        if col not in names:
            continue
        v = train.meta[:, names.index(col)].astype(np.float64)
        v = v[np.isfinite(v)]
        if len(v):
            meta[col] = [float(v.min() - margin), float(v.max() + margin)]
    cams = sorted(set(map(str, cameras if cameras is not None else train.camera)))
    out = TrainingRanges(cameras=cams, meta=meta, n_train=len(train))
    feats, kind = background_features(train)
    if feats is not None:
        ok = np.isfinite(feats).all(1)
        pts = feats[ok]
        if len(pts) > BG_NEIGHBOURS + 1:
            center = np.median(pts, axis=0)
            scale = np.maximum(pts.std(axis=0), 0.02)  # a near-constant column must not explode
            z = (pts - center) / scale
            if len(z) > BG_MAX_POINTS:
                z = z[np.random.default_rng(seed).choice(len(z), BG_MAX_POINTS, replace=False)]
            own = _knn_distance(z, z, BG_NEIGHBOURS, skip_self=True)
            out.background_kind = kind
            out.background_points = np.round(z, 4).tolist()
            out.background_center = center.tolist()
            out.background_scale = scale.tolist()
            out.background_threshold = float(BG_MARGIN * np.percentile(own, 99))
    fit_shift(train, out)
    return out


def shift_features(data: Prepared) -> tuple[np.ndarray, list[str]]:
    """(N, F) what a photo shows of its session's light: the background's chromaticity (ring
    statistics or the crop border) and the EXIF brightness and exposure; NaN where unknown."""
    cols, names = [], []
    bg, kind = background_features(data)
    if bg is not None:
        cols += [bg[:, 0], bg[:, 1]]
        names += [f"{kind}_log_r_g", f"{kind}_log_b_g"]
    meta = list(data.meta_names)
    for m in SHIFT_META:
        if m in meta:
            cols.append(data.meta[:, meta.index(m)].astype(np.float64))
            names.append(m)
    return (np.stack(cols, axis=1) if cols else np.zeros((len(data), 0))), names


def _nearest(x: np.ndarray, centers: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """RMS standardised distance of each row to its nearest centre (missing columns skipped)."""
    z = (x[:, None, :] - centers[None, :, :]) / scale
    ok = np.isfinite(z)
    d2 = np.where(ok, z * z, 0.0).sum(-1) / np.maximum(ok.sum(-1), 1)
    d2[ok.sum(-1) == 0] = np.nan
    with np.errstate(all="ignore"):
        return np.sqrt(np.nanmin(d2, axis=1)) if centers.size else np.full(len(x), np.nan)


def fit_shift(train: Prepared, out: TrainingRanges) -> None:
    """The training sessions' centres, within-session scale and leave-one-session-out threshold
    (nothing when the data has fewer than MIN_SESSIONS sessions or no light features)."""
    if "set_id" not in train.frame.columns:
        return
    x, names = shift_features(train)
    sid = _session_ids(train)
    uniq = np.unique(sid)  # the order of the stored centres (`shift_distance_loso` relies on it)
    if len(uniq) < MIN_SESSIONS or not names:
        return
    centers = np.stack([np.nanmedian(np.where(np.isfinite(x[sid == s]), x[sid == s], np.nan),
                                     axis=0) for s in uniq])
    resid = x - centers[np.searchsorted(uniq, sid)]
    scale = np.nanstd(np.where(np.isfinite(resid), resid, np.nan), axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0.02), scale, 0.02)
    loso = np.concatenate([_nearest(x[sid == s], centers[uniq != s], scale) for s in uniq])
    loso = loso[np.isfinite(loso)]
    if not len(loso):
        return
    out.shift_names, out.shift_scale = names, scale.tolist()
    out.shift_centers = np.nan_to_num(centers, nan=0.0).round(5).tolist()
    # and well above what a training session's own photos reach: a photo of a seen session is
    # not a shift, however noisy its background (where sessions do not differ, nothing is)
    own = _nearest(x, centers, scale)
    own = own[np.isfinite(own)]
    out.shift_floor = float(SHIFT_OWN_MARGIN * np.quantile(own, 0.99) if len(own) else 0.0)
    out.shift_threshold = float(max(np.quantile(loso, SHIFT_QUANTILE), out.shift_floor))
    out.shift_rule = {"rule": f"leave-one-session-out {SHIFT_QUANTILE:.0%} quantile (no session "
                              "folds)", "threshold": out.shift_threshold}


def choose_shift_threshold(dist: np.ndarray, missed: np.ndarray, sessions: np.ndarray,
                           floor: float = 0.0, seed: int = 0) -> tuple[float, dict]:
    """The light_unlike_training threshold chosen on session folds, and the rule's numbers.

    `dist` is each out-of-fold photo's light distance as a new photo's is measured, to every
    training session but its own (`shift_distance_loso`, not to its fold's training part: the
    threshold is compared with predict-time distances), `missed` whether it fell outside the
    bound the OTHER folds calibrate (a new photo's miss, out of fold), `sessions` its session. The
    candidates flag SHIFT_SHARES of the photos (never below `floor`); the largest that flags
    photos missing at least SHIFT_LIFT times as often as the base rate, with a session-permutation
    p-value of at most SHIFT_ALPHA, is chosen; none: inf (the flag stays off) and `why` says so.

    Why this rule: the flag is worth raising only where it changes what a user should believe of
    the bound, i.e. where flagged photos miss clearly more often than the bound's 1 - level (twice
    as often: a flagged photo is then at least as likely outside the bound as a 80% bound's
    photo); among thresholds that do, the one warning about the most photos, up to the cap. The
    test sessions never take part: every number is the folds'. The permutation test guards the
    one weakness of so few sessions: a photo's light and its error are both session-level, so
    two or three far sessions that happen to err would pass a photo-level ratio by luck. It
    keeps each session's misses and flagged share and gives the flagged shares to other sessions
    at random (no link between which session is far and which errs): a session-level miss rate
    of the flagged that random sessions reach more than SHIFT_ALPHA of the time is not evidence.
    One flagged session alone never passes with fewer than 1 / SHIFT_ALPHA sessions (its p-value
    is at least 1 / sessions).
    """
    ok = np.isfinite(dist)
    d, miss = np.asarray(dist, np.float64)[ok], np.asarray(missed, bool)[ok]
    sid = np.asarray(sessions).astype(str)[ok]
    base = float(miss.mean()) if len(miss) else 0.0
    rule = {"rule": f"session folds: the largest share of {SHIFT_SHARES[0]:.0%}-"
                    f"{SHIFT_SHARES[-1]:.0%} of out-of-fold photos whose bound misses are "
                    f">= {SHIFT_LIFT:g}x the base rate (session permutation p <= {SHIFT_ALPHA:g})",
            "n": int(len(d)), "sessions": int(len(np.unique(sid))), "base_miss_rate": base}
    if not len(d) or base in (0.0, 1.0):
        return float("inf"), {**rule, "threshold": float("inf"),
                              "why": "no out-of-fold distances" if not len(d) else
                              f"the folds' photos missed their bound at a rate of {base:.0%}"}
    test = _SessionTest(sid, miss, seed)
    tried, chosen = [], None
    for share in SHIFT_SHARES:
        t = float(max(np.quantile(d, 1 - share, method="higher"), floor))  # flags <= share
        f = d > t
        if not f.any():
            continue
        lift = float(miss[f].mean() / base)
        p, f_s = test.p_value(f)
        cand = {"threshold": t, "flagged": float(f.mean()), "caught": float(miss[f].sum()
                                                                           / miss.sum()),
                "lift": lift, "p": p, "flagged_sessions": int(np.sum(f_s > 0)),
                "flagged_session_ids": test.uniq[f_s > 0].tolist()}
        tried.append(f"{cand['flagged']:.1%}: {lift:.2f}x p={p:.3f}")
        if lift >= SHIFT_LIFT and p <= SHIFT_ALPHA:
            chosen = cand
    rule["candidates"] = "; ".join(dict.fromkeys(tried))
    if chosen is None:
        return float("inf"), {**rule, "threshold": float("inf"), "why": (
            f"no candidate flags photos that miss >= {SHIFT_LIFT:g}x the base rate "
            f"{base:.1%} with p <= {SHIFT_ALPHA:g} on the session folds: the light's distance "
            "does not tell these folds' misses apart, so the flag stays off")}
    return chosen["threshold"], {**rule, **chosen}


class _SessionTest:
    """The session-permutation test of `choose_shift_threshold`: each session keeps its photos'
    misses, and the flagged shares are handed to sessions at random."""

    def __init__(self, sessions: np.ndarray, missed: np.ndarray, seed: int):
        self.uniq, self.inv = np.unique(sessions, return_inverse=True)
        self.n_s = np.bincount(self.inv).astype(np.float64)
        self.m_s = np.bincount(self.inv, weights=missed.astype(np.float64))
        rng = np.random.default_rng(seed)
        self.perm = np.stack([rng.permutation(len(self.uniq))
                              for _ in range(SHIFT_PERMUTATIONS)])

    def p_value(self, flagged: np.ndarray) -> tuple[float, np.ndarray]:
        """(p, each session's flagged share) for the photos `flagged`."""
        f_s = np.bincount(self.inv, weights=flagged.astype(np.float64)) / self.n_s
        # the test is of sessions (which sessions are far against which err), so its statistic
        # is too: the miss rate of the flagged shares spread evenly over each session's photos;
        # in permutation k session s is flagged as session perm[k, s] was
        fp = f_s[self.perm]
        at = float(f_s @ self.m_s / (f_s @ self.n_s))
        hits = np.sum(fp @ self.m_s / np.maximum(fp @ self.n_s, 1e-12) >= at - 1e-9)
        return float((1 + hits) / (1 + len(self.perm))), f_s


def _session_ids(data: Prepared) -> np.ndarray:
    return data.frame["set_id"].astype(str).str.strip().to_numpy()


def _shift_columns(data: Prepared, ranges: TrainingRanges) -> np.ndarray:
    """`data`'s light features in the order `ranges` stored them (NaN where one is missing)."""
    x, names = shift_features(data)
    idx = {n: i for i, n in enumerate(names)}
    return np.stack([x[:, idx[n]] if n in idx else np.full(len(data), np.nan)
                     for n in ranges.shift_names], axis=1)


def shift_distance(data: Prepared, ranges: TrainingRanges) -> np.ndarray:
    """(N,) distance of each photo's light to the nearest training session (in within-session
    units); NaN where it cannot be told (no features, or no session spread stored). Measured
    even where the flag is off (threshold inf): the bound's difficulty model may read it."""
    if not ranges.shift_names:
        return np.full(len(data), np.nan)
    return _nearest(_shift_columns(data, ranges), np.asarray(ranges.shift_centers),
                    np.asarray(ranges.shift_scale))


def shift_distance_loso(data: Prepared, train: Prepared, ranges: TrainingRanges) -> np.ndarray:
    """(N,) `shift_distance` with each photo's own session left out of `ranges`' centres (fitted
    on `train` by `fit_shift`): what a photo of a new session, which has no centre of its own,
    measures at predict time against every training session. A photo of a session `train` lacks
    keeps all centres."""
    out = np.full(len(data), np.nan)
    if not ranges.shift_names:
        return out
    x, sid = _shift_columns(data, ranges), _session_ids(data)
    centers, scale = np.asarray(ranges.shift_centers), np.asarray(ranges.shift_scale)
    uniq = np.unique(_session_ids(train))
    if len(uniq) != len(centers):
        raise ValueError(f"{len(centers)} stored light centres but {len(uniq)} sessions in the "
                         "training data given: not the data `ranges` were fitted on")
    for s in np.unique(sid):
        m = sid == s
        out[m] = _nearest(x[m], centers[uniq != s], scale)
    return out


def shift_score(data: Prepared, ranges: TrainingRanges) -> np.ndarray:
    """(N,) `shift_distance` over the threshold: above 1, light_unlike_training is raised; NaN
    where the flag is off (no threshold: the calibration's `shift_rule` says why)."""
    if not np.isfinite(ranges.shift_threshold):
        return np.full(len(data), np.nan)
    return shift_distance(data, ranges) / max(ranges.shift_threshold, 1e-9)


def patch_status(data: Prepared) -> list[str] | None:
    """The crop analysis' status per row, where `prepare` recorded it in the frame."""
    if "crop_status" in data.frame.columns:
        return data.frame["crop_status"].fillna("").astype(str).tolist()
    return None


def flag(data: Prepared, ranges: TrainingRanges, statuses: Sequence[str] | None = None
         ) -> pd.DataFrame:
    """One boolean column per flag, `flags` (the raised ones, ";"-joined) and `unchecked`.

    `statuses` is the crop analysis' status per row ("patch found" or why not); by default the
    frame's `crop_status` column.
    """
    n = len(data)
    out = {f: np.zeros(n, bool) for f in FLAGS}
    unchecked = [[] for _ in range(n)]
    out["unseen_camera"] = ~np.isin(np.asarray(data.camera).astype(str), ranges.cameras)
    _flag_meta(data, ranges, out, unchecked)
    _flag_patch(data, statuses, out, unchecked)
    _flag_background(data, ranges, out, unchecked)
    shift = shift_score(data, ranges)
    # a photo out of an EXIF range or before an unusual background is flagged for that; this
    # flag is for the photo whose every reading is usual but whose light is like no session's
    in_range = ~np.any([out[f] for f in (*META_RANGES, "unusual_background")], axis=0)
    out["light_unlike_training"] = np.isfinite(shift) & (shift > 1) & in_range
    if ranges.shift_names and np.isfinite(ranges.shift_threshold):
        for i in np.flatnonzero(~np.isfinite(shift)):
            unchecked[i].append("light_unlike_training")
    frame = pd.DataFrame(out)
    frame["shift_score"] = shift
    frame["flags"] = [";".join(f for f in FLAGS if frame.at[i, f]) for i in range(n)]
    frame["unchecked"] = [";".join(u) for u in unchecked]
    return frame


def _flag_meta(data: Prepared, ranges: TrainingRanges, out: dict, unchecked: list) -> None:
    """EXIF readings outside the training range; a missing reading is unchecked."""
    names = list(data.meta_names)
    for name, (col, _) in META_RANGES.items():
        if col not in names or col not in ranges.meta:
            continue
        v = data.meta[:, names.index(col)].astype(np.float64)
        lo, hi = ranges.meta[col]
        with np.errstate(invalid="ignore"):
            out[name] = np.isfinite(v) & ((v < lo) | (v > hi))
        for i in np.flatnonzero(~np.isfinite(v)):
            unchecked[i].append(name)


def _flag_patch(data: Prepared, statuses: Sequence[str] | None, out: dict,
                unchecked: list) -> None:
    """No patch found, or a clipped one (the crop analysis' status, the clipped share)."""
    statuses = statuses if statuses is not None else patch_status(data)
    if statuses is not None:
        st = [str(s) for s in statuses]
        out["patch_not_found"] = np.array([bool(s) and not s.startswith("patch found")
                                           for s in st])
        out["clipped_patch"] |= np.array(["clipped" in s for s in st])
    share = clipped_share(data)
    if share is not None:
        out["clipped_patch"] |= share > CLIP_SHARE
    elif statuses is None:
        for u in unchecked:
            u += ["patch_not_found", "clipped_patch"]


def _flag_background(data: Prepared, ranges: TrainingRanges, out: dict, unchecked: list) -> None:
    """A background unlike the training photos' (k nearest neighbours in standardized units)."""
    if ranges.background_kind != "none":
        feats, _ = background_features(data, ranges.background_kind)
        if feats is None:
            for u in unchecked:
                u.append("unusual_background")
        else:
            ok = np.isfinite(feats).all(1)
            z = (feats[ok] - np.asarray(ranges.background_center)) / \
                np.asarray(ranges.background_scale)
            pts = np.asarray(ranges.background_points, np.float64)
            dist = _knn_distance(z, pts, BG_NEIGHBOURS) if len(z) else np.zeros(0)
            out["unusual_background"][ok] = dist > ranges.background_threshold
            for i in np.flatnonzero(~ok):
                unchecked[i].append("unusual_background")
    else:
        for u in unchecked:
            u.append("unusual_background")


def summary_line(flags: pd.DataFrame) -> str:
    """'12 photos, 3 flagged (unseen_camera 2, clipped_patch 1)': how many, and why."""
    n = len(flags)
    raised = flags[list(FLAGS)].any(axis=1) if n else pd.Series([], dtype=bool)
    why = ", ".join(f"{f} {int(flags[f].sum())}" for f in FLAGS if n and flags[f].any())
    return f"{n} photo{'s' if n != 1 else ''}, {int(raised.sum())} flagged" + \
        (f" ({why})" if why else "")
