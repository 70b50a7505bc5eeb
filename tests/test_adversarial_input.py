"""Careless and hostile datasets and arguments through the real CLIs (issue 25, round two).

Each case ends with a value treated as missing plus a note, one merged camera, or one `error:`
paragraph and a non-zero exit; never a silent acceptance or a traceback. Tabular datasets (no
photos) keep `prepare` fast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysweep.data.pipeline import load_prepared
from tests.helpers.cli import assert_clear_error, cli


def tabular(root, n: int = 12, **columns) -> pd.DataFrame:
    """A tabular dataset (mean_L/a/b, no photos) with a card; `columns` override or add."""
    root.mkdir(parents=True, exist_ok=True)
    i = np.arange(n)
    df = pd.DataFrame({"sample_id": [f"s{k:03d}" for k in i], "target_L": 40.0 + i,
                       "target_a": 12.0, "target_b": 16.0, "mean_L": 38.0 + i,
                       "mean_a": 11.0, "mean_b": 15.0, "tone_id": [f"t{k // 2}" for k in i],
                       "exposure_time_s": 0.01, "iso": 100.0, "camera": "cam-a", **columns})
    df.to_csv(root / "labels.csv", index=False)
    (root / "dataset.yaml").write_text("name: t\nmanifest: labels.csv\n")
    return df


def prepare(root, cwd):
    return cli("prepare", "--card", root / "dataset.yaml", "--no-progress", "--workers", 1,
               cwd=cwd)


@pytest.mark.parametrize("first, second", [("target_L", "Target_L"), ("Target_L", "target_L")])
def test_case_variant_columns_are_refused_in_either_order(tmp_path, first, second):
    df = tabular(tmp_path / "d")
    cols = [c for c in df.columns if c != "target_L"]
    df = df.assign(**{first: df["target_L"], second: df["target_L"] + 50})[
        cols[:1] + [first, second] + cols[1:]]
    df.to_csv(tmp_path / "d" / "labels.csv", index=False)
    msg = assert_clear_error(prepare(tmp_path / "d", tmp_path), "differ only by case")
    assert first in msg and second in msg


def test_finite_garbage_in_manifest_metadata_is_missing_with_a_note(tmp_path):
    root = tmp_path / "d"
    df = tabular(root)
    df.loc[3, "exposure_time_s"] = 1e9
    df.loc[4, "iso"] = 1e12
    df.to_csv(root / "labels.csv", index=False)
    r = prepare(root, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no camera can record" in r.stderr
    data = load_prepared(root, progress=False)
    by_id = data.frame.set_index("sample_id")
    assert np.isnan(by_id.loc["s003", "exposure_time_s"]) and np.isnan(by_id.loc["s004", "iso"])
    assert "exposure_time_s=1e+09 is outside the plausible range" in by_id.loc["s003",
                                                                              "prep_warnings"]
    assert by_id["exposure_time_s"].max() == pytest.approx(0.01)
    assert np.isfinite(data.meta[:, 0][data.sample_id != "s004"]).all()


def test_zero_exposure_in_the_manifest_is_still_a_bad_row(tmp_path):
    root = tmp_path / "d"
    df = tabular(root)
    df.loc[2, "exposure_time_s"] = 0
    df.to_csv(root / "labels.csv", index=False)
    assert_clear_error(prepare(root, tmp_path), "exposure_time_s=0 must be > 0")


def test_camera_ids_differing_only_by_case_are_one_camera(tmp_path):
    root = tmp_path / "d"
    cams = ["iPhone12"] * 5 + ["IPHONE12"] * 3 + [" iphone12 "] + ["Pixel"] * 3
    tabular(root, camera=cams)
    r = prepare(root, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "differ only by case are one camera" in r.stderr
    data = load_prepared(root, progress=False)
    assert sorted(set(data.camera)) == ["Pixel", "iPhone12"]


def test_a_cards_manifest_may_not_leave_the_dataset_folder(tmp_path):
    tabular(tmp_path / "elsewhere")
    root = tmp_path / "d"
    root.mkdir()
    (root / "dataset.yaml").write_text("manifest: ../elsewhere/labels.csv\n")
    assert_clear_error(prepare(root, tmp_path), "outside the dataset folder")
    (root / "labels.csv").symlink_to(tmp_path / "elsewhere" / "labels.csv")
    (root / "dataset.yaml").write_text("manifest: labels.csv\n")
    assert_clear_error(prepare(root, tmp_path), "outside the dataset folder")
    r = cli("prepare", "--images", root, "--labels", tmp_path / "elsewhere" / "labels.csv",
            "--no-progress", cwd=tmp_path)
    assert_clear_error(r, "outside the images folder", "cp ")
