"""Write a synthetic dataset: images/*.jpg, manifest.csv and the dataset.yaml card, whose
generated_by.calibration block is the table of calibration.py for the photos just written.

Every photo draws its randomness from generators keyed by (seed, set, tone), so the bytes do not
depend on how photos are spread over worker processes. The folder is built under a temporary
name next to the destination and renamed into place, so an interrupted run leaves nothing
half-written.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from tqdm import tqdm

from ..errors import UserError
from ..fsutil import replace_dir
from .calibration import as_records, calibrate, passed
from .context import Context, GeneratorConfig, build_context
from .measure import decode_rgb, naive_lab
from .render import render

CARD = "dataset.yaml"
MANIFEST = "manifest.csv"
_CTX: Context | None = None
_DIR: Path | None = None


def _init(ctx: Context, out: Path) -> None:
    global _CTX, _DIR
    _CTX, _DIR = ctx, out
    try:  # one numpy thread per worker: the workers are the parallelism
        # lazy: not a declared dependency (scikit-learn brings it); without it numpy keeps its threads
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass


def _render_chunk(items: list[tuple[int, int]]) -> list[tuple[dict, list[float]]]:
    """Render, write, and read back each photo's naive Lab (from the JPEG as written) for the
    calibration block, so the card costs no second pass over the images."""
    out = []
    for s, t in items:
        data, row = render(_CTX, s, t)
        (_DIR / row["image"]).write_bytes(data)
        out.append((row, naive_lab(decode_rgb(data), row).tolist()))
    return out


def card_dict(cfg: GeneratorConfig, calibration: list | None = None) -> dict:
    cal = {} if calibration is None else {"calibration": {
        "passed": passed(calibration),
        "against": "real phone photos of printed swatches (real_phones.yaml, issues 15 and 27)",
        "rows": as_records(calibration)}}
    return {
        "name": "raysweep-synthetic",
        "description": "physically based synthetic skin-swatch photos (python -m raysweep.synth)",
        "manifest": MANIFEST,
        "columns": {},
        "ground_truth": {"space": "CIELAB", "illuminant": "D65", "observer": "2"},
        # inside generated_by: the data loader's card schema accepts no other top-level key
        "generated_by": {"tool": "raysweep.synth", **cfg.as_dict(), **cal},
    }


def check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder", where="--out",
                        fix="choose another --out path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output folder {out} exists and is not empty", where="--out",
                        fix="choose a new folder, or pass --overwrite to replace it")


def generate(out: str | Path, cfg: GeneratorConfig = GeneratorConfig(), workers: int = 1,
             overwrite: bool = False, progress: bool = True) -> Path:
    """Generate the dataset into `out`; returns the path of its dataset.yaml."""
    cfg.validate()
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}", where="--workers",
                        fix=f"use --workers {os.cpu_count() or 1} (this machine's cores)")
    out = Path(out).expanduser().resolve()
    check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        ctx = build_context(cfg)
        items = [(s, t) for s in range(cfg.sets) for t in range(cfg.tones)]
        chunks = [items[i : i + 23] for i in range(0, len(items), 23)]
        bar = tqdm(total=len(items), desc="rendering", unit="photo", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True)
        rows: list[tuple[dict, list[float]]] = []
        if workers == 1:
            _init(ctx, tmp)
            for chunk in chunks:
                rows += _render_chunk(chunk)
                bar.update(len(chunk))
        else:
            # spawn, not fork: the caller may hold threads (torch, Ray) that fork would copy locked
            with mp.get_context("spawn").Pool(workers, _init, (ctx, tmp)) as pool:
                for part in pool.imap(_render_chunk, chunks):
                    rows += part
                    bar.update(len(part))
        bar.close()
        frame = pd.DataFrame([r for r, _ in rows])
        frame.to_csv(tmp / MANIFEST, index=False)
        table = calibrate(frame, [lab for _, lab in rows])
        (tmp / CARD).write_text(yaml.safe_dump(card_dict(cfg, table), sort_keys=False))
        _replace(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / CARD


def _replace(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished folder into place; an old folder goes only after the new one is there."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        if not overwrite:  # someone else filled it meanwhile: theirs stands
            raise FileExistsError(f"{out} was created by another process meanwhile")
    replace_dir(tmp, out)
