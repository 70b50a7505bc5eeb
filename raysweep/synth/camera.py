"""Cameras: measured spectral sensitivities plus a phone-style processing engine.

Each profile pairs sensor sensitivities that colour-science ships (the Nikon D5100 and Sigma SD1
Merrill NPL measurements and the Canon EOS 5D Mark II curves from rawtoaces, or a blend of two of
them with a small wavelength shift, standing in for a third phone sensor) with the habits of a
phone's engine: its colour matrix (fitted under D65, then given a saturation boost and a hue
twist, as vendors do for 'pleasing' colour), its auto-exposure (how much the swatch dominates the
meter), its ISP (tone curve, local tone mapping, digital gain) and its white-balance habits. How a
vendor writes EXIF lives in exif.py. The three phones are the default; the Sigma (Foveon) sensor,
whose steep matrix turns small white-balance errors into large colour errors, is an opt-in stress
profile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import UserError
from .exif import VENDOR_HABITS, ExifHabits
from .spectral import (
    WAVELENGTHS,
    XYZ_TO_LINEAR_SRGB,
    cmfs,
    d65,
    reflectance_to_xyz,
    resample,
    sd_on_grid,
)

CANON = "rawtoaces:characterisation/datasets/rawtoaces/CANON_EOS_5DMark_II_RGB_Sensitivities.csv"
NIKON, SIGMA = "Nikon 5100 (NPL)", "Sigma SDMerill (NPL)"


def device_id(make: str, model: str) -> str:
    """The camera id raysweep's EXIF reader derives from Make and Model ("make model", the make
    not repeated when the model starts with it), so a trained camera is found again in EXIF."""
    make, model = make.strip(), model.strip()
    return model if make and model.lower().startswith(make.lower()) else f"{make} {model}".strip()


@dataclass(frozen=True)
class CameraSpec:
    key: str  # profile name (GeneratorConfig.camera_profiles)
    sensitivities: tuple[tuple[str, float], ...]  # (source, weight): a blend of shipped curves
    make: str
    model: str
    exif: str  # key into exif.VENDOR_HABITS
    f_number: float
    base_iso: int
    saturation: float  # vendor saturation boost applied by the matrix
    hue_deg: float  # vendor hue twist (rotation in an opponent plane)
    brightness: float  # mid-tone lift of the tone curve
    shoulder: float  # highlight roll-off exponent (higher = harder knee)
    contrast: float  # S-curve strength in the encoded domain, 0..1
    subject_weight: float  # log-domain share of the meter given to the swatch (the subject)
    ltm: float  # local tone mapping strength (0 = none): pulls regions toward mid-grey
    ae_offset_ev: float  # where the auto-exposure puts the metered value, relative to 18%
    awb_greyworld: float  # how much the AWB estimate is pulled toward the frame's grey world
    awb_keep_warm: float  # share of a warm/cool cast the AWB deliberately keeps
    awb_session_sigma: float  # AWB error drawn once per session (log gain std)
    awb_photo_sigma: float  # the small per-photo jitter around it
    full_well: float  # photo-electrons per sensor pixel at raw = 1 and base ISO
    read_noise: float  # read noise per sensor pixel, electrons (input-referred)
    shift_nm: float = 0.0  # shift of the blended curves along the wavelength axis
    max_iso: int = 2000
    max_digital_gain_ev: float = 2.0  # what the ISP adds beyond the sensor, unrecorded
    sensor_mp: float = 12.0  # sensor megapixels: an output pixel averages many sensor pixels
    vignetting: float = 0.2  # residual corner fall-off after lens correction
    jpeg_quality: tuple[int, int] = (75, 95)

    @property
    def id(self) -> str:
        return device_id(self.make, self.model)

    @property
    def habits(self) -> ExifHabits:
        return VENDOR_HABITS[self.exif]


PROFILES: dict[str, CameraSpec] = {
    c.key: c
    for c in (
        CameraSpec(
            key="phone_a", sensitivities=((NIKON, 1.0),), make="Aster", model="Aster A1",
            exif="bv_offset", f_number=1.8, base_iso=25, saturation=1.15, hue_deg=3.0,
            brightness=1.25, shoulder=3.0, contrast=0.30, subject_weight=0.35, ltm=0.15,
            ae_offset_ev=0.3, awb_greyworld=0.35, awb_keep_warm=0.12, awb_session_sigma=0.05,
            awb_photo_sigma=0.012, full_well=6000, read_noise=2.0, vignetting=0.25,
            jpeg_quality=(72, 95)),
        CameraSpec(
            key="phone_b", sensitivities=((CANON, 1.0),), make="Borealis", model="B2",
            exif="unrounded_iso", f_number=1.7, base_iso=50, saturation=1.08, hue_deg=5.0,
            brightness=1.2, shoulder=4.0, contrast=0.25, subject_weight=0.65, ltm=0.3,
            ae_offset_ev=0.2, awb_greyworld=0.25, awb_keep_warm=0.18, awb_session_sigma=0.045,
            awb_photo_sigma=0.012, full_well=7000, read_noise=1.8, vignetting=0.18),
        CameraSpec(
            key="phone_c", sensitivities=((NIKON, 0.5), (CANON, 0.5)), shift_nm=6.0,
            make="cirrus", model="CR-3", exif="bv_zero_sessions", f_number=1.9, base_iso=40,
            saturation=1.12, hue_deg=-3.0, brightness=1.15, shoulder=3.5, contrast=0.3,
            subject_weight=0.95, ltm=0.35, ae_offset_ev=0.4, awb_greyworld=0.3,
            awb_keep_warm=0.15, awb_session_sigma=0.05, awb_photo_sigma=0.014, full_well=5000,
            read_noise=2.2, vignetting=0.22, jpeg_quality=(70, 92)),
        # Opt-in stress profile: a Foveon sensor, a steep matrix and a noisy per-photo AWB.
        CameraSpec(
            key="sigma_stress", sensitivities=((SIGMA, 1.0),), make="SIGMA",
            model="SIGMA SD1 Merrill", exif="clean", f_number=2.0, base_iso=32, saturation=1.0,
            hue_deg=-4.0, brightness=1.02, shoulder=3.0, contrast=0.30, subject_weight=0.3,
            ltm=0.0, ae_offset_ev=0.0, awb_greyworld=0.30, awb_keep_warm=0.10,
            awb_session_sigma=0.02, awb_photo_sigma=0.035, full_well=4500, read_noise=2.5,
            max_digital_gain_ev=0.0, vignetting=0.30, jpeg_quality=(70, 90)),
    )
}
DEFAULT_PROFILES = ("phone_a", "phone_b", "phone_c")


def available(names: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Profile keys (default: the three phones) whose sensitivities colour-science ships."""
    names = DEFAULT_PROFILES if names is None else names
    return [c for c in names if c in PROFILES
            and all(_source(src) is not None for src, _ in PROFILES[c].sensitivities)]


