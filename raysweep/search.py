"""`python -m raysweep.search`: a hyper-parameter sweep with Ray Tune, Optuna TPE, ASHA and MLflow.

    python -m raysweep.search --space quickstart            # laptop: starts a local Ray
    ray job submit --working-dir . -- python -m raysweep.search --space fusion   # a cluster

Everything a user can get wrong (space, parameter names, values, storage, tracking server) is
checked before Ray starts. Trials run the one training loop in the Tune trial process (reused
across trials), or in a TorchTrainer when a trial asks for several workers. MLflow gets one
parent run per invocation and one child per trial; `--resume` continues an interrupted sweep
into the same runs.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from raysweep.errors import run_cli, setup_logging
from raysweep.sweep import results
from raysweep.sweep.spec import DEFAULT_STORAGE, Request
from raysweep.sweep.strategy import SAMPLERS

if TYPE_CHECKING:
    from raysweep.sweep.run import SweepResult

log = logging.getLogger("raysweep.search")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raysweep.search", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", help="a study in search_spaces/ (e.g. quickstart, fusion) or a "
                                   ".py file; with --resume, default: the sweep's own")
    p.add_argument("--data", help="dataset card or folder (default: the synthetic dataset)")
    p.add_argument("--num-samples", type=int, help="trials to run (default: the space's)")
    p.add_argument("--max-concurrent", type=int,
                   help="trials at once (default: what fits; on an autoscaling cluster, what "
                        "its node groups hold at their maximum size)")
    p.add_argument("--workers-per-trial", type=int, help="DDP workers per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs for the whole trial, split evenly across its workers: 0.25 "
                        "packs 4 one-worker trials on a GPU; with --workers-per-trial 4, "
                        "pass 4 for one GPU per worker (default: 0.25 for one worker, 1 per "
                        "worker for DDP, when the cluster or its node groups have GPUs; "
                        "else 0)")
    p.add_argument("--cpus-per-worker", type=float,
                   help="CPUs for each worker of a trial (default 1; one-worker trials: the "
                        "trial's CPUs)")
    p.add_argument("--storage", help="checkpoint storage: a folder, or a URI such as "
                   f"s3://BUCKET/raysweep (default {DEFAULT_STORAGE}; a cluster with more "
                   "than one node needs shared storage, see infra/README.md)")
    p.add_argument("--name", help="sweep name (default: SPACE-DATE-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the sweep --name")
    p.add_argument("--seed", type=int, help="seed of the TPE sampler (default 0)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a parameter for every trial (repeatable), e.g. --set lr=1e-3")
    p.add_argument("--grace-period", type=int, help="ASHA: epochs before a trial can be stopped")
    p.add_argument("--reduction-factor", type=int, help="ASHA: keep 1/N at each rung")
    p.add_argument("--brackets", type=int,
                   help="asynchronous Hyperband: N brackets, each trial in one, the k-th with "
                        "its first rung at grace * factor**k (default 1: plain ASHA)")
    p.add_argument("--searcher", choices=SAMPLERS, default="tpe",
                   help="Optuna TPE (default) or random sampling, as a baseline")
    p.add_argument("--no-early-stopping", dest="early_stopping", action="store_false",
                   help="run every trial to its last epoch (no ASHA), as a baseline")
    p.add_argument("--max-failures", type=int, default=1,
                   help="retries of a trial whose process died (default 1)")
    p.add_argument("--smoke-test", action="store_true", help="2 trials of 2 epochs")
    p.add_argument("--eval-winners", action="store_true",
                   help="re-evaluate the leaders on the test split afterwards")
    p.add_argument("--debug", action="store_true", help="tracebacks and Tune's own output")
    return p


def run_sweep(request: Request, verbose: int = 0) -> SweepResult:
    """The sweep library's `run_sweep`, imported when a sweep starts (the command's test seam)."""
    # lazy: Ray and Optuna (5-10 s of imports) load once the flags parse: --help answers at once
    from raysweep.sweep.run import run_sweep as run

    return run(request, verbose=verbose)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    for noisy in ("ray", "ray.tune", "ray.train", "mlflow", "alembic", "optuna"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.debug else logging.WARNING)
    out = run_sweep(Request.from_args(args), verbose=2 if args.debug else 0)
    print(results.leaderboard(out.table, out.metric, out.searched))
    print(f"\n{out.summary()}")
    from raysweep.sweep import console  # lazy: it loads Ray's Tune, which --help never needs

    evaluate = args.eval_winners and out.complete and console.any_finished(out)
    if not evaluate:
        print(console.where(out))  # else below the evaluation, beside its report
    if not out.complete:
        storage = f" --storage {args.storage}" if args.storage else ""
        print(f"The sweep was interrupted; continue it with: python -m raysweep.search "
              f"--resume --name {out.name}{storage}")
        return 130
    if not out.finished:
        log.error("no trial finished (%d failed): the sweep has no result to select from; each "
                  "trial's reason is in the error column of %s/results.csv", out.failed, out.path)
        return 1
    return _eval_winners(out) if evaluate else 0


def _eval_winners(out: SweepResult) -> int:
    """What the eval_winners command does next, so --eval-winners prints and exits the same way."""
    # lazy: the evaluation stack (torch, scipy, matplotlib: seconds) that a plain sweep never needs
    from raysweep import eval_winners
    from raysweep.evaluate.record import EvalSettings  # lazy: as above
    from raysweep.sweep import console  # lazy: it loads Ray's Tune, which --help never needs

    settings = EvalSettings(parent_run=out.parent_run_id, tracking_uri=out.tracking_uri)
    code = eval_winners.evaluate(settings)
    print(console.where(out, Path(settings.out).resolve() / "report.html"))
    return code


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
