"""The synthetic dataset: contract, determinism, EXIF, calibration against real phones, the
tiered oracle floors, CLI errors.

Fast tests use a tiny dataset (4 sets x 5 tones at 64 px). The calibration tests use 15 sets x
12 tones at 96 px (every camera has five sessions, as in the default), the floors 6 x 10 at 96 px.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from raysweep.data.card import load_card
from raysweep.errors import UserError, run_cli
from raysweep.synth import GENERATOR_VERSION, ensure_default_dataset
from raysweep.synth import oracle as oracle_mod
from raysweep.synth import render as render_mod
from raysweep.synth.calibration import calibrate, tone_rows
from raysweep.synth.camera import PROFILES, build_camera
from raysweep.synth.cli import calibrate_dir, main
from raysweep.synth.context import GeneratorConfig, build_context
from raysweep.synth.exif import read_exif
from raysweep.synth.generate import generate
from raysweep.synth.measure import measure
from raysweep.synth.skin import make_tones
from raysweep.synth.spectral import delta_e00, reflectance_to_lab

TINY = GeneratorConfig(seed=3, sets=4, tones=5, cameras=3, size=64)
CONTRACT = ["sample_id", "image", "target_L", "target_a", "target_b", "tone_id", "set_id",
            "camera", "exposure_time_s", "f_number", "iso", "brightness_ev", "exposure_bias_ev",
            "white_balance", "make", "model"]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("tiny") / "ds", TINY, workers=1, progress=False)


def test_layout_card_and_manifest_contract(tiny):
    root = tiny.parent
    card = yaml.safe_load(tiny.read_text())
    assert card["manifest"] == "manifest.csv" and card["columns"] == {}
    assert card["ground_truth"] == {"space": "CIELAB", "illuminant": "D65", "observer": "2"}
    assert card["generated_by"]["sets"] == 4 and card["generated_by"]["seed"] == 3
    assert card["generated_by"]["version"] == GENERATOR_VERSION
    cal = card["generated_by"]["calibration"]  # the card carries the calibration table
    assert {"statistic", "real", "generated", "target", "passed"} <= set(cal["rows"][0])
    assert isinstance(cal["passed"], bool)
    df = pd.read_csv(root / "manifest.csv")
    assert list(df.columns[: len(CONTRACT)]) == CONTRACT
    for latent in ("illuminant_type", "cct_k", "lux", "exposure_error_ev", "wb_error_r",
                   "background_type", "swatch_x0", "swatch_y1", "shadow", "specular_amp",
                   "jpeg_quality", "second_light"):
        assert latent in df.columns
    assert len(df) == 20 and df["sample_id"].is_unique
    assert set(df["camera"]) == {"Aster A1", "Borealis B2", "cirrus CR-3"}
    assert {"grey_card", "coloured"} <= set(df["background_type"])
    assert (df["background_type"] == "coloured").sum() == 5  # one trap session of four
    assert all((root / p).is_file() for p in df["image"])
    assert not list(root.parent.glob(".ds.tmp-*"))  # no temp folder left behind
    # the swatch box lies inside the frame and holds the swatch centre
    assert (df["swatch_x0"] >= 0).all() and (df["swatch_x1"] <= 64).all()
    assert ((df["swatch_x0"] < df["swatch_cx"]) & (df["swatch_cx"] < df["swatch_x1"])).all()


def test_card_reads_with_the_data_loader(tiny):
    card = load_card(tiny)
    assert card.manifest.name == "manifest.csv"


def test_deterministic_bytes_across_runs_and_workers(tiny, tmp_path):
    again = generate(tmp_path / "again", TINY, workers=2, progress=False)
    assert _digest(again.parent) == _digest(tiny.parent)
    other = generate(tmp_path / "other", dataclasses.replace(TINY, seed=4), workers=1,
                     progress=False)
    assert _digest(other.parent) != _digest(tiny.parent)


def test_exif_round_trip_with_exifread(tiny):
    df = pd.read_csv(tiny.parent / "manifest.csv")
    for row in df.to_dict("records"):
        got = read_exif(tiny.parent / row["image"])
        for key in ("exposure_time_s", "f_number", "brightness_ev", "exposure_bias_ev"):
            assert got[key] == pytest.approx(row[key], abs=1e-9), key
        assert got["iso"] == row["iso"]
        assert (got["white_balance"], got["make"], got["model"]) == (
            row["white_balance"], row["make"], row["model"])


def test_ground_truth_covers_skin_and_matches_colour_science():
    import colour

    tones = make_tones(138, seed=0)
    lab, ita = tones.lab, tones.ita
    assert lab[:, 0].min() >= 30 and lab[:, 0].max() <= 72
    assert lab[:, 1].min() >= 4 and lab[:, 1].max() <= 19
    assert lab[:, 2].min() >= 8 and lab[:, 2].max() <= 24
    # ...and spans the range rather than sitting in a corner of it
    assert lab[:, 0].min() < 36 and lab[:, 0].max() > 66
    assert ita.min() < -55 and ita.max() > 50
    assert lab[:, 1].max() - lab[:, 1].min() > 7 and lab[:, 2].max() - lab[:, 2].min() > 10
    # the truth convention, checked against colour-science's own integration
    shape = colour.SpectralShape(380, 780, 5)
    for i in (0, 70, 137):
        sd = colour.SpectralDistribution(dict(zip(shape.wavelengths, tones.reflectance[i])))
        with warnings.catch_warnings():  # colour notes that it aligns shapes; that is expected
            warnings.simplefilter("ignore")
            xyz = colour.sd_to_XYZ(sd, illuminant=colour.SDS_ILLUMINANTS["D65"]) / 100
        ref = colour.XYZ_to_Lab(xyz, colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D65"])
        assert delta_e00(ref, lab[i]) < 0.1


def test_tones_are_deterministic_and_seeded():
    a, b, c = make_tones(20, 1), make_tones(20, 1), make_tones(20, 2)
    assert np.array_equal(a.lab, b.lab) and not np.array_equal(a.lab, c.lab)
    assert np.allclose(reflectance_to_lab(a.reflectance), a.lab)


def test_oracle_inverts_the_pipeline_without_noise():
    """With sensor noise and JPEG removed, the oracle is limited only by metamerism."""
    ctx = build_context(dataclasses.replace(TINY, size=96))
    errs = []
    for s in range(TINY.sets):
        for t in range(TINY.tones):
            p = render_mod.plan(ctx, s, t)
            cam = ctx.cameras[p.spec.camera_id]
            quiet = dataclasses.replace(cam, spec=dataclasses.replace(cam.spec, full_well=1e12, read_noise=0))
            img = render_mod.develop(quiet, p) / 255.0
            errs.append(delta_e00(oracle_mod.oracle_lab(ctx, s, t, img), ctx.tones.lab[t]))
    assert np.mean(errs) < 0.3, errs


def test_user_errors(tmp_path, capsys):
    for bad in (dict(sets=0), dict(tones=0), dict(size=16), dict(cameras=4), dict(seed=-1),
                dict(camera_profiles=("phone_z",)), dict(trap_share=1.5)):
        with pytest.raises(UserError):
            dataclasses.replace(TINY, **bad).validate()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        generate(full, TINY, progress=False)
    assert (full / "keep.txt").read_text() == "x"
    with pytest.raises(UserError):
        generate(tmp_path / "w", TINY, workers=0, progress=False)
    with pytest.raises(UserError, match="shape key"):
        ensure_default_dataset(tmp_path / "e", colours=3)
    assert run_cli(main, ["--out", str(tmp_path / "z"), "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert "--size 16" in err and "Fix:" in err


def test_cli_writes_then_overwrites(tmp_path):
    out = tmp_path / "cli"
    args = ["--out", str(out), "--sets", "2", "--tones", "2", "--size", "32", "--workers", "1",
            "--no-progress"]
    assert main(args) == 0
    first = _digest(out)
    assert run_cli(main, args) == 2  # exists, not empty
    assert main(args + ["--overwrite", "--seed", "1"]) == 0
    assert _digest(out) != first and len(pd.read_csv(out / "manifest.csv")) == 4


def test_ensure_default_dataset_generates_once(tmp_path):
    card = ensure_default_dataset(tmp_path / "cache", sets=2, tones=2, size=32, workers=1,
                                  progress=False)
    stamp = card.stat().st_mtime_ns
    again = ensure_default_dataset(tmp_path / "cache", sets=2, tones=2, size=32, progress=False)
    assert again == card and card.stat().st_mtime_ns == stamp


def test_report_writes_markdown_and_plots(tiny):
    from raysweep.synth.datasheet import write_report

    md = write_report(tiny.parent, oracle_limit=6, progress=False)
    text = md.read_text()
    assert "Verdict" in text and "Naive error" in text and "Calibration against real" in text
    assert all(f"`oracle:{tier}`" in text for tier in oracle_mod.TIERS)
    for png in ("ground_truth.png", "metadata.png", "naive_error.png", "contact_sheet.png"):
        assert (md.parent / png).stat().st_size > 1000


def test_phone_profiles_are_well_conditioned_and_sigma_is_opt_in():
    for key in ("phone_a", "phone_b", "phone_c"):
        m = build_camera(key).ideal_matrix
        assert np.linalg.cond(m) < 5 and np.abs(m).max() < 3, key
    assert np.linalg.cond(build_camera("sigma_stress").ideal_matrix) > 8
    assert "sigma_stress" not in GeneratorConfig().profiles
    stress = GeneratorConfig(camera_profiles=("sigma_stress", "phone_a"), cameras=2)
    assert stress.validate().profiles == ["sigma_stress", "phone_a"]
    assert PROFILES["sigma_stress"].id == "SIGMA SD1 Merrill"


def test_white_balance_error_is_drawn_per_session():
    # generator 2.0 kept it per session; 3.0 redraws part per frame (tests/test_synth_drift.py)
    ctx = build_context(dataclasses.replace(TINY, sets=3, tones=8, manual_wb_share=0.0,
                                            version="2.0"))
    for s in range(3):
        gains = np.array([np.log(render_mod.plan(ctx, s, t).gains[[0, 2]]) for t in range(8)])
        err = ctx.sets[s].awb_error
        ctx.sets[s] = dataclasses.replace(ctx.sets[s], awb_error=np.zeros(2))
        without = np.array([np.log(render_mod.plan(ctx, s, t).gains[[0, 2]]) for t in range(8)])
        # every photo of the session carries the same error; photos only jitter around it
        assert np.allclose(gains - without, -err, atol=1e-9)
        assert gains.std(0).max() < 0.05


def test_stress_options_raise_bias_and_manual_wb(tmp_path):
    cfg = dataclasses.replace(TINY, tones=10, exposure_bias_share=0.5, manual_wb_share=0.5,
                              trap_share=0.0)
    card = generate(tmp_path / "stress", cfg, progress=False)
    df = pd.read_csv(card.parent / "manifest.csv")
    assert 0.2 < (df["exposure_bias_ev"] != 0).mean() < 0.8
    assert 0.2 < (df["white_balance"] == "manual").mean() < 0.8
    assert df["white_balance_mode"].str.startswith("manual:").sum() == (df["white_balance"] == "manual").sum()
    assert (df["background_type"] != "coloured").all()


def test_calibrate_cli_prints_every_row(tiny, capsys):
    rc = main(["--calibrate", str(tiny.parent), "--no-progress"])
    out = capsys.readouterr().out
    assert rc in (0, 1) and "real phones" in out and "naive dE00 per camera" in out
    assert len(calibrate_dir(tiny.parent)) == out.count("| pass |") + out.count("| FAIL |")
    assert run_cli(main, ["--calibrate", str(tiny.parent / "nowhere")]) == 2


# ------------------------------------------------------------------ calibration against real phones
CAL = GeneratorConfig(seed=0, sets=15, tones=12, cameras=3, size=96)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    card = generate(tmp_path_factory.mktemp("cal") / "ds", CAL, workers=2, progress=False)
    df = pd.read_csv(card.parent / "manifest.csv")
    truth = df[["target_L", "target_a", "target_b"]].to_numpy()
    labs = measure(df, card.parent, ("naive", "grey_world_swatch", "background_ref"))
    for name, lab in labs.items():
        df[f"de_{name}"] = delta_e00(lab, truth)
    return card, df, {r.statistic: r for r in calibrate(df, labs["naive"])}


@pytest.mark.slow
@pytest.mark.parametrize("statistic", [
    "slope of measured L* vs true L* (per session)",
    "corr(log2(time x ISO), true L*) (per session)",
    "leftover a*b* scatter within a session",
    "photos with exposure bias != 0",
    "photos with manual white balance",
    "EXIF BV minus APEX(time, ISO, f-number), per camera",
    "sessions with BV = 0 throughout",
    "distinct ISO values per session / photos (max session)",
    "naive dE00 per camera (mean)",
    "ISO / exposure time range",
])
def test_calibration_row_passes_on_a_small_set(calibrated, statistic):
    row = calibrated[2][statistic]
    assert row.passed, (row.generated, row.target)


@pytest.mark.parametrize("seed", [0, 1])
def test_tone_prior_like_printed_swatch_sets(seed):
    """Medians L* 61.2 +/- 3, hue 58.7 +/- 5 deg, b* 16 +/- 2, ITA about -60..+56 (138 tones)."""
    tones = make_tones(138, seed)
    frame = pd.DataFrame(tones.lab, columns=["target_L", "target_a", "target_b"])
    rows = tone_rows(frame)
    assert len(rows) == 4 and all(r.passed for r in rows), [(r.statistic, r.generated) for r in rows]


@pytest.mark.slow
def test_card_calibration_matches_a_fresh_measurement(calibrated):
    card, _, rows = calibrated
    stored = yaml.safe_load(card.read_text())["generated_by"]["calibration"]["rows"]
    # the card was measured while writing (same JPEG bytes): the same table
    assert [r["generated"] for r in stored] == [r.generated for r in rows.values()]


@pytest.mark.slow
def test_camera_id_is_what_exif_gives(calibrated):
    _, df, _ = calibrated
    from raysweep.synth.camera import device_id

    assert (df["camera"] == [device_id(a, b) for a, b in zip(df["make"], df["model"])]).all()


@pytest.mark.slow
def test_background_reference_is_information(calibrated):
    """The same baseline, with and without a usable reference: on grey-card sets the 18%-card
    reference beats both the naive reading and the best reading of the swatch alone (background
    cropped away); on the coloured trap sets the very same method is worse than naive."""
    _, df, _ = calibrated
    grey = df[df["background_type"] == "grey_card"]
    coloured = df[df["background_type"] == "coloured"]
    assert coloured["set_id"].nunique() == 3  # a few of 15 sessions are traps
    no_background = min(grey["de_naive"].mean(), grey["de_grey_world_swatch"].mean())
    assert grey["de_background_ref"].mean() < no_background - 1.5
    assert coloured["de_background_ref"].mean() > coloured["de_naive"].mean() + 3


@pytest.mark.slow
def test_metadata_ranges_like_phone_exif(calibrated):
    _, df, _ = calibrated
    assert df["iso"].min() >= 25 and df["iso"].max() <= 2000
    assert df["exposure_time_s"].min() >= 1 / 1701 and df["exposure_time_s"].max() <= 1 / 13.9
    assert df["brightness_ev"].min() < -1 and df["brightness_ev"].max() > 6
    assert df["brightness_ev"].between(-6, 16).all()


# ------------------------------------------------------------------ tiered oracle floors
FLOORS = GeneratorConfig(seed=3, sets=6, tones=10, cameras=3, size=96)


@pytest.fixture(scope="module")
def floors_set(tmp_path_factory):
    card = generate(tmp_path_factory.mktemp("floors") / "ds", FLOORS, workers=1, progress=False)
    df = pd.read_csv(card.parent / "manifest.csv")
    naive = delta_e00(measure(df, card.parent)["naive"], df[["target_L", "target_a", "target_b"]].to_numpy())
    return card, df, naive, oracle_mod.floors(card)


def test_floors_are_tiered_and_pinned(floors_set):
    _, _, naive, tiers = floors_set
    means = {k: v["de00"].mean() for k, v in tiers.items()}
    assert set(means) == {f"oracle:{t}" for t in oracle_mod.TIERS} and all(oracle_mod.KNOWS.values())
    # measured (seed 3, 6 x 10 at 96 px): latents 0.27, observable 4.2, exif 7.2, naive 13.6
    assert means["oracle:latents"] < 0.5
    assert 2.0 < means["oracle:observable"] < 7.0
    assert 2.0 < means["oracle:exif"] < 12.0
    assert 8.0 < naive.mean() < 18.0
    assert means["oracle:latents"] <= means["oracle:observable"] <= naive.mean()
    assert means["oracle:latents"] <= means["oracle:exif"] <= naive.mean()


def test_evaluate_gives_one_tier(floors_set):
    card, _, _, tiers = floors_set
    res = oracle_mod.evaluate(card, rows=[0, 5, 7])  # the latents tier by default
    want = tiers["oracle:latents"].iloc[[0, 5, 7]]
    assert list(res["sample_id"]) == list(want["sample_id"])
    assert np.allclose(res["de00"], want["de00"])
    exif = oracle_mod.evaluate(card, rows=[0, 5, 7], tier="exif")
    assert np.allclose(exif["de00"], tiers["oracle:exif"].iloc[[0, 5, 7]]["de00"])


def test_observable_oracle_reads_no_hidden_per_photo_latent(floors_set, monkeypatch):
    card, df, _, tiers = floors_set
    rng = np.random.default_rng(0)
    scrambled = df.copy()
    for col in oracle_mod.HIDDEN_PER_PHOTO:
        scrambled[col] = rng.permutation(scrambled[col].to_numpy())
    def no_plan(*_a, **_k):  # the per-photo latents come from plan(): it must not be called
        raise AssertionError("the observable oracle replayed a photo's latents")
    monkeypatch.setattr(oracle_mod, "plan", no_plan)
    again = oracle_mod.floors(card, frame=scrambled, tiers=("oracle:observable",))["oracle:observable"]
    cols = ["oracle_L", "oracle_a", "oracle_b"]
    assert np.allclose(again[cols].to_numpy(), tiers["oracle:observable"][cols].to_numpy())
