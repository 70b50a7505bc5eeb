"""raysweep.uri: the one place that tells a storage URI from a local path."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysweep.uri import is_remote, is_uri, local_path


@pytest.mark.parametrize("location, uri, remote, path", [
    ("s3://bucket/raysweep", True, True, "s3://bucket/raysweep"),
    ("gs://b/x", True, True, "gs://b/x"),
    ("memory://x", True, True, "memory://x"),
    ("file:///tmp/runs", True, False, "/tmp/runs"),
    ("FILE:///tmp/runs", True, False, "/tmp/runs"),
    ("local:///mnt/shared", True, False, "/mnt/shared"),
    ("/tmp/runs", False, False, "/tmp/runs"),
    ("runs/s1", False, False, "runs/s1"),
    (Path("/tmp/x"), False, False, "/tmp/x"),
])
def test_uri_remote_and_local_path(location, uri, remote, path):
    assert is_uri(location) is uri
    assert is_remote(location) is remote
    assert local_path(location) == path


def test_checkpoint_transfer_reads_local_and_file_uris_as_local(tmp_path):
    import pyarrow.fs

    from raysweep.train.transfer import checkpoint_location, local_checkpoint_dir

    assert local_checkpoint_dir(str(tmp_path)) == str(tmp_path)
    assert local_checkpoint_dir(f"file://{tmp_path}") == str(tmp_path)
    assert local_checkpoint_dir(str(tmp_path / "missing")) is None
    assert local_checkpoint_dir("s3://bucket/ckpt") is None
    fs, path = checkpoint_location(str(tmp_path), storage=f"file://{tmp_path}")
    assert isinstance(fs, pyarrow.fs.LocalFileSystem) and path == str(tmp_path)


def test_copy_checkpoint_copies_a_folder_given_by_file_uri(tmp_path):
    from raysweep.train.transfer import copy_checkpoint

    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "checkpoint.json").write_text("{}")
    out = copy_checkpoint(f"file://{src}", storage=None, dst=str(tmp_path / "copy"))
    assert (Path(out) / "checkpoint.json").read_text() == "{}"
