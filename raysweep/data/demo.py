"""A tiny hand-made photo folder: swatches drawn on backgrounds, JPEG with EXIF, labels CSV.

For `prepare --smoke-test` and the data tests. Each photo comes with its truth (swatch, shadow
and specular masks) so crops can be scored against it. The labels use foreign column names
(`L-true`, `file`, ...) on purpose: that is what a team's spreadsheet looks like.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import piexif
from PIL import Image

SKIN = [(224, 172, 140), (198, 134, 100), (141, 85, 60), (236, 192, 168), (170, 110, 80)]
BACKGROUNDS = [(128, 128, 128), (200, 200, 195), (70, 110, 160), (150, 170, 90)]


def draw_photo(rng: np.random.Generator, size: int = 128, skin=None, bg=None, shadow: bool = True,
               specular: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(H, W, 3) uint8 RGB and truth masks: swatch, shadow, specular."""
    h = w = size
    skin = np.array(skin or SKIN[rng.integers(len(SKIN))], float)
    bg = np.array(bg or BACKGROUNDS[rng.integers(len(BACKGROUNDS))], float)
    img = np.ones((h, w, 3)) * bg
    cx, cy = w / 2 + rng.uniform(-0.12, 0.12) * w, h / 2 + rng.uniform(-0.12, 0.12) * h
    side = rng.uniform(0.42, 0.55) * size
    rect = ((cx, cy), (side, side * rng.uniform(0.8, 1.0)), rng.uniform(-12, 12))
    swatch = np.zeros((h, w), np.uint8)
    cv2.fillPoly(swatch, [cv2.boxPoints(rect).astype(np.int32)], 1)
    swatch = swatch.astype(bool)
    img[swatch] = skin
    yy, xx = np.mgrid[0:h, 0:w]
    shade = np.zeros((h, w), bool)
    if shadow:  # a hard shadow over one side of the swatch (and the background next to it)
        edge = cx - side / 2 + rng.uniform(0.15, 0.3) * side
        shade = xx < edge if rng.random() < 0.5 else xx > 2 * cx - edge
        img[shade] *= 0.55
    spec = np.zeros((h, w), bool)
    if specular:
        sx, sy = cx + rng.uniform(-0.2, 0.2) * side, cy + rng.uniform(-0.2, 0.2) * side
        spec = ((xx - sx) ** 2 + (yy - sy) ** 2 < (0.06 * size) ** 2) & swatch
        img[spec] = 0.3 * img[spec] + 0.7 * 255
    vignette = 1 - 0.25 * (((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w * w / 2))
    img = img * vignette[..., None] + rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), {"swatch": swatch, "shadow": shade & swatch,
                                                    "specular": spec}


def exif_bytes(t=(1, 125), n=(28, 10), iso=200, bv=(350, 100), bias=(0, 1), wb=0,
               make=b"Acme", model=b"Phone 1") -> bytes:
    ex = {"0th": {}, "Exif": {}}
    if make is not None:
        ex["0th"][piexif.ImageIFD.Make] = make
    if model is not None:
        ex["0th"][piexif.ImageIFD.Model] = model
    for tag, v in ((piexif.ExifIFD.ExposureTime, t), (piexif.ExifIFD.FNumber, n),
                   (piexif.ExifIFD.ISOSpeedRatings, iso), (piexif.ExifIFD.BrightnessValue, bv),
                   (piexif.ExifIFD.ExposureBiasValue, bias), (piexif.ExifIFD.WhiteBalance, wb)):
        if v is not None:
            ex["Exif"][tag] = v
    return piexif.dump(ex)


def make_folder(root: Path, n: int = 6, size: int = 128, seed: int = 0, foreign: bool = True,
                ) -> tuple[Path, pd.DataFrame]:
    """A folder of JPEGs with EXIF and a labels CSV using foreign column names."""
    rng = np.random.default_rng(seed)
    (root / "photos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rgb, _ = draw_photo(rng, size)
        name = f"photos/img_{i:03d}.jpg"
        Image.fromarray(rgb).save(root / name, quality=90,
                                  exif=exif_bytes(iso=int(100 * 2 ** (i % 4))))
        rows.append({"id": f"s{i:03d}", "file": name, "L-true": 40 + (3 * i) % 50, "a-true": 10.0 + i % 3,
                     "b-true": 15.0, "tone": f"t{i // 2}", "session": f"set{i % 2}",
                     "lux": 100.0 * (i + 1)})
    labels = pd.DataFrame(rows)
    if not foreign:
        labels = labels.rename(columns={"id": "sample_id", "file": "image", "L-true": "target_L",
                                        "a-true": "target_a", "b-true": "target_b",
                                        "tone": "tone_id", "session": "set_id"})
    path = root / "labels.csv"
    labels.to_csv(path, index=False)
    return path, labels


# The --columns value that maps make_folder's labels onto the contract.
FOREIGN = "id=sample_id,file=image,L-true=target_L,a-true=target_a,b-true=target_b," \
          "tone=tone_id,session=set_id"
