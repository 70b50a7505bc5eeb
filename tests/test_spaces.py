"""Search spaces and the CLI checks that must fail before Ray starts (no Ray in this module)."""

from __future__ import annotations

import pickle

import optuna
import pytest

from raysweep.config import SELECT_METRIC, SELECT_MODE, TrainConfig
from raysweep.errors import UserError
from raysweep.search import main as search_main
from raysweep.sweep import spaces

BUILTIN = ["backbones", "full", "fusion", "losses", "quickstart", "study", "tabular"]


def test_builtin_spaces_are_listed():
    assert set(BUILTIN) <= set(spaces.builtin_spaces())


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_space_is_documented_and_valid(name):
    sp = spaces.load_space(name)
    for word in ("Scientific", "Nuisance", "Fixed"):
        assert word in sp.doc, f"{name}: docstring must state the {word} hyper-parameters"
    assert sp.question.endswith("?") or sp.question
    checked = spaces.check_space(sp, {}, n=48)
    assert checked.names, "a space must search something"
    assert checked.variants
    for sample in checked.samples:  # every sample is a complete, valid TrainConfig
        TrainConfig.from_dict(sample)


def test_conditional_parameters_only_where_they_apply():
    sp = spaces.load_space("fusion")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        out = spaces.DefineByRun(sp.define_by_run, sp.FIXED, {})(trial)
        seen.add(out["fusion"])
        assert ("film_stages" in trial.params) == (out["fusion"] == "film")
        assert ("xattn_heads" in trial.params) == (out["fusion"] == "xattn")
        study.tell(trial, 0.0)
    assert seen == {"concat", "film", "xattn"}


def test_full_space_prepares_every_crop_and_size():
    checked = spaces.check_space(spaces.load_space("full"), {}, n=96)
    assert {c for c, _ in checked.variants} == {"center_bg", "center_nobg", "adaptive_bg",
                                                "adaptive_nobg"}
    assert {s for _, s in checked.variants} == {64, 128}


def test_set_fixes_a_searched_parameter_and_is_typed():
    sp = spaces.load_space("quickstart")
    overrides = spaces.parse_sets(["lr=0.005", "backbone=smallcnn", "augment=false"])
    assert overrides == {"lr": 0.005, "backbone": "smallcnn", "augment": False}
    study = optuna.create_study()
    trial = study.ask()
    out = spaces.DefineByRun(sp.define_by_run, sp.FIXED, overrides)(trial)
    assert out["lr"] == 0.005 and out["backbone"] == "smallcnn"
    assert "lr" not in trial.params and "backbone" not in trial.params  # not searched any more
    assert "features" in trial.params


def test_define_by_run_wrapper_pickles_for_resume():
    sp = spaces.load_space("quickstart")
    fn = pickle.loads(pickle.dumps(spaces.DefineByRun(sp.define_by_run, sp.FIXED, {"lr": 0.01})))
    out = fn(optuna.trial.FixedTrial({"features": "image+mean+ring+meta", "head": "ccm",
                                      "weight_decay": 1e-4}))
    assert out["lr"] == 0.01 and out["head"] == "ccm" and out["image_size"] == 32


def test_user_space_file(tmp_path):
    path = tmp_path / "my_study.py"
    path.write_text('"""My study: lr only?"""\nFIXED = {"backbone": "tinycnn"}\nNUM_SAMPLES = 3\n'
                    'def define_by_run(trial):\n'
                    '    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True)}\n')
    sp = spaces.load_space(str(path))
    assert sp.name == "my_study" and sp.NUM_SAMPLES == 3 and sp.FIXED == {"backbone": "tinycnn"}
    assert spaces.check_space(sp, {}).names == {"lr"}
    # Tune pickles the searcher by reference: the module must be importable by its name.
    fn = pickle.loads(pickle.dumps(sp.define_by_run))
    assert fn is sp.define_by_run


@pytest.mark.parametrize("body, message", [
    ('return {"lrr": trial.suggest_float("lrr", 1e-4, 1e-2)}', "unknown parameter 'lrr'"),
    ('return {"fusion": trial.suggest_categorical("fusion", ["concat", "bogus"])}',
     "unknown fusion 'bogus'"),
    ('return {"features": "meta", "fusion": "film"}', "cannot apply"),
    ('return {"seed": trial.suggest_int("seed", 0, 3)}', "data-split setting"),
    ('return {"backbone": "resnet_does_not_exist"}', "unknown backbone"),
    ('return 1 / 0', "ZeroDivisionError"),
])
def test_bad_space_fails_with_a_clear_message(tmp_path, body, message):
    path = tmp_path / "bad.py"
    path.write_text(f'"""bad"""\ndef define_by_run(trial):\n    {body}\n')
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        spaces.check_space(spaces.load_space(str(path)), {})


