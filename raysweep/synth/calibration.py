"""Calibration against real phone photos (issue 15): every statistic of its table computed for a
generated dataset, next to the real figure, with a pass/fail per row.

The real figures come from a public dataset of 1,380 phone photos of 138 printed skin-tone
swatches (10 sessions, three phones). Statistics "per session" are medians over a camera's
sessions. `measured` is the naive reading of each photo (swatch mean sRGB read as Lab).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .exposure import T_MAX, T_MIN
from .spectral import delta_e00


@dataclass
class Row:
    statistic: str
    real: str
    generated: str
    target: str
    passed: bool

    def __post_init__(self):
        self.passed = bool(self.passed)  # numpy bools do not serialise to YAML


def _per_session(frame: pd.DataFrame, fn) -> pd.Series:
    """fn(session frame) -> float, median over each camera's sessions."""
    vals = frame.groupby(["camera", "set_id"], sort=True).apply(fn, include_groups=False)
    return vals.groupby(level=0).median()


def _slope(g: pd.DataFrame) -> float:
    return float(np.polyfit(g["target_L"], g["measured_L"], 1)[0]) if len(g) > 2 else np.nan


def _exposure_corr(g: pd.DataFrame) -> float:
    x = np.log2(g["exposure_time_s"] * g["iso"])
    if len(g) < 3 or x.std() == 0:
        return np.nan
    return float(np.corrcoef(x, g["target_L"])[0, 1])


def _scatter(g: pd.DataFrame) -> float:
    """RMS length of the a*b* error left after removing the session's mean a*b* shift."""
    d = g[["measured_a", "measured_b"]].to_numpy() - g[["target_a", "target_b"]].to_numpy()
    return float(np.sqrt(((d - d.mean(0)) ** 2).sum(1).mean()))


def _fmt(s: pd.Series, digits: int = 2) -> str:
    return ", ".join(f"{k} {v:.{digits}f}" for k, v in s.items())


def apex_bv(frame: pd.DataFrame) -> pd.Series:
    """Av + Tv - Sv from the written time, f-number and ISO."""
    return (2 * np.log2(frame["f_number"]) - np.log2(frame["exposure_time_s"])
            - np.log2(frame["iso"] / 3.125))


def calibrate(frame: pd.DataFrame, measured: np.ndarray) -> list[Row]:
    """The calibration table for a manifest frame and its naive Lab readings (N, 3)."""
    f = frame.copy()
    f[["measured_L", "measured_a", "measured_b"]] = np.asarray(measured)
    truth = f[["target_L", "target_a", "target_b"]].to_numpy()
    f["de_naive"] = delta_e00(np.asarray(measured), truth)
    n_cam = f["camera"].nunique()
    rows = []

    slope = _per_session(f, _slope)
    need = min(2, n_cam) if n_cam <= 3 else int(np.ceil(2 * n_cam / 3))
    rows.append(Row("slope of measured L* vs true L* (per session)", "0.57, 0.32, -0.06",
                    _fmt(slope), f"<= 0.6 for >= {need} cameras", int((slope <= 0.6).sum()) >= need))
    corr = _per_session(f, _exposure_corr)
    rows.append(Row("corr(log2(time x ISO), true L*) (per session)", "-0.87, -0.97, -0.67",
                    _fmt(corr), "<= -0.6 every camera", bool((corr <= -0.6).all())))
    scat = _per_session(f, _scatter)
    rows.append(Row("leftover a*b* scatter within a session", "3.0 - 6.7", _fmt(scat),
                    "2 - 7 every camera", bool(scat.between(2, 7).all())))
    bias = float((f["exposure_bias_ev"] != 0).mean())
    rows.append(Row("photos with exposure bias != 0", "0%", f"{100 * bias:.1f}%", "<= 2%",
                    bias <= 0.02))
    manual = float((f["white_balance"] == "manual").mean())
    rows.append(Row("photos with manual white balance", "0%", f"{100 * manual:.1f}%", "<= 2%",
                    manual <= 0.02))

    rows += tone_rows(f.drop_duplicates("tone_id"))

    d = f.assign(bv_minus_apex=f["brightness_ev"] - apex_bv(f))
    live = d[d.groupby("set_id")["brightness_ev"].transform(lambda s: (s != 0).any())]
    off = live.groupby("camera")["bv_minus_apex"].agg(["mean", "std"])
    worst = off["mean"].abs().idxmax()
    rows.append(Row("EXIF BV minus APEX(time, ISO, f-number), per camera", "4.4 +/- 3.4 EV on one vendor",
                    ", ".join(f"{k} {r['mean']:+.1f} +/- {r['std']:.1f}" for k, r in off.iterrows()),
                    "one camera |mean| >= 2 EV", bool(abs(off.loc[worst, "mean"]) >= 2)))
    zero = f.groupby("set_id")["brightness_ev"].apply(lambda s: bool((s == 0).all()))
    rows.append(Row("sessions with BV = 0 throughout", "1 of 10", f"{int(zero.sum())} of {len(zero)}",
                    ">= 1", bool(zero.sum() >= 1)))
    distinct = f.groupby(["camera", "set_id"])["iso"].agg(lambda s: s.nunique() / len(s))
    per_cam = distinct.groupby(level=0).max()
    rows.append(Row("distinct ISO values per session / photos (max session)", "about 120 of 138 on one vendor",
                    _fmt(per_cam), "one camera >= 0.3", bool(per_cam.max() >= 0.3)))
    naive = f.groupby("camera")["de_naive"].mean()
    rows.append(Row("naive dE00 per camera (mean)", "about 10 - 18 (12.4 overall)", _fmt(naive, 1),
                    "8 - 18 every camera", bool(naive.between(8, 18).all())))
    t_ok = f["exposure_time_s"].between(T_MIN * 0.99, T_MAX * 1.01).all()
    rows.append(Row("ISO / exposure time range", "25 - 2000 / 1/1700 - 1/14 s",
                    f"{f['iso'].min():g} - {f['iso'].max():g} / 1/{1 / f['exposure_time_s'].min():.0f}"
                    f" - 1/{1 / f['exposure_time_s'].max():.0f} s", "within",
                    bool(f["iso"].between(20, 2000).all() and t_ok)))
    return rows


def tone_rows(tones: pd.DataFrame) -> list[Row]:
    """The skin-tone prior against printed swatch sets: one row per tone (target_L/a/b)."""
    rows = []
    hue = np.degrees(np.arctan2(tones["target_b"], tones["target_a"]))
    ita = np.degrees(np.arctan2(tones["target_L"] - 50, tones["target_b"]))
    for name, real, val, tol in (("median L*", 61.2, tones["target_L"].median(), 3),
                                 ("median hue angle (deg)", 58.7, float(np.median(hue)), 5),
                                 ("median b*", 16.0, tones["target_b"].median(), 2)):
        rows.append(Row(f"skin tones: {name}", f"{real}", f"{val:.1f}", f"{real} +/- {tol}",
                        abs(val - real) <= tol))
    rows.append(Row("skin tones: ITA range (deg)", "about -60 .. +56",
                    f"{ita.min():.0f} .. {ita.max():.0f}", "<= -50 .. >= +45",
                    bool(ita.min() <= -50 and ita.max() >= 45)))
    return rows


def passed(rows: list[Row]) -> bool:
    return bool(all(r.passed for r in rows))


def as_records(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


def markdown(rows: list[Row]) -> str:
    lines = ["| statistic | real phones | generated | target | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {r.statistic} | {r.real} | {r.generated} | {r.target} | "
              f"{'pass' if r.passed else 'FAIL'} |" for r in rows]
    return "\n".join(lines)
