"""The prepare CLI: the --images/--labels shortcut, --card, --skip-bad, --debug-crops, the shim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from raysweep.data.demo import FOREIGN, make_folder
from raysweep.errors import run_cli
from raysweep.prepare import main

ROOT = Path(__file__).resolve().parents[1]


def test_shortcut_writes_a_card_then_the_card_hits_the_cache(tmp_path, capsys):
    labels, _ = make_folder(tmp_path, n=6, size=96)
    rc = main(["--images", str(tmp_path), "--labels", str(labels), "--columns", FOREIGN,
               "--size", "32", "--no-progress", "--debug-crops", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "prepared 6 rows" in out and "2 debug overlay(s)" in out
    card = yaml.safe_load((tmp_path / "dataset.yaml").read_text())
    assert card["columns"]["L-true"] == "target_L" and card["manifest"] == "labels.csv"
    assert len(list((tmp_path / ".raysweep_cache" / "debug_crops").glob("*.png"))) == 2
    assert main(["--card", str(tmp_path), "--size", "32", "--no-progress"]) == 0
    assert "from the cache" in capsys.readouterr().out


def test_bad_rows_exit_2_with_one_paragraph_and_skip_bad_writes_rejects(tmp_path, capsys):
    labels, df = make_folder(tmp_path, n=6, size=96)
    df.loc[1, "L-true"] = 101
    df.loc[4, "file"] = "/abs/path.jpg"
    df.to_csv(labels, index=False)
    args = ["--images", str(tmp_path), "--labels", str(labels), "--columns", FOREIGN,
            "--size", "32", "--no-progress"]
    assert run_cli(main, args) == 2
    err = capsys.readouterr().err
    assert "\nerror: 2 bad row(s)" in err and "'s001'" in err and "'s004'" in err
    assert "Traceback" not in err
    assert run_cli(main, args + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "prepared 4 rows" in out and "skipped 2 bad row(s)" in out
    rejects = pd.read_csv(out.split("skipped 2 bad row(s): ")[1].strip())
    assert rejects["sample_id"].tolist() == ["s001", "s004"] and rejects["reason"].notna().all()


def test_argument_errors(tmp_path, capsys):
    assert run_cli(main, ["--size", "32"]) == 2
    assert "either --card, or --images and --labels" in capsys.readouterr().err
    labels, _ = make_folder(tmp_path, n=2, size=64)
    (tmp_path / "dataset.yaml").write_text("manifest: labels.csv\n")  # the user's own card
    assert run_cli(main, ["--images", str(tmp_path), "--labels", str(labels)]) == 2
    assert "was not written by raysweep" in capsys.readouterr().err
    assert run_cli(main, ["--images", str(tmp_path), "--labels", str(labels), "--card-out",
                          str(tmp_path / "x.yaml"), "--columns", "L-true:target_L"]) == 2
    assert "NAME=contract_name" in capsys.readouterr().err


def test_module_shim_smoke_test():
    r = subprocess.run([sys.executable, "-m", "raysweep.prepare", "--smoke-test"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "smoke test passed" in r.stdout
