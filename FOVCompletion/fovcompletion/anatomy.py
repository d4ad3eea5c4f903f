"""Spinal level conventions and a simple vertebra / disc counter for sagittal T2w slices.

Why this exists: the benchmark has to say whether a completed field of view holds the right number of
vertebrae and discs. There is no ground truth for a real partial scan, so the counter is checked on the
synthetic phantom, whose label map gives the true counts (:func:`count_levels_in_labels`).

Label convention (shared with :mod:`fovcompletion.phantom`, the same numbers as the Spinal Cord Toolbox
vertebral levels):

- vertebrae: ``1`` = C1, ``2`` = C2 ... ``7`` = C7, ``8`` = T1 ... ``19`` = T12, ``20`` = L1 ... ``24`` = L5,
  ``25`` = S1, ``26`` = the rest of the sacrum and the coccyx (S2-Co) as one block;
- discs: ``100 + k`` is the disc below vertebra ``k``: ``102`` = C2-C3 ... ``124`` = L5-S1.

Counted levels: vertebral bodies C2..S1 (labels 2..25; C1 has no body, the sacral block below S1 shows
no discs) and discs C2-C3..L5-S1 (labels 102..124).

The detector (:func:`count_levels`) reads the intensity profile just anterior of the spinal canal, along
the canal centreline, through the vertebral bodies and discs. On T2w images the discs (nucleus pulposus)
are bright and the vertebral bodies are darker plateaus between them, so discs are the peaks of that
profile and vertebral bodies the stretches between consecutive peaks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

VERTEBRA_NAMES: tuple[str, ...] = (
    ("C1", "C2", "C3", "C4", "C5", "C6", "C7")
    + tuple(f"T{i}" for i in range(1, 13))
    + tuple(f"L{i}" for i in range(1, 6))
    + ("S1",)
)
"""Vertebra names; the label of ``VERTEBRA_NAMES[i]`` is ``i + 1``."""

SACRUM_LABEL = 26
DISC_LABEL_OFFSET = 100

VERTEBRA_LABELS: dict[int, str] = {i + 1: name for i, name in enumerate(VERTEBRA_NAMES)}
VERTEBRA_LABELS[SACRUM_LABEL] = "S2-Co"
DISC_LABELS: dict[int, str] = {
    DISC_LABEL_OFFSET + k: f"{VERTEBRA_NAMES[k - 1]}-{VERTEBRA_NAMES[k]}" for k in range(2, 25)
}

COUNTED_VERTEBRA_LABELS: tuple[int, ...] = tuple(range(2, 26))
"""C2..S1: the vertebral bodies a sagittal profile can separate (C1 has no body)."""
COUNTED_DISC_LABELS: tuple[int, ...] = tuple(range(DISC_LABEL_OFFSET + 2, DISC_LABEL_OFFSET + 25))
"""C2-C3..L5-S1."""


def vertebra_label(name: str) -> int:
    """Label number of a vertebra name such as ``"T7"`` (``"S"`` or ``"S2-Co"`` give the sacral block)."""
    key = name.strip().upper()
    if key in ("S", "S2-CO", "SACRUM"):
        return SACRUM_LABEL
    if key not in VERTEBRA_NAMES:
        raise ValueError(f"unknown vertebra name {name!r}")
    return VERTEBRA_NAMES.index(key) + 1


def disc_label(upper: str | int) -> int:
    """Label of the disc below vertebra ``upper`` (a name like ``"L4"`` or a vertebra label 2..24)."""
    k = vertebra_label(upper) if isinstance(upper, str) else int(upper)
    if not 2 <= k <= 24:
        raise ValueError(f"no counted disc below vertebra {upper!r}")
    return DISC_LABEL_OFFSET + k


def _rows_range(rows: slice | None, n_rows: int) -> tuple[int, int]:
    if rows is None:
        return 0, n_rows
    start, stop, step = rows.indices(n_rows)
    if step != 1:
        raise ValueError("rows must be a contiguous slice (step 1)")
    return start, max(start, stop)


def count_levels_in_labels(labels2d: np.ndarray, rows: slice | None = None) -> dict:
    """True vertebra and disc counts of a sagittal label slice within ``rows`` (axis 0 = S-I rows).

    Rule: a level (vertebral body C2..S1 or disc C2-C3..L5-S1) counts when at least half of the rows
    it occupies in the whole slice lie inside ``rows`` (ties count). This is the same "more than half
    of it is there" judgement a reader makes when counting levels in a cropped image.

    Returns ``{"vertebrae": int, "discs": int, "vertebra_labels": [...], "disc_labels": [...],
    "vertebra_rows": [...], "disc_rows": [...]}`` where the rows are the mean row of each counted
    level in the whole slice.
    """
    lab = np.asarray(labels2d)
    if lab.ndim != 2:
        raise ValueError("labels2d must be a 2D (rows, cols) array")
    r0, r1 = _rows_range(rows, lab.shape[0])
    present = {}
    for value in np.unique(lab):
        value = int(value)
        if value in COUNTED_VERTEBRA_LABELS or value in COUNTED_DISC_LABELS:
            present[value] = np.flatnonzero((lab == value).any(axis=1))
    out: dict = {"vertebra_labels": [], "disc_labels": [], "vertebra_rows": [], "disc_rows": []}
    for value in sorted(present):
        level_rows = present[value]
        inside = np.count_nonzero((level_rows >= r0) & (level_rows < r1))
        if inside == 0 or 2 * inside < level_rows.size:
            continue
        kind = "vertebra" if value in COUNTED_VERTEBRA_LABELS else "disc"
        out[f"{kind}_labels"].append(value)
        out[f"{kind}_rows"].append(float(level_rows.mean()))
    out["vertebrae"] = len(out["vertebra_labels"])
    out["discs"] = len(out["disc_labels"])
    return out


def _regular_run(peaks: np.ndarray, max_gap_ratio: float) -> np.ndarray:
    """Keep the longest run of peaks without a gap longer than ``max_gap_ratio`` x the median gap.

    A disc sequence is regular; a much longer gap means the profile has left the disc column (skull
    base above C2, sacrum and pelvis below L5-S1), and the peaks beyond it are other tissue.
    """
    if peaks.size < 3 or not max_gap_ratio:
        return peaks
    gaps = np.diff(peaks)
    cut = np.flatnonzero(gaps > max_gap_ratio * np.median(gaps))
    runs = np.split(peaks, cut + 1)
    return max(runs, key=len)


def count_levels(
    image2d: np.ndarray,
    spacing_mm: tuple[float, float],
    centerline_cols: np.ndarray,
    rows: slice | None = None,
    *,
    band_mm: tuple[float, float] = (10.0, 22.0),
    min_spacing_mm: float = 11.0,
    prominence: float = 0.3,
    max_width_mm: float = 18.0,
    max_gap_ratio: float = 2.2,
    reducer: str = "p75",
) -> dict:
    """Count vertebral bodies and discs in a sagittal T2w slice along a known canal centreline.

    Method (deliberately simple, so that its failures are easy to understand):

    1. ``centerline_cols`` gives the A-P column of the spinal canal centre for every row of
       ``image2d`` (axes: rows superior->inferior, columns posterior->anterior; NaN where unknown).
       It is smoothed (sigma 3 mm) and its anterior normal is taken at each row.
    2. Along that normal the image is sampled from ``band_mm[0]`` to ``band_mm[1]`` mm anterior of the
       canal centre, i.e. just in front of the canal through the posterior half of the vertebral bodies
       and discs, and reduced to one value by its 75th percentile (``reducer``: catches the nucleus
       even when the dark posterior annulus fills part of the band, yet ignores small bright spots
       such as basivertebral veins). Each value belongs to the row of the middle of its band (not of
       the canal point, so tilted levels keep their own rows); those inside ``rows`` are used.
    3. The profile is resampled to uniform arc length and expressed relative to the local level of the
       vertebral bodies: divided by a 50 mm running median (robust to the disc peaks themselves; it
       also removes bias fields and contrast drift), minus 1, then smoothed (sigma 1 mm). So 0.3
       means 30 % brighter than the surrounding bodies.
    4. Discs are the peaks of that profile (``scipy.signal.find_peaks``) at least ``min_spacing_mm``
       apart, with at least ``prominence`` and at most ``max_width_mm`` wide at half prominence.
       The profile is padded with a low value, so a disc whose centre is inside ``rows`` counts even
       when the edge cuts it; a maximum on the edge itself (centre outside) does not. Only the
       longest run of peaks without a gap over ``max_gap_ratio`` x the median gap is kept (the
       skull base above C2 and the sacrum/pelvis below L5-S1 are not part of the disc ladder).
    5. Vertebral bodies are the stretches between consecutive disc peaks; a stretch that touches the
       edge of ``rows`` counts when it is at least half as long as the median disc-to-disc distance
       (the same half-present rule as :func:`count_levels_in_labels`).

    Intensities: the background at 0, as in the scanner's units. A scale centred on 0 (the model's [-1, 1],
    background -1) moves the bodies' level towards or below 0, and the ratio of step 3 then makes peaks of
    noise, so an image whose darkest percent lies well below 0 is refused.

    Sampling: discs of the cervical and thoracic spine are 4-6 mm thick, so the detector needs about
    1 mm rows; at 2 mm it misses some of them (on the phantom: within +-1 per region at 1 mm for
    every seed tried; at 2 mm some seeds are off by 2 in a region).

    Returns ``{"vertebrae": int, "discs": int, "disc_rows": ndarray, "vertebra_rows": ndarray,
    "profile": ndarray, "profile_rows": ndarray}`` (rows are absolute, fractional row indices of the
    band middles; ``profile`` is the normalised profile on the uniform arc-length grid).
    """
    img = np.asarray(image2d, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError("image2d must be a 2D (rows, cols) array")
    n_rows, n_cols = img.shape
    low, high = np.nanpercentile(img, [1.0, 99.0])
    if low < -0.05 * (high - low):
        raise ValueError(
            "count_levels reads the profile as a ratio to the vertebral bodies' level, so it needs intensities "
            "with the background at 0 (scanner units), not a scale centred on 0 such as the model's [-1, 1]"
        )
    dr, dc = (float(spacing_mm[0]), float(spacing_mm[1]))
    cols = np.asarray(centerline_cols, dtype=np.float64).reshape(-1)
    if cols.size != n_rows:
        raise ValueError(f"centerline_cols has {cols.size} values for {n_rows} rows")
    r0, r1 = _rows_range(rows, n_rows)
    empty = {
        "vertebrae": 0,
        "discs": 0,
        "disc_rows": np.zeros(0),
        "vertebra_rows": np.zeros(0),
        "profile": np.zeros(0),
        "profile_rows": np.zeros(0),
    }
    finite = np.isfinite(cols)
    if finite.sum() < 2 or r1 - r0 < 3:
        return empty
    all_rows = np.arange(n_rows, dtype=np.float64)
    cols = np.interp(all_rows, all_rows[finite], cols[finite])

    # Centreline in mm, smoothed, and its anterior unit normal.
    zc = all_rows * dr
    yc = ndimage.gaussian_filter1d(cols * dc, sigma=3.0 / dr, mode="nearest")
    tz = np.gradient(zc)
    ty = np.gradient(yc)
    norm = np.hypot(tz, ty)
    nz, ny = -ty / norm, tz / norm

    # Sample positions: along the anterior normal, over the band; a sample belongs to the row of the
    # middle of its band (not of the canal point), so that tilted levels keep their own rows.
    step = min(dr, dc)
    offsets = np.arange(band_mm[0], band_mm[1] + 1e-6, step)
    mid = 0.5 * (band_mm[0] + band_mm[1])
    mz_all = zc + mid * nz
    r = np.flatnonzero((mz_all >= r0 * dr - 0.5 * dr) & (mz_all < r1 * dr - 0.5 * dr))
    if r.size < 3:
        return empty
    r = np.arange(r[0], r[-1] + 1)
    pz = zc[r, None] + offsets[None, :] * nz[r, None]
    py = yc[r, None] + offsets[None, :] * ny[r, None]
    samples = ndimage.map_coordinates(img, [pz / dr, py / dc], order=1, mode="nearest")
    if reducer == "mean":
        prof_rows = samples.mean(axis=1)
    else:
        q = {"median": 50.0, "p75": 75.0}[reducer]
        prof_rows = np.percentile(samples, q, axis=1)

    # Uniform arc length along the middle of the band.
    mz = mz_all[r]
    my = yc[r] + mid * ny[r]
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(mz), np.diff(my)))])
    grid = np.arange(0.0, arc[-1] + 0.5 * step, step)
    prof = np.interp(grid, arc, prof_rows)
    grid_rows = np.interp(grid, arc, mz / dr)

    # Ratio to the local level of the vertebral bodies: a running median (robust to the disc peaks).
    size = max(3, int(round(50.0 / step)) | 1)
    trend = ndimage.median_filter(prof, size=size, mode="nearest")
    scale = max(float(np.median(np.abs(trend))), 1e-12)
    prof = prof / np.maximum(trend, 0.05 * scale) - 1.0
    prof = ndimage.gaussian_filter1d(prof, sigma=1.0 / step, mode="nearest")

    pad = max(1, int(round(6.0 / step)))
    low = min(float(prof.min()), -0.5)
    padded = np.concatenate([np.full(pad, low), prof, np.full(pad, low)])
    peaks, _ = signal.find_peaks(
        padded,
        distance=max(1, int(round(min_spacing_mm / step))),
        prominence=prominence,
        width=(None, max_width_mm / step),
    )
    # A peak on the very first or last sample is a level whose centre lies outside ``rows``: like a
    # label with less than half of it inside, it does not count.
    peaks = peaks - pad
    peaks = peaks[(peaks > 0) & (peaks < prof.size - 1)]
    peaks = _regular_run(peaks, max_gap_ratio)

    # Vertebral bodies: stretches between peaks; edge stretches count when at least half a level long.
    typical = float(np.median(np.diff(peaks))) if peaks.size >= 2 else 20.0 / step
    bounds = np.concatenate([[0], peaks, [prof.size - 1]])
    vert_idx = []
    for i in range(bounds.size - 1):
        a, b = int(bounds[i]), int(bounds[i + 1])
        if b - a < 1:
            continue
        is_edge = i == 0 or i == bounds.size - 2
        if is_edge and (b - a) < 0.5 * typical:
            continue
        vert_idx.append(a + int(np.argmin(prof[a : b + 1])))
    return {
        "vertebrae": len(vert_idx),
        "discs": int(peaks.size),
        "disc_rows": grid_rows[peaks],
        "vertebra_rows": grid_rows[np.asarray(vert_idx, dtype=int)],
        "profile": prof,
        "profile_rows": grid_rows,
    }
