"""The manifest row of a photo: the data-contract columns first, then every latent, named.

The contract's `camera` is the id raysweep's EXIF reader derives from Make and Model, so a photo
read without its manifest lands on the camera the model was trained on.
"""

from __future__ import annotations

import numpy as np

from .context import Context, sample_id
from .skin import PARAM_NAMES


def manifest_row(ctx: Context, p, tone_idx: int, bbox: tuple[int, int, int, int]) -> dict:
    spec, ph, ex = p.spec, p.photo, p.exposure
    cam = ctx.cameras[spec.camera_id].spec
    sid = sample_id(spec.set_id, tone_idx)
    lab = ctx.tones.lab[tone_idx]
    bg_lab = spec.background_lab
    return {
        "sample_id": sid, "image": f"images/{sid}.jpg",
        "target_L": round(float(lab[0]), 4), "target_a": round(float(lab[1]), 4),
        "target_b": round(float(lab[2]), 4), "tone_id": f"tone{tone_idx:03d}",
        "set_id": f"set{spec.set_id:02d}", "camera": cam.id,
        "exposure_time_s": ex.exposure_time_s, "f_number": ex.f_number, "iso": ex.iso,
        "brightness_ev": ex.brightness_ev, "exposure_bias_ev": ex.bias_ev,
        "white_balance": "manual" if ph.manual_wb else "auto", "make": cam.make, "model": cam.model,
        # --- latents
        "camera_profile": cam.key,
        "target_ita": round(float(ctx.tones.ita[tone_idx]), 3),
        **{f"skin_{n}": round(float(v), 5) for n, v in zip(PARAM_NAMES, ctx.tones.params[tone_idx])},
        "illuminant_type": spec.light.type, "illuminant_name": spec.light.name,
        "cct_k": round(spec.light.cct_k, 1), "duv": round(spec.light.duv, 5),
        "tint": round(spec.light.tint, 4), "session_lux": round(spec.lux, 2),
        "lux": round(spec.lux * ph.lux_jitter, 2),
        "second_light": "" if spec.second is None else spec.second.name,
        "second_light_type": "" if spec.second is None else spec.second.type,
        "second_light_cct_k": np.nan if spec.second is None else round(spec.second.cct_k, 1),
        "second_light_share": round(p.centre_second_share, 4),
        "white_balance_mode": p.wb_mode,
        "exposure_error_ev": round(ex.error_ev, 4), "sensor_error_ev": round(ex.sensor_error_ev, 4),
        "digital_gain_ev": round(ex.digital_gain_ev, 4), "metered_bv": round(ex.bv_metered, 4),
        "meter_reflectance": round(ex.meter_reflectance, 5), "ae_limited": ex.limited,
        "bv_session_offset_ev": round(spec.bv_offset_ev, 3), "bv_zeroed": spec.bv_zeroed,
        "ltm_gain_swatch": round(p.ltm_swatch, 4),
        "awb_session_error_r": round(float(spec.awb_error[0]), 5),
        "awb_session_error_b": round(float(spec.awb_error[1]), 5),
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
        **_drift_columns(p.drift),
    }


def _drift_columns(d) -> dict:
    """The per-photo drift of generator 3.0 (drift.py); all zero / one in generator 2.0."""
    return {
        "awb_frame_error_r": round(float(d.awb_frame[0]), 5),
        "awb_frame_error_b": round(float(d.awb_frame[1]), 5),
        "light_drift_mired": round(d.mired, 3), "hand_shade_depth": round(d.hand_depth, 4),
        "hand_fill_tint_r": round(float(d.hand_tint[0]), 4),
        "hand_fill_tint_b": round(float(d.hand_tint[1]), 4),
        "isp_saturation": round(d.isp_saturation, 4), "isp_hue_deg": round(d.isp_hue_deg, 3),
    }


def _shadow_fraction(p) -> float:
    """Share of the swatch area inside the cast shadow (past the middle of its penumbra)."""
    f = p.fields
    m = f.mask > 0.5
    if f.shadow is None or not m.any():
        return 0.0
    return float((f.shadow[m] > 0.5).mean())
