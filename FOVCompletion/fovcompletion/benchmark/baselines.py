"""Non-learned completions that any learned method must beat: constant, mirror, noise and nearest-neighbour
retrieval; and, for reading the figures, the library's spine that the truth itself would choose.

Each takes the visible rows of a slab (slices, S-I rows, A-P cols) and how many rows are hidden above and below,
and returns the whole slab with the visible rows unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

from ..geometry import resample_inplane
from ..image_io import Volume
from ..preprocess import select_slices

MATCH_MM = 96.0  # the visible band next to the boundary that registration matches
MIN_COLUMN_OVERLAP = 0.5
NOISE_GRAIN_MM = 2.0  # Gaussian sigma of the noise's smoothing: the bundled model's canvas spacing


def constant_fill(visible: np.ndarray, above: int, below: int) -> np.ndarray:
    """Hidden rows take the mean of each slice's visible part."""
    means = visible.mean(axis=(1, 2), keepdims=True)
    out = np.broadcast_to(
        means, (visible.shape[0], above + visible.shape[1] + below, visible.shape[2])
    ).copy()
    out[:, above : above + visible.shape[1]] = visible
    return out.astype(np.float32)


def mirror_fill(visible: np.ndarray, above: int, below: int) -> np.ndarray:
    """The visible part reflected across each boundary (the boundary row is not repeated)."""
    if visible.shape[1] < 2:
        return constant_fill(visible, above, below)
    return np.pad(visible, ((0, 0), (above, below), (0, 0)), mode="reflect").astype(np.float32)


def noise_fill(
    visible: np.ndarray, above: int, below: int, spacing_mm: tuple[float, float], seed: int
) -> np.ndarray:
    """Hidden rows as texture without anatomy: Gaussian noise smoothed by a Gaussian of sigma 2 mm, at each
    slice's visible mean and spread, held within the visible range. What the measures give a completion that
    draws texture but no spine: the chance level of the level counts (the profile detector finds "discs" in
    noise too), of the canal and of sharpness."""
    out = constant_fill(visible, above, below)
    hidden = np.ones(out.shape[1], dtype=bool)
    hidden[above : above + visible.shape[1]] = False
    sigma = (0.0, NOISE_GRAIN_MM / spacing_mm[0], NOISE_GRAIN_MM / spacing_mm[1])
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(out.shape), sigma)
    field /= max(float(field.std()), 1e-12)
    mean = visible.mean(axis=(1, 2), keepdims=True)
    spread = visible.std(axis=(1, 2), keepdims=True)
    noisy = np.clip(mean + spread * field, visible.min(), visible.max())
    out[:, hidden] = noisy[:, hidden]
    return out.astype(np.float32)


def central_slab(array: np.ndarray, count: int) -> np.ndarray:
    """`count` central sagittal slices (the nearest slice repeated when the volume has fewer)."""
    take = min(count, array.shape[0])
    start, stop = select_slices(array.shape[0], take)
    slab = array[start:stop]
    if take < count:
        before = (count - take) // 2
        slab = np.pad(slab, ((before, count - take - before), (0, 0), (0, 0)), mode="edge")
    return slab


