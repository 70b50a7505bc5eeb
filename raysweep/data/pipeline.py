"""From a dataset card (photos + labels sheet) to a `Prepared` dataset, cached.

`load_prepared(...)` is the library entry point (ARCHITECTURE.md): the first call decodes, reads
EXIF, crops all four variants and measures the background ring in parallel and caches them;
later calls read the cache. Bad rows are all collected first, then either stop everything in
one message or (skip_bad) go to rejects.csv: a row is never dropped silently. `card_from_labels`
writes a card for a folder of photos and a labels sheet (`python -m raysweep.prepare`).
"""


from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from raysweep.config import CROPS
from raysweep.data import cache, features, images, manifest, ring, splits
from raysweep.data import exif_reader as exif
from raysweep.data.card import CARD_NAME, Card, check_illuminant, load_card, write_card
from raysweep.data.crop import VARIANTS, CropParams
from raysweep.data.prepared import META_NAMES, RING_NAMES, Prepared, SplitSettings
from raysweep.errors import UserError, unknown_name

log = logging.getLogger(__name__)


def load_prepared(source: str | Path, crop: str = "adaptive_bg", size: int = 64,
                  split: SplitSettings = SplitSettings(), cache_dir: str | Path | None = None,
                  *, skip_bad: bool | None = None, workers: int | None = None,
                  progress: bool = True) -> Prepared:
    """The prepared dataset of a card (file or folder); see ARCHITECTURE.md ("data/").

    skip_bad=None follows the card's `skip_bad:` (default False: bad rows stop with one message).
    """
    if crop not in CROPS:
        raise unknown_name("crop", crop, CROPS, where="load_prepared")
    card = load_card(source)
    folder, arrays, frame, info = prepare(card, size, cache_dir, skip_bad, workers, progress)
    split_by = split.split_by
    assigned = splits.assign(frame, split_by, split.val_fraction, split.test_fraction,
                             split.seed, info["content_hash"])
    split_dir = Path(info["cache_dir"]) / "splits"
    header = {"by": split_by, "val_fraction": split.val_fraction,
              "test_fraction": split.test_fraction, "seed": split.seed,
              "content_hash": info["content_hash"], "card": str(card.path)}
    if split_by in ("set_id", "camera"):  # few groups: say which went where
        went = splits.groups_by_split(frame, split_by, assigned)
        header["groups"] = went
        header["cameras"] = {k: sorted(set(arrays["camera"][assigned == k])) for k in went}
        log.info("split_by=%s: %s", split_by, "; ".join(
            f"{k} {', '.join(v) or '-'} (cameras {', '.join(header['cameras'][k]) or '-'})"
            for k, v in went.items()))
    split_file, split_id = splits.write(arrays["sample_id"], assigned, split_dir, header)
    imgs = None if info["tabular"] else cache.load_variant(folder, crop, size)
    if "split" in frame and split_by != "column":  # keep the manifest's own column visible
        frame = frame.rename(columns={"split": "manifest_split"})
    frame = frame.assign(split=assigned)
    info = {**info, "split_file": str(split_file), "split_id": split_id,
            "crop": None if info["tabular"] else crop, "size": size, "split_by": split_by}
    return Prepared(sample_id=arrays["sample_id"], images=imgs, mean_lab=arrays["mean_lab"],
                    meta=arrays["meta"], camera=arrays["camera"], device=arrays["device"],
                    target=arrays["target"], split=assigned, frame=frame, info=info,
                    ring=arrays["ring"] if info.get("has_ring") else None)


def prepare(card: Card, size: int = 128, cache_dir: str | Path | None = None,
            skip_bad: bool | None = None, workers: int | None = None, progress: bool = True,
            params: CropParams | None = None) -> tuple[Path, dict, pd.DataFrame, dict]:
    """Make sure the cache holds this dataset at `size`; return (folder, arrays, frame, info)."""
    if size < 8:
        raise UserError(f"crop size {size} is too small", where="--size", fix="use 8 or more")
    params = params or CropParams(size=size)
    skip_bad = card.skip_bad if skip_bad is None else skip_bad
    root_cache = Path(cache_dir) if cache_dir else card.root / ".raysweep_cache"
    frame, problems, content_hash = manifest.read_manifest(card)
    bad = manifest.find_bad_rows(frame, card.root, problems)
    rels = _photo_paths(frame)
    tabular = not any(rels)
    folder = root_cache / cache.cache_key(content_hash, card.root, rels, params)
    if cache.is_complete(folder, size, tabular):
        arrays, out, rejects, info = cache.load_table(folder, size)
        info["cached"] = True
    else:
        arrays, out, rejects, info = _build(card, frame, bad, folder, params, tabular, workers,
                                            progress)
        info.update(content_hash=content_hash, cache_key=folder.name, cached=False)
        cache.save_table(folder, size, arrays, out, rejects, info)
    info["cache_dir"] = str(root_cache)
    if len(rejects):
        path = cache.rejects_path(folder, size)
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            rejects.to_csv(tmp, index=False)
            tmp.replace(path)
        info.update(rejects_file=str(path))
        if not skip_bad:
            raise manifest.bad_rows_error(rejects, str(card.manifest), path)
        log.warning("skipped %d bad row(s) of %d; reasons in %s", len(rejects),
                    len(rejects) + len(out), path)
    if not len(out):
        raise UserError("no usable rows are left", where=str(card.manifest),
                        fix="see the rejects file for why each row was refused")
    return folder, arrays, out, info


