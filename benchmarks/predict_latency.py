"""Prediction latency of `raysweep.predict`: milliseconds per photo, batch 1 and batch 32, smallcnn.

Two stages are timed separately, because they scale differently: the photo stage (decode, EXIF,
patch analysis and the four crops, exactly what `prepare` does per photo) costs the same per
photo at any batch size, while the model stage (feature encoding and the forward pass) is paid
per batch. The end-to-end figure is their sum per photo. Weights do not matter for latency, so
the model is trained for one epoch only.

    python -m benchmarks.predict_latency [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import Section, describe_machine, load_note, machine
from benchmarks import main as bench_main

BATCHES = (1, 32)
PHOTO_SIZE, CROP = 256, 64


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up: first calls pay allocation and lazy imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def run(quick: bool = False) -> Section:
    from raysweep.data.pipeline import load_prepared
    from raysweep.serve import inference
    from raysweep.synth.context import GeneratorConfig
    from raysweep.synth.generate import generate
    from raysweep.train import predictor
    from raysweep.train.loop import fit

    repeats = 3 if quick else 10
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        card = generate(Path(tmp) / "syn", GeneratorConfig(sets=3, tones=12, size=PHOTO_SIZE),
                        progress=False)
        data = load_prepared(card, crop="adaptive_bg", size=CROP, progress=False)
        cfg = dict(backbone="smallcnn", image_size=CROP, epochs=1, batch_size=32,
                   features="image+mean+meta", fusion="concat", device="cpu")
        res = fit(cfg, data, checkpoint_dir=str(Path(tmp) / "ckpt"))
        model = predictor.load(res.checkpoint_dir, device="cpu")
        paths = [str(Path(tmp) / "syn" / r) for r in data.frame["image"]]
        rows = []
        for batch in BATCHES:
            group = (paths * 2)[:batch]
            photos = [inference.read_photo(p, CROP) for p in group]
            photo_ms = _median_ms(lambda g=group: [inference.read_photo(p, CROP) for p in g],
                                  repeats) / batch
            model_ms = _median_ms(lambda ph=photos: inference.predict_photos(model, ph),
                                  repeats) / batch
            prepared, _ = inference.photos_to_prepared(photos, "adaptive_bg", CROP, None,
                                                     model.stats.cameras)
            forward_ms = _median_ms(lambda d=prepared: model.predict(d), repeats) / batch
            rows.append((batch, photo_ms, model_ms, forward_ms, photo_ms + model_ms))
    table = ["| batch | photo stage ms/photo | model stage ms/photo | of which encode+forward "
             "| end to end ms/photo | photos/s |", "|---|---|---|---|---|---|"]
    for batch, photo_ms, model_ms, forward_ms, total in rows:
        table.append(f"| {batch} | {photo_ms:.1f} | {model_ms:.2f} | {forward_ms:.2f} | "
                     f"{total:.1f} | {1000 / total:.0f} |")
    cmd = "python -m benchmarks.predict_latency" + (" --quick" if quick else "")
    return Section(data={"rows": [dict(zip(("batch", "photo_ms", "model_ms", "forward_ms",
                                            "total_ms"), r, strict=True)) for r in rows],
                         "repeats": repeats, "machine": machine()}, markdown="\n".join([
        "## Prediction latency (smallcnn, CPU)\n",
        f"Median of {repeats} repeats after a warm-up; {PHOTO_SIZE} px synthetic JPEGs with EXIF, "
        f"crop adaptive_bg at {CROP} px, features image+mean+meta, fusion concat. The photo "
        "stage (decode, EXIF, patch analysis, crops) is per photo at any batch size; the model "
        "stage (`predict_photos` minus the photo reading: Prepared assembly, feature encoding, "
        "forward) shrinks per photo with the batch.\n",
        *table, "",
        f"Machine: {describe_machine()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, run on the CPU; {load_note()}.\n",
        f"Command: `{cmd}`\n",
    ]))


if __name__ == "__main__":
    bench_main("predict_latency", run)