def masked_ncc(template: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cross-correlation of `template` against `image` at every integer shift, over their overlap.

    Returns (ncc, overlap count), indexed [dy + Rt - 1, dx + Ct - 1] where template pixel (r, c) lies on image
    pixel (r + dy, c + dx); computed with FFTs (Padfield's masked NCC, both masks all ones inside the arrays).
    """
    t = np.asarray(template, dtype=np.float64)
    f = np.asarray(image, dtype=np.float64)
    flipped = t[::-1, ::-1]
    ones_t, ones_f = np.ones_like(flipped), np.ones_like(f)

    def corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return fftconvolve(a, b, mode="full")

    count = np.maximum(np.round(corr(ones_f, ones_t)), 1.0)
    sum_f, sum_f2 = corr(f, ones_t), corr(f * f, ones_t)
    sum_t, sum_t2 = corr(ones_f, flipped), corr(ones_f, flipped * flipped)
    sum_ft = corr(f, flipped)
    numerator = sum_ft - sum_f * sum_t / count
    var_f = np.maximum(sum_f2 - sum_f**2 / count, 0.0)
    var_t = np.maximum(sum_t2 - sum_t**2 / count, 0.0)
    denominator = np.sqrt(var_f * var_t)
    scale = max(float(np.abs(f).max()), 1e-12) * max(float(np.abs(t).max()), 1e-12)
    ncc = np.where(denominator > 1e-6 * scale * count, numerator / np.maximum(denominator, 1e-300), -1.0)
    return np.clip(ncc, -1.0, 1.0), count


@dataclass(frozen=True)
class LibraryEntry:
    """A training volume, loaded only when first matched (only its central slab is kept)."""

    subject: str
    region: str
    load: Callable[[], Volume]  # the volume in model orientation


@dataclass(frozen=True)
class Match:
    """Where a library volume continues the visible part: template row r, col c lies on (r + dy, c + dx)."""

    subject: str
    index: int
    dy: int
    dx: int
    ncc: float
    coverage: float  # fraction of the hidden rows the library volume actually has


def best_shift(
    template: np.ndarray, library: np.ndarray, hidden: int
) -> tuple[int, int, float, float] | None:
    """The translation maximising NCC, the template's rows inside the library and the hidden rows above it
    available where possible (full coverage beats any partial one); None when nothing overlaps enough."""
    rows_t, cols_t = template.shape
    if library.shape[0] < rows_t:
        return None
    ncc, count = masked_ncc(template, library)
    dy = np.arange(ncc.shape[0]) - (rows_t - 1)
    dx = np.arange(ncc.shape[1]) - (cols_t - 1)
    inside = (dy >= 0) & (dy + rows_t <= library.shape[0])
    columns = count / rows_t >= MIN_COLUMN_OVERLAP * cols_t
    valid = inside[:, None] & columns
    if not valid.any():
        return None
    coverage = np.clip(dy / max(hidden, 1), 0.0, 1.0)[:, None] * np.ones_like(ncc)
    score = np.where(valid, ncc + 2.0 * (coverage - 1.0), -np.inf)  # any full coverage beats a partial one
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(dy[i]), int(dx[j]), float(ncc[i, j]), float(coverage[i, j])


class RetrievalBaseline:
    """Nearest-neighbour retrieval: the training volume whose overlap with the visible part correlates best
    (S-I and A-P translation, NCC on the band next to the boundary), its continuation pasted in with the
    intensity matched (mean and standard deviation over the overlap)."""

    def __init__(self, library: list[LibraryEntry]) -> None:
        self.library = library
        self._slabs: dict[tuple[int, int, float, float], np.ndarray] = {}
        self.last_matches: list[Match] = []

    def _slab(self, index: int, count: int, spacing: tuple[float, float]) -> np.ndarray:
        key = (index, count, *spacing)
        if key not in self._slabs:
            volume = self.library[index].load()
            slab = central_slab(volume.array, count)
            own = np.linalg.norm(volume.affine[:3, :3], axis=0)
            if not np.allclose(own[1:], spacing, atol=1e-3):
                slab, _ = resample_inplane(slab, own, spacing)
            self._slabs[key] = slab.astype(np.float32)
        return self._slabs[key]

    def usable(self, exclude: str) -> list[int]:
        """Every library entry but the case's own subject."""
        return [i for i, entry in enumerate(self.library) if entry.subject != exclude]

    def candidates(self, region: str, exclude: str) -> list[int]:
        """Library entries of the case's region when there are any, else every entry; never the case's subject."""
        usable = self.usable(exclude)
        same = [i for i in usable if self.library[i].region == region]
        return same or usable

    def fill(
        self,
        visible: np.ndarray,
        above: int,
        below: int,
        spacing: tuple[float, float],
        region: str,
        exclude: str,
    ) -> np.ndarray:
        """The completed slab; rows no library volume covers fall back to the visible mean."""
        self.last_matches = []
        indices = self.candidates(region, exclude)
        out = constant_fill(visible, above, below)
        for rows, downwards in self._blocks(visible, above, below):
            out[:, rows] = self._block(visible, rows, spacing, indices, downwards)
        return out

    def closest(
        self,
        visible: np.ndarray,
        above: int,
        below: int,
        spacing: tuple[float, float],
        exclude: str,
        score: Callable[[np.ndarray, slice], float],
    ) -> np.ndarray:
        """Each hidden block (above, below) from the library entry, of any region, whose continuation `score`
        rates highest on that block's rows: with a score that knows the truth, the nearest that pasting in other
        real spines of the library comes to it (per block, so never below `fill`'s choice). Entries that overlap
        nothing are passed over, a NaN rating never wins, and a block nothing continues keeps the visible mean;
        `last_matches` holds the chosen entries' matches."""
        out = constant_fill(visible, above, below)
        chosen: list[Match] = []
        for rows, downwards in self._blocks(visible, above, below):
            best_rating = -np.inf
            for index in self.usable(exclude):
                self.last_matches = []
                block = self._block(visible, rows, spacing, [index], downwards)
                if not self.last_matches:
                    continue
                candidate = out.copy()
                candidate[:, rows] = block
                rating = score(candidate, rows)
                if rating > best_rating:
                    best_rating, best_block, best_match = rating, block, self.last_matches[0]
            if best_rating > -np.inf:
                out[:, rows] = best_block
                chosen.append(best_match)
        self.last_matches = chosen
        return out

    @staticmethod
    def _blocks(visible: np.ndarray, above: int, below: int) -> list[tuple[slice, bool]]:
        """The hidden blocks of the completed slab: their rows, and whether they continue downwards."""
        start_below = above + visible.shape[1]
        blocks = [(slice(0, above), False), (slice(start_below, start_below + below), True)]
        return [(rows, downwards) for rows, downwards in blocks if rows.stop > rows.start]

    def _block(
        self,
        visible: np.ndarray,
        rows: slice,
        spacing: tuple[float, float],
        indices: list[int],
        downwards: bool,
    ) -> np.ndarray:
        """The hidden `rows` continuing `visible` upwards, or downwards, in the slab's row order."""
        hidden = rows.stop - rows.start
        if not downwards:
            return self._continue(visible, hidden, spacing, indices)
        return self._continue(visible[:, ::-1], hidden, spacing, indices, flipped=True)[:, ::-1]

    def _continue(
        self,
        visible: np.ndarray,
        hidden: int,
        spacing: tuple[float, float],
        indices: list[int],
        flipped: bool = False,
    ) -> np.ndarray:
        """`hidden` rows to put above `visible` (callers flip rows to continue downwards), from the library entry
        of `indices` that correlates best with the visible rows next to the seam."""
        n_slices, _, n_cols = visible.shape
        band = visible[:, : max(2, int(round(MATCH_MM / spacing[0])))]
        template = band.mean(axis=0)
        fallback = np.broadcast_to(visible.mean(axis=(1, 2), keepdims=True), (n_slices, hidden, n_cols))
        best: Match | None = None
        for index in indices:
            slab = self._slab(index, n_slices, spacing)
            slab = slab[:, ::-1] if flipped else slab
            found = best_shift(template, slab.mean(axis=0), hidden)
            if found is None:
                continue
            dy, dx, ncc, coverage = found
            candidate = Match(self.library[index].subject, index, dy, dx, ncc, coverage)
            if best is None or (candidate.coverage, candidate.ncc) > (best.coverage, best.ncc):
                best = candidate
        if best is None:
            return np.array(fallback, dtype=np.float32)
        self.last_matches.append(best)
        slab = self._slab(best.index, n_slices, spacing)
        slab = slab[:, ::-1] if flipped else slab
        return paste_continuation(band, slab, best.dy, best.dx, hidden, fallback)


def paste_continuation(
    band: np.ndarray, library: np.ndarray, dy: int, dx: int, hidden: int, fallback: np.ndarray
) -> np.ndarray:
    """Rows dy - hidden .. dy - 1 of the library slab, shifted by dx, intensity-matched to the overlap."""
    n_slices, rows_t, n_cols = band.shape
    cols = np.arange(n_cols) + dx
    inside_cols = (cols >= 0) & (cols < library.shape[2])
    overlap_lib = library[:, dy : dy + rows_t][:, :, cols[inside_cols]]
    overlap_vis = band[:, :, inside_cols]
    gain = float(overlap_vis.std()) / max(float(overlap_lib.std()), 1e-6)
    offset = float(overlap_vis.mean()) - gain * float(overlap_lib.mean())
    out = np.array(fallback, dtype=np.float32)
    for row in range(hidden):
        source = dy - hidden + row
        if 0 <= source < library.shape[1]:
            out[:, row, inside_cols] = gain * library[:, source, cols[inside_cols]] + offset
    return out
