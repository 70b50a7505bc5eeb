"""The generator's shape (GeneratorConfig) and its precomputed spectral state (Context).

Everything spectral is integrated once per (set, tone, light) here: a photo is then a handful of
RGB triples painted through spatial weight maps, which is what makes 2,070 photos a minute's work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UserError
from . import camera as camera_mod
from .drift import mired_direction, session_awb_scale
from .exposure import centre_weights
from .light import daylight, nominal_light
from .scene import SetSpec, draw_set, trap_sets
from .skin import Tones, make_tones

GENERATOR_VERSION = "3.0"
MIN_SIZE, MAX_SIZE = 32, 2048
# Per-photo drift (drift.py) by generator version: 2.0 had none, so `version="2.0"` reproduces
# its datasets byte for byte. Each parameter's physical reason is in drift.py's docstring.
DRIFT_DEFAULTS = {
    "2.0": {"awb_frame_share": 0.0, "light_drift_mired": 0.0, "hand_shade_share": 0.0,
            "isp_saturation_sigma": 0.0, "isp_hue_sigma_deg": 0.0},
    "3.0": {"awb_frame_share": 0.8, "light_drift_mired": 10.0, "hand_shade_share": 0.2,
            "isp_saturation_sigma": 0.04, "isp_hue_sigma_deg": 2.0},
}
DRIFT_PARAMS = tuple(DRIFT_DEFAULTS[GENERATOR_VERSION])


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 0
    sets: int = 15
    tones: int = 138
    cameras: int = 3  # the first `cameras` of camera_profiles, assigned to sets in turn
    size: int = 256
    camera_profiles: tuple[str, ...] = camera_mod.DEFAULT_PROFILES  # add "sigma_stress" to stress
    trap_share: float = 0.2  # share of sessions on a coloured background
    exposure_bias_share: float = 0.01  # photos with exposure compensation (stress sets: more)
    manual_wb_share: float = 0.01  # photos with a manual white-balance preset
    version: str = GENERATOR_VERSION  # an older version reproduces that generator's datasets
    # Per-photo drift (None: the version's default, DRIFT_DEFAULTS; physics in drift.py):
    awb_frame_share: float | None = None  # share of the AWB error variance re-drawn per frame
    light_drift_mired: float | None = None  # per-photo light drift along the Planckian locus
    hand_shade_share: float | None = None  # photos with a hand shading the swatch
    isp_saturation_sigma: float | None = None  # per-frame ISP saturation change (relative sd)
    isp_hue_sigma_deg: float | None = None  # per-frame ISP hue twist (sd, degrees)

    def __post_init__(self):  # a card read back from YAML gives a list
        object.__setattr__(self, "camera_profiles", tuple(self.camera_profiles))
        object.__setattr__(self, "version", str(self.version))

    @property
    def drift(self) -> dict[str, float]:
        """The per-photo drift parameters, the version's defaults filled in (a field left None
        follows the version, so `dataclasses.replace(cfg, version="2.0")` switches it off)."""
        base = DRIFT_DEFAULTS.get(self.version, DRIFT_DEFAULTS[GENERATOR_VERSION])
        return {n: float(base[n] if getattr(self, n) is None else getattr(self, n))
                for n in DRIFT_PARAMS}

    def validate(self) -> GeneratorConfig:
        if self.version not in DRIFT_DEFAULTS:
            raise UserError(f"unknown generator version {self.version!r}",
                            where="raysweep.synth generator arguments",
                            fix=f"use one of {sorted(DRIFT_DEFAULTS)} ({GENERATOR_VERSION} is current)")
        unknown = [c for c in self.camera_profiles if c not in camera_mod.PROFILES]
        n_cam = len(camera_mod.available(self.camera_profiles))
        checks = [
            (not unknown, f"unknown camera profile(s) {unknown}",
             f"use names from {list(camera_mod.PROFILES)}"),
            (self.sets >= 1, f"--sets must be at least 1, got {self.sets}", "use --sets 15 (default)"),
            (self.tones >= 1, f"--tones must be at least 1, got {self.tones}", "use --tones 138 (default)"),
            (1 <= self.cameras <= n_cam, f"--cameras must be 1..{n_cam}, got {self.cameras}",
             f"use --cameras {n_cam} (profiles whose sensitivities this colour-science ships)"),
            (MIN_SIZE <= self.size <= MAX_SIZE, f"--size {self.size} is outside {MIN_SIZE}..{MAX_SIZE} px",
             f"use at least {MIN_SIZE} px (the swatch and its background need room); 256 is the default"),
            (self.seed >= 0, f"--seed must be >= 0, got {self.seed}", "use a non-negative integer"),
            (all(0 <= x <= 1 for x in (self.trap_share, self.exposure_bias_share,
                                       self.manual_wb_share)),
             "trap_share, exposure_bias_share and manual_wb_share are shares", "use 0..1"),
            (0 <= self.drift["awb_frame_share"] <= 1 and 0 <= self.drift["hand_shade_share"] <= 1,
             "awb_frame_share and hand_shade_share are shares", "use 0..1"),
            (min(self.drift.values()) >= 0, "the drift sigmas cannot be negative",
             "use 0 to switch one off"),
        ]
        for ok, what, fix in checks:
            if not ok:
                raise UserError(what, where="raysweep.synth generator arguments", fix=fix)
        return self

    @property
    def profiles(self) -> list[str]:
        return camera_mod.available(self.camera_profiles)[: self.cameras]

    def as_dict(self) -> dict:
        return {**asdict(self), "camera_profiles": list(self.camera_profiles), **self.drift}


@dataclass
class SetResponses:
    skin: list[np.ndarray]  # per light: (T, 3) raw RGB of every tone at unit illuminance
    bg: list[np.ndarray]  # per light: (3,)
    white: list[np.ndarray]  # per light: (3,) raw RGB of a perfect white
    lights: list[np.ndarray]  # per light: spectrum (N_BANDS,)


@dataclass
class Context:
    cfg: GeneratorConfig
    tones: Tones
    sets: list[SetSpec]
    cameras: dict  # profile key -> camera.Camera
    responses: list[SetResponses]
    meter_weights: np.ndarray
    daylight_white: dict  # profile key -> raw RGB of a white under D55 (the AWB's neutral point)
    mired_dir: dict  # profile key -> (3,) d log raw white per mired (drift.mired_direction)

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def size(self) -> int:
        return self.cfg.size


def build_context(cfg: GeneratorConfig) -> Context:
    cfg.validate()
    ids = cfg.profiles
    cams = {c: camera_mod.build_camera(c) for c in ids}
    tones = make_tones(cfg.tones, cfg.seed)
    traps = trap_sets(cfg.sets, len(ids), cfg.trap_share)
    awb_scale = session_awb_scale(cfg)
    sets = [draw_set(i, cams[ids[i % len(ids)]].spec, cfg.seed, cfg.sets, i in traps, i // len(ids),
                     awb_scale) for i in range(cfg.sets)]
    d55 = daylight(5500.0)
    responses = []
    for s in sets:
        cam = cams[s.camera_id]
        lights = [s.light.spectrum] + ([s.second.spectrum] if s.second is not None else [])
        responses.append(SetResponses(
            skin=[cam.response(li, tones.reflectance).astype(np.float32) for li in lights],
            bg=[cam.response(li, s.background).astype(np.float32) for li in lights],
            white=[cam.response(li, np.ones_like(li)).astype(np.float32) for li in lights],
            lights=lights,
        ))
    return Context(cfg, tones, sets, cams, responses, centre_weights(cfg.size),
                   {c: cams[c].response(d55, np.ones_like(d55)) for c in ids},
                   {c: mired_direction(cams[c], nominal_light) for c in ids})


def sample_id(set_idx: int, tone_idx: int) -> str:
    return f"s{set_idx:02d}_t{tone_idx:03d}"
