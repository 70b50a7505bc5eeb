"""`python -m raysweep.eval_winners`: the sweep's leaders, re-evaluated on photos no selection saw.

    python -m raysweep.eval_winners                 # the most recent sweep
    python -m raysweep.eval_winners --experiment fusion --top-k 3 --out winners/

The leaders (by validation dE00), the classical baselines, the floors and the mean of the top
leaders are scored on the held-out test split with bootstrap intervals, breakdowns and paired
comparisons; the champion is picked on validation only (raysweep.evaluate.winners says how), its
error bound calibrated, and it is registered as the MLflow model NAME@champion.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from raysweep.errors import UserError, run_cli, setup_logging
from raysweep.fsutil import check_writable
from raysweep.tracking.store import store_errors, tracking_uri

if TYPE_CHECKING:
    from raysweep.evaluate.record import EvalSettings


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m raysweep.eval_winners", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--experiment", help="the study (MLflow experiment): all its sweeps "
                                          "(default: the most recent sweep, named in the log)")
    who.add_argument("--parent-run", help="one sweep, by its MLflow parent run id")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--per-group", default=",".join(("fusion", "backbone", "features", "crop")),
                    help="also evaluate the best run of each value of these (comma list, or '')")
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--data", help="dataset card (default: the one the sweep recorded)")
    ap.add_argument("--out", default="winners")
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--level", type=float, default=0.9,
                    help="confidence of the champion's error bound, calibrated on validation")
    ap.add_argument("--tracking-uri")
    ap.add_argument("--no-register", action="store_true",
                    help="log the evaluation run but register no model")
    ap.add_argument("--no-mlflow", action="store_true",
                    help="write the report only: no evaluation run, no registered model")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)
    setup_logging(args.debug)
    if not 0.5 <= args.level < 1.0:
        raise UserError(f"--level {args.level} is not a confidence level",
                        where="--level", fix="give a level in [0.5, 1), e.g. 0.9")
    # --help and a bad flag answer at once; the evaluation stack takes seconds to import
    # lazy: torch, scipy, matplotlib load once the flags parse
    from raysweep.evaluate.record import EvalSettings

    return evaluate(EvalSettings.from_args(args))


def evaluate(settings: EvalSettings) -> int:
    """Evaluate and print, as the command does (also `python -m raysweep.search
    --eval-winners`)."""
    from raysweep.evaluate.winners import run_eval_winners  # lazy: as EvalSettings in main

    check_writable(settings.out, "--out", folder=True)  # before minutes of evaluation
    with store_errors(settings.tracking_uri or tracking_uri(),
                      write=settings.log_run or settings.register):
        res = run_eval_winners(settings)
    s = res.summary.sort_values("mean")
    print(s[["model", "kind", "mean", "mean_lo", "mean_hi", "median", "p95"]].round(3)
          .to_string(index=False))
    # the scores above mean little without which photos they stand for (README: both regimes
    # named everywhere), and the table alone does not say
    print(f"\nchampion: {res.champion}\nregime: {res.regime or 'not recorded'}\n"
          f"report: {res.out_dir / 'report.html'}", file=sys.stderr)
    if res.model_uri:
        print(f"registered: {res.model_uri} (evaluation run {res.eval_run_id})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
