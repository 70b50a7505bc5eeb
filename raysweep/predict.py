"""`python -m raysweep.predict PHOTO...`: Lab, sRGB hex and skin-tone category of new photos.

    python -m raysweep.predict a.jpg b.jpg --model models:/fusion@champion
    python -m raysweep.predict photos/*.jpg --model runs/ckpt --meta meta.csv --format json

Each photo goes through the same steps as a prepared dataset (raysweep.data: EXIF, patch
analysis, crop at the model's crop and size) and then through the model. `--meta` adds or
overrides metadata per photo (a CSV with a `photo` column holding the file name or path and any
contract columns: camera, iso, exposure_time_s, f_number, brightness_ev, exposure_bias_ev,
make, model, mean_L/a/b). The CSV wins over EXIF, as the manifest does in `prepare`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from raysweep.errors import UserError, run_cli, setup_logging
from raysweep.serve.inference import (
    FORMATS,
    INVALID,
    format_output,
    geometry,
    predict_photos,
    read_meta_csv,
    read_photo,
)
from raysweep.serve.loading import load_predictor

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m raysweep.predict", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("photos", nargs="+", metavar="PHOTO")
    ap.add_argument("--model", default="models:/fusion@champion",
                    help="models:/NAME@champion, runs:/ID/model or a checkpoint folder")
    ap.add_argument("--meta", help="CSV of per-photo metadata (column `photo` + contract columns)")
    ap.add_argument("--format", choices=FORMATS, default="table")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--keep-going", action="store_true",
                    help="skip unreadable photos (reported on stderr) instead of stopping")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.debug)
    predictor = load_predictor(args.model, device=args.device)
    _, size = geometry(predictor)
    photos, names, failed = [], [], []
    from tqdm import tqdm

    for p in tqdm(args.photos, desc="photos", file=sys.stderr, disable=len(args.photos) < 8):
        try:
            photos.append(read_photo(p, size))
            names.append(p)
        except UserError as e:
            if not args.keep_going:
                raise
            failed.append(p)
            log.error("%s", e.message())
    if not photos:
        raise UserError("no readable photo among the arguments", fix="check the paths")
    overrides = read_meta_csv(args.meta, names) if args.meta else None
    out = predict_photos(predictor, photos, overrides)
    print(format_output(out, args.format))
    invalid = out.loc[out["ita_category"] == INVALID, "photo"].tolist()
    if invalid:
        # the rows stay in the output, flagged, but the command must not look successful
        log.error("the model gave no finite colour for %d of %d photos (%s): it has diverged; "
                  "use another model (re-run eval_winners, which refuses such models)",
                  len(invalid), len(out), ", ".join(invalid[:5]))
    return 1 if failed or invalid else 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
