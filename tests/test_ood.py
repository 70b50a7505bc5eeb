"""OOD flags on crafted photos: each flag fires on its own kind of oddity and not otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from raysweep.data.prepared import META_NAMES, RING_NAMES
from raysweep.serve import ood
from tests.helpers.fakes import make_prepared

ISO = META_NAMES.index("log2_iso")


def _unclipped(n: int, seed: int):
    # the fake photos brighten some patches past white; keep them just below clipping here
    d = make_prepared(n=n, size=16, seed=seed, missing_rate=0.0)
    d = d.subset(d.indices("train"))
    d.images = np.minimum(d.images, 240)
    return d


@pytest.fixture
def train():
    return _unclipped(400, 1)


@pytest.fixture
def fresh():
    return _unclipped(60, 2)


def _only(flags, row: int, name: str) -> None:
    assert flags.loc[row, "flags"] == name, flags.loc[row, list(ood.FLAGS)]


def test_in_distribution_photos_are_not_flagged(train, fresh):
    ranges = ood.fit_ranges(train)
    flags = ood.flag(fresh, ranges)
    assert ranges.background_kind == "ring"
    assert not flags[list(ood.FLAGS)].any(axis=None), flags[flags["flags"] != ""]
    assert (flags["unchecked"] == "").all()


def test_unseen_camera(train, fresh):
    fresh.camera[3] = "Nokia 3310"
    _only(ood.flag(fresh, ood.fit_ranges(train)), 3, "unseen_camera")


def test_out_of_range_iso_and_missing_iso(train, fresh):
    fresh.meta[4, ISO] = np.log2(25600.0)  # training ISO is 2**6..2**10
    fresh.meta[5, ISO] = np.nan  # missing is not out of range, but it is said to be unchecked
    flags = ood.flag(fresh, ood.fit_ranges(train))
    _only(flags, 4, "iso_out_of_range")
    assert flags.loc[5, "flags"] == "" and flags.loc[5, "unchecked"] == "iso_out_of_range"


def test_clipped_patch_from_pixels_and_from_the_crop_status(train, fresh):
    fresh.images[6, :, 4:12, 4:12] = 255  # the whole centre saturated
    statuses = ["patch found"] * len(fresh)
    statuses[7] = "patch found; most of the patch is flagged (clipped?): geometric crop"
    statuses[8] = "no patch-like region: centre crop"
    flags = ood.flag(fresh, ood.fit_ranges(train), statuses)
    _only(flags, 6, "clipped_patch")
    _only(flags, 7, "clipped_patch")
    _only(flags, 8, "patch_not_found")
    assert flags[list(ood.FLAGS)].sum().sum() == 3


def test_coloured_background_from_ring_statistics(train, fresh):
    col = {n: i for i, n in enumerate(RING_NAMES)}
    for p in ("p10", "p50", "p90"):  # a saturated green surround
        fresh.ring[9, col[f"ring_r_{p}"]] = 0.02
        fresh.ring[9, col[f"ring_g_{p}"]] = 0.5
        fresh.ring[9, col[f"ring_b_{p}"]] = 0.03
    _only(ood.flag(fresh, ood.fit_ranges(train)), 9, "unusual_background")


def test_coloured_background_from_the_crop_border_without_ring(train, fresh):
    train.ring, fresh.ring = None, None
    ranges = ood.fit_ranges(train)
    assert ranges.background_kind == "border"
    fresh.images[10, 0, :2, :] = 30  # a magenta frame around the patch
    fresh.images[10, 1, :2, :] = 0
    fresh.images[10, 2, :2, :] = 200
    fresh.images[10, :, -2:, :] = fresh.images[10, :, :2, :]
    fresh.images[10, :, :, :2] = fresh.images[10, :, :, -2:] = np.array([30, 0, 200])[:, None, None]
    flags = ood.flag(fresh, ranges)
    _only(flags, 10, "unusual_background")
    assert flags[list(ood.FLAGS)].sum().sum() == 1


def test_no_background_information_is_unchecked_not_fine(train, fresh):
    ranges = ood.fit_ranges(train)
    fresh.ring, fresh.images = None, None
    flags = ood.flag(fresh, ranges)
    assert not flags["unusual_background"].any()
    assert flags["unchecked"].str.contains("unusual_background").all()
    assert flags["unchecked"].str.contains("clipped_patch").all()


def test_ranges_round_trip_and_summary_line(train, fresh):
    ranges = ood.fit_ranges(train)
    back = ood.TrainingRanges.from_dict(ranges.to_dict())
    fresh.camera[0] = "x"
    fresh.camera[1] = "y"
    fresh.meta[1, ISO] = 20.0
    flags = ood.flag(fresh, back)
    assert ood.summary_line(flags) == (f"{len(fresh)} photos, 2 flagged (unseen_camera 2, "
                                       "iso_out_of_range 1)")
