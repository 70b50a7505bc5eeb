"""Card and manifest: column mapping, conventions, content hash, row validation."""

from __future__ import annotations

import colour
import numpy as np
import pandas as pd
import pytest

from raysweep.data.card import load_card, to_d65
from raysweep.data.demo import make_folder
from raysweep.data.manifest import find_bad_rows, read_manifest
from raysweep.errors import UserError
from tests.helpers.photos import write_card


def test_card_maps_foreign_columns(tmp_path):
    make_folder(tmp_path, n=3, size=64)
    card = load_card(write_card(tmp_path))  # a folder works as well as the file
    assert load_card(tmp_path).path == card.path
    df, problems, h = read_manifest(card)
    assert {"sample_id", "image", "target_L", "tone_id", "set_id", "lux"} <= set(df.columns)
    assert df["sample_id"].tolist() == ["s000", "s001", "s002"]
    assert df["lux"].dtype.kind == "f"  # latents pass through as numbers
    assert problems == {} and len(h) == 16


def test_contract_names_map_themselves_case_insensitively(tmp_path):
    pd.DataFrame({"Sample_ID": ["a"], "Image": ["x.jpg"], "TARGET_L": [50], "target-a": [10],
                  "target b": [12]}).to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "dataset.yaml").write_text("manifest: m.csv\n")
    df, _, _ = read_manifest(load_card(tmp_path))
    assert {"sample_id", "image", "target_L", "target_a", "target_b"} <= set(df.columns)


def test_content_hash_ignores_column_names_but_not_values(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_folder(a, n=3, size=64)
    make_folder(b, n=3, size=64, foreign=False)
    ha = read_manifest(load_card(write_card(a)))[2]
    (b / "dataset.yaml").write_text("manifest: labels.csv\n")
    hb = read_manifest(load_card(b))[2]
    assert ha == hb
    labels = pd.read_csv(b / "labels.csv")
    labels.loc[0, "target_L"] += 1
    labels.to_csv(b / "labels.csv", index=False)
    assert read_manifest(load_card(b))[2] != ha


def test_d50_ground_truth_is_adapted_to_d65_with_bradford(tmp_path):
    make_folder(tmp_path, n=2, size=64)
    card = load_card(write_card(tmp_path, extra="ground_truth: {illuminant: D50}\n"))
    df, _, _ = read_manifest(card)
    raw = pd.read_csv(tmp_path / "labels.csv")[["L-true", "a-true", "b-true"]].to_numpy(float)
    wp = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]
    xyz = colour.Lab_to_XYZ(raw, wp["D50"])
    ref = colour.XYZ_to_Lab(colour.chromatic_adaptation(
        xyz, colour.xy_to_XYZ(wp["D50"]), colour.xy_to_XYZ(wp["D65"]), method="Von Kries",
        transform="Bradford"), wp["D65"])
    got = df[["target_L", "target_a", "target_b"]].to_numpy(float)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert np.abs(got - raw).max() > 0.5  # the conversion did something
    np.testing.assert_allclose(to_d65(raw, "D65"), raw)


@pytest.mark.parametrize("body, needle", [
    ("manifest: labels.csv\nground_truth: {illuminant: A}\n", "unknown illuminant 'A'"),
    ("manifest: labels.csv\ncolumns: {L-true: target_X}\n", "unknown contract column"),
    ("manifest: labels.csv\ncolumns: {nope: target_L}\n", "does not have"),
    ("manifest: missing.csv\n", "does not exist"),
    ("manifest: labels.csv\nmanifset: x\n", "unknown card key 'manifset'"),
    ("columns: {}\n", "no `manifest:`"),
])
def test_card_errors_are_clear(tmp_path, body, needle):
    make_folder(tmp_path, n=2, size=64)
    (tmp_path / "dataset.yaml").write_text(body)
    with pytest.raises(UserError, match=needle.replace("(", r"\(")):
        read_manifest(load_card(tmp_path))


def test_fraction_shutter_speeds_parse(tmp_path):
    pd.DataFrame({"sample_id": ["a", "b"], "image": ["", ""], "target_L": [50, 60],
                  "target_a": [10, 11], "target_b": [12, 13], "mean_L": [49, 58],
                  "mean_a": [9, 10], "mean_b": [11, 12], "exposure_time_s": ["1/125", "0.5"]}
                 ).to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "dataset.yaml").write_text("manifest: m.csv\n")
    df, problems, _ = read_manifest(load_card(tmp_path))
    np.testing.assert_allclose(df["exposure_time_s"], [1 / 125, 0.5])
    assert problems == {} and find_bad_rows(df, tmp_path, problems) == {}


def test_columns_differing_only_by_case_are_one_clear_error(tmp_path):
    """`Target_L` beside `target_L` used to crash with an AttributeError traceback."""
    pd.DataFrame({"sample_id": ["a"], "image": ["x.jpg"], "Target_L": [50], "target_L": [51],
                  "target_a": [10], "target_b": [12]}).to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "dataset.yaml").write_text("manifest: m.csv\n")
    with pytest.raises(UserError, match="Target_L and target_L -> target_L") as e:
        read_manifest(load_card(tmp_path))
    assert "keep one of each" in e.value.message()


def test_latin1_and_semicolon_manifests_get_a_hint(tmp_path):
    (tmp_path / "dataset.yaml").write_text("manifest: m.csv\n")
    (tmp_path / "m.csv").write_bytes("sample_id,image,target_L,target_a,target_b,note\n"
                                     "a,x.jpg,50,10,12,café crème\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8.*Latin-1") as e:
        read_manifest(load_card(tmp_path))
    assert "iconv" in e.value.message()
    (tmp_path / "m.csv").write_text("sample_id;image;target_L;target_a;target_b\n"
                                    "a;x.jpg;50;10;12\n")
    with pytest.raises(UserError, match="semicolon-separated") as e:
        read_manifest(load_card(tmp_path))
    assert "comma" in e.value.message()