def photos_and_ring(source: str | Path) -> tuple[bool, bool]:
    """Whether a card's data has photos, and ring statistics, from its manifest alone (no photo
    decoded, so a sweep can ask before Ray starts), decided as `prepare` does: a photo's ring is
    measured around its patch, a spreadsheet has one only if it carries every ring_* column."""
    frame = manifest.read_manifest(load_card(source))[0]
    photos = any(_photo_paths(frame))
    return photos, photos or ring.from_frame(frame) is not None


def _photo_paths(frame: pd.DataFrame) -> list[str]:
    """Each row's photo path, "" where none (a manifest without any is tabular)."""
    return frame["image"].tolist() if "image" in frame else [""] * len(frame)


def _build(card: Card, frame: pd.DataFrame, bad: dict[int, list[str]], folder: Path,
           params: CropParams, tabular: bool, workers: int | None, progress: bool):
    n = len(frame)
    todo = [i for i in range(n) if i not in bad and not tabular]
    results: dict[int, dict] = {}
    writers = {} if tabular else {v: cache.VariantWriter(folder, v, params.size, n)
                                  for v in VARIANTS}
    t0 = time.perf_counter()
    try:
        tasks = [(i, str(card.root / os.path.normpath(frame["image"][i])), params) for i in todo]
        for r in _run(tasks, workers, progress):
            if r["error"]:
                bad.setdefault(r["i"], []).append(r.pop("error"))
                continue
            for v in VARIANTS:
                writers[v].array[r["i"]] = r["crops"][v]
            r.pop("crops")
            results[r["i"]] = r
        worker_cpu = sum(r["cpu_s"] for r in results.values())
        keep = np.array([i not in bad for i in range(n)], bool)
        for w in writers.values():
            w.commit(keep)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    rejects = manifest.rejects_frame(frame, bad)
    out = _frame_out(frame, results, keep)
    measured = None if tabular else np.stack([results[i]["mean_lab"] for i in np.flatnonzero(keep)]
                                             ) if keep.any() else np.zeros((0, 3))
    mean_lab, mean_src = features.mean_lab(out, measured)
    out["mean_source"] = mean_src
    # Photos: measured around each found patch. Spreadsheets: only if they carry the columns.
    if tabular:
        rings = ring.from_frame(out)
    else:
        rings = np.stack([results[i]["ring"] for i in np.flatnonzero(keep)]) if keep.any() \
            else None
    has_ring = rings is not None
    if rings is None:
        rings = np.full((len(out), len(RING_NAMES)), np.nan, np.float32)
    arrays = {"sample_id": out["sample_id"].to_numpy().astype(str), "mean_lab": mean_lab,
              "meta": features.meta_matrix(out), "ring": rings.astype(np.float32),
              "camera": features.camera_ids(out),
              "device": features.device_text(out),
              "target": out[list(manifest.TARGET)].to_numpy(np.float32)}
    _log_warnings(out)
    info = {"card": str(card.path), "size": params.size, "tabular": tabular, "n_rows": int(n),
            "n_kept": int(keep.sum()), "n_rejected": len(rejects), "meta_names": list(META_NAMES),
            "has_ring": has_ring, "ring_names": list(RING_NAMES),
            "prep_version": cache.PREP_VERSION, "prepare_s": round(time.perf_counter() - t0, 2),
            "worker_cpu_s": round(worker_cpu, 2),
            "params": vars(params)}
    return arrays, out, rejects, info