def test_a_space_cannot_choose_another_metric_than_every_other_part_ranks_by(tmp_path):
    # Tune honoured a space's METRIC/MODE, but checkpoints and eval_winners ranked by
    # val_de00_mean (min): a space may no longer say it, and all parts use one constant.
    from raysweep.evaluate import trials

    path = tmp_path / "own_metric.py"
    path.write_text('"""m"""\nMETRIC = "val_de00_p95"\nMODE = "max"\n'
                    "def define_by_run(trial):\n    return {}\n")
    with pytest.raises(UserError, match="sets METRIC and MODE") as err:
        spaces.load_space(str(path))
    assert "remove METRIC and MODE from the space" in err.value.message()
    assert (SELECT_METRIC, SELECT_MODE) == ("val_de00_mean", "min")
    assert trials.METRIC == SELECT_METRIC and "METRIC" not in spaces.SETTINGS


@pytest.mark.parametrize("argv, message", [
    (["--space", "nosuchspace"], "unknown search space 'nosuchspace'"),
    (["--space", "/nonexistent/space.py"], "does not exist"),
    (["--space", "quickstart", "--set", "learning_rate=1e-3"], "unknown parameter 'learning_rate'"),
    (["--space", "quickstart", "--set", "lr=fast"], "lr='fast' is not a valid float"),
    (["--space", "quickstart", "--set", "lr=-1"], "lr must be positive"),
    (["--space", "quickstart", "--set", "fusion=film", "--set", "features=image", "--set",
      "head=lab"], "needs a non-image input"),
    (["--space", "quickstart", "--set", "crop"], "is not key=value"),
    (["--space", "quickstart", "--resume"], "--resume needs the --name"),
])
def test_cli_fails_fast_with_exit_2_and_no_ray(argv, message, capsys, tmp_path, monkeypatch):
    from raysweep.errors import run_cli
    from raysweep.sweep import resources

    monkeypatch.chdir(tmp_path)
    # The session's Ray may be up (tests/conftest.py): "no Ray" = the CLI never connects.
    monkeypatch.setattr(resources, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    rc = run_cli(search_main, [*argv, "--storage", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    if "unknown search space" in message:
        assert "quickstart" in err and "fusion" in err  # lists the valid names
    if "learning_rate" in message:
        assert "lr" in err and "weight_decay" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlruns.db").exists()


def test_resume_of_unknown_sweep_fails_before_ray(tmp_path, capsys):
    from raysweep.errors import run_cli

    rc = run_cli(search_main, ["--space", "quickstart", "--resume", "--name", "nope",
                               "--storage", str(tmp_path)])
    assert rc == 2 and "no sweep named 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("fixed,searched,ignored", [
    # width over a timm backbone, film_stages without FiLM, an aux weight without an aux loss
    ('{"backbone": "resnet18"}', '"width": trial.suggest_categorical("width", [16, 32])',
     "width: backbone='resnet18' is a timm model with its own width"),
    ('{"fusion": "concat"}', '"film_stages": trial.suggest_int("film_stages", 1, 3)',
     "film_stages: fusion='concat', not film"),
    ('{"aux_loss": "none"}', '"aux_weight": trial.suggest_float("aux_weight", 0.01, 1.0)',
     "aux_weight: aux_loss='none'"),
    ('{"features": "mean+meta", "fusion": "none"}',
     '"image_space": trial.suggest_categorical("image_space", ["srgb", "linear"])',
     "image_space: features='mean+meta' has no image (the tabular MLP)"),
])
def test_a_searched_setting_the_model_ignores_is_refused_saying_why(tmp_path, fixed, searched,
                                                                     ignored):
    path = tmp_path / "mine.py"
    path.write_text(f'"""mine"""\nFIXED = {fixed}\ndef define_by_run(trial):\n'
                    f'    return {{"lr": trial.suggest_float("lr", 1e-4, 1e-2), {searched}}}\n')
    name = searched.split('"')[1]
    with pytest.raises(UserError) as e:
        spaces.check_space(spaces.load_space(str(path)), {}, n=4)
    assert ignored in str(e.value) and "which the model ignores" in str(e.value)
    assert "mine.py" in str(e.value) and f"--set {name}=" in str(e.value)
    # fixed by --set, it is no longer searched: the user asked for it (and it is harmless)
    value = spaces.parse_sets([f"{name}={'2' if name != 'image_space' else 'srgb'}"])
    assert spaces.check_space(spaces.load_space(str(path)), value, n=4).samples


# -- the space against the data: presets the data cannot feed are not searched ------------------

def _sheet(root, ring: bool = False):
    """A phone spreadsheet's card (mean_L/a/b and EXIF, no photos), with or without ring_*."""
    from raysweep.data.prepared import RING_NAMES
    from tests.helpers.photos import tabular

    tabular(root, n=12, **({name: 0.5 for name in RING_NAMES} if ring else {}))
    return root / "dataset.yaml"


def _resolve(tmp_path, monkeypatch, space: str, data, *sets: str):
    from raysweep.sweep.resolve import resolve
    from raysweep.sweep.spec import Request

    monkeypatch.chdir(tmp_path)  # the default tracking store names a file in the cwd
    return resolve(Request(space=space, data=str(data), sets=sets,
                           storage=str(tmp_path / "runs")))


def _notes(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "left out of the search" in r.getMessage()]


def test_a_sheet_without_ring_columns_searches_only_the_features_it_can_feed(
        tmp_path, monkeypatch, caplog):
    # The colleague's phone sheet: mean+ring+meta failed in every trial that drew it (and was
    # retried), mean+inv+meta trained on an all-missing block: a third of the budget for nothing.
    caplog.set_level("INFO")
    _, sweep = _resolve(tmp_path, monkeypatch, "tabular", _sheet(tmp_path / "sheet"))
    assert {s["features"] for s in sweep.checked.samples} == {"mean+meta"}
    (note,) = _notes(caplog)  # one console line: what was left out, and why
    assert "mean+ring+meta" in note and "mean+inv+meta" in note and "no ring_* columns" in note
    # The searcher Tune runs (pickled with the sweep for --resume) offers only that preset.
    sp = sweep.space
    sampler = pickle.loads(pickle.dumps(spaces.DefineByRun(
        sp.define_by_run, sp.FIXED, sweep.overrides, sweep.missing)))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    for _ in range(6):
        trial = study.ask()
        assert sampler(trial)["features"] == "mean+meta"
        assert trial.distributions["features"].choices == ("mean+meta",)
        study.tell(trial, 1.0)
    # A searcher pickled before the pruning existed (--resume of an older sweep) still samples.
    del sampler.__dict__["missing"], sampler.__dict__["removed"]
    assert sampler(optuna.create_study().ask())["features"] in ("mean+ring+meta", "mean+meta",
                                                               "mean+inv+meta")


@pytest.mark.parametrize("pinned", ["mean+ring+meta", "mean+inv+meta"])
def test_a_pinned_ring_preset_on_a_sheet_without_ring_fails_at_submit_naming_the_fix(
        tmp_path, monkeypatch, capsys, pinned):
    from raysweep.errors import run_cli
    from raysweep.sweep import resources

    card = _sheet(tmp_path / "sheet")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(resources, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    rc = run_cli(search_main, ["--space", "tabular", "--data", str(card), "--set",
                               f"features={pinned}", "--storage", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"features {pinned} needs what the data lacks" in err and "no ring_* columns" in err
    assert f"Where: --set features={pinned}" in err
    assert "--set features=mean+meta" in err and "add the ring_* columns" in err
    assert not (tmp_path / "runs").exists()


def test_data_with_ring_keeps_every_choice_and_a_sheet_loses_the_image_ones(
        tmp_path, monkeypatch, caplog):
    from raysweep.sweep.data import missing_blocks

    caplog.set_level("INFO")
    card = _sheet(tmp_path / "ringed", ring=True)
    assert set(missing_blocks(card)) == {"image"}  # a sheet: no photos, but its own ring
    assert set(missing_blocks(_sheet(tmp_path / "bare"))) == {"image", "ring"}
    _, sweep = _resolve(tmp_path, monkeypatch, "tabular", card)
    assert {s["features"] for s in sweep.checked.samples} == {"mean+ring+meta", "mean+meta",
                                                             "mean+inv+meta"}
    assert not _notes(caplog) and not sweep.checked.pruned
    # An image space on the same sheet: the image presets go too (each trial failed on them)
    _, sweep = _resolve(tmp_path, monkeypatch, "full", card)
    assert {s["features"] for s in sweep.checked.samples} == {"mean+meta", "meta", "mean",
                                                             "mean+ring+meta", "ring+meta"}
    assert "no photos" in _notes(caplog)[-1]
    # and one with nothing but image presets cannot run a trial: refused, saying what to do
    with pytest.raises(UserError, match="no trial could run") as e:
        _resolve(tmp_path, monkeypatch, "quickstart", card)
    assert "search --space tabular" in e.value.message()
