"""The package layout that ARCHITECTURE.md describes, checked: one name means one thing, no
import cycles, no import from a lower layer to a higher one, only the commands and the shared
cores at the top level, every function-local import with its reason, no function over 60 lines
or 8 parameters, and every module the map names exists."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "raysweep"
COMMANDS = {"search", "eval_winners", "prepare", "predict", "summarize"}
CORES = {"config", "errors", "color", "fsutil", "uri", "_compat"}
SPECIAL = {"__init__", "__main__"}
# The layers of ARCHITECTURE.md, bottom up: a module imports only from layers below its own (or
# from its own subpackage). Two subpackages on one layer do not import each other.
# A function-local import of these is allowed without a word: importing them takes seconds (a
# command must start fast) or they are optional; not where the module already imports the same
# package at its top (it is loaded then anyway). Any other function-local import says why with
# "lazy: <reason>" on the line above it or on one of its own lines, or moves to the top of its
# module. There is no list of exceptions: the rule holds for every module.
LAZY = {
    "ray": "seconds to import; read-only commands and local runs never start Ray",
    "mlflow": "seconds to import; checkpoint paths and --no-mlflow never need it",
    "optuna": "loaded with Ray Tune's searcher only",
    "torch": "seconds to import; commands that only read tables never need it",
    "torchvision": "loaded with the pretrained backbones only",
    "timm": "optional backbones",
    "sentence_transformers": "optional text encoder",
    "matplotlib": "plots only, in reports",
    "colour": "optional colour-science, the synth calibration only",
    "cv2": "slow to import; photo paths only",
    "sklearn": "slow to import; the baselines only",
    "scipy": "slow to import; a few statistics only",
    "pyarrow": "remote storage only",
    "botocore": "S3 only",
    "boto3": "S3 only",
    "piexif": "EXIF writing only",
    "exifread": "EXIF reading only",
}
MAX_LINES, MAX_PARAMS = 60, 8  # per function (a data record's fields are not parameters)
LAYERS = {"cores": 0, "data": 1, "synth": 1, "models": 2, "train": 3, "tracking": 4, "sweep": 5,
          "serve": 5, "evaluate": 6, "commands": 7}


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The raysweep modules `name` imports anywhere in its file (module level or inside a
    function: a function-local import still makes a cycle, it only hides it)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from raysweep.x import y` imports module raysweep.x.y when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import raysweep.x.attr` -> raysweep.x
                target = target.rpartition(".")[0]
            if target.startswith("raysweep") and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges = {name: imports(name, path, known) for name, path in mods.items()}
    # A package importing its own submodules (its public face) is not a dependency of the
    # package's parts on each other; drop `package -> package.sub` edges.
    return {n: {t for t in ts if not t.startswith(n + ".")} for n, ts in edges.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def functions(path: Path):
    """Every function and method defined in a file (nested ones included)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def top_level_packages(path: Path) -> set[str]:
    """The packages a module imports at its top (absolute imports only)."""
    found = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add((node.module or "").split(".")[0])
    return found


def untagged_local_imports(root: Path = PACKAGE) -> set[str]:
    """"module path: imported name" for every function-local import that does not say
    `lazy: <reason>` on the line above it or on one of its own lines, unless it is of a LAZY
    package that its module does not already import at the top (then LAZY's reason holds)."""
    found = set()
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        top = top_level_packages(path)
        for fn in functions(path):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = ["." * node.level + (node.module or "")]
                else:
                    continue
                said = " ".join(lines[max(0, node.lineno - 2):node.end_lineno])
                for name in names:
                    lazy = name.split(".")[0] in LAZY and name.split(".")[0] not in top
                    if not lazy and "lazy:" not in said:
                        found.add(f"{path.relative_to(root).as_posix()}: {name}")
    return found


def test_function_local_imports_say_why():
    untagged = sorted(untagged_local_imports())
    assert not untagged, ("function-local imports without a reason: move them to the top of the "
                          "module, or say `# lazy: <reason>` (ARCHITECTURE.md):\n"
                          + "\n".join(untagged))


def test_the_local_import_rule_sees_an_untagged_import(tmp_path):
    (tmp_path / "m.py").write_text(
        "import os\nimport numpy as np\nfrom matplotlib import figure\n"
        "def f():\n    import torch\n    from raysweep.data import crop\n"
        "    from matplotlib.ticker import LogLocator\n"
        "def g():\n    # lazy: a reason\n    from raysweep.evaluate import report\n"
        "    from raysweep.evaluate import (\n        stats,  # lazy: another\n    )\n")
    # torch is LAZY and not imported at the top; matplotlib is, so its reason cannot hold
    assert untagged_local_imports(tmp_path) == {"m.py: raysweep.data", "m.py: matplotlib.ticker"}


