"""Per-photo drift within a session (generator 3.0, issue 27): what changes from one phone photo
to the next while the camera, the light and the background stay.

Generator 2.0 kept about 90% of the white-balance error per session, so a session's photos all
missed the same way and a per-session regression learnt it from a few labelled photos. Real
phones do not: the session explains 0-55% of the b* error and a per-session fit leaves 3.0-3.4
RMS a*b* (../shared/reference/real_phones.md). Each source below is a GeneratorConfig field:

- `awb_frame_share`: auto white balance re-estimates every frame from what is in it (framing,
  the swatch's share of the frame, clothes and hands at the edges), so that share of the camera's
  white-balance error variance is drawn per photo; the rest stays the session's habit.
- `light_drift_mired`: the light itself changes between photos (clouds over a window, a lamp and
  daylight mixed as the photographer moves): a per-photo shift along the Planckian locus (sd in
  mired). It reaches the whole frame; the AWB follows it only through its grey-world pull,
  because phones converge their white balance over seconds and hold it across similar frames.
- `hand_shade_share`: photos in which the photographer's hand or phone shades the swatch: inside
  the soft shadow the direct light is blocked and the ambient fill (skylight, bounce off walls
  and the hand's own skin) lights the swatch in another colour.
- `isp_saturation_sigma`, `isp_hue_sigma_deg`: per-frame ISP colour rendering: scene
  classifiers and semantic colour mapping change saturation and hue from frame to frame.

Draws come from their own stream keyed by (seed, set, tone), so generator 2.0's draws are
untouched and every drift switched off reproduces its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HAND_DEPTH = (0.35, 0.8)  # share of the direct light the hand blocks at the shadow's core
HAND_FILL = (0.25, 0.6)  # the ambient fill inside the shadow, relative to the blocked light
HAND_FILL_TINT = 0.15  # sd of the fill light's colour against the key light (log R/G, B/G)


@dataclass(frozen=True)
class Drift:
    awb_frame: np.ndarray  # (2,) this frame's AWB error in log(R/G), log(B/G)
    mired: float  # the light's shift along the Planckian locus for this photo
    hand_depth: float  # 0: no hand shade
    hand_x: float
    hand_y: float
    hand_r: float  # radius of the shadow's core (px)
    hand_fill: float
    hand_tint: np.ndarray  # (2,) the fill light's colour against the key (log R/G, B/G)
    isp_saturation: float  # multiplier of the ISP's saturation for this frame
    isp_hue_deg: float

    @property
    def hand_shade(self) -> bool:
        return self.hand_depth > 0


def draw_drift(cfg, cam, seed: int, set_id: int, tone_id: int, photo) -> Drift:
    """The drift of one photo; `cam` is the CameraSpec, `photo` the scene.Photo."""
    rng = np.random.default_rng([seed, 13, set_id, tone_id])
    k = cfg.drift
    awb = rng.normal(0, cam.awb_session_sigma * np.sqrt(k["awb_frame_share"]), 2)
    mired = float(rng.normal(0, k["light_drift_mired"]))
    hand = rng.random() < k["hand_shade_share"]
    depth = float(rng.uniform(*HAND_DEPTH)) if hand else 0.0
    off = rng.uniform(-0.5, 0.5, 2) * np.array([photo.w, photo.h])
    return Drift(
        awb_frame=awb, mired=mired, hand_depth=depth,
        hand_x=float(photo.cx + off[0]), hand_y=float(photo.cy + off[1]),
        hand_r=float(rng.uniform(0.4, 0.9) * max(photo.w, photo.h)),
        hand_fill=float(rng.uniform(*HAND_FILL)),
        hand_tint=rng.normal(0, HAND_FILL_TINT, 2) * (1.0 if hand else 0.0),
        isp_saturation=float(np.exp(rng.normal(0, k["isp_saturation_sigma"]))),
        isp_hue_deg=float(rng.normal(0, k["isp_hue_sigma_deg"])),
    )


def session_awb_scale(cfg) -> float:
    """What remains per session of a camera's white-balance error sd."""
    return float(np.sqrt(1.0 - cfg.drift["awb_frame_share"]))


def mired_direction(camera, nominal_light) -> np.ndarray:
    """(3,) d log(raw RGB of a white) per mired around 5000 K, G held at 0: how a Planckian
    shift of the light moves this camera's raw colour."""
    lo, hi = (camera.response(nominal_light(1e6 / m), 1.0) for m in (195.0, 205.0))
    d = (np.log(hi) - np.log(lo)) / 10.0
    return d - d[1]


def tint_field(d: Drift, direction: np.ndarray, size: int) -> np.ndarray:
    """Per-pixel raw channel multipliers of the photo's light: (3,) for a uniform light drift,
    (S, S, 3) when a hand shades part of the frame."""
    tint = np.exp(d.mired * direction).astype(np.float32)
    if not d.hand_shade:
        return tint
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    r = np.sqrt((xx - d.hand_x) ** 2 + (yy - d.hand_y) ** 2) / d.hand_r
    core = np.clip(1.5 - r, 0, 1)  # full shadow inside the core, a soft edge half as wide again
    fill = d.hand_fill * np.exp(np.array([d.hand_tint[0], 0.0, d.hand_tint[1]]))
    shade = 1 - d.hand_depth * core[..., None] * (1 - fill.astype(np.float32))
    return (tint * shade).astype(np.float32)
