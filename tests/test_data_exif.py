"""EXIF: rationals, zero denominators, APEX, the manifest winning, missing never zero."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from PIL import Image

from raysweep.data.demo import exif_bytes
from raysweep.data.exif_reader import (
    apex_brightness,
    merge,
    parse_tags,
    parse_tags_with_notes,
    read_exif,
    to_float,
)
from raysweep.data.features import camera_ids, device_text, meta_matrix
from raysweep.data.prepared import META_NAMES


def _jpeg(path, **kw):
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(path, exif=exif_bytes(**kw))
    return Image.open(path)


def test_reads_all_fields_from_a_jpeg(tmp_path):
    values, notes = read_exif(_jpeg(tmp_path / "a.jpg", t=(1, 250), n=(18, 10), iso=400,
                                    bv=(-150, 100), bias=(-2, 3), wb=1, make=b"Acme",
                                    model=b"Phone 1"))
    assert values["exposure_time_s"] == 1 / 250 and values["f_number"] == 1.8
    assert values["iso"] == 400 and values["brightness_ev"] == -1.5
    assert math.isclose(values["exposure_bias_ev"], -2 / 3)
    assert values["white_balance"] == "manual"
    assert (values["make"], values["model"]) == ("Acme", "Phone 1")
    assert notes == []


def test_zero_denominator_is_missing_not_zero_or_inf(tmp_path):
    values, notes = read_exif(_jpeg(tmp_path / "z.jpg", t=(1, 0), bv=(0, 0), n=(28, 10), iso=100))
    assert math.isnan(values["exposure_time_s"])
    assert any("ExposureTime" in n for n in notes)
    assert math.isnan(values["brightness_ev"])  # no exposure time -> no APEX rebuild either
    assert to_float((5, 0)) != to_float((5, 0))  # NaN
    assert to_float((1, 4)) == 0.25 and to_float((100,)) == 100.0 and math.isnan(to_float(b"x"))


def test_brightness_rebuilt_from_apex_parts():
    # Tv = 7 (1/128 s), Av = 4 (f/4), ISO 100 -> Sv = log2(100 / 3.125) = 5 -> Bv = 6.
    v = parse_tags({"ShutterSpeedValue": (7, 1), "ApertureValue": (4, 1), "ISO": 100})
    assert math.isclose(v["exposure_time_s"], 1 / 128)
    assert math.isclose(v["f_number"], 4.0)
    assert math.isclose(v["brightness_ev"], 6.0)
    assert math.isclose(apex_brightness(1 / 128, 4.0, 100), 6.0)
    assert math.isnan(apex_brightness(1 / 128, 4.0, math.nan))


def test_no_exif_gives_nan_and_missing_flags(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "n.jpg")
    values, notes = read_exif(Image.open(tmp_path / "n.jpg"))
    merged, source = merge({}, values)
    assert all(math.isnan(merged[f]) for f in ("exposure_time_s", "iso", "brightness_ev"))
    assert merged["make"] == "" and set(source.values()) == {"missing"}


def test_manifest_wins_and_exif_fills_gaps():
    merged, source = merge({"iso": 800.0, "exposure_time_s": float("nan"), "make": ""},
                           {"iso": 100.0, "exposure_time_s": 0.01, "make": "Acme"})
    assert merged["iso"] == 800.0 and source["iso"] == "manifest"
    assert merged["exposure_time_s"] == 0.01 and source["exposure_time_s"] == "exif"
    assert merged["make"] == "Acme" and source["f_number"] == "missing"


def test_meta_matrix_transforms_and_keeps_nan():
    frame = pd.DataFrame({"iso": [100.0, np.nan], "exposure_time_s": [0.25, 1 / 64],
                          "brightness_ev": [3.0, np.nan], "exposure_bias_ev": [0.0, -1.0],
                          "f_number": [1.8, np.nan], "make": ["Apple", ""],
                          "model": ["Apple iPhone 12", ""], "camera": ["", ""]})
    m = meta_matrix(frame)
    assert m.shape == (2, len(META_NAMES)) and m.dtype == np.float32
    np.testing.assert_allclose(m[0], [np.log2(100), -2, 3, 0, 1.8], rtol=1e-6)
    assert np.isnan(m[1, [0, 2, 4]]).all() and m[1, 1] == -6  # missing stays NaN, not 0
    assert device_text(frame).tolist() == ["Apple iPhone 12", ""]
    assert camera_ids(frame).tolist() == ["Apple iPhone 12", "unknown"]


def test_finite_garbage_is_missing_with_a_note():
    """Corrupt tags that are finite numbers (0xFFFFFFFF/1, -2^31) must not become inputs: one
    such photo stretched the f-number and brightness normalisation spreads to about 1e9."""
    values, notes = parse_tags_with_notes({"FNumber": (4294967295, 1), "ExposureBiasValue": (-2**31, 1),
                                "ExposureTime": (1, 125), "ISO": 100,
                                "BrightnessValue": (4294967295, 1)})
    assert math.isnan(values["f_number"]) and math.isnan(values["exposure_bias_ev"])
    assert math.isnan(values["brightness_ev"])  # no f-number left to rebuild it from
    assert values["exposure_time_s"] == 1 / 125 and values["iso"] == 100
    text = " ".join(notes)
    assert "FNumber=4.29497e+09 is outside the plausible range" in text
    assert "ExposureBiasValue" in text and "BrightnessValue" in text
    # the edges of real cameras stay
    edge = parse_tags({"FNumber": (7, 10), "ISO": 3280000, "ExposureTime": (1800, 1),
                       "ExposureBiasValue": (-5, 1), "BrightnessValue": (-12, 1)})
    assert edge["f_number"] == 0.7 and edge["iso"] == 3280000
    assert edge["exposure_time_s"] == 1800 and edge["exposure_bias_ev"] == -5
    assert edge["brightness_ev"] == -12
    # APEX-derived values are held to the same ranges
    derived, notes = parse_tags_with_notes({"ShutterSpeedValue": (-40, 1), "ISO": 100})
    assert math.isnan(derived["exposure_time_s"]) and "ShutterSpeedValue" in " ".join(notes)


def test_finite_garbage_leaves_the_normalisation_of_clean_rows_alone():
    clean = [parse_tags({"FNumber": (n, 10), "ISO": 100, "ExposureTime": (1, 100)})
             for n in (18, 28, 40, 56)]
    bad = parse_tags({"FNumber": (4294967295, 1), "ISO": 100, "ExposureTime": (1, 100)})
    f = np.array([r["f_number"] for r in [*clean, bad]], float)
    assert np.nanstd(f) < 2.0
