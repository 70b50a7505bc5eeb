"""Decode one photo, read its EXIF and crop it: the unit of work a prepare worker runs.

Decisions on odd files (each a test in tests/test_data_bad_input.py):
- missing, unreadable, corrupt or truncated files are rejected (Pillow decodes fully, so a cut-off
  JPEG fails here instead of coming back half grey as OpenCV would return it);
- grayscale (L, LA, 1, I;16, I, F) is rejected: there is no colour in it to learn from;
- RGBA / LA-free palette images lose their alpha channel with a warning (the colour is intact);
- 16-bit PNGs are reduced to 8 bits with a warning (the crops are uint8 anyway);
- CMYK and other colour modes are converted to RGB with a warning;
- the EXIF orientation is applied, as every photo viewer does;
- an image whose short side is below the crop size is rejected (it would only be upsampled).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from raysweep.data import crop as cropping
from raysweep.data.exif_reader import read_exif

GRAYSCALE = ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La")


class BadImage(Exception):
    """A photo that cannot be used; the message is the reject reason."""


def decode(path: Path, min_side: int = 0) -> tuple[np.ndarray, dict, list[str], list[str]]:
    """(H, W, 3) uint8 RGB, EXIF fields, EXIF notes, conversion warnings."""
    warnings: list[str] = []
    try:
        with Image.open(path) as im:
            im.load()
            exif, notes = read_exif(im)
            depth16 = _png_bit_depth(path) == 16
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in GRAYSCALE:
                raise BadImage(f"grayscale image (mode {mode}): no colour to measure")
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                mode = im.mode
            if mode == "RGBA":
                alpha = np.asarray(im.getchannel("A"))
                warnings.append(f"RGBA: alpha channel dropped ({(alpha < 255).mean():.0%} of "
                                "pixels not opaque)")
            elif mode != "RGB":
                warnings.append(f"mode {mode} converted to RGB")
            rgb = np.asarray(im.convert("RGB"))
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage(f"image file {path} does not exist") from None
    except UnidentifiedImageError:
        raise BadImage("not a readable image (corrupt file or unknown format)") from None
    except Image.DecompressionBombError as e:
        # refused before decoding, by Pillow's pixel limit: the file is not corrupt, it is huge
        raise BadImage(f"image too large to decode safely, refused as a possible decompression "
                       f"bomb ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"corrupt or truncated image data ({e})") from None
    if depth16:
        warnings.append("16-bit PNG reduced to 8 bits per channel")
    h, w = rgb.shape[:2]
    if min(h, w) < min_side:
        raise BadImage(f"image is {w}x{h}, smaller than the crop size {min_side}")
    return rgb, exif, notes, warnings


def process(task: tuple[int, str, cropping.CropParams]) -> dict[str, Any]:
    """Decode, analyse and cut one photo. Never raises for a bad photo: returns its reason."""
    i, path, params = task
    t0 = time.process_time()
    out: dict[str, Any] = {"i": i, "error": None, "warnings": [], "exif": {}, "exif_notes": [],
                           "cpu_s": 0.0}
    try:
        rgb, out["exif"], out["exif_notes"], out["warnings"] = decode(Path(path), params.size)
        a = cropping.analyse(rgb, params)
    except BadImage as e:
        out["error"] = str(e)
        return out
    except Exception as e:  # an unexpected failure on one photo is still that row's reason
        out["error"] = f"could not process image ({type(e).__name__}: {e})"
        return out
    out.update(crops=cropping.cut(rgb, a.boxes, params.size), boxes=a.boxes,
               patch_box=a.patch_box, status=a.status, bad_fraction=a.bad_fraction,
               mean_lab=a.mean_lab, ring=a.ring, height=rgb.shape[0], width=rgb.shape[1],
               cpu_s=time.process_time() - t0)
    return out


def init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; threads inside would only contend


def overlay(rgb: np.ndarray, params: cropping.CropParams, title: str = "") -> np.ndarray:
    """A debug picture: where each crop was cut, and why (bad pixels tinted by kind)."""
    a = cropping.analyse(rgb, params, keep_maps=True)
    h, w = rgb.shape[:2]
    k = 512 / max(h, w)
    img = cv2.resize(rgb, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA).astype(float)
    tints = {"rim": (255, 255, 0), "edges": (255, 0, 255), "dark": (0, 80, 255),
             "bright": (255, 0, 0), "chroma": (0, 255, 0)}
    for name, colour in tints.items():
        m = cv2.resize(a.maps[name].astype(np.uint8), img.shape[1::-1],
                       interpolation=cv2.INTER_NEAREST).astype(bool)
        img[m] = 0.45 * img[m] + 0.55 * np.array(colour)
    outside = cv2.resize((~a.maps["mask"]).astype(np.uint8), img.shape[1::-1],
                         interpolation=cv2.INTER_NEAREST).astype(bool)
    img[outside] *= 0.5
    img = np.ascontiguousarray(img.clip(0, 255).astype(np.uint8))
    styles = {"center_bg": (160, 160, 160), "center_nobg": (255, 255, 255),
              "adaptive_bg": (0, 200, 255), "adaptive_nobg": (0, 255, 0)}
    for name, colour in styles.items():
        x0, y0, x1, y1 = (round(v * k) for v in a.boxes[name])
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), colour, 2)
        cv2.putText(img, name, (x0 + 3, y0 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1)
    lab = ", ".join(f"{v:.1f}" for v in a.mean_lab)
    lines = [title, f"{a.status}; bad in window {a.bad_fraction:.1%}; mean Lab {lab}",
             "dim: not patch  yellow: rim  magenta: edge  blue: dark  red: bright  green: chroma"]
    bar = np.zeros((18 * len(lines) + 6, img.shape[1], 3), np.uint8)
    for j, text in enumerate(lines):
        cv2.putText(bar, text, (4, 16 + 18 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (255, 255, 255), 1)
    return np.vstack([img, bar])


def _png_bit_depth(path: Path) -> int | float:
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return math.nan
