"""Camera metadata from EXIF, merged with the manifest (the manifest wins).

A missing value stays NaN and is flagged: a zero ISO or a zero exposure would be a confident,
wrong input to the model. So does a finite value no camera can record (PLAUSIBLE, per field). Rationals with a zero denominator (some phones write 0/0 for unknown)
are missing, not infinite. When BrightnessValue is absent it is rebuilt from its APEX parts,
Bv = Av + Tv - Sv, which is how cameras compute it.
"""

from __future__ import annotations

import math
from typing import Any

from PIL import Image

FIELDS = ("exposure_time_s", "f_number", "iso", "brightness_ev", "exposure_bias_ev",
          "white_balance", "make", "model")
NUMERIC = FIELDS[:5]
TAGS = {  # EXIF tag ids (0th IFD for Make/Model, Exif IFD for the rest)
    "Make": 271, "Model": 272, "ExposureTime": 33434, "FNumber": 33437, "ISO": 34855,
    "ShutterSpeedValue": 37377, "ApertureValue": 37378, "BrightnessValue": 37379,
    "ExposureBiasValue": 37380, "WhiteBalance": 41987,
}
# What any real camera can record, per contract field: a finite value outside is a corrupt or
# "unknown" tag (0xFFFFFFFF/1, -2^31), not a measurement. Kept, one such photo would stretch the
# feature's normalisation spread by orders of magnitude and flatten it for every clean row.
PLAUSIBLE = {
    "exposure_time_s": (1e-6, 3600.0),   # 1/1,000,000 s (electronic shutters) to an hour
    "f_number": (0.5, 128.0),            # the fastest lenses made to pinhole-like apertures
    "iso": (1.0, 1e7),                   # ISO 1 to beyond the highest boosted sensitivities
    "brightness_ev": (-30.0, 30.0),      # APEX Bv: moonless night to direct sun, with margin
    "exposure_bias_ev": (-15.0, 15.0),   # cameras offer about +/-5 EV
}
TAG_OF = {"exposure_time_s": "ExposureTime", "f_number": "FNumber", "iso": "ISO",
          "brightness_ev": "BrightnessValue", "exposure_bias_ev": "ExposureBiasValue"}
EXIF_IFD = 0x8769
WHITE_BALANCE = {0: "auto", 1: "manual"}


def read_exif(img: Image.Image) -> tuple[dict[str, Any], list[str]]:
    """Contract fields from an opened image: ({field: value or NaN/""}, notes)."""
    try:
        exif = img.getexif()
        tags = {name: exif.get(tid) for name, tid in TAGS.items()}
        sub = exif.get_ifd(EXIF_IFD)
    except Exception as e:  # a corrupt EXIF block must not lose the pixels
        return parse_tags({}), [f"EXIF unreadable ({type(e).__name__}: {e})"]
    for name, tid in TAGS.items():
        if sub.get(tid) is not None:
            tags[name] = sub.get(tid)
    return parse_tags_with_notes(tags)


def parse_tags(tags: dict[str, Any]) -> dict[str, Any]:
    return parse_tags_with_notes(tags)[0]


def parse_tags_with_notes(tags: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Turn raw tag values (by EXIF name) into contract fields."""
    notes: list[str] = []

    def num(name: str, positive: bool = False) -> float:
        v = tags.get(name)
        if v is None:
            return math.nan
        x = to_float(v)
        if math.isnan(x):
            notes.append(f"{name} unusable ({_show(v)})")
        elif positive and x <= 0:
            notes.append(f"{name}={x:g} is not positive")
            x = math.nan
        return x

    def plausible(field: str, x: float, source: str | None = None) -> float:
        lo, hi = PLAUSIBLE[field]
        if math.isnan(x) or lo <= x <= hi:
            return x
        notes.append(f"{source or TAG_OF[field]}={x:g} is outside the plausible range "
                     f"[{lo:g}, {hi:g}]: treated as missing")
        return math.nan

    t = plausible("exposure_time_s", num("ExposureTime", True))
    n = plausible("f_number", num("FNumber", True))
    iso = plausible("iso", num("ISO", True))
    bv = plausible("brightness_ev", num("BrightnessValue"))
    bias = plausible("exposure_bias_ev", num("ExposureBiasValue"))
    tv, av = num("ShutterSpeedValue"), num("ApertureValue")
    if math.isnan(t) and not math.isnan(tv):
        t = plausible("exposure_time_s", _pow2(-tv), "exposure time from ShutterSpeedValue")
    if math.isnan(n) and not math.isnan(av):
        n = plausible("f_number", _pow2(av / 2), "f-number from ApertureValue")
    if math.isnan(bv):
        bv = plausible("brightness_ev", apex_brightness(t, n, iso, tv, av),
                       "BrightnessValue rebuilt from APEX parts")
        if not math.isnan(bv):
            notes.append("BrightnessValue rebuilt from APEX parts")
    wb = tags.get("WhiteBalance")
    wb = WHITE_BALANCE.get(int(to_float(wb)), str(wb)) if _finite(wb) else ""
    return {"exposure_time_s": t, "f_number": n, "iso": iso, "brightness_ev": bv,
            "exposure_bias_ev": bias, "white_balance": wb,
            "make": _text(tags.get("Make")), "model": _text(tags.get("Model"))}, notes


def _pow2(x: float) -> float:
    """2**x for an APEX value; NaN (missing) when the tag holds garbage far outside any camera's
    range (|x| > 64 would be beyond 1e19 s or f/1e19, and 2**1100 overflows a float)."""
    return 2.0 ** x if abs(x) <= 64 else math.nan


def apex_brightness(t: float, n: float, iso: float, tv: float = math.nan,
                    av: float = math.nan) -> float:
    """Bv = Av + Tv - Sv (APEX), with Sv = log2(ISO / 3.125) (EXIF 2.3, Annex C)."""
    tv = -math.log2(t) if math.isnan(tv) and t > 0 else tv
    av = 2 * math.log2(n) if math.isnan(av) and n > 0 else av
    if math.isnan(tv) or math.isnan(av) or not iso > 0:
        return math.nan
    return av + tv - math.log2(iso / 3.125)


def merge(manifest: dict[str, Any], exif: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Manifest values win; EXIF fills the gaps; what neither has stays missing.

    Returns (values, source per field in {"manifest", "exif", "missing"}).
    """
    values, source = {}, {}
    for f in FIELDS:
        m, e = manifest.get(f), exif.get(f)
        if _present(m):
            values[f], source[f] = m, "manifest"
        elif _present(e):
            values[f], source[f] = e, "exif"
        else:
            values[f], source[f] = (math.nan if f in NUMERIC else ""), "missing"
    return values, source


def to_float(v: Any) -> float:
    """EXIF number -> float; (num, 0) rationals and garbage -> NaN."""
    if isinstance(v, tuple | list):
        if len(v) == 2 and all(isinstance(x, int | float) for x in v):
            return v[0] / v[1] if v[1] else math.nan
        return to_float(v[0]) if len(v) >= 1 else math.nan  # ISO is sometimes a tuple
    if isinstance(v, bytes):
        return math.nan
    try:
        den = getattr(v, "denominator", 1)
        if den == 0:
            return math.nan
        x = float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _finite(v: Any) -> bool:
    return v is not None and not math.isnan(to_float(v))


def _present(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, float):
        return not math.isnan(v)
    return str(v).strip() != ""


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return str(v).replace("\x00", "").strip()


def _show(v: Any) -> str:
    num, den = getattr(v, "numerator", None), getattr(v, "denominator", None)
    return f"{num}/{den}" if den is not None else repr(v)
