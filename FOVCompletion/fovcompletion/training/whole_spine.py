"""Whole-spine training slabs from regional scans and a thoracic template.

No real scan here shows cervical anatomy above thoracic anatomy, which is what completing a cervical scan
downwards needs. This module makes it from what exists:

- **composites**: a real cervical scan on top, the template's thoracic part (bent into a kyphosis, its
  intensities and noise matched to the scan above) in the middle, a real lumbar scan below, each pair joined
  at the same intervertebral disc with a feathered boundary (`composites.join_parts`);
- **bent templates**: the whole template with a random smooth curvature, since a straightened template alone
  would teach a straight spine.

Discs are keyed by the vertebra above them (2 = C2/C3 ... 19 = T12/L1, 20 = L1/L2), as the lumbar labels and the
phantoms name them; the template's own labels are read in those names by `template_labels`.
A lumbar scan's discs come from its labels (vertebral bodies or discs); a cervical scan has no level labels,
so its discs are placed from the top of its field of view (these scans start at about C1), a few millimetres
of error that the feathered join absorbs. Scans without the labels a join needs are not used in composites.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..geometry import MODEL_AXCODES, reorient, resample_inplane
from ..image_io import read_volume
from ..preprocess import prepare_slab, select_slices
from ..template_labels import L1_L2, T12_L1, template_discs
from .composites import (
    PlacedPart,
    join_parts,
    kyphosis_profile,
    noise_level,
    shift_rows,
    smooth_profile,
)
from .config import TrainConfig
from .data import ScanRecord, Slab

C2_C3 = 2  # discs keyed by the vertebra above them
CERVICAL_JOIN_LEVELS = (5, 6, 7, 8, 9)  # C5/C6 ... T2/T3 (2 = C2/C3); a composite joins at one above the fade
# A cervical scan's receive coil fades towards its inferior edge: in the three labelled cervical scans the canal
# at T1/T2 is 0.5-0.7 and at T3/T4 0.2-0.3 as bright as over the scan's median row. A join there matched the
# template, and the lumbar scan after it, to that fade: composites whose lower parts were about twice too dark.
COIL_FADE_LIMIT = 0.8  # a join's canal at least this bright, relative to the scan's rows above it
CERVICAL_TOP_ABOVE_C2_C3_MM = 40.0  # regional cervical scans start at about the top of C1
CANAL_BEHIND_LUMBAR_DISC_MM = 8.0  # centre of the lumbar canal behind a body's or disc's posterior wall
FEATHER_MM = 8.0
MATCH_BAND_MM = 12.0  # rows either side of a join whose intensities are matched
CANAL_MATCH_HALF_MM = 6.0  # columns either side of the canal's centre whose CSF is matched at a join
CSF_PERCENTILE = 95.0  # of the pixels around the canal at a join: its CSF (the brightest tissue in T2w)
BLACK_PERCENTILE = 1.0  # of a part's pixels: its black (no signal)
BOW_MM = (6.0, 24.0)  # thoracic kyphosis: the template bows this far posteriorly between its joins
DRIFT_MM = 20.0  # lumbar canal this far anterior or posterior of the cervical one, at most
TEMPLATE_CURVE_MM = (8.0, 24.0)  # peak shift of a bent stand-alone template
TEMPLATE_CURVE_SIGMA_MM = 50.0


@dataclass
class SpinePart:
    """A slab on the model grid with its known discs: row and canal column of each (PAM50 disc labels)."""

    image: np.ndarray
    valid: np.ndarray
    record: ScanRecord
    discs: dict[int, tuple[float, float]]


def label_files(record: ScanRecord) -> dict[str, Path]:
    """The scan's BIDS derivative labels by suffix ("SC_seg", "VB_dseg", "IVD_dseg", "discs_dseg", ...)."""
    path = Path(record.path)
    for root in path.parents:
        labels = root / "derivatives" / "labels" / record.subject
        if labels.is_dir():
            return {
                f.name.split("_label-")[1].split(".nii")[0]: f
                for f in sorted(labels.rglob(f"{record.subject}*_label-*.nii*"))
            }
    return {}


