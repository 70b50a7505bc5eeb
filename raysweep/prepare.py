"""From a folder of photos and a labels sheet to a `Prepared` dataset, cached.

    python -m raysweep.prepare --card DATA/dataset.yaml [--size 128] [--skip-bad] [--workers N]
    python -m raysweep.prepare --images DATA --labels DATA/labels.csv \\
        --columns "L-true=target_L,a-true=target_a,b-true=target_b,photo=image"

The library entry point is `load_prepared(...)` (ARCHITECTURE.md): the first call decodes, reads
EXIF, crops all four variants in parallel and caches them; later calls read the cache. Bad rows
are all collected first, then either stop everything in one message or (skip_bad) go to
rejects.csv: a row is never dropped silently.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from raysweep.config import SPLIT_BY
from raysweep.data.card import card_path, load_card
from raysweep.data.crop import CropParams
from raysweep.data.demo import FOREIGN, make_folder
from raysweep.data.pipeline import card_from_labels, load_prepared, write_debug_crops
from raysweep.data.prepared import Prepared, SplitSettings
from raysweep.errors import UserError, run_cli, setup_logging


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m raysweep.prepare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("dataset (a card, or images + labels to write one)")
    src.add_argument("--card", help="dataset.yaml or the folder holding it")
    src.add_argument("--images", help="folder of photos (the card is written there)")
    src.add_argument("--labels", help="CSV or Parquet of labels (with --images)")
    src.add_argument("--columns", default="", help='"theirs=contract,..." e.g. "L-true=target_L"')
    src.add_argument("--illuminant", default="D65", help="ground truth convention: D65 or D50")
    src.add_argument("--card-out", help="where --images/--labels writes the card")
    ap.add_argument("--size", type=int, default=128, help="crop side in pixels (default 128)")
    ap.add_argument("--skip-bad", action="store_true",
                    help="leave bad rows out and list them in rejects.csv instead of stopping")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--debug-crops", type=int, default=0, metavar="N",
                    help="write N overlay PNGs showing where and why each crop was cut")
    ap.add_argument("--cache-dir", help="default: <dataset>/.raysweep_cache")
    ap.add_argument("--split-by", default="tone_id", choices=SPLIT_BY)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--test-fraction", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--smoke-test", action="store_true",
                    help="prepare a tiny drawn folder twice (second run from the cache) and exit")
    ap.add_argument("--debug", action="store_true", help="tracebacks and debug logging")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    if args.smoke_test:
        return _smoke_test(args)
    card = dataset_card(args)
    t0 = time.perf_counter()
    data = load_prepared(card, size=args.size, split=SplitSettings(
                             args.split_by, args.val_fraction, args.test_fraction, args.seed),
                         cache_dir=args.cache_dir,
                         skip_bad=True if args.skip_bad else None, workers=args.workers,
                         progress=not args.no_progress)
    print_prepared(data, args.size, time.perf_counter() - t0)
    if args.debug_crops:
        out = Path(data.info["cache_dir"]) / "debug_crops"
        written = write_debug_crops(load_card(card), data.frame, args.debug_crops, out,
                                    CropParams(size=args.size))
        print(f"  {len(written)} debug overlay(s) in {out}")
    return 0


def dataset_card(args: argparse.Namespace) -> Path:
    """--card, or the card --images and --labels write (said on stderr)."""
    if bool(args.card) == bool(args.images or args.labels):
        raise UserError("give either --card, or --images and --labels", where="arguments",
                        fix="see python -m raysweep.prepare --help")
    if args.card:
        return card_path(args.card)
    if not (args.images and args.labels):
        raise UserError("--images and --labels go together", where="arguments")
    card = card_from_labels(args.images, args.labels, args.columns, args.illuminant,
                            args.card_out, args.skip_bad)
    print(f"wrote {card}", file=sys.stderr)
    return card


def print_prepared(data: Prepared, size: int, seconds: float) -> None:
    """What was prepared and where it lies: rows, mode, cache, split, content hash, rejects."""
    info = data.info
    counts = ", ".join(f"{k} {len(data.indices(k))}" for k in ("train", "val", "test"))
    mode = "tabular (no images)" if info["tabular"] else f"4 crop variants at {size} px"
    took = "from the cache" if info["cached"] else f"in {seconds:.1f} s"
    print(f"prepared {len(data)} rows, {mode}, {took}"
          f"\n  cache: {Path(info['cache_dir']) / info['cache_key'] / str(size)}"
          f"\n  split {info['split_id']} ({counts}): {info['split_file']}"
          f"\n  content hash: {info['content_hash']}")
    if info.get("rejects_file"):
        print(f"  skipped {info['n_rejected']} bad row(s): {info['rejects_file']}")


def _smoke_test(args) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        labels, _ = make_folder(root, n=8, size=96)
        card = card_from_labels(root, labels, FOREIGN)
        t0 = time.perf_counter()
        first = load_prepared(card, size=32, workers=1, progress=False)
        t1 = time.perf_counter()
        second = load_prepared(card, size=32, workers=1, progress=False)
        t2 = time.perf_counter()
        ok = second.info["cached"] and np.array_equal(first.images, second.images) and \
            first.images.shape == (8, 3, 32, 32)
        print(f"smoke test {'passed' if ok else 'FAILED'}: 8 photos prepared in {t1 - t0:.2f} s, "
              f"cached load {t2 - t1:.3f} s")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
