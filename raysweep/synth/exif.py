"""EXIF as a phone writes it, built from the manifest row so the two can never disagree.

Values are written as the exact rationals the manifest holds: ExposureTime 1/n s, FNumber in
tenths, BrightnessValue in hundredths of an EV, ExposureBiasValue in thirds of an EV.
"""

from __future__ import annotations

from fractions import Fraction

WHITE_BALANCE = ("auto", "manual")  # EXIF WhiteBalance 0 and 1


def _rational(x: float, den: int) -> tuple[int, int]:
    return int(round(x * den)), den


def exif_bytes(row: dict) -> bytes:
    import piexif

    t = Fraction(row["exposure_time_s"]).limit_denominator(100000)
    zeroth = {
        piexif.ImageIFD.Make: row["make"].encode(),
        piexif.ImageIFD.Model: row["model"].encode(),
        piexif.ImageIFD.Software: b"raysweep.synth",
    }
    exif = {
        piexif.ExifIFD.ExposureTime: (t.numerator, t.denominator),
        piexif.ExifIFD.FNumber: _rational(row["f_number"], 10),
        piexif.ExifIFD.ISOSpeedRatings: int(row["iso"]),
        piexif.ExifIFD.BrightnessValue: _rational(row["brightness_ev"], 100),
        piexif.ExifIFD.ExposureBiasValue: _rational(row["exposure_bias_ev"], 3),
        piexif.ExifIFD.WhiteBalance: WHITE_BALANCE.index(row["white_balance"]),
        piexif.ExifIFD.ExposureProgram: 2,  # normal program
        piexif.ExifIFD.MeteringMode: 2,  # centre-weighted average
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
