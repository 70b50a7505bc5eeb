"""The common wavelength grid and the numpy colorimetry the generator needs (D65, 2 degree).

Everything spectral in the generator lives on one grid (380-780 nm, 5 nm) so that a spectrum is a
plain float64 vector and integrals are dot products. The torch colour core (raysweep.color) serves
the models; this module only serves data generation, where numpy is simpler and exact.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

WAVELENGTHS = np.arange(380.0, 780.0 + 1e-9, 5.0)
N_BANDS = len(WAVELENGTHS)

# sRGB (IEC 61966-2-1) primaries, D65 white.
XYZ_TO_LINEAR_SRGB = np.array(
    [[3.2404542, -1.5371385, -0.4985314],
     [-0.9692660, 1.8760108, 0.0415560],
     [0.0556434, -0.2040259, 1.0572252]]
)
LINEAR_SRGB_TO_XYZ = np.linalg.inv(XYZ_TO_LINEAR_SRGB)


def resample(wavelengths, values, fill: float = 0.0) -> np.ndarray:
    """Linear interpolation onto the grid; outside the measured range the value is `fill`
    (camera data stop where the IR/UV cut filters leave nothing worth measuring)."""
    values = np.asarray(values, dtype=np.float64)
    wl = np.asarray(wavelengths, dtype=np.float64)
    if values.ndim == 1:
        return np.interp(WAVELENGTHS, wl, values, left=fill, right=fill)
    return np.stack([np.interp(WAVELENGTHS, wl, v, left=fill, right=fill) for v in values.T], 1)


def sd_on_grid(sd) -> np.ndarray:
    """A colour-science SpectralDistribution (or MultiSpectralDistributions) on the grid."""
    return resample(sd.wavelengths, sd.values)


@lru_cache(maxsize=1)
def cmfs() -> np.ndarray:
    """CIE 1931 2 degree colour matching functions, (N_BANDS, 3)."""
    import colour

    return sd_on_grid(colour.MSDS_CMFS["CIE 1931 2 Degree Standard Observer"])


@lru_cache(maxsize=1)
def d65() -> np.ndarray:
    import colour

    return sd_on_grid(colour.SDS_ILLUMINANTS["D65"])


def luminance(spectrum: np.ndarray) -> float:
    """Relative photopic luminance of an emission spectrum (used to normalise lights to 1 lux)."""
    return float(spectrum @ cmfs()[:, 1])


def reflectance_to_xyz(reflectance: np.ndarray, illuminant: np.ndarray | None = None) -> np.ndarray:
    """XYZ (Y of the perfect white = 1) of reflectances (..., N_BANDS) under an illuminant."""
    ill = d65() if illuminant is None else illuminant
    weights = ill[:, None] * cmfs()
    return (reflectance @ weights) / weights[:, 1].sum()


def _f(t: np.ndarray) -> np.ndarray:
    d = 6.0 / 29.0
    return np.where(t > d**3, np.cbrt(np.maximum(t, d**3)), t / (3 * d * d) + 4.0 / 29.0)


def white_xyz(illuminant: np.ndarray | None = None) -> np.ndarray:
    return reflectance_to_xyz(np.ones(N_BANDS), illuminant)


def xyz_to_lab(xyz: np.ndarray, white: np.ndarray | None = None) -> np.ndarray:
    w = white_xyz() if white is None else white
    f = _f(np.asarray(xyz) / w)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def reflectance_to_lab(reflectance: np.ndarray) -> np.ndarray:
    """The ground truth convention: CIELAB under D65, CIE 1931 2 degree observer."""
    return xyz_to_lab(reflectance_to_xyz(reflectance))


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    v = np.asarray(encoded, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, np.power((np.maximum(v, 0.04045) + 0.055) / 1.055, 2.4))


def srgb_to_lab(encoded: np.ndarray) -> np.ndarray:
    """Encoded sRGB in [0, 1] -> CIELAB D65 (the 'naive' reading of a photo)."""
    xyz = srgb_decode(encoded) @ LINEAR_SRGB_TO_XYZ.T
    return xyz_to_lab(xyz, white=LINEAR_SRGB_TO_XYZ.sum(1))


def ita_deg(lab: np.ndarray) -> np.ndarray:
    """Individual typology angle, degrees."""
    lab = np.asarray(lab)
    return np.degrees(np.arctan2(lab[..., 0] - 50.0, lab[..., 2]))


def delta_e00(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    import colour

    return np.asarray(colour.delta_E(lab1, lab2, method="CIE 2000"))
