"""Split-conformal error bounds: coverage on errors drawn from a known distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raysweep.serve import bounds
from tests.helpers.fakes import CAMERAS, make_prepared

SCALE = {"cam_a": 1.0, "cam_b": 2.0, "cam_c": 4.0}  # per-camera noise: a heteroscedastic model


def _noisy_predictions(data, seed: int) -> np.ndarray:
    """target + 3-D Gaussian noise whose size depends on the camera (dE00 grows with it)."""
    rng = np.random.default_rng(seed)
    s = np.array([SCALE[c] for c in data.camera])[:, None]
    return data.target + rng.normal(0, 1, data.target.shape) * s


@pytest.fixture(scope="module")
def world():
    data = make_prepared(n=3000, tabular=True, seed=3, missing_rate=0.0)
    # a large calibration split and a large held-out one, split by tone as the real splits are
    tone = data.frame["tone_id"].to_numpy()
    data.split[:] = np.where(tone % 5 == 0, "val", np.where(tone % 5 == 1, "test", "train"))
    return data


def test_conformal_quantile_is_the_ceil_rank():
    s = np.arange(1, 20)  # n = 19: ceil(20 * 0.9) = 18th smallest
    assert bounds.conformal_quantile(s, 0.9) == 18
    assert bounds.conformal_quantile(s[:5], 0.9) == math.inf  # too few for 90%
    with pytest.raises(ValueError):
        bounds.conformal_quantile(s, 1.0)


@pytest.mark.parametrize("scaled", [True, False])
def test_bound_covers_nominal_on_held_out_draws(world, scaled):
    val, test = world.subset(world.indices("val")), world.subset(world.indices("test"))
    train = world.subset(world.indices("train"))
    covered = []
    for rep in range(8):  # fresh noise each time: the guarantee is over draws
        cal = bounds.calibrate(val, _noisy_predictions(val, rep), train, level=0.9, seed=rep,
                               scaled=scaled)
        pred = _noisy_predictions(test, 100 + rep)
        covered.append(bounds.errors(pred, test.target) <= cal.bound(test, pred))
    share = np.mean(covered)
    assert 0.87 <= share <= 0.94, share
    if scaled:
        # the difficulty model found the camera: every camera is covered, not only the average
        cov = np.mean(covered, axis=0)
        for cam in CAMERAS:
            assert np.mean(cov[test.camera == cam]) >= 0.85, cam


def test_scaled_bound_is_sharper_than_a_constant(world):
    val, test = world.subset(world.indices("val")), world.subset(world.indices("test"))
    train = world.subset(world.indices("train"))
    pv, pt = _noisy_predictions(val, 1), _noisy_predictions(test, 2)
    scaled = bounds.calibrate(val, pv, train, scaled=True).bound(test, pt)
    constant = bounds.calibrate(val, pv, train, scaled=False).bound(test, pt)
    assert np.ptp(constant) == 0 and np.ptp(scaled) > 0
    easy = test.camera == "cam_a"
    assert np.median(scaled[easy]) < 0.6 * constant[0]


def test_other_levels_from_the_same_calibration(world):
    val, test = world.subset(world.indices("val")), world.subset(world.indices("test"))
    cal = bounds.calibrate(val, _noisy_predictions(val, 4), world.subset(world.indices("train")))
    pred = _noisy_predictions(test, 5)
    err = bounds.errors(pred, test.target)
    for level in (0.5, 0.8, 0.95):
        share = np.mean(err <= cal.bound(test, pred, level))
        assert abs(share - level) < 0.05, (level, share)
    assert np.all(cal.bound(test, pred, 0.95) >= cal.bound(test, pred, 0.8))


def test_useless_difficulty_still_covers():
    """The guarantee does not depend on sigma: noise unrelated to any feature still covers."""
    data = make_prepared(n=2000, tabular=True, seed=8, missing_rate=0.0)
    tone = data.frame["tone_id"].to_numpy()
    data.split[:] = np.where(tone % 2 == 0, "val", "test")
    val, test = data.subset(data.indices("val")), data.subset(data.indices("test"))
    rng = np.random.default_rng(0)
    pv = val.target + rng.standard_t(3, val.target.shape)  # heavy tails, same for every photo
    pt = test.target + rng.standard_t(3, test.target.shape)
    cal = bounds.calibrate(val, pv, val)
    share = np.mean(bounds.errors(pt, test.target) <= cal.bound(test, pt))
    assert 0.87 <= share <= 0.94


def test_small_validation_split_gives_a_constant_bound(world):
    val = world.subset(world.indices("val")[:20])
    cal = bounds.calibrate(val, _noisy_predictions(val, 0), val)
    assert cal.difficulty is None and cal.info["method"].startswith("constant")
    assert cal.quantile(0.9) == np.sort(cal.scores)[math.ceil(21 * 0.9) - 1]


def test_round_trip_through_calibration_json(world, tmp_path):
    val, test = world.subset(world.indices("val")), world.subset(world.indices("test"))
    cal = bounds.calibrate(val, _noisy_predictions(val, 0), world.subset(world.indices("train")),
                           level=0.8, extras=bounds.Extras(info={"run": "abc"}))
    bounds.write(cal, tmp_path)
    back = bounds.read(tmp_path)
    pred = _noisy_predictions(test, 1)
    np.testing.assert_allclose(back.bound(test, pred), cal.bound(test, pred), rtol=1e-5)
    assert back.level == 0.8 and back.info["run"] == "abc"
    assert bounds.read(tmp_path / "nowhere") is None


def test_broken_calibration_json_is_a_user_error(tmp_path):
    from raysweep.errors import UserError

    (tmp_path / bounds.FILE).write_text('{"level": 0.9}')
    with pytest.raises(UserError, match="calibration"):
        bounds.read(tmp_path)
