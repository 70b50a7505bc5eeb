"""Reading colour off a synthetic photo without the latents: the oracle-free baselines.

- naive: the mean sRGB of the swatch (its known outline, inset) read as if it were D65 sRGB.
- grey world: channel gains that make the chosen region's mean grey.
- background white balance: channel gains that make the background neutral (right on a grey card
  or neutral paper, wrong on a coloured surface).
- background reference: the background taken as an 18% grey card (exposure and white balance).

They calibrate the dataset (naive error per camera in the range of real phones) and show that
the background is information (tests/test_synth.py).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .scene import swatch_mask
from .spectral import LINEAR_SRGB_TO_XYZ, srgb_decode, srgb_encode, srgb_to_lab


def load_rgb(path: str | Path | io.BytesIO) -> np.ndarray:
    """Encoded sRGB in [0, 1], (S, S, 3)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def decode_rgb(jpeg: bytes) -> np.ndarray:
    return load_rgb(io.BytesIO(jpeg))


def swatch_region(row, size: int, inset: float = 0.15) -> np.ndarray:
    """Boolean mask of the swatch core: the outline shrunk by `inset` of its shorter side."""
    pad = inset * min(row["swatch_w"], row["swatch_h"])
    m = swatch_mask(row["swatch_cx"], row["swatch_cy"], row["swatch_w"], row["swatch_h"],
                    row["swatch_angle_deg"], size, inset=pad)
    return m > 0.99


def background_region(row, size: int, margin: float = 0.06) -> np.ndarray:
    """Boolean mask of the background, kept `margin` of the frame away from the swatch edge."""
    m = swatch_mask(row["swatch_cx"], row["swatch_cy"], row["swatch_w"], row["swatch_h"],
                    row["swatch_angle_deg"], size, inset=-margin * size)
    return m < 0.01


def _lin_to_lab(lin: np.ndarray) -> np.ndarray:
    return srgb_to_lab(srgb_encode(np.clip(lin, 0, 1)))


def naive_lab(img: np.ndarray, row) -> np.ndarray:
    return srgb_to_lab(img[swatch_region(row, img.shape[0])].mean(0))


def grey_world_lab(img: np.ndarray, row, region: str = "frame") -> np.ndarray:
    """Grey world over the whole frame or over the swatch alone (what is left without background)."""
    lin = srgb_decode(img)
    sw = swatch_region(row, img.shape[0])
    ref = lin.reshape(-1, 3).mean(0) if region == "frame" else lin[sw].mean(0)
    gains = (ref @ LINEAR_SRGB_TO_XYZ[1]) / np.maximum(ref, 1e-6)
    return _lin_to_lab(lin[sw].mean(0) * gains)


def background_wb_lab(img: np.ndarray, row) -> np.ndarray:
    """White balance on the background (taken as neutral), exposure left as the camera chose."""
    lin = srgb_decode(img)
    bg = np.median(lin[background_region(row, img.shape[0])], axis=0)
    gains = (bg @ LINEAR_SRGB_TO_XYZ[1]) / np.maximum(bg, 1e-6)
    return _lin_to_lab(lin[swatch_region(row, img.shape[0])].mean(0) * gains)


def background_ref_lab(img: np.ndarray, row, grey: float = 0.18) -> np.ndarray:
    """The background taken as an 18% grey card: fixes white balance and exposure at once."""
    lin = srgb_decode(img)
    bg = np.median(lin[background_region(row, img.shape[0])], axis=0)
    return _lin_to_lab(lin[swatch_region(row, img.shape[0])].mean(0) / np.maximum(bg, 1e-6) * grey)


METHODS = {
    "naive": naive_lab,
    "grey_world_frame": lambda img, row: grey_world_lab(img, row, "frame"),
    "grey_world_swatch": lambda img, row: grey_world_lab(img, row, "swatch"),
    "background_wb": background_wb_lab,
    "background_ref": background_ref_lab,
}


def measure(frame, root: str | Path, methods=("naive",)) -> dict[str, np.ndarray]:
    """Lab (N, 3) per method for the manifest rows in `frame` (a DataFrame), images under root."""
    out = {m: np.zeros((len(frame), 3)) for m in methods}
    for i, row in enumerate(frame.to_dict("records")):
        img = load_rgb(Path(root) / row["image"])
        for m in methods:
            out[m][i] = METHODS[m](img, row)
    return out
