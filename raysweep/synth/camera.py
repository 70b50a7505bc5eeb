"""Cameras: measured spectral sensitivities plus a deliberately imperfect rendering pipeline.

Each camera pairs a real sensor's spectral sensitivities (colour-science ships the Nikon D5100 and
Sigma SD1 Merrill NPL measurements and the Canon EOS 5D Mark II curves from rawtoaces) with the
habits of a phone-style processing engine (12 MP, phone-sized pixels): its own colour matrix (fitted under D65, then given a
saturation boost and a hue twist, as vendors do for 'pleasing' colour), tone curve, noise,
auto-exposure offset and auto-white-balance habits. These differences are what camera metadata
can teach a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from ..errors import UserError
from .spectral import XYZ_TO_LINEAR_SRGB, cmfs, d65, reflectance_to_xyz, resample, sd_on_grid

CANON_CSV = ("characterisation", "datasets", "rawtoaces", "CANON_EOS_5DMark_II_RGB_Sensitivities.csv")


@dataclass(frozen=True)
class CameraSpec:
    id: str
    sensitivities: str  # key in MSDS_CAMERA_SENSITIVITIES or "rawtoaces:<file>"
    make: str
    model: str
    f_number: float
    base_iso: int
    saturation: float  # vendor saturation boost applied by the matrix
    hue_deg: float  # vendor hue twist (rotation in the a*b*-like opponent plane)
    brightness: float  # mid-tone lift of the tone curve
    shoulder: float  # highlight roll-off exponent (higher = harder knee)
    contrast: float  # S-curve strength in the encoded domain, 0..1
    ae_offset_ev: float  # where the auto-exposure puts middle grey, relative to 18%
    awb_greyworld: float  # how much the AWB estimate is pulled toward the frame's grey world
    awb_keep_warm: float  # share of a warm/cool cast the AWB deliberately keeps
    awb_sigma: float  # random AWB error (log gain std)
    full_well: float  # photo-electrons per sensor pixel at raw = 1 and base ISO
    read_noise: float  # read noise per sensor pixel, electrons (input-referred)
    sensor_mp: float  # sensor megapixels: an output pixel averages many sensor pixels
    vignetting: float  # residual corner fall-off after lens correction
    jpeg_quality: tuple[int, int] = (70, 95)


CAMERAS: dict[str, CameraSpec] = {
    c.id: c
    for c in (
        CameraSpec(
            id="nikon_d5100", sensitivities="Nikon 5100 (NPL)", make="NIKON CORPORATION",
            model="NIKON D5100", f_number=1.8, base_iso=25, saturation=1.18, hue_deg=3.0,
            brightness=1.08, shoulder=4.0, contrast=0.22, ae_offset_ev=0.0, awb_greyworld=0.35,
            awb_keep_warm=0.12, awb_sigma=0.030, full_well=6000, read_noise=2.0, sensor_mp=12,
            vignetting=0.25, jpeg_quality=(72, 95)),
        CameraSpec(
            id="sigma_sd_merrill", sensitivities="Sigma SDMerill (NPL)", make="SIGMA",
            model="SIGMA SD1 Merrill", f_number=2.0, base_iso=32, saturation=1.0, hue_deg=-4.0,
            brightness=1.02, shoulder=3.0, contrast=0.30, ae_offset_ev=0.0, awb_greyworld=0.30,
            awb_keep_warm=0.10, awb_sigma=0.035, full_well=4500, read_noise=2.5, sensor_mp=12,
            vignetting=0.30, jpeg_quality=(70, 90)),
        CameraSpec(
            id="canon_eos_5d_mark_ii", sensitivities="rawtoaces:" + "/".join(CANON_CSV),
            make="Canon", model="Canon EOS 5D Mark II", f_number=2.2, base_iso=50,
            saturation=1.06, hue_deg=5.0, brightness=1.12, shoulder=5.0, contrast=0.12,
            ae_offset_ev=0.2, awb_greyworld=0.22, awb_keep_warm=0.18, awb_sigma=0.025,
            full_well=7000, read_noise=1.8, sensor_mp=12, vignetting=0.18, jpeg_quality=(75, 95)),
    )
}


def available(names: list[str] | None = None) -> list[str]:
    """Camera ids whose sensitivities the installed colour-science ships."""
    return [c for c in (names or list(CAMERAS)) if _sensitivity_source(CAMERAS[c]) is not None]


def _sensitivity_source(spec: CameraSpec):
    import colour

    if spec.sensitivities.startswith("rawtoaces:"):
        path = Path(colour.__file__).parent.joinpath(*spec.sensitivities.split(":", 1)[1].split("/"))
        return path if path.exists() else None
    return colour.MSDS_CAMERA_SENSITIVITIES.get(spec.sensitivities)


@cache
def sensitivities(camera_id: str) -> np.ndarray:
    """(N_BANDS, 3) RGB sensitivities on the grid, zero outside the measured range."""
    src = _sensitivity_source(CAMERAS[camera_id])
    if src is None:
        raise UserError(f"camera {camera_id!r} needs sensitivities this colour-science lacks",
                        where="raysweep.synth.camera", fix=f"use --cameras <= {len(available())}")
    if isinstance(src, Path):
        table = np.loadtxt(src, delimiter=",", skiprows=1)
        return resample(table[:, 0], table[:, 1:])
    return sd_on_grid(src)


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

    # --- tone rendering: linear sRGB (1 = diffuse white at correct exposure) -> encoded [0, 1]
    def tone(self, linear: np.ndarray) -> np.ndarray:
        s = self.spec
        y = np.maximum(linear, 0) * s.brightness
        y = y / np.power(1.0 + np.power(y, s.shoulder), 1.0 / s.shoulder)
        e = np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.power(np.maximum(y, 0.0031308), 1 / 2.4) - 0.055)
        return e - s.contrast * np.sin(2 * np.pi * e) / (2 * np.pi)

    def untone(self, encoded: np.ndarray) -> np.ndarray:
        """Exact inverse of tone() on [0, 1) by interpolation of the monotone forward curve."""
        grid = np.concatenate([[0.0], np.geomspace(1e-6, 50.0, 20000)])
        fwd = self.tone(grid)
        return np.interp(encoded, fwd, grid)


def _fit_matrix(sens: np.ndarray) -> np.ndarray:
    """Least-squares 3x3 from white-balanced camera RGB to linear sRGB under D65 on the 24
    ColorChecker patches, constrained to map white to white (the classic characterisation)."""
    import colour

    patches = colour.SDS_COLOURCHECKERS["BabelColor Average"]
    refl = np.stack([sd_on_grid(sd) for sd in patches.values()])
    ill = d65() / (d65() @ _ybar())
    cam = (refl * ill) @ sens
    white = ill @ sens
    cam = cam / white
    target = reflectance_to_xyz(refl) @ XYZ_TO_LINEAR_SRGB.T
    # Solve M = M0 + correction with M @ 1 = 1: parametrise the last column by the others.
    a = cam[:, :2] - cam[:, 2:3]
    rows = []
    for c in range(3):
        b = target[:, c] - cam[:, 2]
        x, *_ = np.linalg.lstsq(a, b, rcond=None)
        rows.append([x[0], x[1], 1.0 - x[0] - x[1]])
    return np.array(rows)


def _ybar() -> np.ndarray:
    return cmfs()[:, 1]


def _vendor_look(spec: CameraSpec) -> np.ndarray:
    """Saturation boost and hue twist around the luminance axis, in linear sRGB."""
    to_opp = np.array([[1 / 3, 1 / 3, 1 / 3], [1, -1, 0], [0.5, 0.5, -1]])
    t = np.radians(spec.hue_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    sat = np.diag([1.0, spec.saturation, spec.saturation])
    m = np.linalg.inv(to_opp) @ rot @ sat @ to_opp
    # keep luminance of greys: white stays white
    return m / (m @ np.ones(3))[:, None]


@cache
def build_camera(camera_id: str) -> Camera:
    spec = CAMERAS[camera_id]
    sens = sensitivities(camera_id)
    ill = d65() / (d65() @ _ybar())
    sens = sens / (ill @ sens)[1]
    ideal = _fit_matrix(sens)
    return Camera(spec=spec, sens=sens, matrix=_vendor_look(spec) @ ideal, ideal_matrix=ideal)
