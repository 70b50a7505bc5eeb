"""`python -m raysweep.predict PHOTO...`: Lab, sRGB hex and skin-tone category of new photos.

    python -m raysweep.predict a.jpg b.jpg       # the most recently registered champion
    python -m raysweep.predict a.jpg b.jpg --model models:/fusion@champion
    python -m raysweep.predict photos/*.jpg --model runs/ckpt --meta meta.csv --format json

Each photo goes through the same steps as a prepared dataset (raysweep.data: EXIF, patch
analysis, crop at the model's crop and size) and then through the model. `--meta` adds or
overrides metadata per photo (a CSV with a `photo` column holding the file name or path and any
contract columns: camera, iso, exposure_time_s, f_number, brightness_ev, exposure_bias_ev,
make, model, mean_L/a/b; and set_id, the capture session). The CSV wins over EXIF, as the manifest does in `prepare`.

Every prediction carries an error bound, "dE00 <= B" at the level the champion was calibrated at
(`--level` asks for another), for the regime it holds in: a photo from a NEW capture session (the
default: the bound calibrated on sessions the model never trained on), or, when `--meta` gives
the photo's `set_id` and that session was in training, a seen session; the output says which
(`bound_regime`, and a line on stderr). Named flags mark photos unlike the training data
(unseen_camera, exposure/iso/brightness_out_of_range, patch_not_found, clipped_patch,
unusual_background, light_unlike_training); a summary line on stderr says how many were flagged
and why. A PHOTO may also be a folder (its
images) or a manifest (CSV/Parquet with an `image` or `photo` column, or a dataset.yaml): then
the per-photo results go to a CSV (`--out`, default predictions.csv). A spreadsheet without
photos (CSV/Parquet or dataset.yaml with mean_L/a/b, the metadata columns and optionally set_id
and ring_*, no photo column) is the tabular path: each row is predicted by a model that reads no
image (searched with `--space tabular`), with its bound and the flags a row can be checked for.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from raysweep.errors import UserError, run_cli, setup_logging
from raysweep.serve.output import FORMATS


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m raysweep.predict", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", nargs="+", metavar="PHOTO")
    ap.add_argument("--model", help="models:/NAME@champion, runs:/ID/model, a checkpoint "
                                    "folder or the champion/ folder of an eval_winners report "
                                    "(default: the most recently registered champion)")
    ap.add_argument("--meta", help="CSV of per-photo metadata (column `photo` + contract columns)")
    ap.add_argument("--format", choices=FORMATS, default="table")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--keep-going", action="store_true",
                    help="skip unreadable photos (reported on stderr) instead of stopping")
    ap.add_argument("--level", type=float, default=None,
                    help="confidence level of the dE00 bound (default: the calibrated one, 0.9)")
    ap.add_argument("--out", help="write the per-photo CSV here (default for a folder or "
                                  "manifest input: predictions.csv)")
    ap.add_argument("--debug", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    if args.level is not None and not 0 < args.level < 1:
        raise UserError(f"--level must be between 0 and 1, got {args.level}", fix="e.g. --level 0.95")
    # --help and a bad flag answer at once; the model stack takes seconds to import
    # lazy: torch and OpenCV load once the flags parse
    from raysweep.serve import photos

    return photos.run(args)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
