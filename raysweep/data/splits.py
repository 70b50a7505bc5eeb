"""Train/val/test splits grouped by the physical sample, deterministic and written down.

Grouping by `tone_id` keeps every photo of one skin tone in one split, so the test measures
tones the model never saw, and it is stratified by skin tone (ITA) so that validation and test
both span dark to light skin: a validation split without dark tones would calibrate error bounds
and select models on lighter skin only; `set_id` holds out capture sessions (new light, as a new photo in the
field brings) while keeping at least one session of EVERY camera in training, so that it measures
unseen sessions, not unseen cameras; `camera` holds out whole cameras. The assignment depends
only on the seed, the grouping and the manifest's content hash (not on file order or machine),
and it is written to a split file whose id every run records, with the groups of each split.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.config import SPLIT_BY
from raysweep.data.card import load_card
from raysweep.data.features import camera_ids
from raysweep.data.manifest import read_manifest
from raysweep.data.prepared import SPLITS
from raysweep.errors import UserError, unknown_name


def assign(frame: pd.DataFrame, by: str = "tone_id", val_fraction: float = 0.15,
           test_fraction: float = 0.15, seed: int = 0, content_hash: str = "") -> np.ndarray:
    """(N,) split names. Groups are shuffled, then cut where the cumulative row share crosses
    test_fraction and test+val fractions; a non-zero fraction always gets at least one group.

    by="set_id" is stratified by camera: one session of every camera is kept for training, and
    the other sessions are laid out camera by camera in turn before the cut, so held-out
    sessions spread over the cameras instead of taking all of one camera's.
    """
    if by not in SPLIT_BY:
        raise unknown_name("split_by", by, SPLIT_BY, where="splits")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be "
                        "in [0, 1) and sum below 1", where="splits")
    if by == "column":
        return _explicit(frame)
    if by not in frame.columns:
        raise UserError(f"split_by={by!r} but the manifest has no {by!r} column", where="splits",
                        fix=f"add a {by} column (or map yours onto it in the card), or choose "
                            f"another split_by from {SPLIT_BY}")
    keys = frame[by].astype(str).str.strip()
    empty = keys.isin(["", "nan", "None"])
    if empty.any():
        ids = frame["sample_id"][empty].tolist()
        raise UserError(f"{empty.sum()} row(s) have no {by}, so they cannot be grouped: "
                        f"{', '.join(map(str, ids[:20]))}{' ...' if len(ids) > 20 else ''}",
                        where="splits", fix=f"fill {by} for every row, or use another split_by")
    groups = np.array(sorted(keys.unique()))
    rng = np.random.default_rng(int.from_bytes(
        hashlib.sha256(f"{seed}|{by}|{content_hash}".encode()).digest()[:8], "little"))
    order = groups[rng.permutation(len(groups))]
    movable = len(order)  # groups at positions >= movable always stay in train
    if by == "tone_id" and {"target_L", "target_b"} <= set(frame.columns):
        fracs = [f for f in (test_fraction, val_fraction) if f > 0]
        strata = max(1, round(len(groups) * min(fracs))) if fracs else 1
        order = _stratify_by_ita(order, keys, frame, strata, rng)
    if by == "set_id":
        order, movable = _stratify_by_camera(order, keys, camera_ids(frame))
        if movable == 0 and (val_fraction > 0 or test_fraction > 0):
            raise UserError(
                f"every camera has a single session ({len(groups)} set_id value(s)), so no "
                "session can be held out while keeping every camera in training",
                where="splits", fix="add sessions, use split_by=camera to measure unseen "
                                    "cameras, or split_by=tone_id")
    sizes = keys.value_counts().reindex(order).to_numpy()
    mid = (np.cumsum(sizes) - sizes / 2) / sizes.sum()  # each group's centre on the 0..1 line
    label = np.where(mid < test_fraction, "test",
                     np.where(mid < test_fraction + val_fraction, "val", "train")).astype(object)
    label[movable:] = "train"
    for name, frac in (("test", test_fraction), ("val", val_fraction)):
        if frac > 0 and not (label == name).any():
            free = np.flatnonzero(label[:movable] == "train")
            if len(free):
                label[free[0]] = name
    if not (label == "train").any() or (val_fraction > 0 and not (label == "val").any()) or \
            (test_fraction > 0 and not (label == "test").any()):
        raise UserError(f"{len(groups)} distinct {by} value(s) cannot fill train, val and test",
                        where="splits", fix="add groups, lower val/test fractions to 0, or split "
                                            "by another column")
    return keys.map(dict(zip(order, label))).to_numpy().astype(str)


def check_validation(source, split_by: str = "tone_id", val_fraction: float = 0.15) -> None:
    """Refuse, from the manifest alone (no photo decoded, no Ray started), a split that leaves no
    validation rows: every trial of a sweep would fail on it, one by one, inside Ray. Only
    `split_by="column"` and `val_fraction=0` can do that (`assign` gives a non-zero fraction at
    least one group)."""
    if split_by != "column":
        if val_fraction <= 0:
            raise UserError("val_fraction=0 leaves no validation rows, so no trial could be "
                            "scored or selected", where="val_fraction",
                            fix="set val_fraction above 0 (e.g. --set val_fraction=0.15)")
        return

    card = load_card(source)
    frame = read_manifest(card)[0]
    column = frame["split"] if "split" in frame.columns else pd.Series([], dtype=str)
    counts = column.astype(str).str.strip().value_counts()
    if not counts.get("val", 0) or not counts.get("train", 0):
        shown = ", ".join(f"{k or '(empty)'} {v}" for k, v in counts.items()) or "no split column"
        raise UserError(f"split_by='column', but the manifest's split column leaves the "
                        f"{'validation' if not counts.get('val', 0) else 'training'} split "
                        f"empty ({shown}), so no trial could be trained and scored",
                        where=f"{card.manifest}: split",
                        fix="mark some rows `val` (and some `train`) in the split column, or "
                            "split by tone_id (--set split_by=tone_id)")


def _stratify_by_camera(order: np.ndarray, keys: pd.Series, cameras: np.ndarray
                        ) -> tuple[np.ndarray, int]:
    """(groups re-ordered, number that may leave train): the held-out candidates first, camera
    by camera in turn (round robin, in shuffled order), then one kept session per camera."""
    cam = pd.Series(cameras, index=keys.index).groupby(keys.to_numpy()).agg(
        lambda c: c.value_counts().index[0])  # a session's camera: its most common one
    queues: dict[str, list] = {}
    for g in order:
        queues.setdefault(str(cam[g]), []).append(g)
    kept = [q[0] for q in queues.values()]
    rest = [q[1:] for q in queues.values()]
    pool = [q[r] for r in range(max(map(len, rest), default=0)) for q in rest if r < len(q)]
    return np.array(pool + kept, dtype=order.dtype), len(pool)


def _stratify_by_ita(order: np.ndarray, keys: pd.Series, frame: pd.DataFrame, strata: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Groups re-ordered so that every run of `strata` consecutive groups holds one tone from
    each ITA stratum (equal-count bins, dark to light): the cut then takes each held-out split
    from across the whole range of skin tones."""
    lab = frame[["target_L", "target_b"]].apply(pd.to_numeric, errors="coerce")
    per = lab.groupby(keys.to_numpy()).median()
    ita = np.degrees(np.arctan2(per["target_L"] - 50.0, per["target_b"])).reindex(order)
    if ita.isna().any() or strata <= 1:
        return order
    ranked = order[np.argsort(ita.to_numpy(), kind="stable")]
    bins = [list(b) for b in np.array_split(ranked, min(strata, len(ranked)))]
    for b in bins:
        rng.shuffle(b)
    depth = max(map(len, bins))
    return np.array([b[r] for r in range(depth) for b in bins if r < len(b)], dtype=order.dtype)


