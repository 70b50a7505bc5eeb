"""EXIF as phone vendors write it, built from the manifest row so the two never disagree.

Vendors differ in ways a model meets in the field (issue 15): one writes a BrightnessValue offset
from the APEX value of its own settings by several EV, another zeroes it for whole sessions, one
writes the analog ISO unrounded and the exposure time in microseconds, the others round ISO to
the 1/3-stop series and write the time as 1/n s. `ExifHabits` is the per-vendor recipe; the
values themselves are decided in exposure.py and stored in the manifest row.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

WHITE_BALANCE = ("auto", "manual")  # EXIF WhiteBalance 0 and 1


@dataclass(frozen=True)
class ExifHabits:
    iso: str = "third"  # "third": the 1/3-stop series; "integer": the analog ISO, unrounded
    time: str = "inverse"  # "inverse": 1/n s; "microseconds": n/1000000 s, unreduced
    bv_offset_ev: tuple[float, float] = (0.0, 0.0)  # per-session offset, uniform in this range
    bv_photo_sd: float = 0.08  # per-photo noise of the written BrightnessValue
    bv_zero_every: int = 0  # every k-th session of this camera (from its 2nd) writes BV = 0
    metering_mode: int = 5  # EXIF MeteringMode: 5 pattern (phones), 2 centre-weighted


VENDOR_HABITS = {
    "clean": ExifHabits(metering_mode=2),
    "bv_offset": ExifHabits(bv_offset_ev=(2.0, 7.0), bv_photo_sd=1.5),
    "unrounded_iso": ExifHabits(iso="integer", time="microseconds", bv_photo_sd=0.3),
    "bv_zero_sessions": ExifHabits(bv_zero_every=3, bv_photo_sd=0.2),
}


def _rational(x: float, den: int) -> tuple[int, int]:
    return int(round(x * den)), den


def exposure_time_rational(t: float, habits: ExifHabits) -> tuple[int, int]:
    if habits.time == "microseconds":
        return int(round(t * 1e6)), 1_000_000
    f = Fraction(t).limit_denominator(100000)
    return f.numerator, f.denominator


def exif_bytes(row: dict, habits: ExifHabits) -> bytes:
    import piexif

    zeroth = {
        piexif.ImageIFD.Make: row["make"].encode(),
        piexif.ImageIFD.Model: row["model"].encode(),
        piexif.ImageIFD.Software: b"raysweep.synth",
    }
    exif = {
        piexif.ExifIFD.ExposureTime: exposure_time_rational(row["exposure_time_s"], habits),
        piexif.ExifIFD.FNumber: _rational(row["f_number"], 10),
        piexif.ExifIFD.ISOSpeedRatings: int(row["iso"]),
        piexif.ExifIFD.BrightnessValue: _rational(row["brightness_ev"], 100),
        piexif.ExifIFD.ExposureBiasValue: _rational(row["exposure_bias_ev"], 3),
        piexif.ExifIFD.WhiteBalance: WHITE_BALANCE.index(row["white_balance"]),
        piexif.ExifIFD.ExposureProgram: 2,  # normal program
        piexif.ExifIFD.MeteringMode: habits.metering_mode,
        piexif.ExifIFD.ColorSpace: 1,  # sRGB
        piexif.ExifIFD.PixelXDimension: int(row["image_size"]),
        piexif.ExifIFD.PixelYDimension: int(row["image_size"]),
    }
    return piexif.dump({"0th": zeroth, "Exif": exif})


def read_exif(path) -> dict:
    """The contract's metadata read back with exifread (an independent reader), as floats."""
    import exifread

    with open(path, "rb") as fh:
        tags = exifread.process_file(fh, details=False)

    def num(key: str) -> float:
        v = tags[key].values[0]
        return float(v.num) / float(v.den) if hasattr(v, "num") else float(v)

    return {
        "exposure_time_s": num("EXIF ExposureTime"),
        "f_number": num("EXIF FNumber"),
        "iso": int(num("EXIF ISOSpeedRatings")),
        "brightness_ev": num("EXIF BrightnessValue"),
        "exposure_bias_ev": num("EXIF ExposureBiasValue"),
        "white_balance": WHITE_BALANCE[int(tags["EXIF WhiteBalance"].values[0])],
        "make": str(tags["Image Make"].values).strip(),
        "model": str(tags["Image Model"].values).strip(),
    }
