"""`predict`'s steps over many photos: the model by name, the inputs (photos, folders,
manifests) expanded, the photos read, the metadata merged, the run summarised.

A spreadsheet (a manifest or card with mean_L/a/b and no photo column) takes the tabular path
instead: its rows go through a model that reads no image (`run_rows`).
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
from raysweep.data.manifest import MEAN, as_text, read_manifest
from raysweep.errors import UserError
from raysweep.fsutil import check_writable
from raysweep.serve import bounds, ood
from raysweep.serve.inference import (
    INVALID,
    NUMBER_COLUMNS,
    OVERRIDE_COLUMNS,
    SESSION_COLUMN,
    geometry,
    predict_photos,
    predict_rows,
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
    rows = spreadsheet_rows(args.photos)
    if rows is not None:
        return run_rows(args, predictor, rows)
    paths, listed, batch = expand_inputs(args.photos)
    target = args.out or ("predictions.csv" if batch else None)
    if target:
        check_writable(target, "--out")  # before the photos are read, not after
    photos, names, failed = read_photos(paths, geometry(predictor)[1], args.keep_going)
    overrides = photo_metadata(args.meta, listed, names)
    out = predict_photos(predictor, photos, overrides, level=args.level)
    sessions = overrides.get(SESSION_COLUMN) if overrides is not None else None
    invalid = deliver(out, predictor, target, args.format, batch, sessions)
    return 1 if failed or invalid else 0


def run_rows(args, predictor, rows: pd.DataFrame) -> int:
    """The tabular path: spreadsheet rows (measured patch colour + metadata, no photo) through a
    model that reads no image, each with its bound and flags, as photos would be."""
    if predictor.cfg.uses_image:
        raise UserError(f"this model (features={predictor.cfg.features}) reads photos, and the "
                        "spreadsheet has none", where=", ".join(args.photos),
                        fix="pass the photos, or a model searched on the spreadsheet's columns "
                            "(python -m raysweep.search --space tabular)")
    if args.meta:
        raise UserError("--meta adds metadata to photos; a spreadsheet carries its own",
                        where=args.meta, fix="put the columns in the spreadsheet")
    target = args.out or "predictions.csv"
    check_writable(target, "--out")
    out = predict_rows(predictor, rows, level=args.level)
    return 1 if deliver(out, predictor, target, args.format, True, rows.get(SESSION_COLUMN)) else 0


def deliver(out: pd.DataFrame, predictor, target: str | None, fmt: str, batch: bool,
            sessions: pd.Series | None = None):
    """Write the CSV (`target`), print the predictions (a batch only in a format other than
    the table, which the CSV holds), the summary lines; -> the rows with no finite colour."""
    if target:
        out.to_csv(target, index=False, float_format="%.4f")
        log.info("wrote %d predictions with bounds and flags to %s", len(out), target)
    if not batch or fmt != "table":
        print(format_output(out, fmt))
    return summarize(out, predictor, sessions)


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


def summarize(out: pd.DataFrame, predictor, sessions: pd.Series | None = None) -> list[str]:
    """The flag and bound summary lines on stderr; -> the photos the model gave no finite
    colour (an error: the rows stay in the output, flagged, but the command must fail).
    `sessions`: each photo's set_id where given."""
    print(ood.summary_line(out), file=sys.stderr)
    cal = getattr(predictor, "calibration", None)
    if cal is not None:
        print(bounds.regime_line(out["bound_regime"]), file=sys.stderr)
        if line := trained_session_line(cal, sessions):
            print(line, file=sys.stderr)
    invalid = out.loc[out["ita_category"] == INVALID, "photo"].tolist()
    if invalid:
        log.error("the model gave no finite colour for %d of %d photos (%s): it has diverged; "
                  "use another model (re-run eval_winners, which refuses such models)",
                  len(invalid), len(out), ", ".join(invalid[:5]))
    return invalid


def trained_session_line(cal, sessions: pd.Series | None) -> str | None:
    """Say so when photos name a session the model trained on and still get the new-session
    bound: without it the user who gave set_id would read the line above as set_id ignored."""
    if cal.seen is not None or not cal.sessions or sessions is None:
        return None
    n = int(sessions.map(as_text).isin(cal.sessions).sum())  # as the rows' regimes read them
    if not n:
        return None
    return (f"{n} of them name a session the model trained on, but its calibration has no "
            "seen-session bound (that needs validation photos from training sessions: a split "
            "by tone, not by session), so they get the new-session one")


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


MANIFEST_SUFFIXES = (".csv", ".parquet", ".yaml", ".yml")


def spreadsheet_rows(items: Sequence[str]) -> pd.DataFrame | None:
    """The rows of the PHOTO arguments when they are spreadsheets (manifests or cards with
    mean_L/a/b and no photo column: the tabular path), None when they are photos."""
    frames = []
    for item in items:
        p = Path(item)
        if p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
            frame = _read_listing(p)[0]
            if _photo_column(frame) is None and all(c in frame.columns for c in MEAN):
                frames.append(frame)
    if frames and len(frames) < len(items):
        raise UserError("the arguments mix photos and spreadsheet rows (mean_L/a/b, no photo "
                        "column)", where=", ".join(items), fix="predict them in separate runs")
    return pd.concat(frames, ignore_index=True) if frames else None


def _read_listing(path: Path) -> tuple[pd.DataFrame, Path]:
    """A manifest or card's rows (a card maps its column names and converts its colours to
    D65, as `prepare` reads it) and the folder its paths are relative to."""
    if path.suffix.lower() in (".yaml", ".yml"):
        card = load_card(path)
        frame, problems, _ = read_manifest(card)
        _refuse_text_numbers(problems, frame, card.manifest)
        return frame, card.root
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else \
            pd.read_csv(path, dtype={"camera": str, "make": str, "model": str,
                                     SESSION_COLUMN: str})
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read manifest {path}: {e}", where=str(path)) from None
    return frame, path.parent


def _refuse_text_numbers(problems: dict[int, list[str]], frame: pd.DataFrame,
                         manifest: Path) -> None:
    """The card's reader has already made a number column's text ("ISO 100") missing and said so
    in `problems`; predict stops on it, as it does for a CSV (inference.numbers), instead of
    predicting as if the row had not given the value. Targets are not read: not checked."""
    for i, found in sorted(problems.items()):
        bad = [p for p in found if p.split("=", 1)[0] in NUMBER_COLUMNS]
        if bad:
            raise UserError(f"row {i + 1} (sample_id {frame['sample_id'].iloc[i]!r}): {bad[0]}",
                            where=str(manifest),
                            fix="write it as a plain number (a shutter speed may be 1/60), or "
                                "leave the cell empty where it is unknown")


def _photo_column(frame: pd.DataFrame) -> str | None:
    return "image" if "image" in frame.columns else "photo" if "photo" in frame.columns else None


def _manifest_photos(path: Path) -> pd.DataFrame:
    """`photo` (absolute path) and the contract metadata columns of a manifest or card."""
    frame, root = _read_listing(path)
    col = _photo_column(frame)
    if col is None:
        raise UserError(f"manifest {path} has no `image` or `photo` column", where=str(path),
                        fix="name the column holding each photo's path `image`; a spreadsheet "
                            "without photos needs mean_L, mean_a, mean_b (or its dataset.yaml, "
                            "whose `columns:` maps your names)")
    out = frame[[c for c in (*OVERRIDE_COLUMNS, SESSION_COLUMN) if c in frame.columns]].copy()
    out.insert(0, "photo", [str(root / str(v)) for v in frame[col]])
    return out.reset_index(drop=True)
