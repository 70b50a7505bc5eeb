"""The dataset card (`dataset.yaml`): where the manifest is and how to read it.

A team's spreadsheet never uses our column names, and spectrophotometers often report D50. The
card says both once, next to the data, so every later command reads the folder the same way:

    name: clinic-2024
    manifest: labels.csv          # CSV or Parquet, relative to this file
    columns:                      # the user's name -> the contract name
      L-true: target_L
      a-true: target_a
      b-true: target_b
      photo: image
    ground_truth:
      illuminant: D50             # D65 (default) or D50; D50 is adapted to D65 (Bradford)
      observer: 2                 # CIE 1931 2 degree; the only one supported
    mean_illuminant: D65          # convention of optional mean_L/a/b columns (default D65)
    skip_bad: false               # true: bad rows go to rejects.csv instead of stopping
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from raysweep.errors import UserError, unknown_name

CARD_NAME = "dataset.yaml"
ILLUMINANTS = ("D65", "D50")
CARD_KEYS = ("name", "manifest", "columns", "ground_truth", "mean_illuminant", "skip_bad",
             "description", "generated_by")

# The data contract (../shared/DESIGN.md). Kept here because the card maps onto it.
TEXT_COLUMNS = ("sample_id", "image", "tone_id", "set_id", "camera", "white_balance", "make",
                "model", "split")
NUMERIC_COLUMNS = ("target_L", "target_a", "target_b", "exposure_time_s", "f_number", "iso",
                   "brightness_ev", "exposure_bias_ev", "mean_L", "mean_a", "mean_b")
CONTRACT_COLUMNS = TEXT_COLUMNS + NUMERIC_COLUMNS


@dataclass
class Card:
    path: Path  # the dataset.yaml file
    manifest: Path  # absolute path of the manifest
    name: str = ""
    columns: dict[str, str] = field(default_factory=dict)  # user name -> contract name
    illuminant: str = "D65"
    mean_illuminant: str = "D65"
    skip_bad: bool = False

    @property
    def root(self) -> Path:
        """The dataset folder: image paths are relative to it and may not leave it."""
        return self.path.parent

    def to_dict(self) -> dict:
        manifest = self.manifest
        try:
            manifest = manifest.relative_to(self.root)
        except ValueError:
            pass
        return {"name": self.name, "manifest": str(manifest), "columns": dict(self.columns),
                "ground_truth": {"illuminant": self.illuminant, "observer": 2},
                "mean_illuminant": self.mean_illuminant, "skip_bad": self.skip_bad}


def card_path(source: str | Path) -> Path:
    """Accept the card file or the folder holding it."""
    p = Path(source).expanduser()
    if p.is_dir():
        p = p / CARD_NAME
    if not p.is_file():
        raise UserError(f"no dataset card at {p}", where=str(source),
                        fix="pass the dataset.yaml file or its folder, or create one with "
                            "`python -m raysweep.prepare --images DIR --labels labels.csv`")
    return p.resolve()


def load_card(source: str | Path) -> Card:
    path = card_path(source)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"the card is not valid YAML: {e}", where=str(path)) from None
    if not isinstance(raw, dict):
        raise UserError("the card must be a YAML mapping", where=str(path))
    for key in raw:
        if key not in CARD_KEYS:
            raise unknown_name("card key", key, CARD_KEYS, where=str(path))
    if "manifest" not in raw:
        raise UserError("the card has no `manifest:` entry", where=str(path),
                        fix="add `manifest: labels.csv` (CSV or Parquet, relative to the card)")
    manifest = (path.parent / str(raw["manifest"])).resolve()
    if not manifest.is_relative_to(path.parent):
        # a card from someone else must not make us read (and echo column names of) any file
        # the user can read: the folder is self-contained, as its image paths are
        raise UserError(f"the manifest {raw['manifest']!r} lies outside the dataset folder "
                        f"{path.parent} (at {manifest})", where=f"{path}: manifest",
                        fix="copy the labels sheet into the dataset folder and give its name "
                            "relative to the card, e.g. `manifest: labels.csv`")
    if not manifest.is_file():
        raise UserError(f"manifest {manifest} does not exist", where=f"{path}: manifest")
    columns = raw.get("columns") or {}
    if not isinstance(columns, dict):
        raise UserError("`columns:` must map your column names to contract names",
                        where=str(path), fix="e.g. `columns: {L-true: target_L}`")
    columns = {str(k): str(v) for k, v in columns.items()}
    for user, contract in columns.items():
        if contract not in CONTRACT_COLUMNS:
            raise unknown_name("contract column", contract, CONTRACT_COLUMNS,
                               where=f"{path}: columns: {user}")
    targets = list(columns.values())
    dup = sorted({c for c in targets if targets.count(c) > 1})
    if dup:
        raise UserError(f"two columns map onto {', '.join(dup)}", where=f"{path}: columns")
    gt = raw.get("ground_truth") or {}
    illuminant = str(gt.get("illuminant", "D65")).upper()
    check_illuminant(illuminant, f"{path}: ground_truth.illuminant")
    observer = str(gt.get("observer", 2))
    if observer not in ("2", "2.0"):
        raise UserError(f"observer {observer} is not supported", where=f"{path}: ground_truth",
                        fix="give CIE 1931 2 degree values (observer: 2)")
    mean_ill = str(raw.get("mean_illuminant", "D65")).upper()
    check_illuminant(mean_ill, f"{path}: mean_illuminant")
    return Card(path=path, manifest=manifest, name=str(raw.get("name", path.parent.name)),
                columns=columns, illuminant=illuminant, mean_illuminant=mean_ill,
                skip_bad=bool(raw.get("skip_bad", False)))


def check_illuminant(name: str, where: str) -> None:
    if name not in ILLUMINANTS:
        raise unknown_name("illuminant", name, ILLUMINANTS, where=where)


def write_card(card: Card) -> Path:
    """Write atomically: a half-written card would break every later command."""
    text = yaml.safe_dump({**card.to_dict(), "generated_by": "raysweep.prepare"}, sort_keys=False)
    tmp = card.path.with_name(card.path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(card.path)
    return card.path


def to_d65(lab: np.ndarray, illuminant: str) -> np.ndarray:
    """CIELAB under `illuminant` (2 degree) -> CIELAB D65, via XYZ and Bradford adaptation.

    Bradford is what ICC profiles and most spectrophotometer software use between D50 and D65.
    """
    lab = np.asarray(lab, dtype=np.float64)
    if illuminant == "D65":
        return lab
    import colour  # seconds to import; only a card measured under another illuminant needs it

    wps = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]
    src, dst = wps[illuminant], wps["D65"]
    xyz = colour.Lab_to_XYZ(lab, src)
    xyz = colour.adaptation.chromatic_adaptation_VonKries(
        xyz, colour.xy_to_XYZ(src), colour.xy_to_XYZ(dst), transform="Bradford")
    return colour.XYZ_to_Lab(xyz, dst)
