"""Light sources: what illuminates one capture session (set).

Natural-looking light follows the CIE convention: a Planckian radiator below 4000 K and the CIE
D series above, correlated colour temperature log-uniform in 2500-7500 K, with a small green /
magenta tint. A share of sets is lit by measured fluorescent and LED spectra that colour-science
ships, whose spiky spectra are what makes camera colour hard. Every spectrum is normalised to unit
illuminance (photopic Y = 1), so a light is (spectrum, lux).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spectral import WAVELENGTHS, cmfs, luminance, sd_on_grid

FLUORESCENT = ("FL1", "FL2", "FL3", "FL4", "FL7", "FL8", "FL10", "FL11", "FL12",
               "FL3.5", "FL3.10", "FL3.15")
LED = ("LED-B1", "LED-B2", "LED-B3", "LED-B4", "LED-B5", "LED-BH1", "LED-RGB1", "LED-V1", "LED-V2")
LIGHT_SOURCES = ("Phosphor LED YAG", "4-LED Yellow", "Luxeon WW 2880", "F32T8/TL841 (Triphosphor)")
TYPES = ("blackbody", "daylight", "fluorescent", "led")


@dataclass
class Light:
    type: str  # one of TYPES
    name: str  # e.g. "D55", "blackbody", "FL11", "LED-B3"
    cct_k: float  # correlated colour temperature of the final spectrum (Ohno 2013)
    duv: float  # its distance from the Planckian locus
    tint: float  # the tint parameter that was applied (positive = green)
    spectrum: np.ndarray  # (N_BANDS,), unit illuminance


def planck(cct: float) -> np.ndarray:
    wl = WAVELENGTHS * 1e-9
    c1, c2 = 3.741771852e-16, 1.438776877e-2
    return c1 / wl**5 / np.expm1(c2 / (wl * cct))


def daylight(cct: float) -> np.ndarray:
    import colour

    xy = colour.temperature.CCT_to_xy_CIE_D(cct)
    return sd_on_grid(colour.sd_CIE_illuminant_D_series(xy))


def named(name: str) -> np.ndarray:
    import colour

    if name in colour.SDS_ILLUMINANTS:
        return sd_on_grid(colour.SDS_ILLUMINANTS[name])
    return sd_on_grid(colour.SDS_LIGHT_SOURCES[name])


def nominal_light(cct: float) -> np.ndarray:
    """The textbook light of a CCT (what a camera's white-balance preset assumes)."""
    spectrum = planck(cct) if cct < 4000 else daylight(cct)
    return spectrum / luminance(spectrum)


def _tint_filter(tint: float) -> np.ndarray:
    # A smooth green (+) / magenta (-) bump: what a green-cast fluorescent tube or a magenta
    # correction gel does to an otherwise Planckian source.
    bump = np.exp(-0.5 * ((WAVELENGTHS - 535.0) / 45.0) ** 2)
    return np.exp(tint * (bump - bump.mean()))


def cct_duv(spectrum: np.ndarray) -> tuple[float, float]:
    import colour

    xyz = spectrum @ cmfs()
    uv = colour.xy_to_UCS_uv(colour.XYZ_to_xy(xyz))
    cct, duv = colour.temperature.uv_to_CCT_Ohno2013(uv)
    return float(cct), float(duv)


def make_light(type_: str, rng: np.random.Generator, cct: float | None = None) -> Light:
    """Draw one light of a type; natural types take a CCT (log-uniform 2500-7500 K if None)."""
    tint = float(rng.uniform(-0.25, 0.25))
    if type_ in ("blackbody", "daylight"):
        if cct is None:
            cct = float(np.exp(rng.uniform(np.log(2500), np.log(7500))))
        base = planck(cct) if cct < 4000 else daylight(cct)
        type_ = "blackbody" if cct < 4000 else "daylight"
        name = "blackbody" if type_ == "blackbody" else f"D{round(cct / 100):d}"
    elif type_ == "fluorescent":
        name = str(rng.choice(FLUORESCENT))
        base = named(name)
        tint *= 0.3  # measured spectra already carry their own tint
    elif type_ == "led":
        name = str(rng.choice(LED + LIGHT_SOURCES))
        base = named(name)
        tint *= 0.3
    else:
        raise ValueError(f"unknown light type {type_!r}; use one of {TYPES}")
    spectrum = base * _tint_filter(tint)
    spectrum = spectrum / luminance(spectrum)
    cct_k, duv = cct_duv(spectrum)
    return Light(type=type_, name=name, cct_k=cct_k, duv=duv, tint=tint, spectrum=spectrum)


def draw_session_light(rng: np.random.Generator) -> Light:
    """The main light of a set: 60% natural-looking (Planckian / daylight), 20% fluorescent, 20% LED."""
    u = rng.random()
    type_ = "daylight" if u < 0.6 else ("fluorescent" if u < 0.8 else "led")
    return make_light(type_, rng)


def draw_lux(light: Light, u: float) -> float:
    """Illuminance at quantile u in [0, 1). Daylight sessions may be outdoors (to 30,000 lux);
    lamps light rooms, down to dim ones: together they stretch EXIF BrightnessValue over about
    -4..+10. The caller stratifies u over the sets so that a few sets still span the range."""
    lo, hi = (200.0, 30000.0) if light.type == "daylight" else (5.0, 2000.0)
    return float(np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))))
