"""raysweep's benchmarks: each module's `run(quick)` returns a `Section` (its numbers and their
Markdown), run alone with `python -m benchmarks.<name> [--quick]` or all together through
`python -m benchmarks.run`.

What every section shares lives here: the machine description (read from the machine, never
written by hand), the load note, the one Markdown-table helper, and where results are kept
(quick runs under `<name>_quick.*`, so they never overwrite a full-size measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Section:
    """A benchmark's result: `data` (JSON-able numbers it was rendered from) and `markdown`."""

    markdown: str
    data: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.markdown


def result_path(name: str, quick: bool, suffix: str = ".md") -> Path:
    """Where a section's output goes: quick runs never overwrite the full-size one."""
    return RESULTS / f"{name}{'_quick' if quick else ''}{suffix}"


def machine() -> dict[str, Any]:
    """What the numbers were measured on, read from this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cores": cores,
                            "ram_gib": None, "gpus": [], "platform": platform.platform(),
                            "python": platform.python_version()}
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        info["ram_gib"] = round(kb / 2**20)
    except (OSError, AttributeError):
        pass
    try:
        model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        info["cpu"] = model.group(1).strip() if model else info["cpu"]
    except OSError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA install: report no GPU, not a crash
        pass
    return info


def describe_machine(info: dict[str, Any] | None = None) -> str:
    """One line: 'CPU model, N cores, R GiB RAM, GPU(s) or no GPU, OS'."""
    m = info or machine()
    ram = f", {m['ram_gib']} GiB RAM" if m.get("ram_gib") else ""
    gpu = ", ".join(m["gpus"]) if m["gpus"] else "no GPU"
    return f"{m['cpu']}, {m['cores']} cores{ram}, {gpu}, {m['platform']}"


def load_note() -> str:
    """The machine's load, measured when a section is written: the reader judges sharing by it."""
    one, five, _ = os.getloadavg()
    cores = len(os.sched_getaffinity(0))
    return (f"load average {one:.1f} / {five:.1f} (1 / 5 min) on {cores} cores when this section "
            f"was written (the benchmark's own work included; well above {cores} means other jobs "
            "shared the cores and wall times are upper bounds)")


def md_table(rows: Any, columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """A Markdown table from a DataFrame or an iterable of row tuples (with `columns`).

    Floats get `digits` significant digits; '|' inside a cell is replaced so it cannot split
    the row. The one table helper of the benchmarks."""
    if hasattr(rows, "itertuples"):  # a pandas DataFrame
        columns = [str(c) for c in rows.columns]
        rows = rows.itertuples(index=False)
    if columns is None:
        raise ValueError("md_table needs `columns` for plain rows")
    rows = list(rows)
    if not rows:
        return "_none_"

    def cell(v: Any) -> str:
        text = f"{v:.{digits}g}" if isinstance(v, float) else str(v)
        return text.replace("|", "/")

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def to_json(data: dict[str, Any]) -> str:
    """`data` as JSON; DataFrames become records, anything else unknown its str()."""
    def default(o: Any) -> Any:
        if hasattr(o, "to_dict"):
            return o.to_dict(orient="records") if hasattr(o, "columns") else o.to_dict()
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    return json.dumps(data, indent=2, default=default)


def write_section(name: str, quick: bool, section: Section | str) -> list[Path]:
    """Keep a section in results/ (atomically): `<name>[_quick].md`, and `.json` with its data."""
    section = section if isinstance(section, Section) else Section(str(section))
    written = []
    for suffix, text in ((".md", section.markdown),
                         (".json", to_json(section.data) if section.data else None)):
        if text is None:
            continue
        out = result_path(name, quick, suffix)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text if text.endswith("\n") else text + "\n")
        tmp.replace(out)
        written.append(out)
    return written


def parse_args(name: str, argv: Sequence[str] | None = None, options: dict[str, str] = (),
               valued: dict[str, str] = ()) -> argparse.Namespace:
    """A benchmark module's command line: `--quick`, the module's own switches (`options`) and
    valued flags (`valued`), each flag -> its help; `--help` prints the module's docstring and
    runs nothing; an unknown argument is refused (a typo must not start a long run)."""
    doc = (getattr(sys.modules.get("__main__"), "__doc__", None) or "").strip()
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc or None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"the small size; results go to results/{name}_quick.*")
    for flag, text in dict(options).items():
        ap.add_argument(flag, action="store_true", help=text)
    for flag, text in dict(valued).items():
        ap.add_argument(flag, help=text)
    return ap.parse_args(argv)


def main(name: str, run, alternatives: dict[str, tuple] = ()) -> None:
    """A benchmark module's `__main__`: print its section and keep it in results/.
    `alternatives`: flag -> (the run function it selects instead of `run`, its help)."""
    alternatives = dict(alternatives)
    args = parse_args(name, options={flag: text for flag, (_, text) in alternatives.items()})
    for flag, (other, _) in alternatives.items():
        if getattr(args, flag.lstrip("-").replace("-", "_")):
            run = other
    section = run(quick=args.quick)
    print(section)
    write_section(name, args.quick, section)
