"""From a scene to a JPEG: metering, exposure, sensor, ISP (white balance, digital gain, local
tone mapping), colour matrix, tone curve, encoding.

`plan()` computes everything deterministic about a photo (the clean raw image at unit exposure,
the auto-exposure decision, the white-balance gains, the ISP gain field); `develop()` adds sensor
noise and runs the camera pipeline. The latent-aware oracle calls `plan()` again to know exactly
what the camera did.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .camera import look_matrix
from .drift import Drift, draw_drift, tint_field
from .exif import exif_bytes
from .exposure import K_HEAD, Exposure, auto_exposure, meter
from .isp import local_tone_map, white_balance
from .light import nominal_light
from .photo_row import manifest_row
from .scene import Fields, Photo, draw_photo, fields, swatch_bbox, wb_preset


@dataclass
class Plan:
    spec: object  # SetSpec
    photo: Photo
    fields: Fields
    clean: np.ndarray  # (S, S, 3) float32, unit exposure
    exposure: Exposure
    gains: np.ndarray  # applied WB gains (R, G=1, B)
    ideal_gains: np.ndarray  # gains that would neutralise the light at the frame centre
    isp_gain: np.ndarray  # (S, S) digital gain x local tone mapping, after white balance
    centre_second_share: float
    wb_mode: str  # "auto" or "manual:<preset>"
    ltm_swatch: float  # mean local tone mapping gain over the swatch
    drift: Drift  # the photo's per-photo drift (drift.py)
    tint: np.ndarray  # raw channel multipliers of the drifting / shaded light, (3,) or (S, S, 3)
    matrix: np.ndarray  # (3, 3) this frame's colour matrix: the ISP's look of the frame


def _clean_image(ctx, spec, resp, f: Fields, tone_idx: int) -> np.ndarray:
    m = f.mask[..., None]
    clean = f.primary[..., None] * (resp.bg[0] + m * (resp.skin[0][tone_idx] - resp.bg[0]))
    if f.second is not None:
        clean += f.second[..., None] * (resp.bg[1] + m * (resp.skin[1][tone_idx] - resp.bg[1]))
    if f.specular is not None:
        light = f.primary[..., None] * resp.white[0]
        if f.second is not None:
            light = light + f.second[..., None] * resp.white[1]
        clean += f.specular[..., None] * light
    clean *= f.optics[..., None]
    return clean


def plan(ctx, set_idx: int, tone_idx: int) -> Plan:
    spec, resp = ctx.sets[set_idx], ctx.responses[set_idx]
    cam = ctx.cameras[spec.camera_id]
    cs, size, cfg = cam.spec, ctx.size, ctx.cfg
    photo = draw_photo(ctx.seed, set_idx, tone_idx, size, cs, cfg.exposure_bias_share,
                       cfg.manual_wb_share)
    f = fields(spec, photo, size, cs.vignetting)
    clean = _clean_image(ctx, spec, resp, f, tone_idx)
    drift = draw_drift(cfg, cs, ctx.seed, set_idx, tone_idx, photo)
    tint = tint_field(drift, ctx.mired_dir[spec.camera_id], size)
    if drift.mired or drift.hand_shade:  # generator 2.0 has neither: its bytes stay
        clean = clean * tint
    c = size // 2
    share = 0.0 if f.second is None else float(f.second[c, c] / (f.second[c, c] + f.primary[c, c]))
    white = (1 - share) * resp.white[0] + (share * resp.white[1] if f.second is not None else 0)
    preset_white, wb_mode = None, "auto"
    if photo.manual_wb:
        name, cct = wb_preset(spec.light, photo.wb_preset_pick)
        preset = nominal_light(cct)
        preset_white, wb_mode = cam.response(preset, np.ones_like(preset)), f"manual:{name}"
    # The camera's own statistics run on a 1/4-resolution preview, as in a real AE/AWB engine.
    preview = clean[::4, ::4]
    gains = white_balance(cs, spec.awb_error, preview, white,
                          np.array([photo.awb_jitter_r, photo.awb_jitter_b]) + drift.awb_frame,
                          ctx.daylight_white[spec.camera_id], preset_white)
    metered = meter(preview[..., 1], f.mask[::4, ::4] > 0.5, ctx.meter_weights[::4, ::4],
                    cs.subject_weight)
    # Highlight protection: the brightest 1% of the frame (after white balance) may not clip.
    peak = float(np.percentile((preview * gains.astype(np.float32)).max(-1), 99))
    headroom = float(np.log2(0.95 * min(gains.min(), 1.0) / (K_HEAD * peak)))
    exposure = auto_exposure(cs, spec.lux * photo.lux_jitter, metered, photo, headroom,
                             (spec.bv_offset_ev, spec.bv_zeroed))
    ltm = local_tone_map(preview[..., 1] * np.float32(2**exposure.error_ev), cs.ltm, size)
    ideal = np.array([white[1] / white[0], 1.0, white[1] / white[2]])
    matrix = cam.matrix
    if drift.isp_saturation != 1 or drift.isp_hue_deg:
        matrix = look_matrix(drift.isp_saturation, drift.isp_hue_deg) @ cam.matrix
    return Plan(spec, photo, f, clean, exposure, gains, ideal,
                ltm * np.float32(2**exposure.digital_gain_ev), share, wb_mode,
                float(ltm[f.mask > 0.5].mean()) if (f.mask > 0.5).any() else 1.0,
                drift, tint, matrix)


def develop(cam, p: Plan) -> np.ndarray:
    """Sensor noise and the camera pipeline; returns the 8-bit sRGB image (S, S, 3)."""
    import cv2

    s = cam.spec
    raw = p.clean * np.float32(K_HEAD * 2**p.exposure.sensor_error_ev)
    # Poisson-Gaussian noise of one sensor pixel, averaged over the sensor pixels that make one
    # output pixel (a 256 px photo of a 12 MP sensor bins ~180 of them).
    gain = p.exposure.iso / s.base_iso
    binned = s.sensor_mp * 1e6 / raw.shape[0] / raw.shape[1]
    electrons = s.full_well / gain  # at raw = 1
    var = (raw / electrons + np.float32((s.read_noise / electrons) ** 2)) / np.float32(binned)
    rng = np.random.default_rng(p.photo.noise_seed)
    raw = raw + np.sqrt(var + np.float32(2e-4**2)) * rng.standard_normal(raw.shape, dtype=np.float32)
    if gain > 4:  # in-camera noise reduction at high ISO (mean-preserving)
        raw = cv2.GaussianBlur(raw, (0, 0), sigmaX=0.2 * np.log2(gain))
    raw = np.clip(raw, 0, 1) * p.gains.astype(np.float32)
    raw = np.minimum(raw, np.float32(min(p.gains.min(), 1.0)))  # saturated stays neutral
    raw *= p.isp_gain[..., None]
    lin = raw @ (p.matrix.T / K_HEAD).astype(np.float32)
    enc = cam.tone(lin)
    return np.clip(np.rint(enc * 255), 0, 255).astype(np.uint8)


def encode_jpeg(img: np.ndarray, quality: int, exif: bytes) -> bytes:
    buf = io.BytesIO()
    # subsampling=2 is 4:2:0, what phones write.
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=2, exif=exif)
    return buf.getvalue()


def render(ctx, set_idx: int, tone_idx: int) -> tuple[bytes, dict]:
    p = plan(ctx, set_idx, tone_idx)
    cam = ctx.cameras[p.spec.camera_id]
    img = develop(cam, p)
    row = manifest_row(ctx, p, tone_idx, swatch_bbox(p.photo))
    return encode_jpeg(img, p.photo.jpeg_quality, exif_bytes(row, cam.spec.habits)), row
