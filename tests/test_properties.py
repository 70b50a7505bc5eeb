"""Property-based tests (hypothesis): the colour math and the metadata features, on inputs the
example-based tests in tests/test_color.py and tests/test_models.py do not pick.

CIEDE2000 is not a metric (no triangle inequality), so only what it does guarantee is checked:
symmetry, non-negativity, zero exactly for equal colours, and growth with a pure lightness step.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from raysweep import color
from raysweep.config import TrainConfig
from raysweep.data import exif_reader as exif_mod
from raysweep.data import features as data_features
from raysweep.models.inputs import encode, fit_stats
from tests.helpers.fakes import make_prepared

SETTINGS = settings(max_examples=150, deadline=None)
L = st.floats(0.0, 100.0)
AB = st.floats(-128.0, 127.0)
lab = st.tuples(L, AB, AB)
unit = st.floats(0.0, 1.0)
rgb = st.tuples(unit, unit, unit)


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def de00(x, y) -> float:
    return float(color.delta_e00(t(*x), t(*y)))


# ---- CIEDE2000 ---------------------------------------------------------------------------------

@SETTINGS
@given(lab, lab)
def test_de00_symmetric_and_non_negative(x, y):
    d = de00(x, y)
    assert d >= 0.0 and math.isfinite(d)
    assert d == pytest_approx(de00(y, x))


@SETTINGS
@given(lab, lab)
def test_de00_zero_exactly_for_equal_colours(x, y):
    assert de00(x, x) == 0.0
    assume(math.dist(x, y) > 1e-3)
    assert de00(x, y) > 0.0


@SETTINGS
@given(lab, st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8))
def test_de00_grows_along_a_lightness_step(x, fractions):
    # dE00(x, x + s * (1, 0, 0)) is non-decreasing in s >= 0 (same a, b: only dL' and S_L move)
    room = 100.0 - x[0]
    steps = sorted(f * room for f in fractions)
    values = [de00(x, (x[0] + s, x[1], x[2])) for s in steps]
    assert all(b >= a - 1e-9 for a, b in zip(values, values[1:])), (steps, values)


@SETTINGS
@given(lab, lab)
def test_de00_batched_equals_one_by_one(x, y):
    batch = color.delta_e00(torch.stack([t(*x), t(*y)]), torch.stack([t(*y), t(*x)]))
    assert batch.tolist() == pytest_approx([de00(x, y), de00(y, x)])


def pytest_approx(v):
    import pytest

    return pytest.approx(v, rel=1e-9, abs=1e-9)


# ---- round trips --------------------------------------------------------------------------------

@SETTINGS
@given(rgb)
def test_srgb_lab_srgb_round_trip(c):
    x = t(*c)
    back = color.lab_to_srgb(color.srgb_to_lab(x))
    assert torch.allclose(back, x, atol=1e-9)


@SETTINGS
@given(rgb)
def test_linear_xyz_linear_round_trip(c):
    x = t(*c)
    assert torch.allclose(color.xyz_to_linear_srgb(color.linear_srgb_to_xyz(x)), x, atol=1e-12)
    assert torch.allclose(color.srgb_to_linear(color.linear_to_srgb(x)), x, atol=1e-12)


@SETTINGS
@given(lab)
def test_lab_xyz_lab_round_trip(c):
    # any Lab, including colours outside the sRGB gamut (negative XYZ components)
    x = t(*c)
    assert torch.allclose(color.xyz_to_lab(color.lab_to_xyz(x)), x, atol=1e-9)


@SETTINGS
@given(lab)
def test_lab_lch_keeps_lightness_and_chroma(c):
    lch = color.lab_to_lch(t(*c))
    assert float(lch[0]) == c[0]
    assert float(lch[1]) == pytest_approx(math.hypot(c[1], c[2]))


# ---- metadata features: finite for any EXIF a camera can write ---------------------------------

# EXIF stores these as RATIONAL (two uint32) or SRATIONAL (two int32); some phones write 0/0.
rational = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
srational = st.tuples(st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1))
iso_value = st.one_of(st.integers(0, 2**16 - 1), st.tuples(st.integers(0, 2**16 - 1)))
maybe = st.none().map(lambda _: None)
exif_tags = st.fixed_dictionaries({}, optional={
    "ExposureTime": rational, "FNumber": rational, "ISO": iso_value,
    "ShutterSpeedValue": srational, "ApertureValue": rational, "BrightnessValue": srational,
    "ExposureBiasValue": srational, "Make": st.text(max_size=12),
    "Model": st.one_of(maybe, st.text(max_size=12)),
})
BASE = make_prepared(n=12, tabular=True, missing_rate=0.0)
CFG = TrainConfig(features="mean+meta", fusion="none", text_embed="hash")


@settings(max_examples=100, deadline=None)
@given(st.lists(exif_tags, min_size=12, max_size=12))
def test_meta_features_are_finite_for_any_exif(rows):
    parsed = [exif_mod.parse_tags(tags) for tags in rows]
    frame = pd.DataFrame(parsed)
    meta = data_features.meta_matrix(frame)
    # a value is either a finite number or NaN (missing), never an infinity
    assert not np.isinf(meta).any()
    data = BASE.__class__(**{**BASE.__dict__, "meta": meta,
                             "camera": data_features.camera_ids(frame),
                             "device": data_features.device_text(frame)})
    stats = fit_stats(data, CFG)  # fitted on these rows' training split, extremes included
    assert all(math.isfinite(v) for v in stats.meta_mean + stats.meta_std)
    enc = encode(data, stats, CFG)
    for key in ("meta", "text", "mean"):
        assert torch.isfinite(enc[key]).all(), key
    k = len(data.meta_names)
    flags = enc["meta"][:, k:].numpy()
    np.testing.assert_array_equal(flags, np.isnan(meta).astype(np.float32))  # missing = flagged
    assert (enc["camera"] >= 0).all()
