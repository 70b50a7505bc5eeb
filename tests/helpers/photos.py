"""Photo folders, tabular datasets and dataset cards for the data tests (the drawing itself
lives in raysweep.data.demo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.data.demo import FOREIGN


def write_card(root: Path, manifest: str = "labels.csv", extra: str = "") -> Path:
    cols = "\n".join(f"  {k}: {v}" for k, v in (kv.split("=") for kv in FOREIGN.split(",")))
    card = root / "dataset.yaml"
    card.write_text(f"name: test\nmanifest: {manifest}\ncolumns:\n{cols}\n{extra}")
    return card


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: what a decompression bomb shows
    Pillow before a single pixel is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def tabular(root, n: int = 12, **columns) -> pd.DataFrame:
    """A tabular dataset (mean_L/a/b, no photos) with a card; `columns` override or add."""
    root.mkdir(parents=True, exist_ok=True)
    i = np.arange(n)
    df = pd.DataFrame({"sample_id": [f"s{k:03d}" for k in i], "target_L": 40.0 + i,
                       "target_a": 12.0, "target_b": 16.0, "mean_L": 38.0 + i,
                       "mean_a": 11.0, "mean_b": 15.0, "tone_id": [f"t{k // 2}" for k in i],
                       "exposure_time_s": 0.01, "iso": 100.0, "camera": "cam-a", **columns})
    df.to_csv(root / "labels.csv", index=False)
    (root / "dataset.yaml").write_text("name: t\nmanifest: labels.csv\n")
    return df
