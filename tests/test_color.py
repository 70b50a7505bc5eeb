"""raysweep.color against the CIEDE2000 reference pairs and colour-science, in float64."""

from pathlib import Path

import colour
import numpy as np
import pandas as pd
import pytest
import torch

from raysweep import color

SHARMA = Path(__file__).parent / "data" / "sharma2005_ciede2000.csv"
D65_XY = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D65"]
D50_XY = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D50"]


def t64(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def random_lab(rng, n):
    """Random Lab covering the whole space, with exact achromatic and identical pairs mixed in."""
    lab = np.column_stack([rng.uniform(0, 100, n), rng.uniform(-128, 128, n),
                           rng.uniform(-128, 128, n)])
    lab[rng.random(n) < 0.05, 1:] = 0.0
    return lab


def test_sharma_wu_dalal_pairs():
    pairs = pd.read_csv(SHARMA, comment="#")
    assert len(pairs) == 34
    lab1, lab2 = t64(pairs[["L1", "a1", "b1"]].values), t64(pairs[["L2", "a2", "b2"]].values)
    np.testing.assert_allclose(color.delta_e00(lab1, lab2).numpy(), pairs.de00, atol=1e-4)
    # CIEDE2000 is symmetric in its arguments.
    np.testing.assert_allclose(color.delta_e00(lab2, lab1).numpy(), pairs.de00, atol=1e-4)


def test_de00_matches_colour_science_on_100k_random_pairs():
    rng = np.random.default_rng(0)
    lab1, lab2 = random_lab(rng, 100_000), random_lab(rng, 100_000)
    lab2[:1000] = lab1[:1000]
    ours = color.delta_e00(t64(lab1), t64(lab2)).numpy()
    ref = colour.delta_E(lab1, lab2, method="CIE 2000")
    # The exact 180 degree hue boundary is decided by float rounding in either implementation;
    # random continuous draws never land on it, so all pairs must agree.
    assert np.abs(ours - ref).max() <= 1e-6


def test_de76_matches_colour_science():
    rng = np.random.default_rng(1)
    lab1, lab2 = random_lab(rng, 1000), random_lab(rng, 1000)
    ref = colour.delta_E(lab1, lab2, method="CIE 1976")
    np.testing.assert_allclose(color.delta_e76(t64(lab1), t64(lab2)).numpy(), ref, atol=1e-9)


def test_de00_gradcheck_float64():
    rng = np.random.default_rng(2)
    lab1 = t64(random_lab(rng, 8)).requires_grad_()
    lab2 = t64(random_lab(rng, 8)).requires_grad_()
    assert torch.autograd.gradcheck(color.delta_e00, (lab1, lab2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_de00_gradients_finite_on_degenerate_pairs(dtype):
    rng = np.random.default_rng(3)
    lab1 = random_lab(rng, 10_000)
    lab2 = random_lab(rng, 10_000)
    lab2[:2000] = lab1[:2000]  # exact matches
    lab1[2000:3000, 1:] = 0.0  # C = 0 on one side
    lab2[2500:3500, 1:] = 0.0  # and on both
    lab2[4000:4500] = lab1[4000:4500] * [1, -1, -1]  # opposite hues (wrap-around)
    a = torch.tensor(lab1, dtype=dtype, requires_grad=True)
    b = torch.tensor(lab2, dtype=dtype, requires_grad=True)
    d = color.delta_e00(a, b)
    d.sum().backward()
    assert torch.isfinite(d).all()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert (d[:2000] == 0).all()


def test_srgb_lab_round_trip_float64():
    rng = np.random.default_rng(4)
    rgb = t64(rng.random((10_000, 3)))
    back = color.lab_to_srgb(color.srgb_to_lab(rgb))
    assert (back - rgb).abs().max().item() <= 1e-6


def test_conversions_match_colour_science():
    rng = np.random.default_rng(5)
    rgb = rng.random((1000, 3))
    lin_ref = colour.cctf_decoding(rgb, function="sRGB")
    np.testing.assert_allclose(color.srgb_to_linear(t64(rgb)).numpy(), lin_ref, atol=1e-12)
    np.testing.assert_allclose(color.linear_to_srgb(t64(lin_ref)).numpy(), rgb, atol=1e-12)

    xyz_ref = colour.RGB_to_XYZ(lin_ref, colour.RGB_COLOURSPACES["sRGB"], D65_XY)
    np.testing.assert_allclose(color.linear_srgb_to_xyz(t64(lin_ref)).numpy(), xyz_ref, atol=1e-10)
    # colour-science prints the standard's rounded inverse; ours is the exact one, so compare
    # against the exact inverse of the shared forward matrix.
    np.testing.assert_allclose(color.xyz_to_linear_srgb(t64(xyz_ref)).numpy(), lin_ref, atol=1e-10)
    assert np.abs(colour.XYZ_to_RGB(xyz_ref, colour.RGB_COLOURSPACES["sRGB"], D65_XY)
                  - lin_ref).max() < 1e-3

    # Include XYZ below and right around the Lab knee (216/24389) so both branches and the
    # threshold itself are checked.
    knee = 216 / 24389 * np.array(colour.xy_to_XYZ(D50_XY))
    xyz = np.vstack([xyz_ref, rng.random((200, 3)) * 0.005,
                     knee * rng.uniform(0.99, 1.01, (400, 3))])
    for white_xy, white in ((D65_XY, color.WHITE_D65), (D50_XY, color.WHITE_D50)):
        lab_ref = colour.XYZ_to_Lab(xyz, white_xy)
        np.testing.assert_allclose(color.xyz_to_lab(t64(xyz), white).numpy(), lab_ref, atol=1e-9)
        np.testing.assert_allclose(color.lab_to_xyz(t64(lab_ref), white).numpy(), xyz, atol=1e-9)

    lab = colour.XYZ_to_Lab(xyz_ref, D65_XY)
    np.testing.assert_allclose(color.lab_to_lch(t64(lab)).numpy(), colour.Lab_to_LCHab(lab),
                               atol=1e-9)


def test_white_points_match_colour_science():
    np.testing.assert_allclose(color.WHITE_D65, colour.xy_to_XYZ(D65_XY), atol=1e-12)
    np.testing.assert_allclose(color.WHITE_D50, colour.xy_to_XYZ(D50_XY), atol=1e-12)


def test_ita_and_categories():
    lab = t64([[70.0, 10.0, 15.0], [50.0, 10.0, 20.0], [30.0, 12.0, 18.0]])
    angles = color.ita(lab).numpy()
    expected = np.degrees(np.arctan((lab[:, 0].numpy() - 50) / lab[:, 2].numpy()))
    np.testing.assert_allclose(angles, expected, atol=1e-12)
    assert [color.ita_category(a) for a in (60, 50, 30, 20, 0, -45)] == list(
        color.ITA_CATEGORIES)
    assert color.ita_category(55.0) == "light"  # boundaries belong to the darker category


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_inputs_are_computed_in_float32(dtype):
    rng = np.random.default_rng(6)
    lab1 = t64(random_lab(rng, 1000)).to(dtype)
    lab2 = t64(random_lab(rng, 1000)).to(dtype)
    ref = color.delta_e00(lab1.double(), lab2.double())  # same rounded inputs, in float64
    low = color.delta_e00(lab1, lab2)
    assert low.dtype == torch.float32
    assert ((low.double() - ref).abs() / ref.clamp_min(1.0)).max().item() < 1e-4


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("channel", [0, 1, 2])
def test_de00_of_a_non_finite_colour_is_never_small(bad, channel):
    # A diverged model (NaN or inf Lab) must not score a perfect 0: it would be ranked best.
    good = torch.tensor([[50.0, 10.0, 15.0], [60.0, 0.0, 0.0]], dtype=torch.float64)
    broken = good.clone()
    broken[:, channel] = bad
    for a, b in ((broken, good), (good, broken), (broken, broken)):
        de = color.delta_e00(a, b)
        assert not torch.isfinite(de).any(), (a, b, de)
    assert not torch.isfinite(color.delta_e76(broken, good)).any()
