"""Colour math in torch: sRGB <-> linear sRGB <-> XYZ <-> CIELAB, LCh, ITA, dE76 and CIEDE2000.

Batched over leading dimensions (the last one holds the three channels), any float dtype, CPU or
GPU, and differentiable with finite gradients everywhere, because dE00 is the training loss:
identical pairs, achromatic colours (C = 0) and the hue wrap-around all occur in real batches.
Constants follow IEC 61966-2-1 (sRGB) and CIE 15; they agree with colour-science to float64
precision (tests/test_color.py).
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

# CIE 1931 2 degree chromaticities; XYZ whites are derived from them as colour-science does.
_XY_D65 = (0.3127, 0.3290)
_XY_D50 = (0.3457, 0.3585)


def _xy_to_xyz(xy: tuple[float, float]) -> list[float]:
    x, y = xy
    return [x / y, 1.0, (1.0 - x - y) / y]


WHITE_D65 = tuple(_xy_to_xyz(_XY_D65))
WHITE_D50 = tuple(_xy_to_xyz(_XY_D50))


# IEC 61966-2-1 states the RGB -> XYZ matrix to four decimals; colour-science uses the same
# numbers. Its printed inverse is rounded too, so we invert exactly: a round trip through Lab then
# returns the input to float64 precision instead of to 1e-4.
_M_RGB_TO_XYZ = [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
_M_XYZ_TO_RGB = torch.linalg.inv(torch.tensor(_M_RGB_TO_XYZ, dtype=torch.float64)).tolist()

# CIE 15: kappa and epsilon in their exact rational form.
_EPSILON = 216.0 / 24389.0
_KAPPA = 24389.0 / 27.0


def _matmul3(x: Tensor, m: list[list[float]]) -> Tensor:
    mt = torch.tensor(m, dtype=x.dtype, device=x.device)
    return x @ mt.T


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt with a zero (not infinite) gradient at 0, so exact matches and C = 0 stay finite.

    NaN passes through: `NaN > 0` is false, and mapping it to 0 would give a diverged model a
    perfect colour difference.
    """
    positive = x > 0
    root = torch.sqrt(torch.where(positive, x, torch.ones_like(x)))
    return torch.where(positive, root, torch.where(torch.isnan(x), x, torch.zeros_like(x)))


def _safe_atan2(y: Tensor, x: Tensor) -> Tensor:
    """atan2 that is 0 with zero gradient at the origin, where the hue is undefined."""
    origin = (x == 0) & (y == 0)
    return torch.where(origin, 0.0, torch.atan2(torch.where(origin, 0.0, y),
                                                torch.where(origin, 1.0, x)))


# ---- sRGB transfer function ----------------------------------------------------------------

def srgb_to_linear(rgb: Tensor) -> Tensor:
    """Decode sRGB (IEC 61966-2-1) to linear light; values below 0 follow the linear segment."""
    high = rgb > 0.04045
    powered = ((torch.where(high, rgb, torch.ones_like(rgb)) + 0.055) / 1.055) ** 2.4
    return torch.where(high, powered, rgb / 12.92)


def linear_to_srgb(lin: Tensor) -> Tensor:
    """Encode linear light to sRGB."""
    high = lin > 0.0031308
    powered = 1.055 * torch.where(high, lin, torch.ones_like(lin)) ** (1 / 2.4) - 0.055
    return torch.where(high, powered, lin * 12.92)


# ---- linear sRGB <-> XYZ <-> Lab ------------------------------------------------------------

def linear_srgb_to_xyz(lin: Tensor) -> Tensor:
    """Linear sRGB to CIE XYZ (D65, Y of white = 1)."""
    return _matmul3(lin, _M_RGB_TO_XYZ)


def xyz_to_linear_srgb(xyz: Tensor) -> Tensor:
    return _matmul3(xyz, _M_XYZ_TO_RGB)


def _white(white: tuple[float, float, float] | Tensor, like: Tensor) -> Tensor:
    return torch.as_tensor(white, dtype=like.dtype, device=like.device)


def xyz_to_lab(xyz: Tensor, white: tuple[float, float, float] | Tensor = WHITE_D65) -> Tensor:
    """CIE XYZ to CIELAB relative to `white` (default D65, 2 degree observer)."""
    t = xyz / _white(white, xyz)
    high = t > _EPSILON
    cube_root = torch.where(high, t, torch.ones_like(t)) ** (1.0 / 3.0)
    f = torch.where(high, cube_root, (_KAPPA * t + 16.0) / 116.0)
    fx, fy, fz = f.unbind(-1)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-1)


def lab_to_xyz(lab: Tensor, white: tuple[float, float, float] | Tensor = WHITE_D65) -> Tensor:
    L, a, b = lab.unbind(-1)
    fy = (L + 16.0) / 116.0
    f = torch.stack((fy + a / 500.0, fy, fy - b / 200.0), dim=-1)
    cubed = f**3
    t = torch.where(cubed > _EPSILON, cubed, (116.0 * f - 16.0) / _KAPPA)
    # Y uses L directly below the knee (CIE 15), which is what colour-science does too.
    ty = torch.where(L > _KAPPA * _EPSILON, cubed[..., 1], L / _KAPPA)
    t = torch.stack((t[..., 0], ty, t[..., 2]), dim=-1)
    return t * _white(white, lab)


def srgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB-encoded values in [0, 1] to CIELAB D65."""
    return xyz_to_lab(linear_srgb_to_xyz(srgb_to_linear(rgb)))


def lab_to_srgb(lab: Tensor) -> Tensor:
    """CIELAB D65 to sRGB-encoded values (not clipped: out-of-gamut colours leave [0, 1])."""
    return linear_to_srgb(xyz_to_linear_srgb(lab_to_xyz(lab)))


def lab_to_linear_srgb(lab: Tensor) -> Tensor:
    return xyz_to_linear_srgb(lab_to_xyz(lab))


def linear_srgb_to_lab(lin: Tensor) -> Tensor:
    return xyz_to_lab(linear_srgb_to_xyz(lin))


def lab_to_lch(lab: Tensor) -> Tensor:
    """CIELAB to (L, C, h) with h in degrees in [0, 360)."""
    L, a, b = lab.unbind(-1)
    c = _safe_sqrt(a * a + b * b)
    h = torch.remainder(torch.rad2deg(_safe_atan2(b, a)), 360.0)
    return torch.stack((L, c, h), dim=-1)


# ---- skin tone --------------------------------------------------------------------------------

# Individual Typology Angle categories (Chardon et al. 1991; Del Bino et al. 2006), light to dark.
ITA_CATEGORIES = ("very light", "light", "intermediate", "tan", "brown", "dark")
_ITA_LOWER_BOUNDS = (55.0, 41.0, 28.0, 10.0, -30.0, -math.inf)


def ita(lab: Tensor) -> Tensor:
    """ITA angle in degrees: arctan((L* - 50) / b*); atan2 keeps it defined for b* <= 0."""
    L, _, b = lab.unbind(-1)
    return torch.rad2deg(torch.atan2(L - 50.0, b))


def ita_category(angle: float) -> str:
    """The ITA category name of one angle in degrees."""
    for name, lower in zip(ITA_CATEGORIES, _ITA_LOWER_BOUNDS):
        if angle > lower:
            return name
    return ITA_CATEGORIES[-1]


# ---- colour differences ------------------------------------------------------------------------

def delta_e76(lab1: Tensor, lab2: Tensor) -> Tensor:
    """CIE 1976 colour difference (Euclidean distance in CIELAB)."""
    d = lab1 - lab2
    return _safe_sqrt((d * d).sum(-1))


def delta_e00(lab1: Tensor, lab2: Tensor, kL: float = 1.0, kC: float = 1.0,
              kH: float = 1.0) -> Tensor:
    """CIEDE2000 colour difference, following Sharma, Wu and Dalal (2005) step by step.

    Half-precision inputs are computed in float32: evaluated in bfloat16 the formula is off by up
    to 40% on random pairs (C^7 and the hue terms lose too many bits), which would poison a loss.
    """
    work = torch.promote_types(torch.promote_types(lab1.dtype, lab2.dtype), torch.float32)
    L1, a1, b1 = lab1.to(work).unbind(-1)
    L2, a2, b2 = lab2.to(work).unbind(-1)

    c_bar = 0.5 * (_safe_sqrt(a1 * a1 + b1 * b1) + _safe_sqrt(a2 * a2 + b2 * b2))
    c_bar7 = c_bar**7
    g = 0.5 * (1.0 - _safe_sqrt(c_bar7 / (c_bar7 + 25.0**7)))
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
    c1p = _safe_sqrt(a1p * a1p + b1 * b1)
    c2p = _safe_sqrt(a2p * a2p + b2 * b2)
    h1p = torch.remainder(torch.rad2deg(_safe_atan2(b1, a1p)), 360.0)
    h2p = torch.remainder(torch.rad2deg(_safe_atan2(b2, a2p)), 360.0)

    dLp = L2 - L1
    dCp = c2p - c1p
    chroma_product = c1p * c2p
    achromatic = chroma_product == 0
    dh = h2p - h1p
    dhp = torch.where(dh > 180.0, dh - 360.0, torch.where(dh < -180.0, dh + 360.0, dh))
    dhp = torch.where(achromatic, 0.0, dhp)
    dHp = 2.0 * _safe_sqrt(chroma_product) * torch.sin(torch.deg2rad(dhp) / 2.0)

    Lp_bar = 0.5 * (L1 + L2)
    Cp_bar = 0.5 * (c1p + c2p)
    h_sum = h1p + h2p
    h_mean = torch.where(
        (h1p - h2p).abs() <= 180.0,
        0.5 * h_sum,
        torch.where(h_sum < 360.0, 0.5 * (h_sum + 360.0), 0.5 * (h_sum - 360.0)),
    )
    hp_bar = torch.where(achromatic, h_sum, h_mean)

    rad = torch.deg2rad
    t = (1.0 - 0.17 * torch.cos(rad(hp_bar - 30.0)) + 0.24 * torch.cos(rad(2.0 * hp_bar))
         + 0.32 * torch.cos(rad(3.0 * hp_bar + 6.0)) - 0.20 * torch.cos(rad(4.0 * hp_bar - 63.0)))
    d_theta = 30.0 * torch.exp(-(((hp_bar - 275.0) / 25.0) ** 2))
    Cp_bar7 = Cp_bar**7
    r_c = 2.0 * _safe_sqrt(Cp_bar7 / (Cp_bar7 + 25.0**7))
    l50 = (Lp_bar - 50.0) ** 2
    s_l = 1.0 + 0.015 * l50 / torch.sqrt(20.0 + l50)
    s_c = 1.0 + 0.045 * Cp_bar
    s_h = 1.0 + 0.015 * Cp_bar * t
    r_t = -torch.sin(rad(2.0 * d_theta)) * r_c

    tl, tc, th = dLp / (kL * s_l), dCp / (kC * s_c), dHp / (kH * s_h)
    return _safe_sqrt((tl * tl + tc * tc + th * th + r_t * tc * th).clamp_min(0.0))
