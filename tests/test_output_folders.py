"""No raysweep command deletes a user's files (issue 25, critical): an output folder is replaced
only when it is empty or holds a previous raysweep output (the marker file)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raysweep.errors import UserError
from raysweep.fsutil import MARKER, atomic_dir, check_replaceable
from tests.helpers.cli import assert_clear_error, cli


def _write(out: Path, text: str = "new") -> None:
    with atomic_dir(out) as tmp:
        (tmp / "report.md").write_text(text)


def test_a_folder_of_the_users_is_refused_and_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match="did not write"):
        _write(out)
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temp folder left behind"


def test_a_file_is_refused_not_moved_aside(tmp_path):
    out = tmp_path / "out"
    out.write_text("precious")
    with pytest.raises(UserError, match="is a file"):
        _write(out)
    assert out.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_working_directory_and_its_parents_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (".", "..", str(work)):
        with pytest.raises(UserError, match="working directory"):
            check_replaceable(out)
    assert work.is_dir()


def test_a_previous_raysweep_output_is_replaced_whole(tmp_path):
    out = tmp_path / "out"
    _write(out, "first")
    assert (out / MARKER).is_file()
    (out / "stale.csv").write_text("from the first run")
    _write(out, "second")
    assert (out / "report.md").read_text() == "second"
    assert not (out / "stale.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no .old or .tmp left"


def test_an_empty_folder_is_used(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _write(out)
    assert (out / "report.md").read_text() == "new"


def test_a_checkpoint_written_before_the_marker_is_still_replaceable(tmp_path):
    from raysweep.train.checkpoint import CHECKPOINT_FILES

    old = tmp_path / "ckpt"
    old.mkdir()
    for name in CHECKPOINT_FILES:
        (old / name).write_bytes(b"x")
    with atomic_dir(old, also=CHECKPOINT_FILES) as tmp:
        (tmp / "model.pt").write_bytes(b"y")
    assert (old / "model.pt").read_bytes() == b"y"
    (old / "notes.txt").write_text("mine")
    os.remove(old / MARKER)
    with pytest.raises(UserError):
        check_replaceable(old, also=CHECKPOINT_FILES)


@pytest.mark.parametrize("out", ["out", "."])
def test_eval_winners_refuses_before_any_work(tmp_path, out):
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    (work / "out" / "keep.txt").write_text("precious")
    (work / "notes.txt").write_text("mine")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}"}
    r = cli("eval_winners", "--out", out, cwd=work, env=env)
    assert_clear_error(r, "--out")
    assert (work / "out" / "keep.txt").read_text() == "precious"
    assert (work / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "empty.db").exists(), "refused before the store was even opened"
