"""From a scene to a JPEG: exposure, sensor, white balance, colour matrix, tone curve, encoding.

`plan()` computes everything deterministic about a photo (the clean raw image at unit exposure,
the auto-exposure decision, the white-balance gains); `render()` adds sensor noise and runs the
camera pipeline. The oracle calls `plan()` again to know exactly what the camera did.

Units: the clean image is relative radiance, 1 = a perfect white under the main light (camera G,
unit illuminance). Raw = clean * K_HEAD * 2**exposure_error_ev, with 1 = sensor saturation, so a
correctly exposed diffuse white sits a little over one stop below clipping.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .scene import Fields, Photo, draw_photo, fields, swatch_bbox

K_HEAD = 0.45
FOOT_LAMBERT = 3.426  # cd/m^2 at APEX Bv = 0
ISO_SERIES = (25, 32, 40, 50, 64, 80, 100, 125, 160, 200, 250, 320, 400, 500, 640, 800, 1000,
              1250, 1600, 2000)
TV_MIN, TV_HAND, TV_MAX = 11 / 3, 5.0, 32 / 3  # 1/13 s (longest), 1/32 s (handheld), 1/1625 s


@dataclass
class Exposure:
    iso: int
    exposure_time_s: float
    f_number: float
    bias_ev: float
    bv_metered: float  # the meter's APEX brightness (drives the program)
    brightness_ev: float  # what EXIF reports: the metered value, rounded, with a little noise
    error_ev: float  # log2(actual / correct exposure); correct renders reflectance 1:1
    limited: bool  # the program hit the longest/shortest shutter: under/over exposed on purpose
    meter_reflectance: float  # centre-weighted mean relative luminance the meter saw


@dataclass
class Plan:
    spec: object  # SetSpec
    photo: Photo
    fields: Fields
    clean: np.ndarray  # (S, S, 3) float32, unit exposure
    exposure: Exposure
    gains: np.ndarray  # applied WB gains (R, G=1, B)
    ideal_gains: np.ndarray  # gains that would neutralise the light at the frame centre
    centre_second_share: float


def _meter_weights(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    r2 = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / size**2
    w = np.exp(-0.5 * r2 / 0.3**2)  # centre-weighted average metering
    return (w / w.sum()).astype(np.float32)


def auto_exposure(cam, lux: float, meter_refl: float, photo: Photo, headroom_ev: float) -> Exposure:
    """Program AE: base ISO until the shutter would drop below 1/30 s, then ISO up to 2000,
    then the shutter down to 1/13 s; all settings on the 1/3-stop grid. Like a phone, it gives
    up to 1.5 EV of the metered exposure to keep the frame's highlights (`headroom_ev` above
    correct exposure) from clipping."""
    s = cam.spec
    av = 2 * np.log2(s.f_number)
    bv = float(np.log2(lux * meter_refl / np.pi / FOOT_LAMBERT) + photo.meter_noise_ev)
    correct = 3.125 * FOOT_LAMBERT * np.pi / (lux * 0.18)  # t*ISO/N^2 that renders 18% as 18%
    need = bv - photo.exposure_bias_ev - s.ae_offset_ev  # = Av + Tv - Sv at the target
    metered_err = np.log2(3.125 * 2.0**-need / correct)
    need += float(np.clip(metered_err - headroom_ev, 0.0, 1.5))
    sv = np.log2(s.base_iso / 3.125)
    tv = need + sv - av
    if tv < TV_HAND:
        sv = min(sv + TV_HAND - tv, np.log2(ISO_SERIES[-1] / 3.125))
    isos = np.array([i for i in ISO_SERIES if i >= s.base_iso])
    iso = int(isos[np.argmin(np.abs(np.log2(isos / 3.125) - sv))])
    tv = need + np.log2(iso / 3.125) - av
    tv_q = float(np.clip(np.round(3 * tv) / 3, TV_MIN, TV_MAX))
    t = 1.0 / round(2**tv_q)
    err = float(np.log2(t * iso / s.f_number**2 / correct))
    return Exposure(iso=iso, exposure_time_s=t, f_number=s.f_number, bias_ev=photo.exposure_bias_ev,
                    bv_metered=bv, brightness_ev=round(bv + photo.bv_noise_ev, 2), error_ev=err,
                    limited=abs(tv - tv_q) > 0.2, meter_reflectance=meter_refl)


def _log_chroma(rgb: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(rgb[[0, 2]], 1e-9) / max(rgb[1], 1e-9))


def white_balance(cam, spec, clean: np.ndarray, white: np.ndarray, photo: Photo,
                  daylight_white: np.ndarray, preset_white: np.ndarray | None) -> np.ndarray:
    """AWB estimate of the light in log(R/G), log(B/G): the truth pulled toward the frame's grey
    world (a coloured background drags it), partly kept warm/cool toward the camera's daylight
    neutral (a deliberate 'mood' habit), plus random error. A manual preset ignores the scene."""
    ref = _log_chroma(daylight_white)
    if preset_white is not None:
        est = _log_chroma(preset_white)
    else:
        truth = _log_chroma(white)
        gw = _log_chroma(clean.reshape(-1, 3).mean(0))
        est = truth + cam.spec.awb_greyworld * (gw - truth)
        est = est + cam.spec.awb_keep_warm * (ref - est)
        est = est + np.array([photo.awb_noise_r, photo.awb_noise_b])
    return np.array([np.exp(-est[0]), 1.0, np.exp(-est[1])])


def plan(ctx, set_idx: int, tone_idx: int) -> Plan:
    spec, resp = ctx.sets[set_idx], ctx.responses[set_idx]
    cam = ctx.cameras[spec.camera_id]
    size = ctx.size
    photo = draw_photo(ctx.seed, set_idx, tone_idx, size, cam.spec.jpeg_quality, cam.spec.awb_sigma)
    f = fields(spec, photo, size, cam.spec.vignetting)
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
    c = size // 2
    share = 0.0 if f.second is None else float(f.second[c, c] / (f.second[c, c] + f.primary[c, c]))
    white = (1 - share) * resp.white[0] + (share * resp.white[1] if f.second is not None else 0)
    # The camera's own statistics run on a 1/4-resolution preview, as in a real AE/AWB engine.
    preview = clean[::4, ::4]
    gains = white_balance(cam, spec, preview, white, photo, ctx.daylight_white[spec.camera_id],
                          resp.preset_white)
    meter = float((preview[..., 1] * ctx.meter_weights[::4, ::4]).sum() * 16)
    # Highlight protection: the brightest 1% of the frame (after white balance) may not clip.
    peak = float(np.percentile((preview * gains.astype(np.float32)).max(-1), 99))
    headroom = float(np.log2(0.95 * min(gains.min(), 1.0) / (K_HEAD * peak)))
    exposure = auto_exposure(cam, spec.lux * photo.lux_jitter, meter, photo, headroom)
    ideal = np.array([white[1] / white[0], 1.0, white[1] / white[2]])
    return Plan(spec, photo, f, clean, exposure, gains, ideal, share)


def develop(cam, p: Plan) -> np.ndarray:
    """Sensor noise and the camera pipeline; returns the 8-bit sRGB image (S, S, 3)."""
    import cv2

    s = cam.spec
    raw = p.clean * np.float32(K_HEAD * 2**p.exposure.error_ev)
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
    lin = raw @ (cam.matrix.T / K_HEAD).astype(np.float32)
    enc = cam.tone(lin)
    return np.clip(np.rint(enc * 255), 0, 255).astype(np.uint8)


def encode_jpeg(img: np.ndarray, quality: int, exif: bytes) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    # subsampling=2 is 4:2:0, what phones write.
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, subsampling=2, exif=exif)
    return buf.getvalue()


def render(ctx, set_idx: int, tone_idx: int) -> tuple[bytes, dict]:
    from .context import manifest_row
    from .exif import exif_bytes

    p = plan(ctx, set_idx, tone_idx)
    cam = ctx.cameras[p.spec.camera_id]
    img = develop(cam, p)
    row = manifest_row(ctx, p, tone_idx, swatch_bbox(p.photo))
    return encode_jpeg(img, p.photo.jpeg_quality, exif_bytes(row)), row
