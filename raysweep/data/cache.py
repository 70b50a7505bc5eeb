"""The prepared-array cache: one .npy per crop variant and one table .npz, keyed by content.

Layout under the cache folder (default <dataset>/.raysweep_cache):

    <key>/<size>/table.npz      ids, targets, meta, mean Lab, background-ring statistics
                                (raysweep.data.ring), camera, device, the frame
                                (Parquet bytes), info and the rejected rows, in one file
    <key>/<size>/<variant>.npy  (N, 3, size, size) uint8 crops, one plain array per variant
    <key>/<size>/rejects.csv    the bad rows with their reasons (when there are any)

The key hashes the manifest content, each image's (path, byte size, mtime) and the crop
parameters and code version: editing a label, replacing a photo or changing the cropper
prepares again, while a copy of an unchanged dataset hits the cache without hashing gigabytes.
A load is one read of the table and one of the variant; nothing else is recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.data.crop import VARIANTS, CropParams

PREP_VERSION = 3  # bump when cropping or feature code changes what a cache holds (2: ring,
#                  3: implausible manifest metadata missing, camera ids one spelling per case)
TABLE_ARRAYS = ("sample_id", "mean_lab", "meta", "ring", "camera", "device", "target")


def cache_key(content_hash: str, root: Path, images: list[str], params: CropParams) -> str:
    h = hashlib.sha256(f"v{PREP_VERSION}|{content_hash}|".encode())
    p = asdict(params)
    p.pop("size")  # size is in the file names, so one key folder holds every size
    h.update(json.dumps(p, sort_keys=True).encode())
    for rel in images:
        try:
            st = os.stat(root / rel) if rel else None
            h.update(f"|{rel}:{st.st_size}:{st.st_mtime_ns}".encode() if st else b"|-")
        except OSError:
            h.update(f"|{rel}:missing".encode())
    return h.hexdigest()[:16]


def table_path(folder: Path, size: int) -> Path:
    return folder / str(size) / "table.npz"


def variant_path(folder: Path, variant: str, size: int) -> Path:
    return folder / str(size) / f"{variant}.npy"


def rejects_path(folder: Path, size: int) -> Path:
    return folder / str(size) / "rejects.csv"


def is_complete(folder: Path, size: int, tabular: bool) -> bool:
    if not table_path(folder, size).is_file():
        return False
    return tabular or all(variant_path(folder, v, size).is_file() for v in VARIANTS)


def save_table(folder: Path, size: int, arrays: dict[str, np.ndarray], frame: pd.DataFrame,
               rejects: pd.DataFrame, info: dict) -> Path:
    """Written last, after the variants: its presence means the entry is complete."""
    buf = io.BytesIO()
    _frame_for_parquet(frame).to_parquet(buf, index=False)
    rbuf = io.BytesIO()
    _frame_for_parquet(rejects).to_parquet(rbuf, index=False)
    payload = {k: np.asarray(arrays[k]) for k in TABLE_ARRAYS}
    payload["sample_id"] = payload["sample_id"].astype(str)
    payload["camera"] = payload["camera"].astype(str)
    payload["device"] = payload["device"].astype(str)
    payload["frame_parquet"] = np.frombuffer(buf.getvalue(), np.uint8)
    payload["rejects_parquet"] = np.frombuffer(rbuf.getvalue(), np.uint8)
    payload["info_json"] = np.frombuffer(json.dumps(info).encode(), np.uint8)
    path = table_path(folder, size)
    return _atomic(path, lambda f: np.savez(f, **payload))


def load_table(folder: Path, size: int) -> tuple[dict[str, np.ndarray], pd.DataFrame,
                                                 pd.DataFrame, dict]:
    with np.load(table_path(folder, size), allow_pickle=False) as z:
        arrays = {k: z[k] for k in TABLE_ARRAYS}
        frame = pd.read_parquet(io.BytesIO(z["frame_parquet"].tobytes()))
        rejects = pd.read_parquet(io.BytesIO(z["rejects_parquet"].tobytes()))
        info = json.loads(z["info_json"].tobytes().decode())
    return arrays, frame, rejects, info


class VariantWriter:
    """Crops go straight to a memory-mapped temp file (4 variants x 100 MB need not sit in RAM);
    commit() keeps the good rows and renames it into place."""

    def __init__(self, folder: Path, variant: str, size: int, n: int):
        self.path = variant_path(folder, variant, size)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        shape = (max(n, 1), 3, size, size)  # a zero-length memmap is not allowed
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.uint8, shape=shape)
        self.n = n

    def commit(self, keep: np.ndarray) -> Path:
        keep = np.asarray(keep, bool)
        self.array.flush()
        if self.n and keep.all():
            del self.array
            self.tmp.replace(self.path)
            return self.path
        _atomic(self.path, lambda f: np.save(f, np.ascontiguousarray(self.array[:self.n][keep])))
        self.abort()
        return self.path

    def abort(self) -> None:
        self.array = None
        self.tmp.unlink(missing_ok=True)


def load_variant(folder: Path, variant: str, size: int) -> np.ndarray:
    return np.load(variant_path(folder, variant, size), allow_pickle=False)


def _atomic(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _frame_for_parquet(df: pd.DataFrame) -> pd.DataFrame:
    """Parquet wants one type per column; mixed object columns become text."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].map(lambda v: "" if v is None or (isinstance(v, float) and
                                                              np.isnan(v)) else str(v))
    out.columns = [str(c) for c in out.columns]
    return out
