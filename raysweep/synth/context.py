"""The generator's shape (GeneratorConfig) and its precomputed spectral state (Context).

Everything spectral is integrated once per (set, tone, light) here: a photo is then a handful of
RGB triples painted through spatial weight maps, which is what makes 2,070 photos a minute's work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UserError
from . import camera as camera_mod
from .exposure import centre_weights
from .light import daylight
from .scene import SetSpec, draw_set, trap_sets
from .skin import Tones, make_tones

GENERATOR_VERSION = "2.0"
MIN_SIZE, MAX_SIZE = 32, 2048


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

    def __post_init__(self):  # a card read back from YAML gives a list
        object.__setattr__(self, "camera_profiles", tuple(self.camera_profiles))

    def validate(self) -> GeneratorConfig:
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
        ]
        for ok, what, fix in checks:
            if not ok:
                raise UserError(what, where="raysweep.synth generator arguments", fix=fix)
        return self

    @property
    def profiles(self) -> list[str]:
        return camera_mod.available(self.camera_profiles)[: self.cameras]

    def as_dict(self) -> dict:
        return {**asdict(self), "camera_profiles": list(self.camera_profiles),
                "version": GENERATOR_VERSION}


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
    sets = [draw_set(i, cams[ids[i % len(ids)]].spec, cfg.seed, cfg.sets, i in traps, i // len(ids))
            for i in range(cfg.sets)]
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
                   {c: cams[c].response(d55, np.ones_like(d55)) for c in ids})


def sample_id(set_idx: int, tone_idx: int) -> str:
    return f"s{set_idx:02d}_t{tone_idx:03d}"
