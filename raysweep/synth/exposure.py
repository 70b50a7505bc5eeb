"""Auto-exposure as a phone does it: a meter dominated by the subject, a program line that moves
shutter and ISO together, and a digital gain that EXIF never records; plus the BrightnessValue
a vendor writes.

Phones meter the swatch itself, so the exposure carries its lightness: a dark swatch gets a long
exposure and comes out lighter than it is (issue 15: measured L* barely follows true L*, and
log2(time x ISO) anti-correlates with it). The meter is the geometric blend of the swatch mean
and a centre-weighted frame mean, with the swatch's share set per camera profile.

Units: relative radiance, 1 = a perfect white under the main light at unit illuminance; the
sensor reads raw = clean * K_HEAD * 2**sensor_error_ev (1 = saturation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

K_HEAD = 0.45  # a correctly exposed diffuse white sits a little over one stop below clipping
FOOT_LAMBERT = 3.426  # cd/m^2 at APEX Bv = 0
ISO_SERIES = (25, 32, 40, 50, 64, 80, 100, 125, 160, 200, 250, 320, 400, 500, 640, 800, 1000,
              1250, 1600, 2000)
T_MIN, T_MAX = 1 / 1700, 1 / 14  # the shortest and longest shutter phones used (issue 15)
T_SPLIT = 1 / 120  # below this the program lengthens shutter and raises ISO together


@dataclass
class Exposure:
    iso: int  # as EXIF writes it
    exposure_time_s: float  # as EXIF writes it
    f_number: float
    bias_ev: float
    bv_metered: float  # the meter's APEX brightness (drives the program)
    brightness_ev: float  # what EXIF reports (vendor habits: offsets, zeroed sessions)
    sensor_error_ev: float  # log2(sensor exposure / correct); correct renders reflectance 1:1
    digital_gain_ev: float  # the ISP's gain after the sensor (not in EXIF)
    limited: bool  # the program ran out of shutter, ISO and digital gain
    meter_reflectance: float  # the relative luminance the meter saw

    @property
    def error_ev(self) -> float:
        """Effective exposure error after the digital gain: what the image shows."""
        return self.sensor_error_ev + self.digital_gain_ev


def centre_weights(size: int) -> np.ndarray:
    """Centre-weighted average metering weights (S, S), summing to one."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    r2 = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / size**2
    w = np.exp(-0.5 * r2 / 0.3**2)
    return (w / w.sum()).astype(np.float32)


def meter(luma: np.ndarray, swatch: np.ndarray, weights: np.ndarray, subject_weight: float) -> float:
    """Geometric blend of the swatch mean and the centre-weighted mean of a luminance image."""
    frame = float((luma * weights).sum() / weights.sum())
    subject = float(luma[swatch].mean()) if swatch.any() else frame
    return float(np.exp(subject_weight * np.log(max(subject, 1e-6))
                        + (1 - subject_weight) * np.log(max(frame, 1e-6))))


def _iso_written(iso: float, habits) -> int:
    if habits.iso == "integer":
        return int(round(iso))
    series = np.array(ISO_SERIES)
    return int(series[np.argmin(np.abs(np.log2(series / iso)))])


def _time_written(t: float, habits) -> float:
    if habits.time == "microseconds":
        return round(t * 1e6) / 1e6
    return 1.0 / max(1, round(1.0 / t))


def auto_exposure(spec, lux: float, meter_refl: float, photo, headroom_ev: float,
                  bv_session: tuple[float, bool]) -> Exposure:
    """Program AE. The wanted t*ISO follows the meter; above T_SPLIT at base ISO the program
    shares the extra stops between shutter (60%) and ISO (40%) up to the limits; the vendor's
    EXIF rounding of ISO and time is made up by the digital gain, which also covers light too dim
    for the limits (up to max_digital_gain_ev). Up to 1 EV is given up to keep the frame's
    highlights (`headroom_ev` above correct exposure) from clipping."""
    habits = spec.habits
    av = 2 * np.log2(spec.f_number)
    bv = float(np.log2(lux * meter_refl / np.pi / FOOT_LAMBERT) + photo.meter_noise_ev)
    correct = 3.125 * FOOT_LAMBERT * np.pi / (lux * 0.18)  # t*ISO/N^2 that renders 18% as 18%
    need = bv - photo.exposure_bias_ev - spec.ae_offset_ev  # = Av + Tv - Sv at the target
    metered_err = np.log2(3.125 * 2.0**-need / correct)
    need += float(np.clip(metered_err - headroom_ev, 0.0, 1.0))
    want = np.log2(3.125) - need + av  # log2(t * ISO) wanted
    x = want - np.log2(spec.base_iso)  # log2 of the shutter at base ISO
    extra = max(0.0, x - np.log2(T_SPLIT))
    log_iso = min(np.log2(spec.base_iso) + 0.4 * extra, np.log2(spec.max_iso))
    log_t = float(np.clip(want - log_iso, np.log2(T_MIN), np.log2(T_MAX)))
    iso = _iso_written(2.0**log_iso, habits)
    t = _time_written(2.0**log_t, habits)
    rest = want - np.log2(t * iso)
    dg = float(np.clip(rest, -0.5, spec.max_digital_gain_ev))
    sensor_err = float(np.log2(t * iso / spec.f_number**2 / correct))
    apex = av - np.log2(t) - np.log2(iso / 3.125)
    offset, zeroed = bv_session
    written = 0.0 if zeroed else round(float(apex + offset + photo.bv_noise_ev * habits.bv_photo_sd), 2)
    if not zeroed and offset == 0.0:  # a clean vendor writes what its meter measured
        written = round(bv + photo.bv_noise_ev * habits.bv_photo_sd, 2)
    return Exposure(iso=iso, exposure_time_s=t, f_number=spec.f_number,
                    bias_ev=photo.exposure_bias_ev, bv_metered=bv, brightness_ev=written,
                    sensor_error_ev=sensor_err, digital_gain_ev=dg, limited=abs(rest - dg) > 0.2,
                    meter_reflectance=meter_refl)
