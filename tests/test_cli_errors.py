"""Bad input across every CLI, run the way a user runs it: `python -m raysweep.<cli>` in a fresh
process. Each case must end with a non-zero exit, one `error:` paragraph that says what is wrong
and where, and no traceback (that is for --debug, which is checked to show one).

Most cases fail before Ray or MLflow start, so each costs about one interpreter start.
The in-process tests of the same checks (tests/test_spaces.py, tests/test_data_cli.py,
tests/test_data_bad_input.py, tests/test_predict.py, tests/test_synth.py) prove the messages in
detail; these prove what the terminal shows.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from raysweep.data.demo import FOREIGN, draw_photo, make_folder
from tests.helpers.cli import assert_clear_error, cli
from tests.helpers.servers import free_port


@pytest.fixture(scope="module")
def tiny_card(tmp_path_factory):
    from raysweep.synth import ensure_default_dataset

    return ensure_default_dataset(tmp_path_factory.mktemp("synth"), sets=2, tones=10, size=64,
                                  progress=False)


@pytest.fixture(scope="module")
def checkpoint_dir(tiny_card, tmp_path_factory):
    """A 1-epoch model trained on the tiny synthetic set (what predict needs)."""
    from raysweep.data.pipeline import load_prepared
    from raysweep.train.loop import fit

    data = load_prepared(tiny_card, crop="adaptive_bg", size=32, progress=False)
    out = tmp_path_factory.mktemp("model") / "ckpt"
    fit(dict(backbone="tinycnn", width=8, image_size=32, epochs=1, batch_size=16,
             features="image+meta", fusion="concat", device="cpu"), data,
        checkpoint_dir=str(out))
    return out


# ---- search ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragments", [
    (["--space", "nosuch"], ["unknown search space 'nosuch'", "quickstart"]),
    (["--space", "quickstart", "--set", "learning_rate=1e-3"], ["unknown parameter"]),
    (["--space", "quickstart", "--set", "lr=-0.1"], ["lr must be positive"]),
    (["--space", "quickstart", "--set", "epochs=0"], ["epochs must be positive"]),
    (["--space", "quickstart", "--num-samples", "0"], ["--num-samples must be at least 1"]),
    (["--space", "quickstart", "--max-concurrent", "0"], ["--max-concurrent must be at least 1"]),
    (["--space", "quickstart", "--data", "/nonexistent/dataset"], ["no dataset card"]),
    (["--resume", "--name", "never-ran"], ["no sweep named 'never-ran'"]),
    ([], ["no search space given"]),
], ids=["unknown-space", "unknown-param", "negative-lr", "zero-epochs", "zero-samples",
        "zero-concurrency", "missing-dataset", "resume-unknown", "no-space"])
def test_search_bad_input(tmp_path, args, fragments):
    r = cli("search", *args, "--storage", tmp_path / "runs", cwd=tmp_path)
    assert_clear_error(r, *fragments)
    # failed before anything was started or written: no sweep folder, no MLflow store
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlruns.db").exists()


def test_search_debug_shows_the_traceback(tmp_path):
    r = cli("search", "--space", "nosuch", "--debug", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr and "UserError" in r.stderr


@pytest.mark.slow  # measured above 15 s in `make test-fast` on 2 shared cores
def test_search_with_the_tracking_server_down(tmp_path, tiny_card):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    r = cli("search", "--space", "quickstart", "--data", tiny_card, "--storage",
            tmp_path / "runs", cwd=tmp_path,
            env={"MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    assert_clear_error(r, "cannot reach the MLflow tracking store", url)
    assert "retrying in" in r.stderr  # it did retry, with backoff, before giving up
    assert not (tmp_path / "runs").exists()  # and no sweep was started


# ---- prepare ---------------------------------------------------------------------------------

@pytest.fixture
def bad_folder(tmp_path):
    """6 photos: one corrupt, one truncated, one grayscale (unsupported mode), one NaN target."""
    import cv2

    labels, df = make_folder(tmp_path, n=6, size=96)
    (tmp_path / df.file[1]).write_bytes(b"not a jpeg" * 50)
    data = (tmp_path / df.file[3]).read_bytes()
    (tmp_path / df.file[3]).write_bytes(data[: len(data) // 2])
    cv2.imwrite(str(tmp_path / "photos" / "gray.png"), np.full((96, 96), 120, np.uint8))
    df.loc[0, "file"] = "photos/gray.png"
    df.loc[4, "a-true"] = np.nan
    df.to_csv(labels, index=False)
    return tmp_path, labels


def test_prepare_lists_every_bad_photo_and_target(bad_folder):
    root, labels = bad_folder
    r = cli("prepare", "--images", root, "--labels", labels, "--columns", FOREIGN, "--size", 32,
            "--no-progress", cwd=root)
    msg = assert_clear_error(r, "4 bad row(s)", "--skip-bad")
    for sid, why in (("s000", "grayscale"), ("s001", "not a readable image"),
                     ("s003", "truncated"), ("s004", "missing value (NaN)")):
        line = next(x for x in msg.splitlines() if f"sample_id {sid!r}" in x)
        assert why in line, line


def test_prepare_accepts_a_photo_without_exif_with_a_warning(tmp_path):
    from PIL import Image

    labels, df = make_folder(tmp_path, n=6, size=96)
    rgb, _ = draw_photo(np.random.default_rng(3), 96)
    Image.fromarray(rgb).save(tmp_path / df.file[2])  # re-saved without EXIF
    r = cli("prepare", "--images", tmp_path, "--labels", labels, "--columns", FOREIGN, "--size",
            32, "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no camera metadata" in r.stderr and "Traceback" not in r.stderr
    assert "prepared 6 rows" in r.stdout


@pytest.mark.parametrize("args, fragments", [
    (["--card", "/nonexistent/dataset.yaml"], ["no dataset card"]),
    (["--size", "0"], ["crop size 0 is too small"]),
    (["--val-fraction", "-0.2"], ["fraction"]),
], ids=["missing-card", "zero-size", "negative-fraction"])
def test_prepare_bad_arguments(tmp_path, tiny_card, args, fragments):
    full = args if "--card" in args else ["--card", tiny_card, "--size", "32", *args]
    assert_clear_error(cli("prepare", *full, "--no-progress", cwd=tmp_path), *fragments)


# ---- synth -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragments", [
    (["--sets", "0"], ["--sets must be at least 1"]),
    (["--tones", "-3"], ["--tones must be at least 1"]),
    (["--size", "16"], ["--size 16"]),
], ids=["zero-sets", "negative-tones", "tiny-size"])
def test_synth_bad_arguments(tmp_path, args, fragments):
    assert_clear_error(cli("synth", "--out", tmp_path / "out", *args, "--no-progress",
                           cwd=tmp_path), *fragments)
    assert not (tmp_path / "out").exists()


def test_synth_report_of_a_folder_that_is_no_dataset(tmp_path):
    assert_clear_error(cli("synth", "--report", tmp_path, cwd=tmp_path), "no dataset.yaml")


# ---- eval_winners and summarize -------------------------------------------------------------

@pytest.mark.parametrize("module", ["eval_winners", "summarize"])
@pytest.mark.parametrize("args, fragments", [
    (["--experiment", "nosuch"], ["no MLflow experiment 'nosuch'"]),
    (["--parent-run", "0123456789abcdef0123456789abcdef"], ["no MLflow run"]),
], ids=["unknown-experiment", "unknown-parent"])
def test_mlflow_readers_name_what_is_missing(tmp_path, mlflow_db, module, args, fragments):
    # An empty store whose schema exists (conftest's copy): the command skips the migrations.
    assert_clear_error(cli(module, *args, "--tracking-uri", mlflow_db.tracking_uri, cwd=tmp_path),
                       *fragments)


@pytest.mark.parametrize("module", ["eval_winners", "summarize"])
def test_mlflow_readers_with_the_server_down(tmp_path, module):
    url = f"http://127.0.0.1:{free_port()}"
    r = cli(module, "--experiment", "quickstart", "--tracking-uri", url, cwd=tmp_path,
            env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    assert_clear_error(r, "cannot reach the MLflow tracking store", "Connection refused")


# ---- predict ---------------------------------------------------------------------------------

@pytest.mark.slow  # measured above 15 s in `make test-fast` on 2 shared cores
def test_predict_bad_model_and_photos(tmp_path, checkpoint_dir, tiny_card):
    import cv2

    good = next((tiny_card.parent).rglob("*.jpg"))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), np.full((64, 64), 90, np.uint8))
    assert_clear_error(cli("predict", good, "--model", tmp_path / "nomodel", cwd=tmp_path),
                       "not a raysweep checkpoint")
    for photo, why in ((tmp_path / "missing.jpg", "missing.jpg"), (corrupt, "corrupt.jpg"),
                       (truncated, "truncated"), (gray, "grayscale")):
        r = cli("predict", photo, "--model", checkpoint_dir, cwd=tmp_path)
        assert_clear_error(r, why)


def test_predict_unknown_camera_is_a_warning_and_a_note(tmp_path, checkpoint_dir, tiny_card):
    good = sorted((tiny_card.parent).rglob("*.jpg"))[:2]
    pd.DataFrame({"photo": [p.name for p in good], "camera": "Pixel 9 Pro"}).to_csv(
        tmp_path / "meta.csv", index=False)
    r = cli("predict", *good, "--model", checkpoint_dir, "--meta", tmp_path / "meta.csv",
            "--format", "csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "unknown-camera bucket" in r.stderr and "Traceback" not in r.stderr
    out = pd.read_csv(io.StringIO(r.stdout))
    assert len(out) == 2 and out["notes"].str.contains("unknown camera").all()
    assert np.isfinite(out[["L", "a", "b"]].to_numpy()).all()
