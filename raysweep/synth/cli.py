"""`python -m raysweep.synth`: generate the synthetic dataset, check its calibration, or write
its datasheet.

    python -m raysweep.synth --out DIR [--sets 15] [--tones 138] [--cameras 3] [--size 256]
                             [--seed 0] [--profiles phone_a,phone_b,phone_c,sigma_stress]
                             [--trap-share 0.2] [--bias-share 0.01] [--manual-wb-share 0.01]
                             [--generator-version 3.0] [--awb-frame-share X]
                             [--light-drift-mired X] [--hand-shade-share X]
                             [--isp-saturation-sigma X] [--isp-hue-sigma-deg X]
                             [--workers N] [--overwrite]
    python -m raysweep.synth --calibrate DIR       # the calibration table vs real phones
    python -m raysweep.synth --report DIR          # DIR/report/report.md + PNGs
    python -m raysweep.synth --smoke-test          # a tiny dataset and report in a temp folder
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from ..errors import UserError, run_cli, setup_logging
from . import calibration
from .context import DRIFT_DEFAULTS, DRIFT_PARAMS, GeneratorConfig
from .datasheet import write_report
from .generate import CARD, generate
from .measure import measure


def build_parser() -> argparse.ArgumentParser:
    d = GeneratorConfig()
    p = argparse.ArgumentParser(
        prog="python -m raysweep.synth",
        description="Physically based synthetic skin-swatch photos with EXIF, a manifest and a "
                    "dataset card; their calibration against real phone photos; a datasheet.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", help="folder to create (must be new or empty, see --overwrite)")
    mode.add_argument("--calibrate", metavar="DIR",
                      help="print the calibration table of a generated dataset (exit 1 if a row fails)")
    mode.add_argument("--report", metavar="DIR", help="write DIR/report/ for a generated dataset")
    mode.add_argument("--smoke-test", action="store_true",
                      help="generate a tiny dataset and its report in a temporary folder")
    p.add_argument("--sets", type=int, default=d.sets, help="capture sessions (one light, one camera)")
    p.add_argument("--tones", type=int, default=d.tones, help="skin tones photographed in every set")
    p.add_argument("--cameras", type=int, default=d.cameras, help="cameras, assigned to sets in turn")
    p.add_argument("--size", type=int, default=d.size, help="image side in pixels")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--profiles", default=",".join(d.camera_profiles),
                   help="camera profiles in order (add sigma_stress for the stress camera)")
    p.add_argument("--trap-share", type=float, default=d.trap_share,
                   help="share of sessions on a coloured background")
    p.add_argument("--bias-share", type=float, default=d.exposure_bias_share,
                   help="share of photos with exposure compensation")
    p.add_argument("--manual-wb-share", type=float, default=d.manual_wb_share,
                   help="share of photos with a manual white-balance preset")
    p.add_argument("--generator-version", default=d.version, choices=sorted(DRIFT_DEFAULTS),
                   help="generator version (an older one reproduces its datasets)")
    for name in DRIFT_PARAMS:  # the per-photo drift; default: the version's (drift.py says why)
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=None,
                       help=f"per-photo drift (default {DRIFT_DEFAULTS[d.version][name]} in "
                            f"{d.version}, 0 in 2.0)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--oracle-limit", type=int, default=300,
                   help="report: photos scored by the oracles (0 = all)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def calibrate_dir(dataset: str | Path, compare=None) -> list[calibration.Row]:
    """The calibration table of a generated dataset, measured afresh from its photos.

    `compare(frame, measured) -> Row` adds the baselines' order on the tabular export (the
    command passes it: the baselines live in raysweep.evaluate, above this package)."""
    root = Path(dataset).expanduser()
    root = root.parent if root.is_file() else root
    if not (root / CARD).is_file():
        raise UserError(f"no {CARD} in {root}", where="--calibrate",
                        fix="pass a folder written by `python -m raysweep.synth --out DIR`")
    frame = pd.read_csv(root / yaml.safe_load((root / CARD).read_text())["manifest"])
    if "swatch_cx" not in frame:
        raise UserError(f"{root} is not a synthetic dataset (no swatch outline in its manifest)",
                        where="--calibrate", fix="calibrate a dataset this generator wrote")
    measured = measure(frame, root)["naive"]
    rows = calibration.calibrate(frame, measured)
    return rows if compare is None else [*rows, compare(frame, measured)]


def main(argv: Sequence[str] | None = None, compare=None) -> int:
    """The CLI; `compare` as in calibrate_dir (`python -m raysweep.synth` passes the baselines)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    progress = not args.no_progress
    if args.smoke_test:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = GeneratorConfig(seed=args.seed, sets=3, tones=4, cameras=args.cameras, size=64)
            card = generate(os.path.join(tmp, "synth"), cfg, workers=1, progress=progress)
            report = write_report(card.parent, oracle_limit=12, progress=progress)
            print(f"smoke test ok: {card} and {report}")
        return 0
    if args.calibrate:
        rows = calibrate_dir(args.calibrate, compare)
        print(calibration.markdown(rows))
        print(f"\ncalibration: {'PASS' if calibration.passed(rows) else 'FAIL'} "
              f"({sum(r.passed for r in rows)} of {len(rows)} rows)")
        return 0 if calibration.passed(rows) else 1
    if args.report:
        path = write_report(args.report, oracle_limit=args.oracle_limit or None, progress=progress)
        print(path)
        return 0
    cfg = GeneratorConfig(seed=args.seed, sets=args.sets, tones=args.tones, cameras=args.cameras,
                          size=args.size, camera_profiles=tuple(args.profiles.split(",")),
                          trap_share=args.trap_share, exposure_bias_share=args.bias_share,
                          manual_wb_share=args.manual_wb_share, version=args.generator_version,
                          **{n: getattr(args, n) for n in DRIFT_PARAMS})
    card = generate(args.out, cfg, workers=args.workers, overwrite=args.overwrite,
                    progress=progress)
    print(card)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
