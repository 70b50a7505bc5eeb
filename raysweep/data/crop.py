"""Find the skin patch in a photo and cut the four crop variants.

The centre of a photo is a poor guess for the patch colour: the swatch is rarely centred, and a
partial shadow, a specular spot or the swatch edge inside the crop biases the mean by several
dE00. The adaptive crop therefore
  1. segments the patch: pixels closer (in shading-invariant log-chromaticity plus a little
     lightness) to the centre's median colour than to the border's, refined twice, the connected
     component at the centre, holes filled;
  2. marks bad pixels inside it: strong gradients (patch and shadow edges, specular rims;
     threshold median + k*MAD of the patch's own gradients), lightness outliers after a robust
     plane fit (shadows, specular spots; shading and vignetting are planes, not outliers),
     chroma outliers, clipped pixels, and a margin along the patch edge;
  3. cuts the largest square holding at most `max_bad` bad pixels (integral image, all
     positions at once), nearest the patch centre among equals.
`*_nobg` is the patch only; `*_bg` keeps a margin of background, which tells a model about the
light. `center_*` ignore the analysis (fixed geometry), as the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from raysweep.data.ring import ring_stats

VARIANTS = ("center_bg", "center_nobg", "adaptive_bg", "adaptive_nobg")


@dataclass(frozen=True)
class CropParams:
    size: int = 128  # output side in pixels
    analysis_side: int = 128  # analyse at this short side at most: the patch is large, time is short
    segment_side: int = 64  # segment the patch at this coarser scale (noise averages out)
    center_frac: float = 0.3  # center_nobg side as a fraction of the short side
    bg_scale: float = 2.0  # center_bg side = bg_scale * center_nobg side
    bg_margin: float = 0.25  # adaptive_bg: patch box grown by this fraction of its side per edge
    mad_k: float = 3.5  # outlier threshold in robust sigmas (1.4826 * MAD)
    edge_frac: float = 0.06  # margin kept from the patch edge, fraction of the patch side
    max_bad: float = 0.02  # largest bad-pixel share allowed in the adaptive window


@dataclass
class Analysis:
    boxes: dict[str, tuple[int, int, int, int]]  # variant -> (x0, y0, x1, y1), full resolution
    patch_box: tuple[int, int, int, int]
    status: str  # "patch found" or why the fallback was used
    bad_fraction: float  # share of bad pixels inside the adaptive_nobg window
    mean_lab: np.ndarray  # (3,) mean colour of the good pixels of the window, CIELAB D65
    ring: np.ndarray  # (len(RING_NAMES),) background-ring statistics (raysweep.data.ring)
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # analysis-scale masks (debug)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


# IEC 61966-2-1 sRGB -> XYZ (D65) and the D65 white of the 2 degree observer.
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


def linear_to_lab(rgb: np.ndarray) -> np.ndarray:
    xyz = rgb @ SRGB_TO_XYZ.T / WHITE_D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def analyse(rgb: np.ndarray, p: CropParams = CropParams(), keep_maps: bool = False) -> Analysis:
    """Locate the patch in an (H, W, 3) uint8 sRGB image and place the four crops."""
    h, w = rgb.shape[:2]
    scale = min(1.0, p.analysis_side / min(h, w))
    small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) \
        if scale < 1 else rgb
    sh, sw = small.shape[:2]
    f = cv2.GaussianBlur(small.astype(np.float32) / 255, (0, 0), 1.0)
    lab = cv2.cvtColor(f, cv2.COLOR_RGB2Lab)
    # Segment at a coarser scale: area averaging beats down sensor and JPEG chroma noise, and
    # the patch is large; the mask is then brought back to the analysis scale.
    k = min(1.0, p.segment_side / min(sh, sw))
    coarse = cv2.resize(small, (max(8, round(sw * k)), max(8, round(sh * k))),
                        interpolation=cv2.INTER_AREA) if k < 1 else small
    mask, status = _segment(_features(coarse), p)
    if mask.shape != (sh, sw):
        mask = cv2.resize(mask.astype(np.float32), (sw, sh), interpolation=cv2.INTER_LINEAR) > 0.5
    bad, maps = _bad_pixels(small, lab, mask, p)
    win, frac = _best_window(bad, mask, p.max_bad)
    if frac > 5 * p.max_bad:  # no clean window (a clipped patch?): geometry only, patch not rim
        bad = ~mask | maps["rim"]
        win, frac = _best_window(bad, mask, p.max_bad)
        status += "; most of the patch is flagged (clipped?): geometric crop"
    x0, y0, s = win
    box = tuple(int(round(v / scale)) for v in (x0, y0, x0 + s, y0 + s))
    ys, xs = np.nonzero(mask)
    pbox = tuple(int(round(v / scale)) for v in (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    boxes = {"adaptive_nobg": _fit(box, w, h)}
    pw, ph = pbox[2] - pbox[0], pbox[3] - pbox[1]
    boxes["adaptive_bg"] = _square((pbox[0] + pbox[2]) / 2, (pbox[1] + pbox[3]) / 2,
                                   max(pw, ph) * (1 + 2 * p.bg_margin), w, h)
    side = p.center_frac * min(h, w)
    boxes["center_nobg"] = _square(w / 2, h / 2, side, w, h)
    boxes["center_bg"] = _square(w / 2, h / 2, side * p.bg_scale, w, h)
    good = cv2.resize((~bad[y0:y0 + s, x0:x0 + s]).astype(np.uint8),
                      (boxes["adaptive_nobg"][2] - boxes["adaptive_nobg"][0],
                       boxes["adaptive_nobg"][3] - boxes["adaptive_nobg"][1]),
                      interpolation=cv2.INTER_NEAREST).astype(bool)
    bx = boxes["adaptive_nobg"]
    px = srgb_to_linear(rgb[bx[1]:bx[3], bx[0]:bx[2]].astype(np.float64) / 255)
    px = px[good] if good.any() else px.reshape(-1, 3)
    patch_linear = px.reshape(-1, 3).mean(0)
    mean_lab = linear_to_lab(patch_linear).astype(np.float32)
    # The surround of the found patch, up to the adaptive_bg box: the photo's light reference.
    ring = ring_stats(rgb, pbox, boxes["adaptive_bg"], patch_linear,
                      found=status.startswith("patch found"))
    return Analysis(boxes=boxes, patch_box=pbox, status=status, bad_fraction=frac,
                    mean_lab=mean_lab, ring=ring,
                    maps={"mask": mask, **maps} if keep_maps else {})


def cut(rgb: np.ndarray, boxes: dict[str, tuple[int, int, int, int]], size: int
        ) -> dict[str, np.ndarray]:
    """The crops as (3, size, size) uint8; area averaging when shrinking (no aliasing)."""
    out = {}
    for name in VARIANTS:
        x0, y0, x1, y1 = boxes[name]
        region = rgb[y0:y1, x0:x1]
        interp = cv2.INTER_AREA if region.shape[0] >= size else cv2.INTER_LINEAR
        out[name] = np.ascontiguousarray(
            cv2.resize(region, (size, size), interpolation=interp).transpose(2, 0, 1))
    return out


def _features(rgb: np.ndarray) -> np.ndarray:
    """Log-chromaticity is unchanged by a shadow of the same light; a little lightness separates
    a skin swatch from a background of similar hue. The median filter removes the blotchy
    chroma noise of high-ISO JPEGs, which a Gaussian only spreads."""
    f = cv2.GaussianBlur(cv2.medianBlur(rgb, 5).astype(np.float32) / 255, (0, 0), 1.0)
    lin = srgb_to_linear(f) + 5e-3
    lightness = cv2.cvtColor(f, cv2.COLOR_RGB2Lab)[..., 0]
    return np.dstack([np.log(lin[..., 0] / lin[..., 1]), np.log(lin[..., 2] / lin[..., 1]),
                      lightness / 40])


def _segment(feat: np.ndarray, p: CropParams) -> tuple[np.ndarray, str]:
    h, w = feat.shape[:2]
    m = min(h, w)
    c = max(2, int(0.12 * m))  # large enough that a specular spot at the centre is a minority
    centre = feat[h // 2 - c:h // 2 + c, w // 2 - c:w // 2 + c].reshape(-1, 3)
    ring = np.zeros((h, w), bool)
    r = max(2, int(0.08 * m))
    ring[:r], ring[-r:], ring[:, :r], ring[:, -r:] = True, True, True, True
    pp = np.median(centre, 0)
    sig = np.maximum(1.4826 * np.median(np.abs(centre - pp), 0), 0.02)
    # Backgrounds are often two or three surfaces (card, table, wall): one prototype each,
    # from k-means on the border ring, so a surface of skin-like hue is not called "patch".
    ring_px = (feat[ring] / sig).astype(np.float32)
    k = min(3, len(ring_px))
    cv2.setRNGSeed(0)  # k-means++ seeding: the same photo must give the same crop in any process
    _, _, qq = cv2.kmeans(ring_px, k, None, (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER,
                                             20, 1e-3), 2, cv2.KMEANS_PP_CENTERS)
    qq = qq.astype(np.float64) * sig
    flat = feat.reshape(-1, 3)
    mask = np.zeros((h, w), bool)
    z = flat / sig
    dq = (((z[None] - (qq / sig)[:, None]) ** 2).sum(-1)).min(0)
    for _ in range(3):  # nearest prototype; the patch prototype re-estimated by its median
        dp = ((z - pp / sig) ** 2).sum(1)
        mask = (dp < dq).reshape(h, w)
        mask = _component_at_centre(mask)
        if mask.sum() < 16 or (~mask).sum() < 16:
            break
        pp = np.median(feat[mask], 0)
    share = mask.mean()
    if mask.any():
        sig = np.maximum(1.4826 * np.median(np.abs(feat[mask] - pp), 0), 0.02)
    separation = np.sqrt((((qq - pp) / sig) ** 2).sum(1)).min()
    if not 0.01 <= share <= 0.9 or separation < 3:
        why = f"no patch found (share {share:.2f}, separation {separation:.1f})"
        mask = np.zeros((h, w), bool)
        b = int(0.25 * m)
        mask[h // 2 - b:h // 2 + b, w // 2 - b:w // 2 + b] = True  # trust only the centre
        return mask, why
    return mask, "patch found"


def _component_at_centre(mask: np.ndarray) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))  # cuts thin bridges to the bg
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, k)
    n, labels, stats, cents = cv2.connectedComponentsWithStats(m, connectivity=4)
    if n <= 1:
        return np.zeros_like(mask)
    h, w = mask.shape
    lab_c = labels[h // 2, w // 2]
    if lab_c == 0:  # centre pixel not in any component: nearest large one
        d = ((cents[1:] - [w / 2, h / 2]) ** 2).sum(1) / np.maximum(stats[1:, 4], 1)
        lab_c = 1 + int(np.argmin(d))
    comp = (labels == lab_c).astype(np.uint8)
    # Fill holes (specular spots, moles): they belong to the patch, the outlier map drops them.
    flood = np.pad(comp, 1).copy()
    cv2.floodFill(flood, None, (0, 0), 2)
    return (comp | (flood[1:-1, 1:-1] == 0)).astype(bool)


def _robust(x: np.ndarray, floor: float) -> tuple[float, float]:
    med = float(np.median(x))
    return med, max(1.4826 * float(np.median(np.abs(x - med))), floor)


def _reference(lightness: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Which patch pixels define its normal lightness: all of them, unless the patch splits into
    two clear lightness modes. Then a cast shadow is the dark mode and the lit mode is the
    reference, unless the bright mode has much less chroma per lightness: that is a specular
    sheen (white light added), and the dark mode is the reference."""
    everything = np.ones(len(lightness), bool)
    if len(lightness) < 32:
        return everything
    t, _ = cv2.threshold(np.clip(lightness * 2.55, 0, 255).astype(np.uint8).reshape(-1, 1), 0,
                         255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    hi = lightness * 2.55 > t
    if not 0.2 <= hi.mean() <= 0.8:
        return everything
    gap = np.median(lightness[hi]) - np.median(lightness[~hi])
    if gap < 8:  # smooth shading, not two modes
        return everything
    sat = chroma / np.maximum(lightness, 1)
    # A highlight covering most of the patch is more likely the patch itself.
    sheen = hi.mean() <= 0.5 and np.median(sat[hi]) < 0.75 * np.median(sat[~hi])
    return ~hi if sheen else hi


def _bad_pixels(small: np.ndarray, lab: np.ndarray, mask: np.ndarray, p: CropParams
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    h, w = mask.shape
    L = lab[..., 0]
    ys, xs = np.nonzero(mask)
    # Lightness residual after a plane (shading, vignetting), fitted on the reference pixels
    # and refitted once without outliers; a plane extrapolates smooth shading, not a shadow.
    A = np.stack([xs / w, ys / h, np.ones_like(xs, float)], 1)
    v = L[ys, xs]
    keep = _reference(v, np.hypot(lab[ys, xs, 1], lab[ys, xs, 2]))
    for _ in range(2):
        coef = np.linalg.lstsq(A[keep], v[keep], rcond=None)[0]
        res = v - A @ coef
        med, sd = _robust(res[keep], 0.7)
        keep = np.abs(res - med) <= p.mad_k * sd
    resid = np.zeros((h, w), np.float32)
    resid[ys, xs] = res - med
    # The same test on a smoothed residual finds soft, broad deviations (a sheen, a soft
    # shadow edge) that pixel noise hides.
    m = mask.astype(np.float32)
    smooth = cv2.GaussianBlur(resid, (0, 0), 2.0) / np.maximum(cv2.GaussianBlur(m, (0, 0), 2.0),
                                                              1e-3)
    _, sd_s = _robust(smooth[ys, xs][keep], 0.3)
    dark = mask & ((resid < -p.mad_k * sd) | (smooth < -p.mad_k * sd_s))
    bright = mask & ((resid > p.mad_k * sd) | (smooth > p.mad_k * sd_s))
    ab = lab[..., 1:]
    ab_med = np.median(ab[mask], 0)
    dab = np.linalg.norm(ab - ab_med, axis=-1)
    _, ab_sd = _robust(dab[mask], 0.7)
    chroma = mask & (dab > p.mad_k * ab_sd + np.median(dab[mask]))
    gx = cv2.Sobel(lab, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(lab, cv2.CV_32F, 0, 1, ksize=3)
    grad = np.sqrt((gx ** 2 + gy ** 2).sum(-1))
    g_med, g_sd = _robust(grad[mask], 1.0)
    edges = cv2.dilate((grad > g_med + 2 * p.mad_k * g_sd).astype(np.uint8),
                       np.ones((3, 3), np.uint8)).astype(bool)
    clipped = (small >= 250).any(-1) | (small <= 3).all(-1)
    dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    rim = mask & (dist < max(2.0, p.edge_frac * np.sqrt(mask.sum())))
    bad = ~mask | rim | dark | bright | chroma | (edges & mask) | clipped
    return bad, {"dark": dark, "bright": bright | clipped, "edges": edges & mask, "rim": rim,
                 "chroma": chroma}


def _best_window(bad: np.ndarray, mask: np.ndarray, max_bad: float
                 ) -> tuple[tuple[int, int, int], float]:
    """Largest square with <= max_bad bad pixels, nearest the frame centre among the best."""
    h, w = bad.shape
    ii = np.pad(bad.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ys, xs = np.nonzero(mask)
    # Among equally clean windows prefer the middle of the frame: that is where people put the
    # patch, and a mask that leaked into the background drags its centroid away from it.
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ylo, yhi, xlo, xhi = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    s_max = max(4, min(yhi - ylo, xhi - xlo))
    sides = np.unique(np.geomspace(max(4, s_max // 6), s_max, 24).astype(int))

    def at(s: int) -> tuple[tuple[int, int, int], float]:
        counts = ii[s:, s:] - ii[:-s, s:] - ii[s:, :-s] + ii[:-s, :-s]
        lo = int(counts.min())
        gy, gx = np.nonzero(counts == lo)
        j = np.argmin((gy + s / 2 - cy) ** 2 + (gx + s / 2 - cx) ** 2)
        return (int(gx[j]), int(gy[j]), int(s)), lo / (s * s)

    # Clean enough is (nearly) monotone in the side: binary search for the largest one.
    best = at(int(sides[0]))
    if best[1] > max_bad:
        return best
    lo, hi = 0, len(sides) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        cand = at(int(sides[mid]))
        if cand[1] <= max_bad:
            lo, best = mid, cand
        else:
            hi = mid - 1
    return best


def _square(cx: float, cy: float, side: float, w: int, h: int) -> tuple[int, int, int, int]:
    """A square of `side` centred at (cx, cy), shifted (not padded) to lie inside the image."""
    s = int(round(min(side, w, h)))
    x0 = int(round(min(max(cx - s / 2, 0), w - s)))
    y0 = int(round(min(max(cy - s / 2, 0), h - s)))
    return x0, y0, x0 + s, y0 + s


def _fit(box: tuple[int, int, int, int], w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return _square((x0 + x1) / 2, (y0 + y1) / 2, max(1, min(x1 - x0, y1 - y0)), w, h)