def oversized_functions(root: Path = PACKAGE) -> list[str]:
    """Functions over MAX_LINES lines (decorators and docstring included) or with more than
    MAX_PARAMS parameters (self and cls not counted; *args and **kwargs count one each)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for fn in functions(path):
            first = min([d.lineno for d in fn.decorator_list] + [fn.lineno])
            a = fn.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
            n = len([p for p in params if p.arg not in ("self", "cls")])
            lines = fn.end_lineno - first + 1
            if lines > MAX_LINES or n > MAX_PARAMS:
                found.append(f"{path.relative_to(root).as_posix()}:{fn.lineno} {fn.name}: "
                             f"{lines} lines, {n} parameters")
    return found


def test_no_function_over_60_lines_or_8_parameters():
    found = oversized_functions()
    assert not found, (f"functions over {MAX_LINES} lines or {MAX_PARAMS} parameters: split them "
                       "into named steps, or pass a record:\n" + "\n".join(found))


def test_the_size_rule_sees_a_long_function_and_many_parameters(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    (tmp_path / "m.py").write_text(
        f"def long():\n{body}\n"
        f"def short():\n{body[:-len('    x59 = 59')-1]}\n"
        "def wide(a, b, c, d, e, f, g, h, *rest):\n    pass\n"
        "class C:\n    def m(self, a, b, c, d, e, f, g, h):\n        pass\n")
    assert oversized_functions(tmp_path) == ["m.py:1 long: 61 lines, 0 parameters",
                                             "m.py:124 wide: 2 lines, 9 parameters"]


def test_no_two_modules_share_a_file_name():
    by_name = defaultdict(list)
    for path in PACKAGE.rglob("*.py"):
        if path.stem not in SPECIAL:
            by_name[path.stem].append(path.relative_to(ROOT).as_posix())
    twice = {k: sorted(v) for k, v in by_name.items() if len(v) > 1}
    assert not twice, f"one name, two modules (rename one): {twice}"


def layer_of(name: str) -> str:
    """`commands`, `cores` (the package itself included) or the subpackage of a module."""
    parts = name.split(".")
    if parts[-1] == "__main__" or (len(parts) == 2 and parts[1] in COMMANDS):
        return "commands"  # python -m raysweep.synth is a command too
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in CORES):
        return "cores"
    return parts[1]


def test_every_subpackage_has_a_layer():
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages <= set(LAYERS), f"give {sorted(subpackages - set(LAYERS))} a layer"


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Imports from a module to one on its own layer or above, outside its own subpackage."""
    upward = []
    for name, targets in sorted(edges.items()):
        here = layer_of(name)
        for target in sorted(targets):
            there = layer_of(target)
            if there != here and LAYERS[there] >= LAYERS[here]:
                upward.append(f"{name} ({here}) -> {target} ({there})")
    return upward


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = upward_imports(graph())
    assert not upward, "imports against the layers (ARCHITECTURE.md):\n" + "\n".join(upward)


def test_the_layer_rule_sees_an_upward_import():
    edges = {"raysweep.tracking.callback": {"raysweep.sweep.storage", "raysweep.train.transfer"},
             "raysweep.sweep.run": {"raysweep.serve.loading"},
             "raysweep.synth.__main__": {"raysweep.evaluate.stats"},
             "raysweep.errors": {"raysweep.search"}}
    assert upward_imports(edges) == [
        "raysweep.errors (cores) -> raysweep.search (commands)",
        "raysweep.sweep.run (sweep) -> raysweep.serve.loading (serve)",
        "raysweep.tracking.callback (tracking) -> raysweep.sweep.storage (sweep)"]


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, f"import cycles among raysweep modules: {found}"


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_top_level_holds_only_the_commands_and_the_cores():
    top = {p.stem for p in PACKAGE.glob("*.py")} - SPECIAL
    assert top == COMMANDS | CORES, (
        f"unexpected top-level modules {sorted(top - COMMANDS - CORES)}: the library goes in a "
        f"subpackage by concern; missing {sorted((COMMANDS | CORES) - top)}")


def test_the_import_parser_sees_function_level_and_relative_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from raysweep.train import loop\n"
                 "def g():\n    from raysweep.evaluate.report import md\n    from . import stats\n")
    known = {"raysweep.train", "raysweep.train.loop", "raysweep.evaluate",
             "raysweep.evaluate.report", "raysweep.evaluate.stats", "raysweep.evaluate.m"}
    assert imports("raysweep.evaluate.m", f, known) == {
        "raysweep.train.loop", "raysweep.evaluate.report", "raysweep.evaluate.stats"}


def test_the_sweep_hands_ray_the_loop_itself():
    """Ray gets the training function, not a "module:name" string, so the import graph (and
    the layer rule) sees the trial's dependency on the loop."""
    assert "raysweep.train.loop" in graph()["raysweep.sweep.trainable"]


def missing_modules(text: str) -> list[str]:
    """The `.py` files a text names that do not exist: a path is read from the repository's root
    or from raysweep/ (`sweep/run.py`); a bare name must exist somewhere in the code."""
    def exists(name: str) -> bool:
        if "/" in name:
            return (ROOT / name).is_file() or (PACKAGE / name).is_file()
        return any(next(d.rglob(name), None) for d in (PACKAGE, ROOT / "benchmarks", ROOT / "tests"))

    return sorted(n for n in set(re.findall(r"(?<![\w/.])[\w/]+\.py\b", text)) if not exists(n))


def test_every_module_the_map_names_exists():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    assert "sweep/run.py" in text and "raysweep/" in text, "the map names no module any more"
    missing = missing_modules(text)
    assert not missing, f"ARCHITECTURE.md names modules that do not exist: {missing}"


def test_the_map_check_sees_a_missing_module():
    assert missing_modules("`sweep/run.py`, raysweep/uri.py, tests/helpers/faults.py, search.py, "
                           "sweep/nowhere.py, raysweep/nowhere.py and gone.py") == [
        "gone.py", "raysweep/nowhere.py", "sweep/nowhere.py"]
