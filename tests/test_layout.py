"""The package layout that ARCHITECTURE.md describes, checked: one name means one thing, no
import cycles, no import from a lower layer to a higher one, and only the commands and the shared
cores at the top level."""

from __future__ import annotations

import ast
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
# command must start fast) or they are optional. Any other function-local import says why with
# "lazy: <reason>" on its line or the line above, or moves to the top of its module.
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
# The function-local imports made before this rule, one "module path: imported name" a line;
# the list only shrinks (a line whose import is gone or tagged must go too).
TO_HOIST = ROOT / "tests" / "local_imports_to_hoist.txt"
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


def untagged_local_imports() -> set[str]:
    """"module path: imported name" for every function-local import outside LAZY that does
    not say `lazy: <reason>` on its line or the line above."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines), str(path))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = ["." * node.level + (node.module or "")]
                else:
                    continue
                said = " ".join(lines[max(0, node.lineno - 2):node.lineno])
                for name in names:
                    if name.split(".")[0] not in LAZY and "lazy:" not in said:
                        found.add(f"{path.relative_to(PACKAGE).as_posix()}: {name}")
    return found


def test_function_local_imports_say_why():
    untagged = untagged_local_imports()
    listed = {ln.strip() for ln in TO_HOIST.read_text().splitlines() if ln.strip()}
    new = sorted(untagged - listed)
    assert not new, ("function-local imports without a reason: move them to the top of the "
                     "module, or say `# lazy: <reason>` (ARCHITECTURE.md):\n" + "\n".join(new))
    gone = sorted(listed - untagged)
    assert not gone, (f"hoisted or tagged, so remove from {TO_HOIST.name}:\n" + "\n".join(gone))


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
