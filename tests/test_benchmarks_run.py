"""benchmarks.run (RESULTS.md assembly) and the study's analysis helpers, on canned inputs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import benchmarks
from benchmarks import run as bench
from benchmarks import study_analysis as study
from raysweep.errors import UserError


def test_unknown_benchmark_lists_valid_names():
    with pytest.raises(UserError) as e:
        bench.parse_names("synth_speed,nope", "--only")
    assert "nope" in str(e.value) and "study" in str(e.value)


def test_only_keeps_other_sections_and_replaces_the_one_run(tmp_path, monkeypatch):
    out = tmp_path / "RESULTS.md"
    calls = []

    def fake_child(name, quick, log_dir):
        calls.append((name, quick))
        return f"## {name}\n\nfresh {name}", 1.0, ""

    monkeypatch.setattr(bench, "run_child", fake_child)
    assert bench.main(["--quick", "--out", str(out), "--skip", "study"]) == 0
    first = out.read_text()
    assert "fresh synth_speed" in first and "fresh predict_latency" in first
    assert "## study" not in first
    assert ("study", True) not in calls

    def failing(name, quick, log_dir):
        return "", 2.0, "exit code 1; last lines of its output:\nBoom"

    monkeypatch.setattr(bench, "run_child", failing)
    assert bench.main(["--quick", "--out", str(out), "--only", "crop_quality"]) == 1
    text = out.read_text()
    assert "## crop_quality: FAILED" in text and "Boom" in text
    assert "fresh synth_speed" in text  # carried over from the previous file
    assert text.count("<!-- section: synth_speed -->") == 1
    assert not list(tmp_path.glob(".RESULTS.md.*"))  # no temp file left behind


def test_a_quick_run_never_replaces_full_results(tmp_path, monkeypatch):
    out = tmp_path / "RESULTS.md"
    monkeypatch.setattr(bench, "run_child", lambda name, quick, log_dir: (f"## {name}\n\nx", 1.0, ""))
    assert bench.main(["--out", str(out), "--only", "synth_speed"]) == 0
    full = out.read_text()
    assert "(full mode)" in full
    assert bench.main(["--quick", "--out", str(out), "--only", "synth_speed"]) == 0
    assert out.read_text() == full  # untouched
    assert "(--quick mode)" in (tmp_path / "RESULTS_quick.md").read_text()


def test_a_section_keeps_its_numbers_beside_its_markdown(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(benchmarks, "RESULTS", tmp_path)
    section = benchmarks.Section("## s\n\n" + benchmarks.md_table([(1, 0.12345, "a|b")],
                                                                 ["n", "x", "t"]),
                                 {"rows": pd.DataFrame({"n": [1], "x": [0.12345]})})
    written = benchmarks.write_section("demo", True, section)
    assert [p.name for p in written] == ["demo_quick.md", "demo_quick.json"]
    assert "| 1 | 0.123 | a/b |" in (tmp_path / "demo_quick.md").read_text()
    assert json.loads((tmp_path / "demo_quick.json").read_text()) == {
        "rows": [{"n": 1, "x": 0.12345}]}
    assert not (tmp_path / "demo.md").exists()  # quick never writes the full-size name


def test_the_machine_description_comes_from_the_machine(tmp_path, monkeypatch):
    here = benchmarks.machine()
    assert here["cores"] >= 1 and here["cpu"]
    gpu = {**here, "gpus": ["NVIDIA H200"]}
    monkeypatch.setattr(bench, "machine", lambda: gpu)
    monkeypatch.setattr(bench, "run_child", lambda name, quick, log_dir: (f"## {name}", 1.0, ""))
    out = tmp_path / "RESULTS.md"
    assert bench.main(["--out", str(out), "--only", "synth_speed"]) == 0
    text = out.read_text()
    assert "NVIDIA H200" in text and "no GPU" not in text


@pytest.mark.parametrize("name", [n for n in bench.BENCHMARKS if n != "study"])
def test_no_section_hard_codes_the_machine(name):
    """Run-specific prose ('no GPU', 'this machine') must come from benchmarks.machine()."""
    source = (bench.HERE / f"{name}.py").read_text()
    for phrase in ("no GPU", "this machine", "this session", "2-core machine"):
        assert phrase not in source, (name, phrase)


def test_figure_links_point_into_results(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    (tmp_path / "a.png").write_bytes(b"png")
    text = bench.link_figures("![x](a.png) ![y](missing.png) ![z](results/a.png)")
    assert text == "![x](results/a.png) ![y](missing.png) ![z](results/a.png)"


def test_verdict_needs_an_interval_that_excludes_zero():
    assert study.verdict(-0.5, -0.1) == "agrees"
    assert study.verdict(0.1, 0.5) == "disagrees"
    assert study.verdict(-0.5, 0.1).startswith("inconclusive")
    assert study.verdict(0.1, 0.5, expect_negative=False) == "agrees"


def test_ratio_interval_brackets_the_ratio():
    rng = np.random.default_rng(0)
    den = rng.gamma(2.0, 1.0, 300)
    num = 5 * den + rng.normal(0, 0.1, 300)
    r, lo, hi = study.ratio_ci(num, den)
    assert lo < r < hi and 4.5 < r < 5.5


def _models():
    cells = [("adaptive_bg", "image", "none", 5.0, 3.0), ("adaptive_bg", "image+meta", "concat", 4.0, 2.0),
             ("adaptive_bg", "image+meta", "xattn", 4.5, 1.0),  # best on test, not on val
             ("adaptive_nobg", "image", "none", 6.0, 4.0),
             ("adaptive_nobg", "image+meta", "film", 4.2, 2.5)]
    return pd.DataFrame([{"model": f"m{i} (smallcnn/{fu}/{f}/{c})", "crop": c, "features": f,
                          "fusion": fu, "val_de00_mean": v, "level": t}
                         for i, (c, f, fu, v, t) in enumerate(cells)])


def test_groups_are_picked_by_validation_and_compared_on_the_same_photos():
    models = _models()
    assert study.best(models, crop="adaptive_bg", features=study.has_meta)["fusion"] == "concat"
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.2, 200)
    errs = {r.model: r.level + noise for r in models.itertuples()}
    eff = study.effects(models, errs).set_index("question")
    bg = eff.loc["metadata, adaptive_bg: best image+meta vs image"]
    assert bg["diff"] == pytest.approx(-1.0) and bg["hi"] < 0  # concat (val pick) - image
    nobg = eff.loc["metadata, adaptive_nobg: best image+meta vs image"]
    assert nobg["diff"] == pytest.approx(-1.5)
    inter = eff.loc["interaction: metadata effect without background minus with"]
    assert inter["diff"] == pytest.approx(-0.5)


def test_xattn_is_the_best_fusion_only_if_it_beats_every_other():
    def eff(rows):
        return pd.DataFrame([{"question": f"fusion: best xattn vs best {o}", "diff": (lo + hi) / 2,
                              "lo": lo, "hi": hi} for o, lo, hi in rows])

    assert study.fusion_verdict(eff([("concat", -0.4, -0.1), ("film", -0.3, -0.05)]))[1] == "agrees"
    said = study.fusion_verdict(eff([("concat", -0.4, -0.1), ("film", -0.1, 0.2)]))[1]
    assert said == "inconclusive (xattn ties film)"
    said = study.fusion_verdict(eff([("concat", 0.1, 0.3), ("film", -0.1, 0.2)]))[1]
    assert said.startswith("disagrees (concat")


def test_a_benchmark_help_runs_nothing_and_a_typo_is_refused(monkeypatch, capsys, tmp_path):
    def must_not_run(quick=False):
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(benchmarks, "RESULTS", tmp_path)
    for argv in (["--help"], ["--quick", "--from-nowhere"]):
        monkeypatch.setattr("sys.argv", ["benchmarks.x", *argv])
        with pytest.raises(SystemExit) as e:
            benchmarks.main("x", must_not_run)
        assert e.value.code == (0 if argv == ["--help"] else 2)
    assert "--quick" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_a_benchmark_alternative_flag_selects_its_run(monkeypatch, tmp_path):
    monkeypatch.setattr(benchmarks, "RESULTS", tmp_path)
    monkeypatch.setattr("sys.argv", ["benchmarks.x", "--quick", "--from-saved"])
    ran = []
    benchmarks.main("x", lambda quick: ran.append(("run", quick)) or "## x",
                    {"--from-saved": (lambda quick: ran.append(("saved", quick)) or "## x", "h")})
    assert ran == [("saved", True)]
    assert (tmp_path / "x_quick.md").read_text().startswith("## x")


def test_every_section_of_results_md_is_one_the_runner_keeps():
    """A section the runner does not know would vanish the next time it rewrites RESULTS.md."""
    text = (bench.HERE / "RESULTS.md").read_text()
    names = re.findall(r"<!-- section: (\w+) -->", text)
    assert names, "no sections found: the marker format changed"
    known = (*bench.BENCHMARKS, *bench.GPU_BENCHMARKS)
    assert [n for n in names if n not in known] == []
    assert set(bench.old_sections(bench.HERE / "RESULTS.md")) == set(names)
