"""`predict`'s steps over many photos: the model by name, the inputs (photos, folders,
manifests) expanded, the photos read, the metadata merged, the run summarised.

`python -m raysweep.predict` parses its flags and calls `run`; the steps stand alone for tests.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from raysweep.data.card import load_card
from raysweep.data.manifest import read_manifest
from raysweep.errors import UserError
from raysweep.fsutil import check_writable
from raysweep.serve import bounds, ood
from raysweep.serve.inference import (
    INVALID,
    OVERRIDE_COLUMNS,
    SESSION_COLUMN,
    geometry,
    predict_photos,
    read_meta_csv,
    read_photo,
)
from raysweep.serve.loading import latest_champion, load_predictor
from raysweep.serve.output import format_output
from raysweep.tracking.store import store_errors, tracking_uri

log = logging.getLogger("raysweep.predict")


def run(args) -> int:
    """The command with its parsed flags (`python -m raysweep.predict --help`): 0, or 1 when a
    photo could not be read (--keep-going) or got no finite colour."""
    model, predictor = load_model(args.model, args.device)
    warn_without_bound(predictor, model, args.level)
    paths, listed, batch = expand_inputs(args.photos)
    target = args.out or ("predictions.csv" if batch else None)
    if target:
        check_writable(target, "--out")  # before the photos are read, not after
    photos, names, failed = read_photos(paths, geometry(predictor)[1], args.keep_going)
    overrides = photo_metadata(args.meta, listed, names)
    out = predict_photos(predictor, photos, overrides, level=args.level)
    if target:
        out.to_csv(target, index=False, float_format="%.4f")
        log.info("wrote %d predictions with bounds and flags to %s", len(out), target)
    if not batch or args.format != "table":
        print(format_output(out, args.format))
    invalid = summarize(out, predictor)
    return 1 if failed or invalid else 0


def load_model(model: str | None, device: str):
    """--model (default: the most recently registered champion) -> (the model it names, its
    predictor, with the calibration a checkpoint folder holds beside it)."""
    from_store = not model or model.startswith(("models:/", "runs:/"))
    with store_errors(tracking_uri()) if from_store else contextlib.nullcontext():
        if not model:
            model = latest_champion()
            log.info("no --model: using the most recently registered champion, %s", model)
        predictor = load_predictor(model, device=device)
    if not hasattr(predictor, "calibration") and Path(model).is_dir():
        bounds.attach(predictor, model)  # the calibration.json eval_winners stored with it
    return model, predictor


def warn_without_bound(predictor, model: str, level: float | None) -> None:
    """Say before any photo is read when the predictions will carry no error bound, and why."""
    if getattr(predictor, "calibration", None) is None:
        log.warning("%s has no calibration.json: no error bound (run `python -m "
                    "raysweep.eval_winners` to calibrate the champion)", model)
    elif why := predictor.calibration.why_no_bound(level):
        log.warning("%s (ask for a lower --level, or calibrate on more validation photos)", why)


def read_photos(paths: list[str], size: int, keep_going: bool):
    """-> (the photos read, their paths, the paths that could not be read: only with
    --keep-going; otherwise the first unreadable photo stops the command)."""
    photos, names, failed = [], [], []
    for p in tqdm(paths, desc="photos", file=sys.stderr, disable=len(paths) < 8):
        try:
            photos.append(read_photo(p, size))
            names.append(p)
        except UserError as e:
            if not keep_going:
                raise
            failed.append(p)
            log.error("%s", e.message())
    if not photos:
        raise UserError("no readable photo among the arguments", fix="check the paths")
    return photos, names, failed


def photo_metadata(meta: str | None, listed: pd.DataFrame | None,
                   names: list[str]) -> pd.DataFrame | None:
    """The metadata per photo that overrides EXIF: --meta's CSV, then a manifest's own columns."""
    overrides = read_meta_csv(meta, names) if meta else None
    if listed is not None:  # a manifest's own metadata columns, as --meta would give them
        given = listed.set_index("photo").loc[names].reset_index(drop=True)
        overrides = given if overrides is None else overrides.combine_first(given)
    return overrides


def summarize(out: pd.DataFrame, predictor) -> list[str]:
    """The flag and bound summary lines on stderr; -> the photos the model gave no finite
    colour (an error: the rows stay in the output, flagged, but the command must fail)."""
    print(ood.summary_line(out), file=sys.stderr)
    if getattr(predictor, "calibration", None) is not None:
        print(bounds.regime_line(out["bound_regime"]), file=sys.stderr)
    invalid = out.loc[out["ita_category"] == INVALID, "photo"].tolist()
    if invalid:
        log.error("the model gave no finite colour for %d of %d photos (%s): it has diverged; "
                  "use another model (re-run eval_winners, which refuses such models)",
                  len(invalid), len(out), ", ".join(invalid[:5]))
    return invalid


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def expand_inputs(items: Sequence[str]) -> tuple[list[str], pd.DataFrame | None, bool]:
    """PHOTO arguments -> (photo paths, a manifest's metadata per photo or None, batch?).

    A folder gives its images (sorted); a .csv/.parquet manifest or a dataset.yaml gives its
    `image` (or `photo`) column, relative to its folder, and its contract metadata columns.
    """
    photos, frames, batch = [], [], False
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"no photos in folder {item}", where=item,
                                fix=f"put {', '.join(IMAGE_SUFFIXES)} files in it")
            photos += found
            batch = True
        elif p.suffix.lower() in (".csv", ".parquet", ".yaml", ".yml"):
            frame = _manifest_photos(p)
            photos += frame["photo"].tolist()
            frames.append(frame)
            batch = True
        else:
            photos.append(item)
    listed = None
    if frames:
        listed = pd.concat(frames, ignore_index=True)
        extra = pd.DataFrame({"photo": [x for x in photos if x not in set(listed["photo"])]})
        listed = pd.concat([listed, extra], ignore_index=True).drop_duplicates("photo")
    return photos, listed, batch


def _manifest_photos(path: Path) -> pd.DataFrame:
    """`photo` (absolute path) and the contract metadata columns of a manifest or card."""
    if path.suffix.lower() in (".yaml", ".yml"):
        card = load_card(path)
        frame, root = read_manifest(card)[0], card.root
    else:
        try:
            frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else \
                pd.read_csv(path, dtype={"camera": str, "make": str, "model": str})
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read manifest {path}: {e}", where=str(path)) from None
        root = path.parent
    col = "image" if "image" in frame.columns else "photo" if "photo" in frame.columns else None
    if col is None:
        raise UserError(f"manifest {path} has no `image` or `photo` column", where=str(path),
                        fix="name the column holding each photo's path `image`")
    out = frame[[c for c in (*OVERRIDE_COLUMNS, SESSION_COLUMN) if c in frame.columns]].copy()
    out.insert(0, "photo", [str(root / str(v)) for v in frame[col]])
    return out.reset_index(drop=True)
