"""Skin reflectance from a two-layer Kubelka-Munk model.

Epidermis: eumelanin + pheomelanin (Jacques 1998; Donner & Jensen 2006 power laws) on the
bloodless skin baseline. Dermis: oxy/deoxy haemoglobin (molar extinction after Prahl's
compilation, 10 nm, rounded) on the same baseline, over white subcutaneous fat. Reduced
scattering is Jacques' Mie + Rayleigh fit. The layers are combined with the Kubelka-Munk
layer formulas and a Saunderson correction for the refractive-index step at the surface
(without the specular term: the ground truth is a specular-excluded measurement).

The parameter ranges and the rejection box were calibrated so that the D65 Lab of the tones
covers real skin (L* ~30-72, b* ~8-24, ITA ~-60..+56) with the medians of printed skin-tone
swatch sets (issue 15: L* 61, hue 59 degrees, b* 16): little blood and some carotene (swatches
are yellower and less red than the average face), melanin skewed toward light tones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spectral import WAVELENGTHS, ita_deg, reflectance_to_lab

# Molar extinction coefficients (cm^-1 / M), oxy- and deoxy-haemoglobin, after S. Prahl (1999).
_HB_WL = np.arange(380, 790, 10)
_HBO2 = np.array([
    123000, 175000, 266232, 466840, 480360, 212192, 62816, 56000, 44480, 33209, 26629, 23684,
    20932, 20035, 24202, 39957, 53236, 43016, 32613, 44496, 50104, 14401, 3200, 1506, 942, 610,
    442, 368, 320, 294, 278, 276, 290, 314, 348, 390, 446, 518, 586, 650, 710,
], dtype=float)
_HB = np.array([
    156000, 190000, 223296, 303956, 407560, 528600, 413280, 103292, 23389, 16156, 14550, 16684,
    20862, 25774, 31590, 39036, 46592, 53412, 53788, 45072, 37020, 28324, 14677, 9444, 6510, 5149,
    4345, 3750, 3227, 2795, 2408, 2052, 1794, 1540, 1326, 1102, 1116, 1405, 1549, 1312, 1075,
], dtype=float)

# Parameter ranges (the prior over skin tones); melanin is sampled log-uniformly.
RANGES = {
    "melanin": (0.003, 0.2),  # epidermal melanosome volume fraction
    "eumelanin_share": (0.45, 0.95),  # eumelanin / (eu + pheo)
    "blood": (0.002, 0.03),  # dermal blood volume fraction
    "oxygenation": (0.65, 0.85),
    "epidermis_mm": (0.08, 0.09),
    "carotene": (0.8, 2.4),  # relative beta-carotene load in the epidermis
}
MELANIN_SKEW = 1.2  # u -> u**1.2 before the log-uniform map: more light tones, as swatch sets have
PARAM_NAMES = tuple(RANGES)
# Acceptance box in D65 Lab: what real skin (and real skin-tone swatches) looks like.
LAB_BOX = {"L": (30.0, 72.0), "a": (4.0, 19.0), "b": (8.0, 24.0), "ita": (-62.0, 60.0)}


def _baseline() -> np.ndarray:
    """Bloodless, melanin-free tissue absorption (Jacques 1998), cm^-1."""
    return 0.244 + 85.3 * np.exp(-(WAVELENGTHS - 154.0) / 66.2)


def _carotene() -> np.ndarray:
    """Beta-carotene: two-band absorption 450-490 nm, none above 530 nm (cm^-1 per unit load)."""
    wl = WAVELENGTHS
    bands = np.exp(-0.5 * ((wl - 452) / 18) ** 2) + 0.9 * np.exp(-0.5 * ((wl - 481) / 14) ** 2)
    return 6.0 * (bands + 0.35 * np.exp(-0.5 * ((wl - 425) / 20) ** 2))


def _haemoglobin() -> tuple[np.ndarray, np.ndarray]:
    # 150 g/L haemoglobin in whole blood, 64,500 g/mol; ln(10) turns decadic into natural.
    scale = np.log(10) * 150.0 / 64500.0
    return (np.interp(WAVELENGTHS, _HB_WL, _HBO2) * scale, np.interp(WAVELENGTHS, _HB_WL, _HB) * scale)


def _km_layer(k: np.ndarray, s: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray]:
    """Kubelka-Munk reflectance and transmittance of a slab of thickness d (cm)."""
    a = 1.0 + k / s
    b = np.sqrt(a * a - 1.0)
    bsd = np.minimum(b * s * d, 50.0)
    denom = a * np.sinh(bsd) + b * np.cosh(bsd)
    return np.sinh(bsd) / denom, b / denom


def reflectance(params: np.ndarray) -> np.ndarray:
    """Diffuse reflectance spectra (T, N_BANDS) for parameter rows (T, len(PARAM_NAMES))."""
    p = np.atleast_2d(np.asarray(params, dtype=np.float64))
    mel, eu, blood, sat, epi_mm, car = (p[:, i : i + 1] for i in range(6))
    wl = WAVELENGTHS[None, :]
    mu_eu = 6.6e11 * wl**-3.33
    mu_pheo = 2.9e15 * wl**-4.75
    base = _baseline()[None, :]
    hbo2, hb = _haemoglobin()
    mu_epi = mel * (eu * mu_eu + (1 - eu) * mu_pheo) + (1 - mel) * base + car * _carotene()[None, :]
    mu_derm = blood * (sat * hbo2 + (1 - sat) * hb) + (1 - blood) * base
    mus_red = 2e5 * wl**-1.5 + 2e12 * wl**-4.0  # reduced scattering, cm^-1
    r1, t1 = _km_layer(2 * mu_epi, 0.75 * mus_red * 1.3, epi_mm / 10.0)
    r2, t2 = _km_layer(2 * mu_derm, 0.75 * mus_red, 0.2)
    fat = 0.75  # subcutaneous fat: a bright, nearly white backing
    r2 = r2 + t2 * t2 * fat / (1 - r2 * fat)
    r = r1 + t1 * t1 * r2 / (1 - r1 * r2)
    # Saunderson: diffuse light leaving the skin meets the surface; r_e is the external
    # (specular, excluded) reflection, r_i the internal one.
    r_e, r_i = 0.04, 0.45
    return (1 - r_e) * (1 - r_i) * r / (1 - r_i * r)


@dataclass
class Tones:
    params: np.ndarray  # (T, 6) in PARAM_NAMES order
    reflectance: np.ndarray  # (T, N_BANDS)
    lab: np.ndarray  # (T, 3) ground truth, D65 / 2 degree

    @property
    def ita(self) -> np.ndarray:
        return ita_deg(self.lab)


def _from_unit(u: np.ndarray) -> np.ndarray:
    """Map unit-cube samples to parameters (melanin log-uniform: dark tones need resolution)."""
    out = np.empty_like(u)
    for i, (lo, hi) in enumerate(RANGES.values()):
        if i == 0:
            out[:, i] = np.exp(np.log(lo) + u[:, i] ** MELANIN_SKEW * (np.log(hi) - np.log(lo)))
        else:
            out[:, i] = lo + u[:, i] * (hi - lo)
    return out


def in_box(lab: np.ndarray) -> np.ndarray:
    (l0, l1), (a0, a1), (b0, b1), (i0, i1) = LAB_BOX.values()
    ita = ita_deg(lab)
    return (
        (ita >= i0) & (ita <= i1) &
        (lab[:, 0] >= l0) & (lab[:, 0] <= l1) & (lab[:, 1] >= a0) & (lab[:, 1] <= a1)
        & (lab[:, 2] >= b0) & (lab[:, 2] <= b1)
    )


def sample_params(n: int, rng: np.random.Generator) -> np.ndarray:
    """n parameter rows from the prior whose D65 Lab lies in LAB_BOX (rejection sampling)."""
    kept: list[np.ndarray] = []
    total = 0
    while total < n:
        p = _from_unit(rng.random((max(4 * n, 64), len(RANGES))))
        p = p[in_box(reflectance_to_lab(reflectance(p)))]
        kept.append(p)
        total += len(p)
    return np.concatenate(kept)[:n]


def make_tones(n: int, seed: int) -> Tones:
    """The physical samples of a dataset, ordered from light to dark (by ITA) for readable ids.

    A scrambled Sobol sequence spreads the tones over the prior far more evenly than iid draws,
    which matters at 138 tones: ITA coverage of the extremes is what the calibration checks.
    """
    from scipy.stats import qmc

    sobol = qmc.Sobol(d=len(RANGES), scramble=True, seed=np.random.default_rng([seed, 101]))
    kept: list[np.ndarray] = []
    total = 0
    while total < n:
        p = _from_unit(sobol.random(256))
        p = p[in_box(reflectance_to_lab(reflectance(p)))]
        kept.append(p)
        total += len(p)
    params = np.concatenate(kept)[:n]
    refl = reflectance(params)
    lab = reflectance_to_lab(refl)
    order = np.argsort(-ita_deg(lab), kind="stable")
    return Tones(params=params[order], reflectance=refl[order], lab=lab[order])
