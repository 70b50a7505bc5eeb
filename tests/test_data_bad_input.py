"""Bad input, one test each. Default: one error listing every bad row; skip_bad: rejects.csv.

Decisions (see raysweep/data/images.py): grayscale is rejected (no colour to measure); RGBA and
16-bit PNGs are converted with a warning; missing EXIF is accepted with NaN metadata and flags.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from raysweep.data.demo import draw_photo, make_folder
from raysweep.data.pipeline import load_prepared
from raysweep.errors import UserError
from tests.helpers.photos import png_claiming, write_card

N = 6


def _folder(tmp_path, mutate):
    """A good folder of N photos, then `mutate(labels, root)` breaks it; returns the card."""
    make_folder(tmp_path, n=N, size=96)
    labels = pd.read_csv(tmp_path / "labels.csv", dtype={"id": str})
    labels = mutate(labels, tmp_path) if mutate else labels
    labels.to_csv(tmp_path / "labels.csv", index=False)
    return write_card(tmp_path)


def _rejected(card, sample_id, reason, size=32):
    """The row stops the default run with its reason, and is the reject under skip_bad."""
    with pytest.raises(UserError) as err:
        load_prepared(card, size=size, progress=False)
    msg = err.value.message()
    assert f"sample_id {sample_id!r}" in msg and reason in msg, msg
    data = load_prepared(card, size=size, progress=False, skip_bad=True)
    rejects = pd.read_csv(data.info["rejects_file"], dtype={"sample_id": str})
    assert sample_id in rejects["sample_id"].tolist() and sample_id not in data.sample_id
    assert rejects["reason"].str.contains(reason, regex=False).any()
    assert len(data) + len(rejects) == len(pd.read_csv(card.parent / "labels.csv"))
    return data, rejects


def _image(labels, root, i, array_or_bytes, name):
    path = root / "photos" / name
    if isinstance(array_or_bytes, bytes):
        path.write_bytes(array_or_bytes)
    else:
        cv2.imwrite(str(path), array_or_bytes)
    labels.loc[i, "file"] = f"photos/{name}"
    return labels


def test_missing_image_file(tmp_path):
    card = _folder(tmp_path, lambda lb, r: lb.assign(file=lb.file.where(lb.index != 2,
                                                                         "photos/nope.jpg")))
    _rejected(card, "s002", "does not exist")


def test_corrupt_image_file(tmp_path):
    card = _folder(tmp_path, lambda lb, r: _image(lb, r, 1, b"not a jpeg at all" * 20, "bad.jpg"))
    _rejected(card, "s001", "not a readable image")


def test_truncated_jpeg(tmp_path):
    def cut(lb, r):
        data = (r / lb.file[3]).read_bytes()
        return _image(lb, r, 3, data[: len(data) // 2], "cut.jpg")
    _rejected(_folder(tmp_path, cut), "s003", "truncated")


def test_grayscale_png_is_rejected(tmp_path):
    gray = np.full((96, 96), 120, np.uint8)
    _rejected(_folder(tmp_path, lambda lb, r: _image(lb, r, 0, gray, "g.png")), "s000",
              "grayscale")


def test_grayscale_16bit_png_is_rejected(tmp_path):
    gray = np.full((96, 96), 30000, np.uint16)
    _rejected(_folder(tmp_path, lambda lb, r: _image(lb, r, 0, gray, "g16.png")), "s000",
              "grayscale")


def test_rgba_png_is_converted_with_a_warning(tmp_path, caplog):
    rgb, _ = draw_photo(np.random.default_rng(0), 96)
    def rgba(lb, r):
        Image.fromarray(np.dstack([rgb, np.full((96, 96), 255, np.uint8)])).save(
            r / "photos/a.png")
        lb.loc[4, "file"] = "photos/a.png"
        return lb
    with caplog.at_level(logging.WARNING):
        data = load_prepared(_folder(tmp_path, rgba), size=32, progress=False)
    row = data.frame.set_index("sample_id").loc["s004"]
    assert "RGBA" in row["prep_warnings"] and "converted" in caplog.text
    assert len(data) == N


def test_16bit_png_is_reduced_with_a_warning(tmp_path):
    rgb, _ = draw_photo(np.random.default_rng(0), 96)
    deep = rgb[..., ::-1].astype(np.uint16) * 257
    data = load_prepared(_folder(tmp_path, lambda lb, r: _image(lb, r, 5, deep, "d.png")),
                         size=32, progress=False)
    row = data.frame.set_index("sample_id").loc["s005"]
    assert "16-bit" in row["prep_warnings"]
    i = int(np.flatnonzero(data.sample_id == "s005")[0])
    assert abs(data.images[i].mean() - 0) > 10  # real pixels, not zeros


def test_image_smaller_than_the_crop(tmp_path):
    small = np.full((40, 60, 3), 128, np.uint8)
    _rejected(_folder(tmp_path, lambda lb, r: _image(lb, r, 2, small, "small.png")), "s002",
              "smaller than the crop size 48", size=48)


def test_missing_exif_is_accepted_with_nan_and_flags(tmp_path, caplog):
    rgb, _ = draw_photo(np.random.default_rng(1), 96)
    def strip(lb, r):
        Image.fromarray(rgb).save(r / "photos/noexif.jpg")
        lb.loc[1, "file"] = "photos/noexif.jpg"
        return lb
    with caplog.at_level(logging.WARNING):
        data = load_prepared(_folder(tmp_path, strip), size=32, progress=False)
    i = int(np.flatnonzero(data.sample_id == "s001")[0])
    assert np.isnan(data.meta[i]).all() and not np.isnan(data.meta[i - 1]).any()
    assert data.frame.loc[i, "src_iso"] == "missing" and data.camera[i] == "unknown"
    assert "no camera metadata" in caplog.text


def test_nan_lab(tmp_path):
    card = _folder(tmp_path, lambda lb, r: lb.assign(**{"a-true": lb["a-true"].where(
        lb.index != 4, np.nan)}))
    _rejected(card, "s004", "missing value (NaN)")


@pytest.mark.parametrize("value", [120.0, -3.0])
def test_out_of_range_lightness(tmp_path, value):
    card = _folder(tmp_path, lambda lb, r: lb.assign(**{"L-true": lb["L-true"].where(
        lb.index != 0, value)}))
    _rejected(card, "s000", "outside 0..100")


def test_duplicate_sample_id(tmp_path):
    card = _folder(tmp_path, lambda lb, r: lb.assign(id=lb.id.where(lb.index != 3, "s001")))
    with pytest.raises(UserError, match=r"duplicate sample_id 's001' \(rows 2, 4\)"):
        load_prepared(card, size=32, progress=False)
    data = load_prepared(card, size=32, progress=False, skip_bad=True)
    assert "s001" not in data.sample_id and len(data) == N - 2  # neither copy is trusted


def test_missing_required_columns(tmp_path):
    make_folder(tmp_path, n=N, size=96, foreign=False)  # contract names, no mapping needed
    labels = pd.read_csv(tmp_path / "labels.csv")
    labels.drop(columns=["target_b", "sample_id"]).to_csv(tmp_path / "labels.csv", index=False)
    (tmp_path / "dataset.yaml").write_text("manifest: labels.csv\n")
    with pytest.raises(UserError, match="lacks required column.*sample_id, target_b.*it has"):
        load_prepared(tmp_path, size=32, progress=False)


@pytest.mark.parametrize("path, reason", [("../outside.jpg", "leaves the dataset folder"),
                                          ("photos/../../x.jpg", "leaves the dataset folder"),
                                          ("/etc/passwd", "is absolute")])
def test_paths_escaping_the_dataset_folder(tmp_path, path, reason):
    root = tmp_path / "ds"
    (tmp_path / "outside.jpg").write_bytes(b"x")
    card = _folder(root, lambda lb, r: lb.assign(file=lb.file.where(lb.index != 1, path)))
    _rejected(card, "s001", reason)


def test_one_message_lists_every_bad_row(tmp_path):
    def several(lb, r):
        lb.loc[0, "L-true"] = 150
        lb.loc[2, "file"] = "../x.jpg"
        (r / lb.file[4]).write_bytes(b"garbage")
        return lb
    card = _folder(tmp_path, several)
    with pytest.raises(UserError) as err:
        load_prepared(card, size=32, progress=False)
    msg = err.value.message()
    assert msg.startswith("3 bad row(s)")
    for sid, why in (("s000", "outside 0..100"), ("s002", "leaves"), ("s004", "not a readable")):
        line = next(x for x in msg.splitlines() if f"sample_id {sid!r})" in x)
        assert why in line, line
    assert "--skip-bad" in msg and "rejects.csv" in msg
    data = load_prepared(card, size=32, progress=False, skip_bad=True)
    assert sorted(data.sample_id) == ["s001", "s003", "s005"]


def test_decompression_bomb_is_named_as_such(tmp_path):
    card = _folder(tmp_path, lambda lb, r: _image(lb, r, 2, png_claiming(20000, 20000),
                                                  "bomb.png"))
    data, rejects = _rejected(card, "s002", "decompression bomb")
    assert not rejects["reason"].str.contains("corrupt or truncated").any()