def _source(name: str):
    import colour

    if name.startswith("rawtoaces:"):
        path = Path(colour.__file__).parent.joinpath(*name.split(":", 1)[1].split("/"))
        return path if path.exists() else None
    return colour.MSDS_CAMERA_SENSITIVITIES.get(name)


def _curves(name: str) -> np.ndarray:
    src = _source(name)
    if isinstance(src, Path):
        table = np.loadtxt(src, delimiter=",", skiprows=1)
        return resample(table[:, 0], table[:, 1:])
    return sd_on_grid(src)


@cache
def sensitivities(key: str) -> np.ndarray:
    """(N_BANDS, 3) RGB sensitivities on the grid, zero outside the measured range."""
    spec = PROFILES[key]
    if len(available([key])) != 1:
        raise UserError(f"camera profile {key!r} needs sensitivities this colour-science lacks",
                        where="raysweep.synth.camera", fix=f"use one of {available()}")
    # each source is normalised to unit peak before blending, so the weights mean what they say
    sens = sum(w * _curves(src) / _curves(src).max() for src, w in spec.sensitivities)
    if spec.shift_nm:
        sens = np.stack([np.interp(WAVELENGTHS - spec.shift_nm, WAVELENGTHS, c, left=0, right=0)
                         for c in sens.T], 1)
    return sens


