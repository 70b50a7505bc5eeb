"""Breakdowns: groups come from the truth and the metadata, and the numbers are the group's own."""

import numpy as np
import pytest

from raysweep import color
from raysweep.evaluate import breakdowns
from tests.helpers.fakes import make_prepared


@pytest.fixture
def data():
    p = make_prepared(n=60, size=8, seed=3, missing_rate=0.0)
    # light and dark tones so several ITA categories occur
    p.target[:, 0] = np.linspace(30, 75, len(p))
    p.target[:, 2] = 15.0
    return p


def test_skin_tone_uses_true_lab(data):
    tones = breakdowns.skin_tone(data.target)
    assert tones[0] == "dark" and tones[-1] == "very light"
    angle = np.degrees(np.arctan2(data.target[:, 0] - 50, data.target[:, 2]))
    assert list(tones) == [color.ita_category(float(a)) for a in angle]


def test_exposure_prefers_latent_over_exif(data):
    regimes = breakdowns.exposure_regime(data)  # only exposure_bias_ev (meta) is known
    bias = data.meta[:, 3]
    assert set(regimes[bias < -0.5]) == {"under"} and set(regimes[bias > 0.5]) == {"over"}
    data.frame["exposure_error_ev"] = -2.0  # the generator's truth wins
    assert set(breakdowns.exposure_regime(data)) == {"under"}


def test_illuminant_from_latents(data):
    assert breakdowns.illuminant_group(data) is None
    data.frame["cct_k"] = np.where(np.arange(len(data)) % 2, 2800.0, 6500.0)
    groups = breakdowns.illuminant_group(data)
    assert set(groups) == {"warm <3500K", "cool >5500K"}
    data.frame["illuminant_kind"] = "led"
    assert set(breakdowns.illuminant_group(data)) == {"led"}


def test_breakdown_numbers_are_the_groups_own(data):
    err = np.where(data.camera == "cam_a", 5.0, 1.0) + np.arange(len(data)) * 1e-3
    table = breakdowns.breakdown({"m": err, "other": err * 2}, data, n_boot=100)
    cam = table[(table.dimension == "camera") & (table.model == "m")].set_index("group")
    assert cam.loc["cam_a", "mean"] == pytest.approx(err[data.camera == "cam_a"].mean())
    assert cam.loc["cam_b", "mean"] == pytest.approx(err[data.camera == "cam_b"].mean())
    assert cam["n"].sum() == len(data)
    assert set(table.dimension) == {"camera", "set_id", "background", "exposure", "skin_tone"}
    tones = table[(table.dimension == "skin_tone") & (table.model == "m")]["group"].tolist()
    assert tones == [t for t in color.ITA_CATEGORIES if t in tones]  # light to dark
    assert (table.mean_lo <= table["mean"]).all() and (table["mean"] <= table.mean_hi).all()


def test_background_from_the_manifest_else_from_the_ring(data):
    # the fake's ring is grey (p50 equal in every channel): neutral as it looks
    assert set(breakdowns.background_type(data)) == {"neutral ring"}
    data.ring[:5, 3] *= 3.0  # a reddish surround
    data.ring[5, :] = np.nan  # no patch found: no ring
    kinds = breakdowns.background_type(data)
    assert set(kinds[:5]) == {"coloured ring"} and kinds[5] == "no ring"
    assert breakdowns.is_neutral(kinds).tolist() == [k == "neutral ring" for k in kinds]
    data.frame["background_type"] = np.where(np.arange(len(data)) % 3, "grey_card", "coloured")
    kinds = breakdowns.background_type(data)  # the manifest says what the surface was
    assert set(kinds) == {"grey_card", "coloured"}
    assert breakdowns.is_neutral(kinds).tolist() == [k == "grey_card" for k in kinds]
    data.ring, data.frame = None, data.frame.drop(columns="background_type")
    assert breakdowns.background_type(data) is None
