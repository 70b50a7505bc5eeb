"""The generator's shape and its precomputed spectral state, plus the manifest row of a photo.

Everything spectral is integrated once per (set, tone, light) here: a photo is then a handful of
RGB triples painted through spatial weight maps, which is what makes 2,070 photos a minute's work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UserError
from . import camera as camera_mod
from .light import daylight, nominal_light
from .scene import SetSpec, draw_set
from .skin import PARAM_NAMES, Tones, make_tones

GENERATOR_VERSION = "1.0"
MIN_SIZE, MAX_SIZE = 32, 2048


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 0
    sets: int = 15
    tones: int = 138
    cameras: int = 3
    size: int = 256

    def validate(self) -> GeneratorConfig:
        n_cam = len(camera_mod.available())
        checks = [
            (self.sets >= 1, f"--sets must be at least 1, got {self.sets}", "use --sets 15 (default)"),
            (self.tones >= 1, f"--tones must be at least 1, got {self.tones}", "use --tones 138 (default)"),
            (1 <= self.cameras <= n_cam, f"--cameras must be 1..{n_cam}, got {self.cameras}",
             f"use --cameras {n_cam} (the installed colour-science ships {n_cam})"),
            (MIN_SIZE <= self.size <= MAX_SIZE, f"--size {self.size} is outside {MIN_SIZE}..{MAX_SIZE} px",
             f"use at least {MIN_SIZE} px (the swatch and its background need room); 256 is the default"),
            (self.seed >= 0, f"--seed must be >= 0, got {self.seed}", "use a non-negative integer"),
        ]
        for ok, what, fix in checks:
            if not ok:
                raise UserError(what, where="raysweep.synth generator arguments", fix=fix)
        return self

    def as_dict(self) -> dict:
        return {**asdict(self), "version": GENERATOR_VERSION}


@dataclass
class SetResponses:
    skin: list[np.ndarray]  # per light: (T, 3) raw RGB of every tone at unit illuminance
    bg: list[np.ndarray]  # per light: (3,)
    white: list[np.ndarray]  # per light: (3,) raw RGB of a perfect white
    lights: list[np.ndarray]  # per light: spectrum (N_BANDS,)
    preset_white: np.ndarray | None  # raw RGB of a white under the manual WB preset


@dataclass
class Context:
    cfg: GeneratorConfig
    tones: Tones
    sets: list[SetSpec]
    cameras: dict
    responses: list[SetResponses]
    meter_weights: np.ndarray
    daylight_white: dict  # camera id -> raw RGB of a white under D55 (the AWB's neutral point)

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def size(self) -> int:
        return self.cfg.size


def build_context(cfg: GeneratorConfig) -> Context:
    from .render import _meter_weights

    cfg.validate()
    ids = camera_mod.available()[: cfg.cameras]
    cams = {c: camera_mod.build_camera(c) for c in ids}
    tones = make_tones(cfg.tones, cfg.seed)
    sets = [draw_set(i, ids[i % len(ids)], cfg.seed, cfg.sets) for i in range(cfg.sets)]
    d55 = daylight(5500.0)
    responses = []
    for s in sets:
        cam = cams[s.camera_id]
        preset = None if s.white_balance == "auto" else nominal_light(s.wb_preset_cct)
        lights = [s.light.spectrum] + ([s.second.spectrum] if s.second is not None else [])
        responses.append(SetResponses(
            skin=[cam.response(li, tones.reflectance).astype(np.float32) for li in lights],
            bg=[cam.response(li, s.background).astype(np.float32) for li in lights],
            white=[cam.response(li, np.ones_like(li)).astype(np.float32) for li in lights],
            lights=lights,
            preset_white=None if preset is None else cam.response(preset, np.ones_like(preset)),
        ))
    return Context(cfg, tones, sets, cams, responses, _meter_weights(cfg.size),
                   {c: cams[c].response(d55, np.ones_like(d55)) for c in ids})


def sample_id(set_idx: int, tone_idx: int) -> str:
    return f"s{set_idx:02d}_t{tone_idx:03d}"


def manifest_row(ctx: Context, p, tone_idx: int, bbox: tuple[int, int, int, int]) -> dict:
    """One manifest row: the data contract columns first, then every latent, clearly named."""
    spec, ph, ex = p.spec, p.photo, p.exposure
    cam = ctx.cameras[spec.camera_id].spec
    sid = sample_id(spec.set_id, tone_idx)
    lab = ctx.tones.lab[tone_idx]
    bg_lab = spec.background_lab
    row = {
        "sample_id": sid, "image": f"images/{sid}.jpg",
        "target_L": round(float(lab[0]), 4), "target_a": round(float(lab[1]), 4),
        "target_b": round(float(lab[2]), 4), "tone_id": f"tone{tone_idx:03d}",
        "set_id": f"set{spec.set_id:02d}", "camera": cam.id,
        "exposure_time_s": ex.exposure_time_s, "f_number": ex.f_number, "iso": ex.iso,
        "brightness_ev": ex.brightness_ev, "exposure_bias_ev": ex.bias_ev,
        "white_balance": "auto" if spec.white_balance == "auto" else "manual", "make": cam.make, "model": cam.model,
        # --- latents
        "target_ita": round(float(ctx.tones.ita[tone_idx]), 3),
        **{f"skin_{n}": round(float(v), 5) for n, v in zip(PARAM_NAMES, ctx.tones.params[tone_idx])},
        "illuminant_type": spec.light.type, "illuminant_name": spec.light.name,
        "cct_k": round(spec.light.cct_k, 1), "duv": round(spec.light.duv, 5),
        "tint": round(spec.light.tint, 4), "lux": round(spec.lux * ph.lux_jitter, 2),
        "second_light": "" if spec.second is None else spec.second.name,
        "second_light_type": "" if spec.second is None else spec.second.type,
        "second_light_cct_k": np.nan if spec.second is None else round(spec.second.cct_k, 1),
        "second_light_share": round(p.centre_second_share, 4),
        "white_balance_mode": spec.white_balance,
        "exposure_error_ev": round(ex.error_ev, 4), "metered_bv": round(ex.bv_metered, 4),
        "meter_reflectance": round(ex.meter_reflectance, 5), "ae_limited": ex.limited,
        "wb_gain_r": round(float(p.gains[0]), 5), "wb_gain_b": round(float(p.gains[2]), 5),
        "wb_error_r": round(float(p.gains[0] / p.ideal_gains[0]), 5),
        "wb_error_b": round(float(p.gains[2] / p.ideal_gains[2]), 5),
        "background_type": spec.background_type, "background_name": spec.background_name,
        "background_L": round(float(bg_lab[0]), 3), "background_a": round(float(bg_lab[1]), 3),
        "background_b": round(float(bg_lab[2]), 3),
        "swatch_cx": round(ph.cx, 3), "swatch_cy": round(ph.cy, 3), "swatch_w": round(ph.w, 3),
        "swatch_h": round(ph.h, 3), "swatch_angle_deg": round(ph.angle_deg, 3),
        "swatch_x0": bbox[0], "swatch_y0": bbox[1], "swatch_x1": bbox[2], "swatch_y1": bbox[3],
        "shading_strength": round(ph.shading, 4), "shadow": ph.shadow,
        "shadow_depth": round(ph.shadow_depth, 4) if ph.shadow else 0.0,
        "shadow_swatch_fraction": round(_shadow_fraction(p), 4),
        "specular_amp": round(ph.specular_amp, 4),
        "specular_x": round(ph.specular_x, 2) if ph.specular_amp else np.nan,
        "specular_y": round(ph.specular_y, 2) if ph.specular_amp else np.nan,
        "specular_sigma_px": round(ph.specular_sigma, 2) if ph.specular_amp else np.nan,
        "jpeg_quality": ph.jpeg_quality, "image_size": ctx.size,
    }
    return row


def _shadow_fraction(p) -> float:
    """Share of the swatch area inside the cast shadow (past the middle of its penumbra)."""
    f = p.fields
    m = f.mask > 0.5
    if f.shadow is None or not m.any():
        return 0.0
    return float((f.shadow[m] > 0.5).mean())