def _run(tasks: list, workers: int | None, progress: bool):
    """Results in any order, with a progress bar; serial for small jobs (no pool start-up)."""
    workers = max(1, workers or os.cpu_count() or 1)
    bar = tqdm(total=len(tasks), desc="prepare", unit="img", file=sys.stderr,
               disable=not progress or not tasks, mininterval=0.5)
    if workers == 1 or len(tasks) < 64:
        for t in tasks:
            yield images.process(t)
            bar.update()
    else:
        # forkserver (spawn where missing): fresh children. fork would be faster to start but
        # deadlocks as soon as the parent has used OpenCV's thread pool.
        ctx = get_context("forkserver" if "forkserver" in get_all_start_methods() else "spawn")
        done = 0
        try:
            with ProcessPoolExecutor(workers, mp_context=ctx,
                                     initializer=images.init_worker) as pool:
                chunk = max(1, min(32, len(tasks) // (8 * workers)))
                for r in pool.map(images.process, tasks, chunksize=chunk):
                    yield r
                    done += 1
                    bar.update()
        except BrokenProcessPool as e:
            # e.g. the caller's __main__ cannot be re-imported (`python - < script`): slower,
            # but the same result.
            log.warning("worker processes failed (%s); continuing in this process", e)
            for t in tasks[done:]:
                yield images.process(t)
                bar.update()
    bar.close()


def _frame_out(frame: pd.DataFrame, results: dict[int, dict], keep: np.ndarray) -> pd.DataFrame:
    """The kept manifest rows with merged metadata, its sources and where each crop was cut."""
    rows = []
    records = frame.to_dict("records")
    for i in np.flatnonzero(keep):
        row = records[i]
        r = results.get(int(i), {})
        values, source = exif.merge({f: row.get(f) for f in exif.FIELDS}, r.get("exif", {}))
        row.update(values)
        row.update({f"src_{f}": s for f, s in source.items()})
        row["prep_warnings"] = "; ".join(r.get("warnings", []) + r.get("exif_notes", []) +
                                         [n for n in [row.pop("manifest_notes", "")] if n])
        if r:
            row.update(crop_status=r["status"], crop_bad_fraction=r["bad_fraction"],
                       image_width=r["width"], image_height=r["height"])
            for name, box in {**r["boxes"], "patch": r["patch_box"]}.items():
                row.update({f"{name}_{k}": v for k, v in zip(("x0", "y0", "x1", "y1"), box)})
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else list(frame.columns))


def _log_warnings(out: pd.DataFrame) -> None:
    if not len(out):
        return
    conv = out["prep_warnings"].str.contains("RGBA|16-bit|converted", regex=True)
    if conv.any():
        log.warning("%d image(s) were converted (see the frame column prep_warnings), e.g. "
                    "%s: %s", conv.sum(), out["sample_id"][conv].iloc[0],
                    out["prep_warnings"][conv].iloc[0])
    none = (out[[f"src_{f}" for f in exif.NUMERIC]] == "missing").all(1)
    if none.any():
        log.warning("%d row(s) have no camera metadata from EXIF or the manifest (e.g. %s): "
                    "their meta features are missing (NaN), not zero", none.sum(),
                    out["sample_id"][none].iloc[0])


def write_debug_crops(card: Card, frame: pd.DataFrame, n: int, out_dir: Path,
                      params: CropParams) -> list[Path]:
    """Overlay PNGs for n rows spread over the dataset (first, last and evenly between)."""
    rows = [i for i in range(len(frame)) if str(frame.get("image", [""] * len(frame))[i])]
    pick = [rows[j] for j in np.unique(np.linspace(0, len(rows) - 1, min(n, len(rows))).round()
                                       .astype(int))] if rows else []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in pick:
        sid = str(frame["sample_id"][i])
        try:
            rgb = images.decode(card.root / os.path.normpath(frame["image"][i]))[0]
        except images.BadImage as e:
            log.warning("no debug crop for %s: %s", sid, e)
            continue
        pic = images.overlay(rgb, params, title=f"{sid}  {frame['image'][i]}")
        path = out_dir / f"{''.join(c if c.isalnum() or c in '-_' else '_' for c in sid)}.png"
        cv2.imwrite(str(path), pic[..., ::-1])
        written.append(path)
    return written


def card_from_labels(images_dir: str | Path, labels: str | Path, columns: str = "",
                     illuminant: str = "D65", card_out: str | Path | None = None,
                     skip_bad: bool = False) -> Path:
    """The `--images DIR --labels CSV` shortcut: write DIR/dataset.yaml and return its path."""
    root = Path(images_dir).expanduser().resolve()
    if not root.is_dir():
        raise UserError(f"images folder {root} does not exist", where="--images")
    labels = Path(labels).expanduser().resolve()
    if not labels.is_file():
        raise UserError(f"labels file {labels} does not exist", where="--labels")
    if not labels.is_relative_to(root):
        raise UserError(f"the labels sheet {labels} is outside the images folder {root}",
                        where="--labels", fix=f"copy it in (`cp {labels} {root}/`) and pass "
                                              "that copy: a dataset folder is self-contained")
    check_illuminant(illuminant.upper(), "--illuminant")
    mapping = {}
    for item in filter(None, (s.strip() for s in columns.split(","))):
        if "=" not in item:
            raise UserError(f"--columns item {item!r} is not NAME=contract_name",
                            where="--columns", fix='e.g. --columns "L-true=target_L,photo=image"')
        user, contract = (s.strip() for s in item.split("=", 1))
        mapping[user] = contract
    path = Path(card_out).expanduser().resolve() if card_out else root / CARD_NAME
    if path.parent != root:
        raise UserError("the card must sit in the images folder: image paths are relative to it",
                        where="--card-out", fix=f"write it as {root / CARD_NAME} or another "
                                                 f"name in {root}")
    card = Card(path=path, manifest=labels, name=root.name, columns=mapping,
                illuminant=illuminant.upper(), skip_bad=skip_bad)
    if path.exists() and "generated_by: raysweep.prepare" not in path.read_text():
        raise UserError(f"{path} exists and was not written by raysweep", where="--card-out",
                        fix="use it with --card, or pick another name with --card-out")
    write_card(card)
    load_card(path)  # validates the mapping against the contract before any work
    return path
