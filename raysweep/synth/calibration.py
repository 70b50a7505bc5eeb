"""Calibration against real phone photos (issues 15 and 27): every statistic of its table
computed for a generated dataset, next to the real figure, with a pass/fail per row.

The real figures are read from real_phones.yaml (a public dataset of 1,379 phone photos of 138
printed skin-tone swatches, 10 sessions, three phones: its source and definitions are there), and
every band is computed from them: the real phones' range widened on both sides by the row's
tolerance, so the real phones pass their own band. The generated statistic is computed with the
definition the real figure states. Statistics "per session" are medians over a camera's sessions;
the learnability rows (learnability.py) pool a camera's photos. `measured` is the naive reading
of each photo (swatch mean sRGB read as Lab).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import learnability
from .exposure import T_MAX, T_MIN
from .spectral import delta_e00

REFERENCE = Path(__file__).with_name("real_phones.yaml")


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


@cache
def reference() -> dict:
    """The real phones' statistics, their source and definitions (real_phones.yaml)."""
    return yaml.safe_load(REFERENCE.read_text())


def band(entry: dict, values=None) -> tuple[float, float]:
    """The real range widened by the entry's tolerance on both sides, clipped to its limits."""
    vals = np.asarray(entry["values"] if values is None else values, dtype=float)
    lo, hi = vals.min() - entry["tolerance"], vals.max() + entry["tolerance"]
    if "limits" in entry:
        lo, hi = max(lo, entry["limits"][0]), min(hi, entry["limits"][1])
    return float(lo), float(hi)


def phone_row(key: str, generated: pd.Series, digits: int = 2) -> Row:
    """A per-phone reference statistic against the same statistic per generated camera."""
    entry = reference()["per_phone"][key]
    lo, hi = band(entry)
    real = ", ".join(f"{p} {v:.{digits}f}" for p, v in zip(reference()["phones"], entry["values"]))
    return Row(entry["statistic"], real, _fmt(generated, digits),
               f"{lo:.2f} .. {hi:.2f} every camera (real range +/- {entry['tolerance']:g})",
               bool(generated.between(lo, hi).all()))


def order_row(gbm: float, per_session: float) -> Row:
    """Gradient boosting over the per-session regression (mean dE00 on held-out tones)."""
    ref = reference()["baselines"]
    real = ref["gbm"] / ref["per_session"]
    lo, hi = band({**ref["order"], "values": [real]})
    ratio = gbm / per_session
    return Row(ref["order"]["statistic"], f"{ref['gbm']:.2f} / {ref['per_session']:.2f} = {real:.2f}",
               f"{gbm:.2f} / {per_session:.2f} = {ratio:.2f}",
               f"{lo:.2f} .. {hi:.2f} (real +/- {ref['order']['tolerance']:g})", lo <= ratio <= hi)


def calibrate(frame: pd.DataFrame, measured: np.ndarray) -> list[Row]:
    """The calibration table for a manifest frame and its naive Lab readings (N, 3)."""
    f = frame.copy()
    f[["measured_L", "measured_a", "measured_b"]] = np.asarray(measured)
    truth = f[["target_L", "target_a", "target_b"]].to_numpy()
    f["de_naive"] = delta_e00(np.asarray(measured), truth)
    words = reference()["issue15"]
    rows = [phone_row("slope", _per_session(f, _slope)),
            phone_row("exposure_corr", _per_session(f, _exposure_corr)),
            phone_row("scatter", _per_session(f, _scatter))]
    bias = float((f["exposure_bias_ev"] != 0).mean())
    rows.append(Row("photos with exposure bias != 0", words["exposure_bias"], f"{100 * bias:.1f}%", "<= 2%",
                    bias <= 0.02))
    manual = float((f["white_balance"] == "manual").mean())
    rows.append(Row("photos with manual white balance", words["manual_wb"], f"{100 * manual:.1f}%", "<= 2%",
                    manual <= 0.02))

    rows += tone_rows(f.drop_duplicates("tone_id"))

    d = f.assign(bv_minus_apex=f["brightness_ev"] - apex_bv(f))
    live = d[d.groupby("set_id")["brightness_ev"].transform(lambda s: (s != 0).any())]
    off = live.groupby("camera")["bv_minus_apex"].agg(["mean", "std"])
    worst = off["mean"].abs().idxmax()
    rows.append(Row("EXIF BV minus APEX(time, ISO, f-number), per camera", words["bv_minus_apex"],
                    ", ".join(f"{k} {r['mean']:+.1f} +/- {r['std']:.1f}" for k, r in off.iterrows()),
                    "one camera |mean| >= 2 EV", bool(abs(off.loc[worst, "mean"]) >= 2)))
    zero = f.groupby("set_id")["brightness_ev"].apply(lambda s: bool((s == 0).all()))
    rows.append(Row("sessions with BV = 0 throughout", words["bv_zero_sessions"], f"{int(zero.sum())} of {len(zero)}",
                    ">= 1", bool(zero.sum() >= 1)))
    distinct = f.groupby(["camera", "set_id"])["iso"].agg(lambda s: s.nunique() / len(s))
    per_cam = distinct.groupby(level=0).max()
    rows.append(Row("distinct ISO values per session / photos (max session)", words["distinct_iso"],
                    _fmt(per_cam), "one camera >= 0.3", bool(per_cam.max() >= 0.3)))
    rows.append(phone_row("naive_de00", f.groupby("camera")["de_naive"].mean(), 1))
    t_ok = f["exposure_time_s"].between(T_MIN * 0.99, T_MAX * 1.01).all()
    rows.append(Row("ISO / exposure time range", words["iso_time_range"],
                    f"{f['iso'].min():g} - {f['iso'].max():g} / 1/{1 / f['exposure_time_s'].min():.0f}"
                    f" - 1/{1 / f['exposure_time_s'].max():.0f} s", "within",
                    bool(f["iso"].between(20, 2000).all() and t_ok)))
    learn = learnability.per_camera(f)
    rows += [phone_row(k, learn[k]) for k in ("share_L", "share_a", "share_b", "leftover_ab")]
    return rows


def tone_rows(tones: pd.DataFrame) -> list[Row]:
    """The skin-tone prior against printed swatch sets: one row per tone (target_L/a/b)."""
    rows = []
    hue = np.degrees(np.arctan2(tones["target_b"], tones["target_a"]))
    ita = np.degrees(np.arctan2(tones["target_L"] - 50, tones["target_b"]))
    real = reference()["issue15"]["tones"]
    for name, val, tol in (("median L*", tones["target_L"].median(), 3),
                           ("median hue angle (deg)", float(np.median(hue)), 5),
                           ("median b*", tones["target_b"].median(), 2)):
        rows.append(Row(f"skin tones: {name}", f"{real[name]}", f"{val:.1f}",
                        f"{real[name]} +/- {tol}", abs(val - real[name]) <= tol))
    rows.append(Row("skin tones: ITA range (deg)", real["ITA range (deg)"],
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
