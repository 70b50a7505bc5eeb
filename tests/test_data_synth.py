"""The synthetic generator's output goes through the same `prepare` path as real photos, and the
adaptive crop holds less background and shadow than the centre crop (measured from the
generator's own fields)."""

from __future__ import annotations

import numpy as np
import pytest

from raysweep.data.pipeline import load_prepared

synth = pytest.importorskip("raysweep.synth.generate")


@pytest.fixture(scope="module")
def synth_card(tmp_path_factory):
    from raysweep.synth.context import GeneratorConfig

    out = tmp_path_factory.mktemp("synth") / "ds"
    return synth.generate(out, GeneratorConfig(sets=6, tones=5, size=160), workers=1,
                          progress=False)


@pytest.mark.slow
def test_synthetic_set_prepares_and_adaptive_beats_centre(synth_card):
    from benchmarks.crop_quality import measure

    data = load_prepared(synth_card, size=32, progress=False)
    assert len(data) == 30 and data.images.shape == (30, 3, 32, 32)
    assert (data.frame["src_iso"] == "manifest").all()  # the manifest wins over EXIF
    assert np.isfinite(data.meta).all() and set(data.camera) <= set(data.frame["camera"])
    m = measure(synth_card, data.frame).groupby("variant")[["background", "shadow"]].mean()
    assert m.loc["adaptive_nobg", "background"] < 0.5 * m.loc["center_nobg", "background"]
    # measured: background 0.011 vs 0.090, shadow 0.0012 vs 0.0066
    assert m.loc["center_nobg", "shadow"] > 0.002  # this sample has shadows to avoid
    assert m.loc["adaptive_nobg", "shadow"] < 0.5 * m.loc["center_nobg", "shadow"]
