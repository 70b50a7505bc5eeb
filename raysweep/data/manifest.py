"""Read a manifest through its card, and find every bad row (with its reason) in one pass.

Column problems (a required column missing) stop at once: nothing row-level can be said then.
Row problems are collected, never fixed silently: the caller either stops with one message that
lists them all or, with skip_bad, writes them to rejects.csv.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.data.card import CONTRACT_COLUMNS, NUMERIC_COLUMNS, TEXT_COLUMNS, Card, to_d65
from raysweep.data.exif_reader import PLAUSIBLE
from raysweep.data.prepared import SPLITS
from raysweep.errors import UserError

REQUIRED = ("sample_id", "target_L", "target_a", "target_b")
TARGET = ("target_L", "target_a", "target_b")
MEAN = ("mean_L", "mean_a", "mean_b")
POSITIVE = ("exposure_time_s", "f_number", "iso")
log = logging.getLogger(__name__)
INLINE_LIMIT = 200  # more bad rows than this: the message points at the file with all of them


def read_manifest(card: Card) -> tuple[pd.DataFrame, dict[int, list[str]], str]:
    """Return (frame with contract names, {row: [problems found while parsing]}, content hash).

    The content hash covers the mapped manifest and the card's conventions, not file names or
    times, so a copied dataset splits the same way on every machine.
    """
    raw = _read_table(card.manifest)
    mapping = _column_mapping(list(raw.columns), card)
    df = raw.rename(columns=mapping)
    missing = [c for c in REQUIRED if c not in df.columns]
    if "image" not in df.columns and not all(c in df.columns for c in MEAN):
        missing.append("image (or mean_L, mean_a, mean_b for tabular data)")
    if missing:
        raise UserError(
            f"the manifest lacks required column(s): {', '.join(missing)}; it has: "
            f"{', '.join(map(str, raw.columns))}",
            where=str(card.manifest),
            fix=f"rename them, or map your names in {card.path} under `columns:` "
                "(e.g. `L-true: target_L`), or pass --columns \"L-true=target_L,...\"")
    content_hash = _content_hash(df, card)
    problems: dict[int, list[str]] = {}
    for col in TEXT_COLUMNS:
        if col in df.columns:
            df[col] = df[col].map(as_text)
    for col in NUMERIC_COLUMNS:
        if col in df.columns:
            values, bad = to_floats(df[col])
            df[col] = values
            for i in bad:
                problems.setdefault(i, []).append(f"{col}={raw.iloc[i][_source(col, mapping)]!r}"
                                                  " is not a number")
    for col in df.columns:  # latents (lux, cct, ...) pass through, as numbers where they are
        if col not in CONTRACT_COLUMNS and not pd.api.types.is_numeric_dtype(df[col]):
            try:
                df[col] = pd.to_numeric(df[col])
            except (ValueError, TypeError):
                pass
    _implausible_to_missing(df)
    for col in ("target", "mean"):
        names = TARGET if col == "target" else MEAN
        if all(n in df.columns for n in names):
            ill = card.illuminant if col == "target" else card.mean_illuminant
            df[list(names)] = to_d65(df[list(names)].to_numpy(), ill)
    return df.reset_index(drop=True), problems, content_hash


def find_bad_rows(df: pd.DataFrame, root: Path, problems: dict[int, list[str]] | None = None
                  ) -> dict[int, list[str]]:
    """Every row-level problem the manifest alone can show (image decoding comes later)."""
    bad = {i: list(r) for i, r in (problems or {}).items()}

    def flag(mask: np.ndarray | pd.Series, reason) -> None:
        for i in np.flatnonzero(np.asarray(mask)):
            bad.setdefault(int(i), []).append(reason(int(i)) if callable(reason) else reason)

    ids = df["sample_id"]
    flag(ids == "", "empty sample_id")
    dups = ids.duplicated(keep=False) & (ids != "")
    rows_of = df.index[dups].groupby(ids[dups]) if dups.any() else {}
    flag(dups, lambda i: f"duplicate sample_id {ids[i]!r} (rows "
                         f"{', '.join(str(r + 1) for r in rows_of[ids[i]])})")
    for names, what in ((TARGET, "target"), (MEAN, "mean")):
        if not all(n in df.columns for n in names):
            continue
        lab = df[list(names)].to_numpy(dtype=float)
        nan = np.isnan(lab)
        if what == "target":
            flag(nan.any(1), "target Lab has a missing value (NaN)")
        else:
            flag(nan.any(1) & ~nan.all(1), "mean Lab is partly missing (need all of mean_L/a/b)")
        ok = ~nan.any(1)
        flag(ok & ((lab[:, 0] < 0) | (lab[:, 0] > 100)),
             lambda i, n=names: f"{n[0]}={df[n[0]][i]:g} is outside 0..100")
        flag(ok & (np.abs(lab[:, 1:]) > 128).any(1),
             lambda i, n=names: f"{n[1]}/{n[2]}=({df[n[1]][i]:g}, {df[n[2]][i]:g}) outside -128..128")
    for col in POSITIVE:
        if col in df.columns:
            v = df[col].to_numpy(dtype=float)
            flag(~np.isnan(v) & (v <= 0), lambda i, c=col: f"{c}={df[c][i]:g} must be > 0")
    if "split" in df.columns:
        s = df["split"]
        flag((s != "") & ~s.isin(SPLITS), lambda i: f"split={s[i]!r} is not one of {SPLITS}")
    has_mean = df[list(MEAN)].notna().all(1) if all(m in df.columns for m in MEAN) else \
        pd.Series(False, index=df.index)
    images = df["image"] if "image" in df.columns else pd.Series("", index=df.index)
    any_image = (images != "").any()
    for i, rel in images.items():
        if rel == "":
            if not has_mean[i]:
                reason = "no image and no mean_L/a/b"
            elif any_image:
                reason = ("no image, but other rows have one: a dataset is either all images "
                          "or all tabular (mean_L/a/b)")
            else:
                reason = None
        else:
            reason = check_image_path(rel, root)
        if reason:
            bad.setdefault(int(i), []).append(reason)
    return dict(sorted(bad.items()))


def _implausible_to_missing(df: pd.DataFrame) -> None:
    """A finite value no camera can record (exposure_time_s=1e9) is missing, with a note in
    `manifest_notes`, as the same value read from EXIF is: kept, it would stretch the feature's
    normalisation for every clean row. Zero and negative values stay bad rows (find_bad_rows)."""
    notes = [[] for _ in range(len(df))]
    for col, (lo, hi) in PLAUSIBLE.items():
        if col not in df.columns:
            continue
        v = df[col].to_numpy(dtype=float)
        off = ~np.isnan(v) & ((v > hi) | (v < lo)) & ((v > 0) | (col not in POSITIVE))
        for i in np.flatnonzero(off):
            notes[i].append(f"{col}={v[i]:g} is outside the plausible range [{lo:g}, {hi:g}]: "
                            "treated as missing")
        df.loc[off, col] = np.nan
    df["manifest_notes"] = ["; ".join(n) for n in notes]
    n_off = sum(map(bool, notes))
    if n_off:
        first = next(i for i, n in enumerate(notes) if n)
        log.warning("%d manifest row(s) hold camera metadata no camera can record, treated as "
                    "missing (e.g. sample_id %s: %s)", n_off, df["sample_id"].iloc[first],
                    notes[first][0])


def check_image_path(rel: str, root: Path) -> str | None:
    """Paths stay inside the dataset folder: a card must describe a self-contained folder."""
    if os.path.isabs(rel) or re.match(r"^[A-Za-z]:[\\/]", rel):
        return f"image path {rel!r} is absolute; give it relative to {root}"
    norm = os.path.normpath(rel)
    if norm == ".." or norm.startswith(".." + os.sep):
        return f"image path {rel!r} leaves the dataset folder {root}"
    if not (root / norm).is_file():
        return f"image file {rel!r} does not exist under {root}"
    real = os.path.realpath(root / norm)
    if not Path(real).is_relative_to(os.path.realpath(root)):
        return (f"image path {rel!r} is a link that leaves the dataset folder {root} (to {real}); "
                "copy the file in, or link the whole dataset folder instead")
    return None


def rejects_frame(df: pd.DataFrame, bad: dict[int, list[str]]) -> pd.DataFrame:
    rows = sorted(bad)
    return pd.DataFrame({
        "row": [r + 1 for r in rows],  # 1-based data row (CSV line = row + 1)
        "sample_id": [df["sample_id"][r] for r in rows],
        "image": [df["image"][r] if "image" in df.columns else "" for r in rows],
        "reason": ["; ".join(bad[r]) for r in rows],
    })


def bad_rows_error(rejects: pd.DataFrame, where: str, full_list: Path | None) -> UserError:
    lines = [f"  row {r.row} (sample_id {r.sample_id!r}): {r.reason}"
             for r in rejects.head(INLINE_LIMIT).itertuples()]
    more = len(rejects) - len(lines)
    if more > 0:
        lines.append(f"  ... and {more} more")
    if full_list is not None:
        lines.append(f"  (full list with reasons: {full_list})")
    return UserError(f"{len(rejects)} bad row(s) in the dataset:\n" + "\n".join(lines) + "\n",
                     where=where, fix="correct these rows, or rerun with --skip-bad (or "
                                      "`skip_bad: true` in the card) to leave them out and "
                                      "write them to rejects.csv")


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            # Everything as text first: "007" stays an id and "1/125" stays parseable.
            df = pd.read_csv(path, dtype=str, sep=None if path.suffix.lower() != ".csv"
                             else ",", engine="python" if path.suffix.lower() != ".csv"
                             else "c", keep_default_na=True)
            if len(df.columns) == 1 and ";" in str(df.columns[0]):
                raise UserError("the manifest looks semicolon-separated (one column named "
                                f"{str(df.columns[0])[:80]!r})", where=str(path),
                                fix="save it with commas as separators (a spreadsheet's "
                                    "'CSV (comma delimited)'), or name it .tsv/.txt so the "
                                    "separator is detected")
            return df
    except UnicodeDecodeError as e:
        raise UserError(f"the manifest is not UTF-8 text ({e.reason} at byte {e.start}; Latin-1 "
                        "or Windows-1252 files look like this)", where=str(path),
                        fix="re-save it as UTF-8 (a spreadsheet's 'CSV UTF-8'), e.g. "
                            f"`iconv -f latin1 -t utf-8 {path.name} > utf8.csv`") from None
    except UserError:
        raise
    except Exception as e:  # pandas raises many types for a malformed file
        raise UserError(f"cannot read the manifest: {e}", where=str(path)) from None
    raise UserError(f"manifest {path.name} is neither CSV nor Parquet", where=str(path),
                    fix="save it as .csv or .parquet")


def _column_mapping(columns: list[str], card: Card) -> dict[str, str]:
    absent = [c for c in card.columns if c not in columns]
    if absent:
        raise UserError(f"the card maps column(s) {absent} that the manifest does not have; it "
                        f"has: {', '.join(map(str, columns))}",
                        where=f"{card.path}: columns", fix="correct the names under `columns:`")
    mapping = dict(card.columns)
    taken = set(mapping.values())
    spellings: dict[str, list[str]] = {}
    for c in columns:  # exact contract names, ignoring case and -/space, map themselves
        norm = re.sub(r"[\s\-]+", "_", str(c).strip()).lower()
        match = next((k for k in CONTRACT_COLUMNS if k.lower() == norm), None)
        if match and c not in mapping:
            spellings.setdefault(match, []).append(str(c))
        if c not in mapping and match and match not in taken:
            mapping[c] = match
            taken.add(match)
    # `target_L` before `Target_L` must be refused like the other order: which spelling won
    # would otherwise depend on the column order alone
    _one_column_each({k: v for k, v in spellings.items()
                      if len(v) > 1 and k not in card.columns.values()}, card)
    clash = [c for c in columns if c in taken and mapping.get(c, c) != c]
    if clash:
        raise UserError(f"column(s) {clash} would be overwritten by the card's mapping",
                        where=f"{card.path}: columns", fix="map only one column onto each name")
    final: dict[str, list[str]] = {}
    for c in columns:  # `Target_L` beside `target_L`: two columns would become one name
        final.setdefault(str(mapping.get(c, c)), []).append(str(c))
    _one_column_each({k: v for k, v in final.items() if len(v) > 1}, card)
    return mapping


def _one_column_each(dupes: dict[str, list[str]], card: Card) -> None:
    if dupes:
        shown = "; ".join(f"{' and '.join(v)} -> {k}" for k, v in dupes.items())
        raise UserError(f"manifest columns differ only by case or spelling and would become one "
                        f"column: {shown}", where=str(card.manifest),
                        fix="keep one of each (delete or rename the other), or map the one to "
                            f"use under `columns:` in {card.path}")


def _content_hash(df: pd.DataFrame, card: Card) -> str:
    h = hashlib.sha256()
    h.update(f"{card.illuminant}|{card.mean_illuminant}|".encode())
    h.update(df.astype(str).to_csv(index=False).encode())
    return h.hexdigest()[:16]


def _source(col: str, mapping: dict[str, str]) -> str:
    return next((u for u, c in mapping.items() if c == col), col)


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA


def as_text(v) -> str:
    """An id as text: "" where missing, a whole float as its integer. pandas reads sessions
    numbered 1..n from a column with blanks (or a Parquet float column) as 1.0, 2.0, ...; as
    "1.0" a session the model trained on as "1" would not be recognised, and its photo would get
    the other regime's bound."""
    if _is_missing(v):
        return ""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


def to_floats(s: pd.Series) -> tuple[np.ndarray, list[int]]:
    """Numbers, with "1/125"-style fractions accepted (that is how shutter speeds are written);
    -> (floats, NaN where empty; the positions of the values that are not numbers). Serving
    reads a spreadsheet's numbers with it too, so a value `prepare` took is never refused."""
    out = np.full(len(s), np.nan)
    bad = []
    for i, v in enumerate(s.tolist()):
        if _is_missing(v) or (isinstance(v, str) and v.strip() in ("", "nan", "NaN", "NA")):
            continue
        try:
            out[i] = float(Fraction(v.strip())) if isinstance(v, str) and "/" in v else float(v)
        except (ValueError, ZeroDivisionError, TypeError):
            bad.append(i)
    return out, bad
