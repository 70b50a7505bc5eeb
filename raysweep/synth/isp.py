"""The phone ISP between the sensor and the JPEG: auto white balance and local tone mapping.

White balance: the estimate of the light is the truth pulled toward the frame's grey world (a
coloured background, and the skin swatch itself, drag it), partly kept warm or cool on purpose,
plus an error drawn once per session with a small per-photo jitter (issue 15); generator 3.0
draws part of that error per frame instead (drift.py: phones re-estimate it from every frame, and
real sessions explain far less of the colour error than 2.0's did). A manual preset ignores the
scene.

Local tone mapping: a smooth gain field that pulls each region of the frame toward mid-grey
(strength per camera profile), computed from the noise-free preview so the latent-aware oracle
can recompute it. Neither it nor the digital gain is in EXIF.
"""

from __future__ import annotations

import numpy as np

LTM_TARGET = 0.2  # the mid-grey (relative linear) that local tone mapping pulls toward
LTM_GRID = 6  # cells across the frame: regions, not pixels


def log_chroma(rgb: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(rgb[[0, 2]], 1e-9) / max(rgb[1], 1e-9))


def white_balance(spec, session_error: np.ndarray, preview: np.ndarray, white: np.ndarray,
                  jitter: np.ndarray, daylight_white: np.ndarray,
                  preset_white: np.ndarray | None) -> np.ndarray:
    """Gains (R, 1, B) that the camera applies, from a raw preview of the frame."""
    if preset_white is not None:
        est = log_chroma(preset_white)
    else:
        truth = log_chroma(white)
        est = truth + spec.awb_greyworld * (log_chroma(preview.reshape(-1, 3).mean(0)) - truth)
        est = est + spec.awb_keep_warm * (log_chroma(daylight_white) - est)
        est = est + session_error + jitter
    return np.array([np.exp(-est[0]), 1.0, np.exp(-est[1])])


def local_tone_map(luma: np.ndarray, strength: float, size: int) -> np.ndarray:
    """Gain field (S, S) from an exposed, white-balanced luminance preview."""
    import cv2

    if strength <= 0:
        return np.ones((size, size), np.float32)
    cells = cv2.resize(luma.astype(np.float32), (LTM_GRID, LTM_GRID), interpolation=cv2.INTER_AREA)
    gain = np.clip((LTM_TARGET / np.maximum(cells, 1e-4)) ** strength, 0.5, 2.5).astype(np.float32)
    return cv2.resize(gain, (size, size), interpolation=cv2.INTER_CUBIC).clip(0.5, 2.5)
