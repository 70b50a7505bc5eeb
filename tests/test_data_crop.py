"""Adaptive cropping against drawn photos whose swatch, shadow and specular masks are known."""

from __future__ import annotations

import colour
import numpy as np

from raysweep.data.crop import VARIANTS, CropParams, analyse, cut, linear_to_lab, srgb_to_linear
from raysweep.data.demo import draw_photo
from raysweep.data.images import overlay


def _share(box, mask):
    x0, y0, x1, y1 = box
    return mask[y0:y1, x0:x1].mean()


def test_adaptive_crop_avoids_shadow_border_and_specular():
    rng = np.random.default_rng(3)
    scores = {"center_nobg": [], "adaptive_nobg": []}
    for _ in range(12):
        rgb, truth = draw_photo(rng, 160)
        a = analyse(rgb)
        assert a.status == "patch found"
        for name in scores:
            box = a.boxes[name]
            scores[name].append([_share(box, ~truth["swatch"]), _share(box, truth["shadow"]),
                                 _share(box, truth["specular"])])
    centre, adaptive = (np.mean(scores[k], 0) for k in ("center_nobg", "adaptive_nobg"))
    # Measured (seed 3): centre (0.06, 0.07, 0.11), adaptive (0.00, 0.00, 0.00).
    assert adaptive[0] < 0.5 * centre[0] and adaptive[0] < 0.04  # background / border
    assert adaptive[1] < 0.2 * centre[1] and adaptive[1] < 0.01  # shadow
    assert adaptive[2] < 0.2 * centre[2] and adaptive[2] < 0.01  # specular spot


def test_mean_lab_is_the_clean_swatch_colour():
    rng = np.random.default_rng(0)
    skin = (200, 140, 110)
    rgb, _ = draw_photo(rng, 160, skin=skin, bg=(90, 120, 170))
    a = analyse(rgb)
    lin = srgb_to_linear(np.array(skin) / 255)
    truth = linear_to_lab(lin)
    # the drawn vignette darkens by up to ~12% towards the corners: allow a few dE
    assert colour.delta_E(truth, a.mean_lab, method="CIE 2000") < 4


def test_linear_to_lab_matches_colour_science():
    rgb = np.random.default_rng(1).random((20, 3))
    ref = colour.XYZ_to_Lab(colour.sRGB_to_XYZ(rgb), colour.CCS_ILLUMINANTS[
        "CIE 1931 2 Degree Standard Observer"]["D65"])
    np.testing.assert_allclose(linear_to_lab(srgb_to_linear(rgb)), ref, atol=0.02)


def test_variants_shapes_and_geometry():
    rgb, _ = draw_photo(np.random.default_rng(2), 200)
    a = analyse(rgb, CropParams(size=48))
    crops = cut(rgb, a.boxes, 48)
    assert set(crops) == set(VARIANTS)
    for name, box in a.boxes.items():
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 200 and x1 - x0 == y1 - y0, name
        assert crops[name].shape == (3, 48, 48) and crops[name].dtype == np.uint8
    side = lambda b: b[2] - b[0]  # noqa: E731
    assert side(a.boxes["center_bg"]) == 2 * side(a.boxes["center_nobg"])
    assert side(a.boxes["adaptive_bg"]) > side(a.boxes["adaptive_nobg"])
    # the bg crop of the adaptive kind contains the whole detected patch
    px0, py0, px1, py1 = a.patch_box
    bx0, by0, bx1, by1 = a.boxes["adaptive_bg"]
    assert bx0 <= px0 and by0 <= py0 and bx1 >= px1 and by1 >= py1


def test_close_up_without_background_falls_back_to_the_centre():
    rng = np.random.default_rng(4)
    rgb = np.clip(rng.normal((190, 130, 100), 3, (120, 120, 3)), 0, 255).astype(np.uint8)
    a = analyse(rgb)
    assert a.status.startswith("no patch found")
    x0, y0, x1, y1 = a.boxes["adaptive_nobg"]
    assert x1 - x0 >= 40 and abs((x0 + x1) / 2 - 60) < 10 and abs((y0 + y1) / 2 - 60) < 10


def test_clipped_patch_still_gets_a_patch_crop():
    rgb, truth = draw_photo(np.random.default_rng(6), 128, skin=(255, 255, 252), bg=(60, 90, 60),
                            shadow=False, specular=False)
    a = analyse(rgb)
    assert "geometric crop" in a.status
    x0, y0, x1, y1 = a.boxes["adaptive_nobg"]
    assert truth["swatch"][y0:y1, x0:x1].mean() > 0.95


def test_debug_overlay_draws_something():
    rgb, _ = draw_photo(np.random.default_rng(5), 128)
    pic = overlay(rgb, CropParams(), title="x")
    assert pic.ndim == 3 and pic.shape[1] == 512 and pic.shape[0] > 512
    assert (pic[:512, :, 1] == 255).any()  # the green adaptive_nobg rectangle