def groups_by_split(frame: pd.DataFrame, by: str, split: np.ndarray) -> dict[str, list[str]]:
    """{split: sorted group values}: which sessions (or cameras, tones) went where."""
    if by not in frame.columns:
        return {}
    keys = frame[by].astype(str).str.strip().to_numpy()
    return {name: sorted(set(keys[split == name]), key=_natural) for name in SPLITS}


def _natural(v: str):
    return (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v)


def _explicit(frame: pd.DataFrame) -> np.ndarray:
    if "split" not in frame.columns:
        raise UserError("split_by='column' but the manifest has no `split` column",
                        where="splits", fix="add a split column with train/val/test")
    s = frame["split"].astype(str).str.strip()
    bad = ~s.isin(SPLITS)
    if bad.any():
        ids = frame["sample_id"][bad].tolist()
        raise UserError(f"{bad.sum()} row(s) have no valid split value: "
                        f"{', '.join(map(str, ids[:20]))}", where="splits",
                        fix=f"set split to one of {SPLITS} in every row")
    return s.to_numpy().astype(str)


def write(sample_id: np.ndarray, split: np.ndarray, directory: Path, header: dict
          ) -> tuple[Path, str]:
    """Write `split_<id>.csv` (sample_id,split) and its JSON sidecar; return (csv path, id).

    The id is a hash of the assignment itself, so equal splits share an id whatever produced
    them, and an MLflow tag of it pins the exact test set.
    """
    table = pd.DataFrame({"sample_id": sample_id, "split": split}).to_csv(index=False)
    split_id = hashlib.sha256(table.encode()).hexdigest()[:12]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"split_{split_id}.csv"
    counts = {k: int((split == k).sum()) for k in SPLITS}
    side = {"split_id": split_id, **header, "counts": counts}
    if not path.exists():
        for target, text in ((path.with_suffix(".json"), json.dumps(side, indent=2)),
                             (path, table)):
            # a unique temp name: parallel trials may write the same split at the same time
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(text)
            tmp.replace(target)
    return path, split_id


def read(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """A split file and its sidecar header."""
    path = Path(path)
    return pd.read_csv(path, dtype=str), json.loads(path.with_suffix(".json").read_text())