class ModelGridLabels:
    """Label volumes taken through the same reorientation and slice choice as the scan's slab, and their
    voxel positions converted to the slab's model grid."""

    def __init__(self, record: ScanRecord, config: TrainConfig) -> None:
        volume = read_volume(record.path)
        self.metadata = config.preprocessing_metadata()
        self.prepared = prepare_slab(volume, self.metadata, slices=config.data.slices)
        self.native_to_model = np.linalg.inv(self.prepared.model_to_native)
        self.spacing = self.prepared.native_spacing
        self.slices = config.data.slices

    def load(self, path: Path) -> np.ndarray:
        """A label volume as the slab's native slices (slices, rows, cols), rounded to integers."""
        label = read_volume(path)
        array, _ = reorient(label.array, label.affine, MODEL_AXCODES)
        start, stop = select_slices(array.shape[0], self.slices)
        return np.rint(array[start:stop]).astype(np.int32)

    def to_model(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = np.stack([np.zeros_like(rows, float), rows, cols, np.ones_like(rows, float)])
        model = self.native_to_model @ points
        return model[1], model[2]

    def part(self, record: ScanRecord, discs: dict[int, tuple[float, float]]) -> SpinePart:
        image = self.prepared.model
        return SpinePart(image, np.ones(image.shape, bool), record, discs)


def cord_columns(cord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, centre column) of a cord mask, one per native row that holds cord."""
    rows, cols = [], []
    for row in np.flatnonzero(cord.any(axis=(0, 2))):
        rows.append(row)
        cols.append(np.nonzero(cord[:, row])[1].mean())
    return np.asarray(rows, float), np.asarray(cols, float)


def template_part(record: ScanRecord, config: TrainConfig) -> SpinePart | None:
    """The template with its labelled discs, T12/L1 from its level labels (or one level below T11/T12 without
    them) and L1/L2 one level below T12/L1; None without its disc and cord labels."""
    files = label_files(record)
    if "discs_dseg" not in files or "SC_seg" not in files:
        return None
    grid = ModelGridLabels(record, config)
    discs_native = grid.load(files["discs_dseg"])
    _, cord_cols = cord_columns(grid.load(files["SC_seg"]) > 0)
    canal = float(np.median(cord_cols))
    levels = grid.load(files["levels_dseg"]) if "levels_dseg" in files else None
    discs = {}
    for key, (row, _) in template_discs(discs_native, levels).items():  # native rows, by the vertebra above
        model_row, model_col = grid.to_model(np.array([row]), np.array([canal]))
        discs[key] = (float(model_row[0]), float(model_col[0]))
    part = grid.part(record, discs)
    # An average of scans has signal everywhere in its field: exact zeros are the edges it has no data for
    # (its last plane, the corners of its first ones), not black tissue to learn. Taken from the scan's own
    # values, on the model grid as the image is: the normalisation may map more than zero to its floor.
    prepared = grid.prepared
    signal, _ = resample_inplane(
        (prepared.native > 0).astype(np.float32), prepared.native_spacing, config.data.spacing_mm
    )
    part.valid &= signal >= 0.5
    return part


def cervical_part(record: ScanRecord, config: TrainConfig, template: SpinePart) -> SpinePart | None:
    """A cervical scan with its discs placed from the top of its field of view and its canal from the cord
    mask; None without a cord mask."""
    files = label_files(record)
    if "SC_seg" not in files:
        return None
    grid = ModelGridLabels(record, config)
    cord_rows, cord_cols = cord_columns(grid.load(files["SC_seg"]) > 0)
    if cord_rows.size < 2:
        return None
    model_rows, model_cols = grid.to_model(cord_rows, cord_cols)
    spacing_si = grid.metadata.canvas.spacing_mm[0]
    top_row, _ = grid.to_model(np.array([-0.5]), np.array([0.0]))  # the scan's upper edge
    c2_row = template.discs[C2_C3][0]
    discs = {}
    for level in CERVICAL_JOIN_LEVELS:
        if level not in template.discs:
            continue
        row = top_row[0] + CERVICAL_TOP_ABOVE_C2_C3_MM / spacing_si + template.discs[level][0] - c2_row
        discs[level] = (float(row), float(np.interp(row, model_rows, model_cols)))
    return grid.part(record, discs)


def lumbar_part(record: ScanRecord, config: TrainConfig) -> SpinePart | None:
    """A lumbar scan with T12/L1 and L1/L2 from its vertebral-body or disc labels; None without them."""
    files = label_files(record)
    if "VB_dseg" not in files and "IVD_dseg" not in files:
        return None
    grid = ModelGridLabels(record, config)
    behind = CANAL_BEHIND_LUMBAR_DISC_MM / grid.spacing[2]
    if "VB_dseg" in files:  # bodies T11 .. L5, labelled in any order: sort them by height
        labels = grid.load(files["VB_dseg"])
        bodies = sorted(
            (np.argwhere(labels == v) for v in np.unique(labels[labels > 0])), key=lambda p: p[:, 1].mean()
        )
        if len(bodies) < 4:
            return None
        pairs = {T12_L1: (bodies[1], bodies[2]), L1_L2: (bodies[2], bodies[3])}
        native = {
            level: (
                (a[:, 1].max() + b[:, 1].min()) / 2,
                np.percentile(np.concatenate([a[:, 2], b[:, 2]]), 5) - behind,
            )
            for level, (a, b) in pairs.items()
        }
    else:  # discs L1/L2 .. L5/S1: T12/L1 is one disc spacing above the top one
        labels = grid.load(files["IVD_dseg"])
        discs = sorted(
            (np.argwhere(labels == v) for v in np.unique(labels[labels > 0])), key=lambda p: p[:, 1].mean()
        )
        if len(discs) < 2:
            return None
        top, second = discs[0], discs[1]
        row, spacing = top[:, 1].mean(), second[:, 1].mean() - top[:, 1].mean()
        col = np.percentile(top[:, 2], 5) - behind
        native = {L1_L2: (row, col), T12_L1: (row - spacing, col)}
    discs = {}
    for level, (row, col) in native.items():
        model_row, model_col = grid.to_model(np.array([row]), np.array([col]))
        discs[level] = (float(model_row[0]), float(model_col[0]))
    return grid.part(record, discs)


def band(rows: int, centre: float, half: float) -> np.ndarray:
    index = np.arange(rows)
    return (index >= centre - half) & (index < centre + half)


def black_level(image: np.ndarray, valid: np.ndarray) -> float:
    """A part's black (no signal): a low percentile of its pixels."""
    return float(np.percentile(image[valid], BLACK_PERCENTILE))


def csf_level(
    image: np.ndarray, valid: np.ndarray, rows: np.ndarray, canal_col: float, half_width: float
) -> float:
    """The canal's CSF over `rows` (the brightest tissue in T2w): a high percentile of the pixels within
    `half_width` columns of `canal_col`; NaN where the part has none there."""
    cols = np.abs(np.arange(image.shape[2]) - canal_col) <= half_width
    around = valid & rows[None, :, None] & cols[None, None, :]
    return float(np.percentile(image[around], CSF_PERCENTILE)) if around.sum() >= 20 else float("nan")


def canal_match(
    moving_black: float, moving_csf: float, fixed_black: float, fixed_csf: float
) -> tuple[float, float]:
    """Gain and offset taking one part's black and canal CSF at a join onto another's (identity without both).

    MR signal scales with the receive gain from zero, so two points that every spine scan holds fix the map.
    The 5th/95th percentiles of the band around a join did not: its content differs between the parts (a
    template's narrow field against a lumbar scan's bone, muscle and air), which put the lumbar parts' black at
    -1.2 to -2.5, below the padding, and let the canal step by up to 1.4 times at a join."""
    moving_range, fixed_range = moving_csf - moving_black, fixed_csf - fixed_black
    if not (moving_range > 0 and fixed_range > 0):  # NaN-safe
        return 1.0, 0.0
    gain = fixed_range / moving_range
    return gain, fixed_black - gain * moving_black


def on_grid(part: PlacedPart, top: int, left: int, shape: tuple[int, int, int], fill: float):
    """A placed part painted on a (slices, rows, cols) grid whose pixel (0, 0) is (`top`, `left`)."""
    image = np.full(shape, fill, np.float32)
    valid = np.zeros(shape, bool)
    r0, c0 = part.top - top, part.left - left
    rs = slice(max(r0, 0), min(r0 + part.image.shape[1], shape[1]))
    cs = slice(max(c0, 0), min(c0 + part.image.shape[2], shape[2]))
    src = (slice(None), slice(rs.start - r0, rs.stop - r0), slice(cs.start - c0, cs.stop - c0))
    image[:, rs, cs] = part.image[src]
    valid[:, rs, cs] = part.valid[src]
    return image, valid


def canal_brightness(part: SpinePart) -> np.ndarray:
    """Per row, the brightest tissue of the central slices (in T2w, the canal's CSF) above the scan's black,
    over its median over the rows: the receive coil's sensitivity along the spine, below 1 where it fades
    (NaN: a row without data)."""
    centre = part.image.shape[0] // 2
    central = slice(max(centre - 2, 0), centre + 3)
    image, valid = part.image[central], part.valid[central]
    black = black_level(image, valid) if valid.any() else 0.0
    brightest = np.array(
        [
            np.percentile(image[:, row][valid[:, row]], 99.5) - black if valid[:, row].any() else np.nan
            for row in range(image.shape[1])
        ]
    )
    return brightest / np.nanmedian(brightest)


def upper_joins(cervical: SpinePart, template: SpinePart, feather: float, match_band: float) -> list[int]:
    """The discs a cervical scan can hand over to the template at: inside the scan by a feather's width, and
    above its coil fade: over the rows its intensities are matched on (`match_band` either side), the canal is
    nearly as bright as over the rows of the scan above them."""
    rows = cervical.image.shape[1]
    brightness = canal_brightness(cervical)

    def above_fade(row: float) -> bool:
        first, last = max(int(row - match_band), 0), int(row + match_band) + 1
        near, above = brightness[first:last], brightness[:first]
        if not (np.isfinite(near).any() and np.isfinite(above).any()):
            return False
        return float(np.nanmedian(near)) >= COIL_FADE_LIMIT * float(np.nanmedian(above))

    return [
        level
        for level in CERVICAL_JOIN_LEVELS
        if level in cervical.discs
        and level in template.discs
        and cervical.discs[level][0] + feather <= rows
        and above_fade(cervical.discs[level][0])
    ]


def lower_joins(lumbar: SpinePart, template: SpinePart, feather: float) -> list[int]:
    """The discs where a lumbar scan can take over from the template, highest first."""
    return [
        level
        for level in (T12_L1, L1_L2)
        if level in lumbar.discs and level in template.discs and lumbar.discs[level][0] >= feather
    ]


def build_composite(
    rng: np.random.Generator,
    cervical: SpinePart,
    template: SpinePart,
    lumbar: SpinePart,
    spacing_mm: float,
    fill: float,
    lumbar_units: bool = False,
) -> Slab:
    """Cervical scan above, bent template between the cervical join disc and the lumbar join disc, lumbar
    scan below; the template's intensities (black and canal CSF, `canal_match`) and noise matched to the
    cervical scan, the lumbar scan's to the matched template. In the cervical scan's units, or with
    `lumbar_units` the whole composite mapped into the lumbar scan's own."""
    feather = FEATHER_MM / spacing_mm
    upper_levels = upper_joins(cervical, template, feather, MATCH_BAND_MM / spacing_mm)
    lower_levels = lower_joins(lumbar, template, feather)
    if not upper_levels or not lower_levels:
        raise ValueError(
            f"{cervical.record.subject} + {lumbar.record.subject}: a join disc lies outside the scans"
        )
    upper, lower = int(rng.choice(upper_levels)), lower_levels[0]
    join_top, canal_top = cervical.discs[upper]
    t_top, t_canal = template.discs[upper]
    t_bottom, _ = template.discs[lower]
    margin = feather + MATCH_BAND_MM / spacing_mm
    first = max(0, int(np.floor(t_top - margin)))
    last = min(template.image.shape[1], int(np.ceil(t_bottom + margin)))
    drift = rng.uniform(-DRIFT_MM, DRIFT_MM) / spacing_mm
    bow = -rng.uniform(*BOW_MM) / spacing_mm
    rows = np.arange(first, last)
    t = (rows - t_top) / (t_bottom - t_top)
    shifts = kyphosis_profile(t, canal_top - t_canal, canal_top - t_canal + drift, bow)
    pad = int(np.ceil(np.abs(shifts).max())) + 1
    t_image = np.pad(template.image[:, first:last], ((0, 0), (0, 0), (pad, pad)), constant_values=fill)
    t_valid = np.pad(template.valid[:, first:last], ((0, 0), (0, 0), (pad, pad)))
    t_image, t_valid = shift_rows(t_image, t_valid, shifts, fill)
    offset_rows = int(round(join_top - t_top))
    middle = PlacedPart(t_image, t_valid, top=first + offset_rows, left=-pad)
    top_part = PlacedPart(cervical.image, cervical.valid)

    shape = (cervical.image.shape[0], middle.bottom - middle.top, middle.right - middle.left)
    c_on, c_valid = on_grid(top_part, middle.top, middle.left, shape, fill)
    near_top = band(shape[1], join_top - middle.top, MATCH_BAND_MM / spacing_mm)
    black = black_level(cervical.image, cervical.valid)  # every part's black ends there
    half = CANAL_MATCH_HALF_MM / spacing_mm
    col = canal_top - middle.left
    gain, offset = canal_match(
        black_level(template.image, template.valid),
        csf_level(middle.image, middle.valid, near_top, col, half),
        black,
        csf_level(c_on, c_valid, near_top, col, half),
    )
    matched = gain * middle.image + offset
    wanted = noise_level(c_on, c_valid & near_top[None, :, None])
    present = noise_level(matched, middle.valid & near_top[None, :, None])
    extra = np.sqrt(max(wanted**2 - present**2, 0.0))
    matched = matched + rng.normal(0.0, extra, matched.shape) if extra > 0 else matched
    middle.image = np.where(middle.valid, matched, fill).astype(np.float32)

    join_bottom = t_bottom + offset_rows
    canal_bottom = canal_top + drift
    l_row, l_canal = lumbar.discs[lower]
    bottom_part = PlacedPart(
        lumbar.image,
        lumbar.valid,
        top=int(round(join_bottom - l_row)),
        left=int(round(canal_bottom - l_canal)),
    )
    l_on, l_valid = on_grid(bottom_part, middle.top, middle.left, shape, fill)
    near_bottom = band(shape[1], join_bottom - middle.top, MATCH_BAND_MM / spacing_mm)
    col = canal_bottom - middle.left
    lumbar_gain, lumbar_offset = canal_match(
        black_level(lumbar.image, lumbar.valid),
        csf_level(l_on, l_valid, near_bottom, col, half),
        black,
        csf_level(middle.image, middle.valid, near_bottom, col, half),
    )
    bottom_part.image = (lumbar_gain * lumbar.image + lumbar_offset).astype(np.float32)

    image, valid, _, _ = join_parts(
        [top_part, middle, bottom_part], [int(round(join_top)), int(round(join_bottom))], feather, fill
    )
    if lumbar_units:  # the lumbar part back in its own units, the parts above it mapped with it
        image = np.where(valid, (image - lumbar_offset) / lumbar_gain, fill).astype(np.float32)
    record = ScanRecord(
        f"composite:{cervical.record.subject}+{template.record.subject}+{lumbar.record.subject}",
        f"{cervical.record.subject}+{template.record.subject}+{lumbar.record.subject}",
        "whole-spine composite",
        "; ".join(r.source for r in (cervical.record, template.record, lumbar.record) if r.source),
        "; ".join(r.licence for r in (cervical.record, template.record, lumbar.record) if r.licence),
    )
    return Slab(image, record, valid)


def bent_template(rng: np.random.Generator, template: SpinePart, spacing_mm: float, fill: float) -> Slab:
    """The whole template with a random smooth curvature (its field widened so nothing is cut off)."""
    amplitude = rng.uniform(*TEMPLATE_CURVE_MM) / spacing_mm
    shifts = smooth_profile(rng, template.image.shape[1], amplitude, TEMPLATE_CURVE_SIGMA_MM / spacing_mm)
    pad = int(np.ceil(np.abs(shifts).max())) + 1
    image = np.pad(template.image, ((0, 0), (0, 0), (pad, pad)), constant_values=fill)
    valid = np.pad(template.valid, ((0, 0), (0, 0), (pad, pad)))
    image, valid = shift_rows(image, valid, shifts, fill)
    record = template.record
    bent = ScanRecord(f"bent:{record.path}", record.subject, "template (bent)", record.source, record.licence)
    return Slab(image, bent, valid)


def whole_spine_slabs(
    config: TrainConfig, scans: list[ScanRecord], templates: list[ScanRecord]
) -> list[Slab]:
    """`config.data.composites` composites of the cervical and lumbar `scans` that carry the labels a join
    needs, and `config.data.template_copies` bent copies of each template: reproducible from the run's seed.
    With `config.data.composite_units` "alternate", every second composite is in its lumbar scan's units."""
    rng = np.random.default_rng([config.seed, 31337])
    spacing = float(config.data.spacing_mm[0])
    fill = float(config.data.padding_value)
    slabs = []
    for record in templates:
        template = template_part(record, config)
        if template is None:
            print(f"training: template {record.subject} lacks disc or cord labels; not used", flush=True)
            continue
        slabs += [bent_template(rng, template, spacing, fill) for _ in range(config.data.template_copies)]
        cervical = [cervical_part(r, config, template) for r in scans if r.region == "cervical"]
        lumbar = [lumbar_part(r, config) for r in scans if r.region == "lumbar"]
        feather = FEATHER_MM / spacing
        cervical = [p for p in cervical if p and upper_joins(p, template, feather, MATCH_BAND_MM / spacing)]
        lumbar = [p for p in lumbar if p and lower_joins(p, template, feather)]
        if config.data.composites and (not cervical or not lumbar):
            print("training: no labelled cervical and lumbar scans to make composites from", flush=True)
            continue
        alternate = config.data.composite_units == "alternate"
        for index in range(config.data.composites):
            top, bottom = cervical[rng.integers(len(cervical))], lumbar[rng.integers(len(lumbar))]
            in_lumbar_units = alternate and index % 2 == 1
            slabs.append(build_composite(rng, top, template, bottom, spacing, fill, in_lumbar_units))
    return slabs
