"""Time `prepare` on the default synthetic set: 2,070 photos at 256 px, all four crop variants.

Target: at most 60 s on a 2-core machine, and a second load from the cache near-instant. The
same folder is prepared with 2 worker processes and with 1 (fresh cache folders), so the
parallel speed-up is a ratio measured side by side.

    python -m benchmarks.prepare_speed [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from raysweep.data.prepare import load_prepared

SETS, TONES, QUICK_TONES, SIZE = 15, 138, 14, 128


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(quick: bool = False) -> str:
    from raysweep.synth.context import GeneratorConfig
    from raysweep.synth.generate import generate

    tones = QUICK_TONES if quick else TONES
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        card, gen_s = _timed(lambda: generate(root / "synth", GeneratorConfig(
            sets=SETS, tones=tones, size=256), workers=2, progress=False))
        rows = []
        for workers in (2, 1):
            cache = root / f"cache_w{workers}"
            data, cold = _timed(lambda w=workers, c=cache: load_prepared(
                card, crop="adaptive_bg", size=SIZE, cache_dir=c, workers=w, progress=False))
            again, warm = _timed(lambda c=cache: load_prepared(
                card, crop="adaptive_bg", size=SIZE, cache_dir=c, progress=False))
            assert again.info["cached"] and not data.info["cached"]
            size_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2 ** 20
            rows.append((workers, len(data), cold, warm, size_mb))
    n = rows[0][1]
    speedup = rows[1][2] / rows[0][2]
    lines = [
        "## prepare speed (decode + EXIF + adaptive analysis + 4 crop variants + cache)",
        "",
        f"{n} synthetic photos at 256 px ({SETS} sets x {tones} tones, generated in "
        f"{gen_s:.0f} s, not counted), crops at {SIZE} px, all four variants written. "
        "Cold = first `load_prepared` into an empty cache folder; warm = the same call again.",
        "",
        "| workers | photos | cold (s) | photos/s | warm load (s) | cache size (MB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {w} | {k} | {c:.1f} | {k / c:.0f} | {wm:.2f} | {mb:.0f} |"
          for w, k, c, wm, mb in rows],
        "",
        f"Parallel speed-up with 2 workers: {speedup:.2f}x (same run, same data). Target: "
        f"2,070 photos in at most 60 s on 2 cores"
        + ("" if quick else f": {'met' if rows[0][2] <= 60 else 'MISSED'} ({rows[0][2]:.1f} s)")
        + ".",
        "",
        f"Machine: {os.cpu_count()} CPU cores, shared with other jobs while measured (absolute "
        "times are noisy; the ratio is side by side). Command: "
        f"`python -m benchmarks.prepare_speed{' --quick' if quick else ''}`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = run(quick="--quick" in sys.argv)
    print(text)
    out = Path(__file__).parent / "results" / "prepare_speed.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
