"""Scenes: what is in front of the camera, drawn per set (session) and per photo.

A set is one session: one camera, one main light (sometimes a second one), one background surface,
one white-balance error and one EXIF habit state. Backgrounds are neutral (grey card or neutral
paper, alternating) except in a few "trap" sessions with a coloured surface (measured
ColorChecker spectra), where taking the background as a reference goes wrong. A photo places the
skin swatch near the centre, slightly rotated and offset, under a shading gradient, sometimes a
partial shadow and a specular highlight; exposure compensation and manual white balance are rare
(phones: issue 15), with shares set by the generator config.

All random draws for a photo come from a generator keyed by (seed, set, tone), so any worker can
render any photo and the oracle can redraw the exact scene; sensor noise has its own stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .light import Light, draw_lux, draw_session_light, make_light
from .spectral import WAVELENGTHS, reflectance_to_lab, reflectance_to_xyz, sd_on_grid

BACKGROUNDS = ("grey_card", "neutral_paper", "coloured")
WB_PRESETS = {"tungsten": 3200.0, "fluorescent": 4000.0, "daylight": 5500.0, "cloudy": 6500.0,
              "shade": 7500.0}
_CHROMATIC = 18  # the first 18 ColorChecker patches are chromatic


@dataclass
class SetSpec:
    set_id: int
    camera_id: str
    light: Light
    second: Light | None
    second_share: float  # share of the illuminance from the second light at the frame centre
    lux: float
    background_type: str
    background_name: str
    background: np.ndarray  # reflectance (N_BANDS,)
    awb_error: np.ndarray  # (2,) the session's AWB error in log(R/G), log(B/G)
    bv_offset_ev: float  # the vendor's BrightnessValue offset in this session
    bv_zeroed: bool  # the vendor writes BrightnessValue = 0 for this whole session

    @property
    def background_lab(self) -> np.ndarray:
        return reflectance_to_lab(self.background)


def _background(kind: str, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    tilt = (WAVELENGTHS - 580.0) / 200.0
    if kind == "grey_card":
        return "grey card 18%", 0.18 * (1 + rng.uniform(-0.02, 0.02) * tilt)
    if kind == "neutral_paper":
        rho = rng.uniform(0.35, 0.88)
        return f"neutral paper {rho:.2f}", np.clip(rho * (1 + rng.uniform(-0.05, 0.05) * tilt), 0, 1)
    import colour

    patches = list(colour.SDS_COLOURCHECKERS["BabelColor Average"].items())[:_CHROMATIC]
    i, j = rng.choice(_CHROMATIC, 2, replace=False)
    mix = rng.uniform(0.0, 0.4)
    refl = (1 - mix) * sd_on_grid(patches[i][1]) + mix * sd_on_grid(patches[j][1])
    y = float(reflectance_to_xyz(refl)[1])  # surfaces from dark cloth to pale paint
    refl = np.clip(refl * np.exp(rng.uniform(np.log(0.06), np.log(0.6))) / y, 0.01, 0.95)
    return f"colorchecker {patches[i][0]} + {mix:.2f} {patches[j][0]}", refl


def trap_sets(n_sets: int, n_cameras: int, share: float) -> set[int]:
    """Which sessions get a coloured background: round(share * sets) of them (at least one when
    share > 0 and there are two sets or more), spread over the cameras, starting from each
    camera's second session so that every camera keeps neutral sessions."""
    n = int(round(share * n_sets))
    if share > 0 and n_sets >= 2:
        n = max(n, 1)
    rounds = -(-n_sets // n_cameras)
    order = sorted(range(n_sets), key=lambda s: ((s // n_cameras - 1) % rounds, s % n_cameras))
    return set(order[:n])


def draw_set(set_id: int, cam, seed: int, n_sets: int, trap: bool, session_of_camera: int,
             awb_scale: float = 1.0) -> SetSpec:
    """One session with camera profile `cam` (its `session_of_camera`-th). Neutral backgrounds
    alternate grey card / paper; illuminance quantiles are stratified over the sets (one shuffled
    stratum each). `awb_scale` is the part of the camera's white-balance error sd that stays per
    session (the rest is drawn per frame: drift.py)."""
    rng = np.random.default_rng([seed, 7, set_id])
    stratum = np.random.default_rng([seed, 8]).permutation(n_sets)[set_id]
    kind = "coloured" if trap else ("grey_card" if (set_id // 2) % 2 == 0 else "neutral_paper")
    name, refl = _background(kind, rng)
    light = draw_session_light(rng)
    second, share = None, 0.0
    if rng.random() < 0.3:
        second = make_light(str(rng.choice(["daylight", "fluorescent", "led"])), rng)
        share = float(rng.uniform(0.15, 0.45))
    lux = draw_lux(light, (stratum + rng.random()) / n_sets)
    awb_error = rng.normal(0, cam.awb_session_sigma, 2) * awb_scale
    h = cam.habits
    offset = float(rng.uniform(*h.bv_offset_ev))
    zeroed = bool(h.bv_zero_every) and session_of_camera % h.bv_zero_every == 1
    return SetSpec(set_id, cam.key, light, second, share, lux, kind, name,
                   refl.astype(np.float64), awb_error, offset, zeroed)


def wb_preset(light: Light, pick: int) -> tuple[str, float]:
    """A manual preset near the scene's light: the nearest (pick 0) or the second nearest."""
    names, ccts = zip(*WB_PRESETS.items())
    mired = np.abs(1e6 / np.array(ccts) - 1e6 / light.cct_k)
    i = int(np.argsort(mired)[pick])
    return names[i], float(ccts[i])


@dataclass
class Photo:
    """Every per-photo draw (the latents); rendering is a pure function of (SetSpec, Photo)."""

    cx: float
    cy: float
    w: float
    h: float
    angle_deg: float
    shading: float
    shading_dir: float
    second_ramp: float
    second_dir: float
    shadow: bool
    shadow_dir: float
    shadow_offset: float
    shadow_depth: float
    shadow_soft: float
    specular_amp: float
    specular_x: float
    specular_y: float
    specular_sigma: float
    skin_texture: float
    bg_texture: float
    texture_seed: int
    lux_jitter: float
    exposure_bias_ev: float
    meter_noise_ev: float
    bv_noise_ev: float
    awb_jitter_r: float
    awb_jitter_b: float
    manual_wb: bool
    wb_preset_pick: int  # 0: the preset nearest the light, 1: the second nearest
    jpeg_quality: int
    noise_seed: int


def draw_photo(seed: int, set_id: int, tone_id: int, size: int, cam, bias_share: float,
               manual_wb_share: float) -> Photo:
    rng = np.random.default_rng([seed, 11, set_id, tone_id])
    s = float(size)
    w = s * rng.uniform(0.34, 0.5)
    h = w * rng.uniform(0.7, 1.0)
    cx, cy = s / 2 + np.clip(rng.normal(0, 0.06 * s, 2), -0.12 * s, 0.12 * s)
    angle = rng.uniform(-12, 12)
    # Specular highlight somewhere inside the swatch (in swatch coordinates, then rotated).
    su, sv = rng.uniform(-0.3, 0.3) * w, rng.uniform(-0.3, 0.3) * h
    t = np.radians(angle)
    spec_on = rng.random() < 0.5
    # Phones almost never carry compensation; when users dial it in, small steps are common.
    steps = np.array([k for k in range(-6, 7) if k])
    p_steps = 1.0 / np.abs(steps)
    step = float(rng.choice(steps, p=p_steps / p_steps.sum())) / 3
    bias = step if rng.random() < bias_share else 0.0
    manual = bool(rng.random() < manual_wb_share)
    pick = int(rng.random() < 0.3)
    return Photo(
        cx=float(cx), cy=float(cy), w=float(w), h=float(h), angle_deg=float(angle),
        shading=float(rng.uniform(0.0, 0.3)), shading_dir=float(rng.uniform(0, 2 * np.pi)),
        second_ramp=float(rng.uniform(0.2, 0.9)), second_dir=float(rng.uniform(0, 2 * np.pi)),
        shadow=bool(rng.random() < 0.35), shadow_dir=float(rng.uniform(0, 2 * np.pi)),
        shadow_offset=float(rng.uniform(0.05, 0.45)), shadow_depth=float(rng.uniform(0.3, 0.75)),
        shadow_soft=float(rng.uniform(0.02, 0.08)),
        specular_amp=float(rng.uniform(0.03, 0.3)) if spec_on else 0.0,
        specular_x=float(cx + su * np.cos(t) - sv * np.sin(t)),
        specular_y=float(cy + su * np.sin(t) + sv * np.cos(t)),
        specular_sigma=float(rng.uniform(0.03, 0.08) * s),
        skin_texture=float(rng.uniform(0.01, 0.03)), bg_texture=float(rng.uniform(0.01, 0.05)),
        texture_seed=int(rng.integers(2**31)), lux_jitter=float(np.exp(rng.normal(0, 0.1))),
        exposure_bias_ev=bias, meter_noise_ev=float(rng.normal(0, 0.12)),
        bv_noise_ev=float(rng.normal(0, 1)),  # scaled by the vendor's habit
        awb_jitter_r=float(rng.normal(0, cam.awb_photo_sigma)),
        awb_jitter_b=float(rng.normal(0, cam.awb_photo_sigma)),
        manual_wb=manual, wb_preset_pick=pick,
        jpeg_quality=int(rng.integers(cam.jpeg_quality[0], cam.jpeg_quality[1] + 1)),
        noise_seed=int(rng.integers(2**31)),
    )


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xx, yy


def swatch_mask(cx, cy, w, h, angle_deg, size: int, inset: float = 0.0) -> np.ndarray:
    """Anti-aliased mask of the rotated swatch; inset > 0 shrinks it by that many pixels."""
    xx, yy = _grid(size)
    t = np.radians(angle_deg)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    mu = np.clip(w / 2 - inset - np.abs(u) + 0.5, 0, 1)
    mv = np.clip(h / 2 - inset - np.abs(v) + 0.5, 0, 1)
    return (mu * mv).astype(np.float32)


def swatch_bbox(photo: Photo) -> tuple[int, int, int, int]:
    t = np.radians(photo.angle_deg)
    hw = 0.5 * (abs(photo.w * np.cos(t)) + abs(photo.h * np.sin(t)))
    hh = 0.5 * (abs(photo.w * np.sin(t)) + abs(photo.h * np.cos(t)))
    return (int(np.floor(photo.cx - hw)), int(np.floor(photo.cy - hh)),
            int(np.ceil(photo.cx + hw)), int(np.ceil(photo.cy + hh)))


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    import cv2

    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


@dataclass
class Fields:
    mask: np.ndarray  # swatch coverage (S, S)
    primary: np.ndarray  # weight of the main light (S, S), shading and shadow included
    second: np.ndarray | None  # weight of the second light
    optics: np.ndarray  # vignetting x surface texture (S, S)
    specular: np.ndarray | None  # specular reflectance added on top (S, S)
    shadow: np.ndarray | None  # 0..1, how deep inside the cast shadow each pixel lies


def fields(spec: SetSpec, photo: Photo, size: int, vignetting: float) -> Fields:
    """The deterministic spatial structure of a photo (everything but sensor noise)."""
    xx, yy = _grid(size)
    s = float(size)
    mask = swatch_mask(photo.cx, photo.cy, photo.w, photo.h, photo.angle_deg, size)
    xn, yn = (xx - s / 2) / s, (yy - s / 2) / s
    shade = 1.0 + photo.shading * (xn * np.cos(photo.shading_dir) + yn * np.sin(photo.shading_dir))
    primary, inside = shade, None
    if photo.shadow:
        d = xn * np.cos(photo.shadow_dir) + yn * np.sin(photo.shadow_dir) - (0.5 - photo.shadow_offset)
        inside = np.clip(0.5 + d / photo.shadow_soft, 0, 1)  # soft-edged half-plane
        primary = primary * (1 - photo.shadow_depth * inside)
    second = None
    if spec.second is not None:
        ramp = 1 + photo.second_ramp * (xn * np.cos(photo.second_dir) + yn * np.sin(photo.second_dir))
        share = np.clip(spec.second_share * ramp, 0.0, 0.9)
        second = (shade * share).astype(np.float32)
        primary = primary * (1 - share)
    rng = np.random.default_rng(photo.texture_seed)
    tex_skin = _smooth_field(rng, size, 9)
    tex_bg = _smooth_field(rng, size, 14)
    tex_skin -= (tex_skin * mask).sum() / max(mask.sum(), 1.0)  # no net brightness change
    texture = 1 + mask * photo.skin_texture * tex_skin + (1 - mask) * photo.bg_texture * tex_bg
    vig = 1 - vignetting * 2 * (xn * xn + yn * yn)
    specular = None
    if photo.specular_amp > 0:
        r2 = (xx - photo.specular_x) ** 2 + (yy - photo.specular_y) ** 2
        specular = (photo.specular_amp * np.exp(-0.5 * r2 / photo.specular_sigma**2) * mask)
        specular = specular.astype(np.float32)
    return Fields(mask, primary.astype(np.float32), second, (vig * texture).astype(np.float32),
                  specular, inside)

