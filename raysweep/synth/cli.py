"""`python -m raysweep.synth`: generate the synthetic dataset, or write its calibration report.

    python -m raysweep.synth --out DIR [--sets 15] [--tones 138] [--cameras 3] [--size 256]
                             [--seed 0] [--workers N] [--overwrite]
    python -m raysweep.synth --report DIR          # DIR/report/report.md + PNGs
    python -m raysweep.synth --smoke-test          # a tiny dataset and report in a temp folder
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence

from ..errors import run_cli, setup_logging
from .context import GeneratorConfig


def build_parser() -> argparse.ArgumentParser:
    d = GeneratorConfig()
    p = argparse.ArgumentParser(
        prog="python -m raysweep.synth",
        description="Physically based synthetic skin-swatch photos with EXIF, a manifest and a "
                    "dataset card; or a calibration report of such a dataset.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", help="folder to create (must be new or empty, see --overwrite)")
    mode.add_argument("--report", metavar="DIR", help="write DIR/report/ for a generated dataset")
    mode.add_argument("--smoke-test", action="store_true",
                      help="generate a tiny dataset and its report in a temporary folder")
    p.add_argument("--sets", type=int, default=d.sets, help="capture sessions (one light, one camera)")
    p.add_argument("--tones", type=int, default=d.tones, help="skin tones photographed in every set")
    p.add_argument("--cameras", type=int, default=d.cameras, help="cameras, assigned to sets in turn")
    p.add_argument("--size", type=int, default=d.size, help="image side in pixels")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--oracle-limit", type=int, default=300,
                   help="report: photos scored by the latent-aware oracle (0 = all)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    from .generate import generate
    from .report import write_report

    progress = not args.no_progress
    if args.smoke_test:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = GeneratorConfig(seed=args.seed, sets=3, tones=4, cameras=args.cameras, size=64)
            card = generate(os.path.join(tmp, "synth"), cfg, workers=1, progress=progress)
            report = write_report(card.parent, oracle_limit=12, progress=progress)
            print(f"smoke test ok: {card} and {report}")
        return 0
    if args.report:
        path = write_report(args.report, oracle_limit=args.oracle_limit or None, progress=progress)
        print(path)
        return 0
    cfg = GeneratorConfig(seed=args.seed, sets=args.sets, tones=args.tones,
                          cameras=args.cameras, size=args.size)
    card = generate(args.out, cfg, workers=args.workers, overwrite=args.overwrite,
                    progress=progress)
    print(card)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))