@dataclass
class Camera:
    """A camera ready to render: normalised sensitivities and its fitted colour matrix."""

    spec: CameraSpec
    sens: np.ndarray  # (N_BANDS, 3), scaled so a D65 white of unit illuminance reads G = 1
    matrix: np.ndarray  # (3, 3) white-balanced camera RGB -> linear sRGB (imperfect on purpose)
    ideal_matrix: np.ndarray = field(repr=False, default=None)

    def response(self, illuminant: np.ndarray, reflectance: np.ndarray) -> np.ndarray:
        """Raw RGB of reflectances (..., N_BANDS) under an illuminant of unit illuminance."""
        return (reflectance * illuminant) @ self.sens

    # --- global tone rendering: linear sRGB (1 = diffuse white at correct exposure) -> [0, 1]
    def tone(self, linear: np.ndarray) -> np.ndarray:
        s = self.spec
        y = np.maximum(linear, 0) * s.brightness
        y = y / np.power(1.0 + np.power(y, s.shoulder), 1.0 / s.shoulder)
        e = np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.power(np.maximum(y, 0.0031308), 1 / 2.4) - 0.055)
        return e - s.contrast * np.sin(2 * np.pi * e) / (2 * np.pi)

    def untone(self, encoded: np.ndarray) -> np.ndarray:
        """Exact inverse of tone() on [0, 1) by interpolation of the monotone forward curve."""
        grid = np.concatenate([[0.0], np.geomspace(1e-6, 50.0, 20000)])
        return np.interp(encoded, self.tone(grid), grid)


def _fit_matrix(sens: np.ndarray) -> np.ndarray:
    """Least-squares 3x3 from white-balanced camera RGB to linear sRGB under D65 on the 24
    ColorChecker patches, constrained to map white to white (the classic characterisation)."""
    import colour

    patches = colour.SDS_COLOURCHECKERS["BabelColor Average"]
    refl = np.stack([sd_on_grid(sd) for sd in patches.values()])
    ill = d65() / (d65() @ cmfs()[:, 1])
    cam = (refl * ill) @ sens / (ill @ sens)
    target = reflectance_to_xyz(refl) @ XYZ_TO_LINEAR_SRGB.T
    # Solve with M @ 1 = 1: parametrise the last column by the others.
    a = cam[:, :2] - cam[:, 2:3]
    rows = []
    for c in range(3):
        x, *_ = np.linalg.lstsq(a, target[:, c] - cam[:, 2], rcond=None)
        rows.append([x[0], x[1], 1.0 - x[0] - x[1]])
    return np.array(rows)


def look_matrix(saturation: float, hue_deg: float) -> np.ndarray:
    """Saturation boost and hue twist around the luminance axis, in linear sRGB."""
    to_opp = np.array([[1 / 3, 1 / 3, 1 / 3], [1, -1, 0], [0.5, 0.5, -1]])
    t = np.radians(hue_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    m = np.linalg.inv(to_opp) @ rot @ np.diag([1.0, saturation, saturation]) @ to_opp
    return m / (m @ np.ones(3))[:, None]  # greys keep their luminance: white stays white


def _vendor_look(spec: CameraSpec) -> np.ndarray:
    return look_matrix(spec.saturation, spec.hue_deg)


@cache
def build_camera(key: str) -> Camera:
    spec = PROFILES[key]
    sens = sensitivities(key)
    ill = d65() / (d65() @ cmfs()[:, 1])
    sens = sens / (ill @ sens)[1]
    ideal = _fit_matrix(sens)
    return Camera(spec=spec, sens=sens, matrix=_vendor_look(spec) @ ideal, ideal_matrix=ideal)
