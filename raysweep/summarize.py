"""`python -m raysweep.summarize`: every trial of one or two sweeps, as CSV and Markdown.

    python -m raysweep.summarize --experiment fusion --out summary/
    python -m raysweep.summarize --compare fusion@sweep-a fusion@sweep-b

A sweep is named by its experiment (all its sweeps), `EXPERIMENT@SWEEP_NAME`, or a parent run
id. Each trial's score is its BEST validation dE00 over epochs (the epoch whose checkpoint was
kept), not the last one, which early stopping and noisy epochs make arbitrary. The Markdown groups
the trials by fusion, backbone, features and crop: how many ran, how many finished, the best and
the median of the group; last, each sweep's most important parameters (fANOVA over its
finished trials, raysweep.tracking.importance).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from raysweep.errors import UserError, run_cli, setup_logging
from raysweep.evaluate.trials import METRIC, markdown, summarize, write_outputs
from raysweep.fsutil import check_writable
from raysweep.tracking import importance
from raysweep.tracking.store import store_errors, tracking_uri


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m raysweep.summarize", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", help="MLflow experiment (study) name")
    ap.add_argument("--parent-run", help="one sweep, by its parent run id")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"),
                    help="two sweeps: experiment, EXPERIMENT@SWEEP_NAME or parent run id each")
    ap.add_argument("--out", default="summary", help="folder for runs.csv and summary.md")
    ap.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI or ./mlruns.db")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.debug)
    check_writable(args.out, "--out", folder=True)  # before the store is read
    with store_errors(args.tracking_uri or tracking_uri()):
        df = summarize(args.experiment, args.compare or (), args.parent_run, args.tracking_uri)
    if df.empty:
        raise UserError("no trial runs found", where=args.experiment or args.parent_run or
                        str(args.compare), fix="run `python -m raysweep.search` first")
    title = " vs ".join(args.compare) if args.compare else (args.experiment or args.parent_run)
    compare = bool(args.compare)
    written = write_outputs(df, Path(args.out), f"Sweep summary: {title}", compare)
    print(markdown(df, f"Sweep summary: {title}", compare))
    print(importance.markdown(importance.per_sweep(df, METRIC)))
    print(f"wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))

