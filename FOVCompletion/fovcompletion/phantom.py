"""Synthetic whole-spine sagittal T2-weighted phantom with a label map.

Why: there is no real whole-spine scan with ground truth in this project, yet tests, benchmarks,
training augmentation and the Slicer module's offline sample data all need one. The phantom is a
parametric anatomy (vertebral bodies C2..L5, sacrum, discs, curvature, canal, cord, posterior elements,
soft tissue, a skull-base hint) drawn from a seed, rendered with T2w-like contrast, a smooth bias
field and Rician noise. Same seed -> same volume; different seeds -> different people.

Array layout: ``image[i, j, k]`` with axis 0 = right->left, axis 1 = superior->inferior, axis 2 =
posterior->anterior, i.e. nibabel axcodes ``("L", "I", "A")`` (the "LIA" convention of the reference
implementation). ``image[n_slices // 2]`` is the exact mid-sagittal slice. "Row" means axis 1 and
"column" axis 2 throughout; S-I positions in mm are ``row * spacing`` from the top of the array.

Labels (uint8, see :data:`LABEL_NAMES`): vertebrae 1..25 (C1..S1) and 26 (S2-coccyx), discs
``100 + k`` below vertebra ``k`` (102 = C2-C3 ... 124 = L5-S1), and tissue classes 200..219.
The level numbers are those of :mod:`fovcompletion.anatomy`.

Geometry is defined in millimetres, so the same seed gives the same anatomy at any spacing.
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.interpolate import PchipInterpolator
from scipy.spatial import cKDTree

from .anatomy import DISC_LABEL_OFFSET, DISC_LABELS, SACRUM_LABEL, VERTEBRA_LABELS
from .errors import InputError
from .image_io import write_all_or_none

# --------------------------------------------------------------------------------------------------
# Labels

LABEL_CSF = 200
LABEL_CORD = 201
LABEL_POSTERIOR_ELEMENTS = 202
LABEL_LIGAMENT = 203
LABEL_FAT = 210
LABEL_MUSCLE = 211
LABEL_SOFT_TISSUE = 212
LABEL_VESSEL = 213
LABEL_AIRWAY = 214
LABEL_LUNG = 215
LABEL_SKULL = 216
LABEL_BRAIN = 217
LABEL_FLUID = 218
LABEL_SKIN = 219

TISSUE_LABELS: dict[int, str] = {
    LABEL_CSF: "CSF (thecal sac, cisterns, cauda equina)",
    LABEL_CORD: "spinal cord / medulla",
    LABEL_POSTERIOR_ELEMENTS: "posterior elements (pedicles, laminae, facets, spinous processes)",
    LABEL_LIGAMENT: "ligament (flavum, interspinous, nuchal) and facet joints",
    LABEL_FAT: "fat (subcutaneous, epidural, retroperitoneal, mediastinal)",
    LABEL_MUSCLE: "muscle",
    LABEL_SOFT_TISSUE: "other soft tissue and viscera",
    LABEL_VESSEL: "vessel (aorta, flow void)",
    LABEL_AIRWAY: "airway",
    LABEL_LUNG: "lung",
    LABEL_SKULL: "skull base (clivus, occipital bone)",
    LABEL_BRAIN: "brain (brainstem, cerebellum)",
    LABEL_FLUID: "fluid (bladder, bowel)",
    LABEL_SKIN: "skin",
}

LABEL_NAMES: dict[int, str] = {**VERTEBRA_LABELS, **DISC_LABELS, **TISSUE_LABELS}
"""Every label the phantom can contain (0 = air/background is not listed)."""

REGIONS = ("cervical", "thoracic", "lumbar")

# --------------------------------------------------------------------------------------------------
# Population anatomy (adult means, mm), per vertebra label 2..25 (C2..S1). Indices: j = label - 2.

_BODY_H = np.array(
    [15.0, 13.5, 13.5, 13.5, 13.5, 14.5]
    + [16, 17, 17.5, 18, 18.5, 19, 19.5, 20, 21, 22, 23, 24]
    + [25.5, 26.5, 27, 27, 26.5]
    + [25.0]
)
# disc below labels 2..24
_DISC_H = np.array(
    [4.0, 5.0, 5.5, 5.5, 5.0, 4.5]
    + [4.3, 4.3, 4.5, 4.6, 4.8, 5.0, 5.2, 5.4, 5.6, 6.0, 6.8, 7.6]
    + [8.5, 9.5, 10.5, 11.0, 9.5]
)
_BODY_D = np.array(
    [15.0, 15, 15.5, 16, 16.5, 17]
    + [18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]
    + [31, 32, 33, 34, 34]
    + [32.0]
)
_BODY_W = np.array(
    [20.0, 18, 19, 21, 23, 25]
    + [27, 28, 28, 29, 30, 31, 32, 33, 35, 37, 39, 40]
    + [42, 44, 46, 48, 50]
    + [50.0]
)
_CANAL_D = np.array(
    [17.0, 15, 14.5, 14.5, 14.5, 14.5]
    + [15, 14.5, 14, 14, 14, 14, 14, 14, 14, 14, 14.5, 15]
    + [16.5, 16.5, 16, 16, 17]
    + [15.0]
)
_SAC_HW = np.array(
    [11.5, 11.5, 12, 12, 12, 11.5]
    + [9, 8.5, 8, 8, 8, 8, 8, 8, 8, 8.5, 9, 9.5]
    + [10.5, 11, 11, 11, 11]
    + [9.0]
)
_CORD_R = np.array(
    [4.4, 4.1, 4.2, 4.2, 4.0, 3.7]
    + [3.4, 3.2, 3.1, 3.1, 3.1, 3.1, 3.1, 3.1, 3.2, 3.4, 3.8, 3.9]
    + [3.6] * 5
    + [3.0]
)
_CORD_W = np.array(
    [6.5, 6.8, 7.0, 7.0, 6.8, 6.0]
    + [5.2, 4.8, 4.6, 4.6, 4.6, 4.6, 4.6, 4.6, 4.7, 4.9, 5.2, 5.3]
    + [5.0] * 5
    + [4.0]
)
# spinous process: angle below the posterior direction (deg), length, thickness
_SPINOUS = np.array(
    [(15, 24, 13), (18, 15, 7), (20, 15, 7), (22, 17, 7), (25, 22, 8), (25, 30, 9)]
    + [(32, 32, 10), (42, 33, 10), (50, 34, 10), (56, 35, 10), (58, 35, 10), (58, 35, 10)]
    + [(58, 35, 10), (55, 34, 10.5), (50, 33, 11), (42, 32, 12), (30, 30, 13), (18, 29, 15)]
    + [(8, 30, 17), (6, 30, 18), (6, 30, 18), (8, 28, 17), (14, 22, 14)]
    + [(15, 12, 10)],
    dtype=float,
)
# sacral / coccygeal segments below S1: (height, depth, width, gap above)
_SACRAL = np.array(
    [
        (22.0, 30, 60, 1.8),
        (19, 24, 44, 1.5),
        (15, 17, 30, 1.2),
        (11, 12, 20, 1.2),
        (7, 8, 11, 2.0),
        (6, 7, 9, 1.5),
        (5, 6, 8, 1.5),
    ]
)

# tangent angle knots (deg; tangent pointing inferiorly, positive = turning anterior)
_THETA_KNOTS = ("dens", "C3", "C5", "C7-T1", "T3", "T7", "T11", "L1", "L3", "L4-L5", "S1", "S3", "S5", "Co")
_THETA_MEAN = np.array([4.0, -3, -10, -18, -16, -2, 12, 14, 2, -14, -36, -22, -5, 20])


# --------------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic sagittal T2w whole-spine volume with its label map and geometry.

    ``image`` (float32) and ``labels`` (uint8) have axes (right->left, superior->inferior,
    posterior->anterior): nibabel axcodes ``("L", "I", "A")``. ``affine`` maps voxel indices to RAS
    world millimetres (nibabel convention). ``regions`` gives the "cervical", "thoracic" and "lumbar"
    S-I bounds in mm from the top of the array (``row * spacing``), placed at the inferior surface of
    the junction discs (mid-depth of the endplate below them): cervical = top .. below C7-T1 (C2-C7
    and discs C2-C3..C7-T1), thoracic = .. below T12-L1 (T1-T12, discs T1-T2..T12-L1), lumbar = ..
    bottom (L1-S1 and the sacrum, discs L1-L2..L5-S1). A cropped phantom keeps only the parts of
    regions it still holds. ``canal_cols`` is the A-P column of the
    spinal canal centre for every row at the mid-sagittal slice (extrapolated along the spinal curve
    above the foramen magnum and below the sacral canal).
    """

    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    label_names: dict[int, str]
    regions: dict[str, tuple[float, float]]
    canal_cols: np.ndarray
    spacing_mm: float
    seed: int
    info: dict = field(default_factory=dict)

    @property
    def mid_slice(self) -> int:
        """Index (axis 0) of the mid-sagittal slice."""
        return self.image.shape[0] // 2

    def centerline(self) -> np.ndarray:
        """``(n_rows, 3)`` voxel indices (slice, row, column) of the canal centre, one per row.

        The slice is the mid-sagittal one; map the points through ``affine`` for world coordinates.
        Why: the level counter (:func:`fovcompletion.anatomy.count_levels`) samples the vertebral
        bodies and discs just anterior of this line (pass ``centerline()[:, 2]`` as its columns).
        """
        rows = np.arange(self.image.shape[1], dtype=np.float64)
        cols = np.asarray(self.canal_cols, dtype=np.float64)
        return np.column_stack([np.full(rows.shape, float(self.mid_slice)), rows, cols])


def generate_phantom(
    seed: int = 0,
    spacing_mm: float = 1.0,
    n_slices: int | None = None,
    *,
    noise: bool = True,
    bias: bool = True,
) -> Phantom:
    """Generate the whole-spine phantom for ``seed`` at isotropic ``spacing_mm``.

    The field of view spans from the lower brainstem to below the coccyx (about 650-720 mm S-I,
    depending on the seed), 256 mm A-P and ``n_slices`` sagittal slices (default: 64 mm / spacing).
    ``noise=False`` / ``bias=False`` give the clean image (same anatomy and contrast), which tests use
    to check the level detector without noise.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    spacing = float(spacing_mm)
    if not math.isfinite(spacing) or not 0.25 <= spacing <= 8.0:
        raise InputError(f"spacing must be between 0.25 and 8 mm, got {spacing_mm!r}")
    if n_slices is None:
        n_slices = max(1, int(round(64.0 / spacing)))
    if int(n_slices) < 1:
        raise InputError(f"n_slices must be at least 1, got {n_slices!r}")
    n_slices = int(n_slices)
    seed = int(seed)

    geo = _Anatomy(np.random.default_rng([seed, 0]))
    canvas = _Canvas(geo, spacing, n_slices)
    _paint_base(canvas, geo)
    _paint_thorax_abdomen(canvas, geo)
    _paint_skull_base(canvas, geo)
    _paint_canal(canvas, geo)
    _paint_posterior_elements(canvas, geo)
    _paint_discs(canvas, geo)
    _paint_bodies(canvas, geo)
    image = _render(canvas, geo, np.random.default_rng([seed, 1]), noise=noise, bias=bias)

    sp = spacing
    n_rows, n_cols = canvas.n_rows, canvas.n_cols
    affine = np.eye(4)
    affine[:3, :3] = [[-sp, 0.0, 0.0], [0.0, 0.0, sp], [0.0, -sp, 0.0]]
    affine[:3, 3] = [sp * (n_slices // 2), -sp * (n_cols - 1) / 2.0, sp * (n_rows - 1) / 2.0]

    bottom = (n_rows - 1) * sp
    z_c7t1 = float(canvas.region_bound_z["C7-T1"])
    z_t12l1 = float(canvas.region_bound_z["T12-L1"])
    regions = {"cervical": (0.0, z_c7t1), "thoracic": (z_c7t1, z_t12l1), "lumbar": (z_t12l1, bottom)}
    return Phantom(
        image=image,
        labels=canvas.lab,
        affine=affine,
        label_names=dict(LABEL_NAMES),
        regions=regions,
        canal_cols=(canvas.canal_y / sp).astype(np.float64),
        spacing_mm=sp,
        seed=seed,
        info={
            "noise_sigma": geo.noise_sigma if noise else 0.0,
            "conus_tip_mm": float(geo.z_of_s(geo.s_conus_tip)),
            "level_center_mm": {int(k): float(v) for k, v in canvas.level_center_z.items()},
        },
    )


def crop_phantom(phantom: Phantom, region: str | tuple[float, float]) -> Phantom:
    """Keep only the rows of ``region``: a partial scan with exactly known surroundings.

    ``region`` is ``"cervical"``, ``"thoracic"``, ``"lumbar"`` or ``(top_mm, bottom_mm)`` in the
    phantom's own row millimetres. Rows whose centre lies within the bounds are kept; the affine is
    shifted so that every kept voxel maps to the same world point as before.
    """
    if isinstance(region, str):
        if region not in phantom.regions:
            known = ", ".join(sorted(phantom.regions)) or "none"
            raise InputError(f"unknown region {region!r} (this phantom has: {known})")
        top, bottom = phantom.regions[region]
    else:
        try:
            top, bottom = (float(region[0]), float(region[1]))
        except (TypeError, ValueError, IndexError):
            raise InputError(f"region must be a name or (top_mm, bottom_mm), got {region!r}") from None
        if not (math.isfinite(top) and math.isfinite(bottom)) or bottom < top:
            raise InputError(f"region bounds must be finite with top <= bottom, got {region!r}")
    sp = phantom.spacing_mm
    n_rows = phantom.image.shape[1]
    r0 = max(0, int(math.ceil(top / sp - 1e-6)))
    r1 = min(n_rows, int(math.floor(bottom / sp + 1e-6)) + 1)
    if r1 <= r0:
        raise InputError(f"region {region!r} holds no rows of this phantom")
    shift = np.eye(4)
    shift[1, 3] = r0
    regions = {}
    for name, (a, b) in phantom.regions.items():
        a2, b2 = max(a, r0 * sp), min(b, (r1 - 1) * sp)
        if b2 > a2:
            regions[name] = (a2 - r0 * sp, b2 - r0 * sp)
    info = dict(phantom.info)
    info["crop_rows"] = (r0, r1)
    return Phantom(
        image=phantom.image[:, r0:r1].copy(),
        labels=phantom.labels[:, r0:r1].copy(),
        affine=phantom.affine @ shift,
        label_names=dict(phantom.label_names),
        regions=regions,
        canal_cols=np.asarray(phantom.canal_cols)[r0:r1].copy(),
        spacing_mm=sp,
        seed=phantom.seed,
        info=info,
    )


def save_phantom(
    phantom: Phantom,
    image_path: str | os.PathLike,
    labels_path: str | os.PathLike | None = None,
    *,
    image_dtype: str = "int16",
) -> None:
    """Write the image (and optionally the label map) as NIfTI, both or neither.

    The files are written under temporary names in their folders and then renamed over the targets
    together (`image_io.write_all_or_none`), so a reader never sees a half-written file, and a failure or
    a cancel leaves no image without its labels and any earlier pair as it was. The image is stored as
    rounded ``int16`` by default (like a scanner export, half the size of float32); pass
    ``image_dtype="float32"`` to keep the exact values.
    """
    import nibabel as nib

    if image_dtype not in ("int16", "float32"):
        raise InputError(f"image_dtype must be 'int16' or 'float32', got {image_dtype!r}")
    data = phantom.image
    if image_dtype == "int16":
        data = np.clip(np.rint(data), -32768, 32767).astype(np.int16)
    else:
        data = data.astype(np.float32, copy=False)
    images = [(nib.Nifti1Image(data, phantom.affine), Path(image_path), "image")]
    if labels_path is not None:
        labels = nib.Nifti1Image(np.asarray(phantom.labels, dtype=np.uint8), phantom.affine)
        images.append((labels, Path(labels_path), "labels"))
    for _, path, intent in images:  # refused by the names asked for, before anything is written
        _check_nifti_target(path, intent)
    write_all_or_none([(path, partial(_atomic_nifti, img)) for img, path, _ in images])


def _nifti_suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    if name.endswith(".nii"):
        return ".nii"
    raise InputError(f"{path} must end in .nii or .nii.gz")


def _check_nifti_target(path: Path, intent: str) -> None:
    """Refuse a file name without a NIfTI suffix or in a folder that does not exist, by the name asked for."""
    _nifti_suffix(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"folder {folder} for the {intent} file does not exist")


def _atomic_nifti(img, path: str | os.PathLike) -> Path:
    """Write `img` to `path` (checked by `save_phantom`) through a hidden sibling, then rename."""
    import nibabel as nib

    path = Path(path)
    suffix = _nifti_suffix(path)
    folder = path.parent if str(path.parent) else Path(".")
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    # a unique hidden sibling, created like any new file (mode 0666 minus the umask; mkstemp would
    # leave the final file readable by its owner only)
    while True:
        tmp = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------------------------------
# Anatomy parameters and the spinal curve


class _Anatomy:
    """Random anatomy of one subject: level sizes, curvature, soft tissue, contrast."""

    def __init__(self, rng: np.random.Generator):
        u = rng.uniform
        n = rng.normal
        self.age = u(0.0, 1.0)
        g = u(0.86, 0.95)  # body size
        self.g = g
        nv = _BODY_H.size  # 24 (C2..S1)
        self.h = _BODY_H * g * (1 + n(0, 0.03, nv))
        self.d = _BODY_D * g * u(0.93, 1.07) * (1 + n(0, 0.03, nv))
        self.w = _BODY_W * g * u(0.92, 1.08)
        self.cd = _CANAL_D * u(0.9, 1.1) * (1 + n(0, 0.03, nv))
        self.ws = _SAC_HW * u(0.92, 1.08)
        self.cord_r = _CORD_R * u(0.9, 1.1)
        self.cord_w = _CORD_W * u(0.92, 1.08)
        sp = _SPINOUS.copy()
        sp[:, 0] += n(0, 4, nv)
        sp[:, 1] *= g * u(0.9, 1.1) * (1 + n(0, 0.05, nv))
        sp[:, 2] *= g * (1 + n(0, 0.05, nv))
        self.spinous = sp
        self.dens_h = 15.0 * g * u(0.9, 1.1)

        # Discs: height, nucleus brightness (relative) and optional degeneration.
        nd = _DISC_H.size  # 23
        dh = _DISC_H * g * u(0.88, 1.12) * (1 + n(0, 0.07, nd))
        deg = np.zeros(nd)
        region_w = np.array(
            [0.5 if j in (3, 4) else 0.15 for j in range(6)] + [0.1] * 12 + [0.15, 0.2, 0.3, 0.7, 0.6]
        )
        mild = rng.random(nd) < region_w * (0.2 + 0.8 * self.age)
        deg[mild] = u(0.1, 0.3, nd)[mild]
        if rng.random() < 0.2 + 0.4 * self.age:  # at most one markedly degenerated disc
            j = rng.choice([3, 4, 21, 22], p=[0.15, 0.15, 0.35, 0.35])
            deg[j] = u(0.55, 0.8)
        self.disc_h = dh * (1 - 0.35 * deg)
        self.disc_deg = deg
        self.disc_cleft = self.age > 0.3
        herniation = np.zeros(nd)
        if rng.random() < 0.25 + 0.3 * self.age:
            herniation[rng.choice([20, 21, 22, 3, 4])] = u(2.0, 5.5)
        self.herniation = herniation

        sac = _SACRAL.copy()
        sac[:, :3] *= g * u(0.9, 1.1)
        sac[:, 3] *= g
        self.sacral = sac

        # Curvature: tangent angles at knots, with per-region lordosis / kyphosis factors.
        th = _THETA_MEAN.copy()
        cerv = u(0.6, 1.4)
        th[:3] = th[3] + cerv * (th[:3] - th[3])
        kyph = u(0.75, 1.3)
        th[4:7] = th[5] + kyph * (th[4:7] - th[5])
        lord = u(0.75, 1.25)
        th[7:10] = th[8] + lord * (th[7:10] - th[8])
        th[10] = -u(30.0, 46.0)  # sacral slope
        th[11] = th[10] + u(10.0, 20.0)
        th[12] = th[11] + u(12.0, 22.0)
        th[13] = th[12] + u(15.0, 30.0)
        th[:10] += n(0, 3.0, 10)
        th += n(0, 2.5)
        self.theta_knots_deg = th

        # Canal contents.
        # conus tip as a fractional disc index: 17 = T12-L1, 18 = L1-L2, 19 = L2-L3
        self.conus_disc = float(np.clip(18.0 + n(0, 0.4), 17.2, 18.8))
        self.epidural_fat = u(0.6, 1.4)

        # Soft tissue.
        self.top_margin = u(28.0, 48.0)
        self.bottom_margin = u(8.0, 20.0)
        self.fat = u(0.5, 2.0)
        self.muscle = u(0.85, 1.2)
        self.post_margin = u(3.0, 25.0)
        self.clivus_angle = math.radians(u(22, 34))
        self.basion_gap = u(4.0, 8.0)
        self.aorta_x = u(10.0, 18.0)

        # Contrast (arbitrary units, CSF ~ 1000).
        gain = u(0.85, 1.15)
        self.iv = {
            "csf": 1000 * u(0.9, 1.05),
            "cord": 430 * u(0.9, 1.1),
            "brain": 460 * u(0.9, 1.1),
            "nucleus": 800 * u(0.85, 1.05),
            "annulus": 210 * u(0.8, 1.2),
            "marrow": (290 + 150 * self.age) * u(0.9, 1.1),
            "cortex": 65 * u(0.8, 1.2),
            "ligament": 95 * u(0.8, 1.2),
            "fat": 720 * u(0.85, 1.1),
            "muscle": 230 * u(0.85, 1.2),
            "soft": 320 * u(0.85, 1.15),
            "liver": 230 * u(0.85, 1.15),
            "blood": 45 * u(0.7, 1.3),
            "lung": 25 * u(0.7, 1.3),
            "fluid": 950 * u(0.9, 1.05),
            "skin": 380 * u(0.8, 1.2),
            "diploe": 560 * u(0.85, 1.1),
        }
        self.iv = {k: v * gain for k, v in self.iv.items()}
        self.marrow_k = self.iv["marrow"] * (1 + n(0, 0.05, nv))
        self.noise_sigma = u(8.0, 24.0) * gain
        self.bias_strength = u(0.6, 1.4)

        self._layout()

    # -- level layout along the arc length s (0 = dens tip, increasing inferiorly) --
    def _layout(self) -> None:
        nv = self.h.size
        s_top = np.zeros(nv)
        s_bot = np.zeros(nv)
        s = self.dens_h
        for j in range(nv):
            s_top[j] = s
            s += self.h[j]
            s_bot[j] = s
            if j < nv - 1:
                s += self.disc_h[j]
        self.s_top, self.s_bot = s_top, s_bot
        self.s_mid = 0.5 * (s_top + s_bot)
        self.s_disc = 0.5 * (s_bot[:-1] + s_top[1:])
        seg = []
        for height, depth, width, gap in self.sacral:
            s += gap
            seg.append((s, s + height, depth, width))
            s += height
        self.sacral_seg = np.array(seg)  # (s_top, s_bot, depth, width)
        self.s_end = s

        idx = {"C3": 1, "C5": 3, "T3": 8, "T7": 12, "T11": 16, "L1": 18, "L3": 20, "S1": 23}
        knots = []
        for name in _THETA_KNOTS:
            if name == "dens":
                knots.append(0.0)
            elif name == "C7-T1":
                knots.append(self.s_disc[5])
            elif name == "L4-L5":
                knots.append(self.s_disc[21])
            elif name == "S3":
                knots.append(0.5 * (self.sacral_seg[1, 0] + self.sacral_seg[1, 1]))
            elif name == "S5":
                knots.append(0.5 * (self.sacral_seg[3, 0] + self.sacral_seg[3, 1]))
            elif name == "Co":
                knots.append(self.s_end)
            else:
                knots.append(self.s_mid[idx[name]])
        self.theta_knots_s = np.array(knots)
        interp = PchipInterpolator(self.theta_knots_s, np.radians(self.theta_knots_deg), extrapolate=False)

        ds = 0.25
        s_lo = -(self.top_margin + 120.0)
        s_hi = self.s_end + self.bottom_margin + 140.0
        sg = np.arange(s_lo, s_hi + ds, ds)
        theta = interp(np.clip(sg, self.theta_knots_s[0], self.theta_knots_s[-1]))
        z = np.cumsum(np.cos(theta)) * ds
        y = np.cumsum(np.sin(theta)) * ds
        i0 = int(np.argmin(np.abs(sg)))
        self.sg, self.theta = sg, theta
        self.cz = z - z[i0] + self.top_margin  # dens tip (posterior wall line) at top_margin
        self.cy = y - y[i0]  # shifted later to place the spine in the A-P field of view

        self.s_conus_tip = float(np.interp(self.conus_disc, np.arange(self.s_disc.size), self.s_disc))

        # Level-wise canal profile along s.
        sm = np.concatenate([[self.dens_h * 0.5], self.s_mid[1:]])
        self.canal_knots_s = np.concatenate(
            [[-10.0], sm, [self.sacral_seg[0, 0] + 5, self.sacral_seg[1, 1], self.sacral_seg[2, 1]]]
        )
        cd = np.concatenate([[19.0], self.cd[1:]])
        cd[0] = 20.0 * self.g / 0.9  # atlas level: large canal
        self.canal_depth_knots = np.concatenate([[21.0], cd, [12.0, 7.0, 2.0]]) * 1.0
        ws = self.ws
        self.sac_hw_knots = np.concatenate([[ws[0]], ws, [8.0, 5.0, 2.0]])
        self.body_d_knots = np.concatenate([[self.d[0]], self.d, self.sacral_seg[:3, 2]])

    def theta_of_s(self, s):
        return np.interp(s, self.sg, self.theta)

    def point(self, s, v=0.0):
        """World (z, y) in mm of the point at arc length s and normal offset v (anterior positive)."""
        th = self.theta_of_s(s)
        z = np.interp(s, self.sg, self.cz) - v * np.sin(th)
        y = np.interp(s, self.sg, self.cy) + v * np.cos(th)
        return z, y

    def z_of_s(self, s):
        return np.interp(s, self.sg, self.cz)

    def canal_depth(self, s):
        return np.interp(s, self.canal_knots_s, self.canal_depth_knots)

    def sac_hw(self, s):
        return np.interp(s, self.canal_knots_s, self.sac_hw_knots)


# --------------------------------------------------------------------------------------------------
# Canvas: 3D arrays, coordinates and painting


class _Canvas:
    """The voxel grid, the curved spine coordinates (u, v) of every pixel, and a painter."""

    def __init__(self, geo: _Anatomy, spacing: float, n_slices: int):
        sp = spacing
        self.sp = sp
        # Rows: from 0 to below the lowest sacral/coccygeal point.
        z_low = []
        for s0, s1, depth, _w in geo.sacral_seg:
            for s in (s0, s1):
                for v in (0.0, depth):
                    z_low.append(geo.point(s, v)[0])
        z_bottom = max(z_low) + geo.bottom_margin
        self.n_rows = int(math.ceil(z_bottom / sp)) + 1
        self.n_cols = int(round(256.0 / sp))
        self.n_slices = n_slices
        self.z = np.arange(self.n_rows) * sp
        self.x = (np.arange(n_slices) - n_slices // 2) * sp  # signed lateral mm, positive = left

        # A-P placement: the posterior skin must lie in the field of view.
        self._soft_tissue_profiles(geo)  # relative to the unshifted curve
        shift = geo.post_margin - float(self.post_skin_y.min())
        geo.cy = geo.cy + shift
        for name in ("canal_y", "asl_y", "psl_y", "post_skin_y", "post_fat_y", "ant_skin_y", "ant_fat_y"):
            setattr(self, name, getattr(self, name) + shift)

        self.y = np.arange(self.n_cols) * sp
        zz, yy = np.meshgrid(self.z, self.y, indexing="ij")
        # Curved coordinates: nearest point of a coarse copy of the curve (2 mm), projected on its
        # tangent, then refined once on the fine curve (second-order accurate, 8x fewer tree points).
        stride = 8
        tree = cKDTree(np.column_stack([geo.cz[::stride], geo.cy[::stride]]))
        _, idx = tree.query(np.column_stack([zz.ravel(), yy.ravel()]))
        idx = idx.reshape(zz.shape) * stride
        u = (
            geo.sg[idx]
            + (zz - geo.cz[idx]) * np.cos(geo.theta[idx])
            + (yy - geo.cy[idx]) * np.sin(geo.theta[idx])
        )
        th = np.interp(u, geo.sg, geo.theta)
        dz = zz - np.interp(u, geo.sg, geo.cz)
        dy = yy - np.interp(u, geo.sg, geo.cy)
        self.U = (u + dz * np.cos(th) + dy * np.sin(th)).astype(np.float32)
        self.V = (-dz * np.sin(th) + dy * np.cos(th)).astype(np.float32)
        self.Z = zz.astype(np.float32)
        self.Y = yy.astype(np.float32)

        self.img = np.zeros((n_slices, self.n_rows, self.n_cols), np.float32)
        self.lab = np.zeros((n_slices, self.n_rows, self.n_cols), np.uint8)

        # Landmarks for regions and the label bookkeeping.
        self.disc_center_z = {}
        for j in range(geo.s_disc.size):
            dd = 0.5 * (geo.d[j] + geo.d[j + 1])
            self.disc_center_z[j + 2] = float(geo.point(geo.s_disc[j], 0.5 * dd)[0])
        self.level_center_z = {}
        for j in range(geo.s_mid.size):
            self.level_center_z[j + 2] = float(geo.point(geo.s_mid[j], 0.5 * geo.d[j])[0])
        for k, v in self.disc_center_z.items():
            self.level_center_z[DISC_LABEL_OFFSET + k] = v
        # Region bounds: the inferior surface of the C7-T1 and T12-L1 discs (the endplate below them,
        # at half the body depth), so that each boundary disc lies wholly in the region above.
        self.region_bound_z = {
            name: float(geo.point(geo.s_top[j], 0.5 * geo.d[j])[0])
            for name, j in (("C7-T1", 6), ("T12-L1", 18))
        }

    def _soft_tissue_profiles(self, geo: _Anatomy) -> None:
        """Per-row A-P lines (relative to the not yet shifted curve): canal centre, spine, skin."""
        s = geo.sg
        cd = geo.canal_depth(s)
        zc, yc = geo.point(s, -0.5 * cd)
        self.canal_y = np.interp(self.z, zc, yc)
        zp, yp = geo.point(s, 0.0)
        self.psl_y = np.interp(self.z, zp, yp)
        # anterior spine line: bodies, C1 arch / clivus above, sacral segments below
        ant = np.interp(
            s,
            np.concatenate([[-200, 0], geo.s_mid, geo.sacral_seg[:, 0]]),
            np.concatenate([[0, 0], geo.d, geo.sacral_seg[:, 2]]),
        )
        above = s < geo.dens_h
        dens_c = 0.5 * geo.d[0]
        ant_top = dens_c + 5.2 + 1.2 + 9.0
        clivus = dens_c + np.maximum(0.0, -geo.basion_gap - s) * math.tan(geo.clivus_angle) + 11.0
        ant = np.where(above, np.maximum(ant_top, np.where(s < -geo.basion_gap, clivus, ant_top)), ant)
        ant = np.where(s > geo.s_end, geo.sacral_seg[-1, 2], ant)
        za, ya = geo.point(s, ant)
        order = np.argsort(za)
        self.asl_y = np.interp(self.z, za[order], ya[order])

        # Smooth canal line for the body outline (shear coordinates).
        smooth = ndimage.gaussian_filter1d(self.canal_y, sigma=25.0 / self.sp, mode="nearest")
        zk = np.array([0.0, geo.z_of_s(0.0), geo.z_of_s(geo.s_mid[2])])
        zk = np.concatenate([zk, [geo.z_of_s(geo.s_mid[j]) for j in (5, 8, 12, 16, 18, 21, 23)]])
        zk = np.concatenate(
            [zk, [geo.z_of_s(geo.sacral_seg[1, 0]), geo.z_of_s(geo.s_end), geo.z_of_s(geo.s_end) + 60]]
        )
        # muscle depth behind the canal centre, fat thickness, anterior depth (from canal centre)
        muscle = np.array([76, 68, 64, 62, 50, 42, 42, 48, 52, 44, 32, 26, 26.0]) * geo.muscle
        fat = np.array([5, 5, 6, 7, 8, 9, 10, 14, 18, 20, 22, 26, 26.0]) * geo.fat
        ant = np.array([125, 95, 72, 78, 150, 185, 190, 180, 170, 160, 140, 120, 110.0])
        ant = ant * geo.g / 0.9 * (0.9 + 0.1 * geo.fat)

        def prof(values):
            return PchipInterpolator(zk, values, extrapolate=False)(np.clip(self.z, zk[0], zk[-1]))

        self.post_fat_y = smooth - prof(muscle)
        self.post_skin_y = self.post_fat_y - prof(fat) - 1.5
        self.ant_skin_y = smooth + prof(ant)
        self.ant_fat_y = self.ant_skin_y - 1.5 - prof(fat * 0.8)

    # -- painting --
    def window(self, z0, z1, y0, y1):
        sp = self.sp
        r0 = max(0, int(math.floor(min(z0, z1) / sp)))
        r1 = min(self.n_rows, int(math.ceil(max(z0, z1) / sp)) + 1)
        c0 = max(0, int(math.floor(min(y0, y1) / sp)))
        c1 = min(self.n_cols, int(math.ceil(max(y0, y1) / sp)) + 1)
        if r1 <= r0 or c1 <= c0:
            return None
        return (slice(r0, r1), slice(c0, c1))

    def paint(self, win, label, value, lo, hi, signed=False):
        """Paint voxels of window ``win`` whose lateral position x satisfies lo <= |x| < hi.

        ``lo``/``hi`` are 2D maps over the window (a pixel with hi <= lo is not painted); with
        ``signed`` the condition is on x itself (structures off the midline, e.g. the aorta).
        ``value`` is a scalar or a 2D map over the window.
        """
        if win is None:
            return
        hi = np.asarray(hi, np.float32)
        lo = np.broadcast_to(np.asarray(lo, np.float32), hi.shape)
        ok = hi > lo
        if not ok.any():
            return
        rr = np.flatnonzero(ok.any(axis=1))
        cc = np.flatnonzero(ok.any(axis=0))
        ra, rb, ca, cb = rr[0], rr[-1] + 1, cc[0], cc[-1] + 1
        lo, hi = lo[ra:rb, ca:cb], hi[ra:rb, ca:cb]
        r0, c0 = win[0].start + ra, win[1].start + ca
        sl_r, sl_c = slice(r0, r0 + (rb - ra)), slice(c0, c0 + (cb - ca))
        x = self.x
        if signed:
            m_ok = hi > lo
            i0 = int(np.searchsorted(x, lo[m_ok].min(), "left"))
            i1 = int(np.searchsorted(x, hi[m_ok].max(), "left"))
            xs = x[i0:i1, None, None]
        else:
            hmax = float(hi.max())
            i0 = int(np.searchsorted(x, -hmax, "right"))
            i1 = int(np.searchsorted(x, hmax, "left"))
            xs = np.abs(x[i0:i1, None, None])
        if i1 <= i0:
            return
        m = (xs >= lo[None]) & (xs < hi[None])
        sub = self.img[i0:i1, sl_r, sl_c]
        if np.ndim(value) == 0:
            sub[m] = value
        else:
            val = np.asarray(value, np.float32)[ra:rb, ca:cb]
            np.copyto(sub, np.broadcast_to(val[None], sub.shape), where=m)
        self.lab[i0:i1, sl_r, sl_c][m] = label

    def uv(self, win):
        return self.U[win], self.V[win]

    def zy(self, win):
        return self.Z[win], self.Y[win]


def _half_width(t, w, q=3.0):
    """Lateral half-width of a rounded cross-section at normalised A-P position t in [-1, 1]."""
    t = np.clip(np.abs(t), 0.0, 1.0)
    return np.where(np.abs(t) < 1.0, w * (1.0 - t**q) ** (1.0 / q), -1.0)


def _inside(f):
    return f <= 1.0


def _sel(mask, hw):
    """hw where mask else -1 (nothing)."""
    return np.where(mask, hw, -1.0).astype(np.float32)


def _smoothstep(x, a, b):
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _rigid(canvas: _Canvas, geo: _Anatomy, s_mid: float, win):
    """Coordinates (a along the tangent, inferior; b along the normal, anterior) of a rigid frame."""
    z0, y0 = geo.point(s_mid, 0.0)
    th = float(geo.theta_of_s(s_mid))
    zz, yy = canvas.zy(win)
    dz, dy = zz - z0, yy - y0
    a = dz * math.cos(th) + dy * math.sin(th)
    b = -dz * math.sin(th) + dy * math.cos(th)
    return a, b


def _rigid_window(canvas, geo, s_mid, half_z, v_lo, v_hi):
    z0, y0 = geo.point(s_mid, 0.0)
    r = max(abs(v_lo), abs(v_hi)) + half_z
    return canvas.window(z0 - r, z0 + r, y0 + v_lo - half_z, y0 + v_hi + half_z)


# --------------------------------------------------------------------------------------------------
# Painting, from the background inwards (later paint wins)


def _paint_base(cv: _Canvas, geo: _Anatomy) -> None:
    """Skin, subcutaneous fat, muscle and the visceral compartments: the same in every slice."""
    iv = geo.iv
    z = cv.z[:, None]
    y = cv.y[None, :]
    img2 = np.zeros((cv.n_rows, cv.n_cols), np.float32)
    lab2 = np.zeros((cv.n_rows, cv.n_cols), np.uint8)
    ps, pf = cv.post_skin_y[:, None], cv.post_fat_y[:, None]
    as_, af = cv.ant_skin_y[:, None], cv.ant_fat_y[:, None]
    body = (y >= ps) & (y <= as_)
    lab2[body] = LABEL_MUSCLE
    img2[body] = iv["muscle"]
    fat = body & ((y < pf) | (y > af))
    lab2[fat] = LABEL_FAT
    img2[fat] = iv["fat"]
    skin = body & ((y < ps + 1.5) | (y > as_ - 1.5))
    lab2[skin] = LABEL_SKIN
    img2[skin] = iv["skin"]

    # fat planes between the posterior muscle layers
    wall = (cv.canal_y - 9.0)[:, None]
    depth = np.maximum(wall - pf, 1.0)
    q = (wall - y) / depth
    rng_p = np.random.default_rng(int(1e6 * geo.fat) % (2**32))
    for q0 in (0.5, 0.8):
        q0 = q0 + rng_p.uniform(-0.08, 0.08)
        wav = q0 + 0.04 * np.sin(cv.z / rng_p.uniform(25, 60) + rng_p.uniform(0, 6.3))[:, None]
        patchy = ndimage.gaussian_filter1d(rng_p.standard_normal(cv.n_rows), 20.0 / cv.sp)
        width = np.clip(patchy / max(float(patchy.std()), 1e-6) + 0.3, 0, 1.2)[:, None]
        plane = body & (lab2 == LABEL_MUSCLE) & (y < wall) & (np.abs((q - wav) * depth) < width)
        lab2[plane] = LABEL_FAT
        img2[plane] = iv["fat"] * 0.8

    # anterior compartments (shear coordinates from the anterior spine line)
    da = y - cv.asl_y[:, None]
    z_t1 = geo.z_of_s(geo.s_top[6])
    z_l1 = geo.z_of_s(geo.s_mid[18])
    z_l5s1 = geo.z_of_s(geo.s_disc[22])
    dia = z_l1 - 18.0 - 75.0 * (1.0 - np.exp(-np.maximum(da, 0.0) / 45.0))  # diaphragm dome
    inner = body & (y < af) & (da > 0)
    neck = inner & (z < z_t1 + 0.25 * np.maximum(da - 20, 0))
    thorax = inner & ~neck & (z < dia)
    pelvis = inner & ~neck & ~thorax & (z > z_l5s1 + 0.35 * da)
    abdomen = inner & ~neck & ~thorax & ~pelvis
    lab2[neck] = LABEL_SOFT_TISSUE
    img2[neck] = iv["soft"] * 0.9
    lab2[thorax] = LABEL_SOFT_TISSUE
    img2[thorax] = iv["soft"] * 1.05
    lab2[pelvis] = LABEL_FAT
    img2[pelvis] = iv["fat"] * 0.85
    lab2[abdomen] = LABEL_SOFT_TISSUE
    img2[abdomen] = iv["soft"]
    # prevertebral layer
    pv = np.interp(
        cv.z,
        [0, geo.z_of_s(geo.s_mid[3]), geo.z_of_s(geo.s_mid[5]), z_t1 + 30, z_l1, 1e4],
        [6, 4, 10, 14, 9, 9],
    )[:, None]
    prev = inner & (da <= pv)
    lab2[prev & neck] = LABEL_MUSCLE
    img2[prev & neck] = iv["muscle"] * 1.1
    pfat = prev & ~neck
    lab2[pfat] = LABEL_FAT
    img2[pfat] = iv["fat"] * 0.8
    # diaphragm muscle line and liver under it
    dia_band = inner & (np.abs(z - dia) < 3.0) & (da > 5) & ~neck
    liver = abdomen & (z < dia + 110 - 0.4 * da) & (da > 25)
    lab2[liver] = LABEL_SOFT_TISSUE
    img2[liver] = iv["liver"]
    lab2[dia_band] = LABEL_MUSCLE
    img2[dia_band] = iv["muscle"]
    # bowel: blobs of fluid (bright), gas (dark) and wall in the abdomen and upper pelvis
    rng = np.random.default_rng(int(1e6 * geo.g) % (2**32))
    field = ndimage.gaussian_filter(rng.standard_normal(img2.shape).astype(np.float32), 4.5 / cv.sp)
    field /= max(float(field.std()), 1e-6)
    gut = (abdomen & ~liver & (da > 12)) | (pelvis & (da > 40) & (z < z_l5s1 + 70))
    gut_val = iv["soft"] * (1.0 + 0.9 * _smoothstep(field, 0.8, 1.6) - 0.75 * _smoothstep(-field, 1.3, 1.9))
    img2[gut] = gut_val[gut]
    lab2[gut & (field > 1.2)] = LABEL_FLUID
    lab2[gut & (field < -1.6)] = LABEL_AIRWAY
    cv.img[:] = img2[None]
    cv.lab[:] = lab2[None]
    cv.base_field = field


def _paint_thorax_abdomen(cv: _Canvas, geo: _Anatomy) -> None:
    """3D organs in front of the spine: airway, lungs, heart, aorta, rectum, bladder, psoas."""
    iv = geo.iv
    z = cv.z[:, None]
    y = cv.y[None, :]
    da = y - cv.asl_y[:, None]
    full = (slice(0, cv.n_rows), slice(0, cv.n_cols))
    inner = (y > cv.asl_y[:, None]) & (y < cv.ant_fat_y[:, None])
    z_dens = geo.z_of_s(0.0)
    z_t1 = geo.z_of_s(geo.s_top[6])
    z_carina = geo.z_of_s(geo.s_mid[10])
    z_t5, z_t9 = geo.z_of_s(geo.s_mid[11]), geo.z_of_s(geo.s_mid[15])
    z_l1 = geo.z_of_s(geo.s_mid[18])
    z_l4 = geo.z_of_s(geo.s_mid[22])
    z_s1 = geo.z_of_s(geo.s_mid[23])
    z_s3 = geo.z_of_s(geo.sacral_seg[1, 1])
    dia = z_l1 - 18.0 - 75.0 * (1.0 - np.exp(-np.maximum(da, 0.0) / 45.0))

    # Lungs: lateral thorax, dark.
    thorax = inner & (z > z_t1 - 15) & (z < dia) & (da > 3)
    cv.paint(full, LABEL_LUNG, iv["lung"], np.float32(13.0), np.where(thorax, 1e6, -1.0))

    # Heart: ellipsoid with dark blood pool (black-blood T2) and myocardial wall.
    hz, hy = 0.5 * (z_t5 + z_t9) + 12, 70.0
    rz, ry, rx = 48.0, 50.0, 60.0
    ca, sa = math.cos(0.6), math.sin(0.6)  # long axis tilted down and forward
    hz_, hy_ = (z - hz) * ca - (da - hy) * sa, (z - hz) * sa + (da - hy) * ca
    q = (hz_ / rz) ** 2 + (hy_ / (ry * 0.8)) ** 2
    heart = (q < 1) & (z < dia + 5)
    cv.paint(full, LABEL_SOFT_TISSUE, iv["soft"] * 0.8, 0.0, _sel(heart, rx * np.sqrt(np.clip(1 - q, 0, 1))))
    q2 = (hz_ / (rz - 12)) ** 2 + ((hy_ - 3) / (ry * 0.8 - 12)) ** 2
    pool = (q2 < 1) & heart
    pool_val = iv["soft"] * (0.55 + 0.15 * np.clip(cv.base_field, -1, 1))
    cv.paint(full, LABEL_VESSEL, pool_val, 0.0, _sel(pool, (rx - 12) * np.sqrt(np.clip(1 - q2, 0, 1))))

    # Airway: pharynx -> trachea, a tube in front of the spine ending at the carina.
    z_top_air = z_dens - 25
    pv = np.interp(
        cv.z,
        [0, z_dens, geo.z_of_s(geo.s_mid[3]), geo.z_of_s(geo.s_mid[5]), z_t1, z_carina],
        [9, 6, 5, 11, 16, 28],
    )
    lum = np.interp(cv.z, [0, z_dens, geo.z_of_s(geo.s_mid[3]), z_t1, z_carina], [11, 12, 13, 15, 16])
    lum = lum * np.sqrt(np.clip((cv.z - z_top_air) / 12.0, 0, 1) * np.clip((z_carina - cv.z) / 10.0, 0, 1))
    c = (pv + 0.5 * lum)[:, None]
    t = (da - c) / np.maximum(0.5 * lum[:, None], 1e-3)
    air = (np.abs(t) < 1) & (z > z_top_air) & (z < z_carina)
    cv.paint(full, LABEL_AIRWAY, iv["lung"] * 0.6, 0.0, _sel(air, 9.0 * np.sqrt(np.clip(1 - t**2, 0, 1))))

    # Aorta: descending, left of the midline, bifurcating at L4.
    z_arch = geo.z_of_s(geo.s_mid[9])
    r_ao = np.interp(cv.z, [z_arch, z_l1, z_l4], [12.0, 10.0, 8.5]) * geo.g / 0.9
    x_ao = np.interp(cv.z, [z_arch, z_l1, z_l4], [geo.aorta_x, geo.aorta_x * 0.5, 3.0])
    c_ao = (3.0 + r_ao * 1.1)[:, None]
    d = (da - c_ao) / r_ao[:, None]
    aorta = (np.abs(d) < 1) & (z > z_arch) & (z < z_l4)
    half = r_ao[:, None] * np.sqrt(np.clip(1 - d**2, 0, 1))
    xa = x_ao[:, None]
    cv.paint(
        full,
        LABEL_VESSEL,
        iv["blood"],
        np.where(aorta, xa - half, 1.0),
        np.where(aorta, xa + half, -1.0),
        signed=True,
    )

    # Psoas muscles: lateral to the lumbar bodies.
    z_t12 = geo.z_of_s(geo.s_mid[17])
    psoas = (z > z_t12) & (z < z_s1 + 20) & (da > -25) & (da < 6 + 0.15 * (z - z_t12))
    cv.paint(full, LABEL_MUSCLE, iv["muscle"], np.float32(17.0), np.where(psoas, 1e6, -1.0))

    # Rectum along the sacrum and the bladder in front of it.
    rect_c = 22.0
    tr = (da - rect_c) / 14.0
    rect = (np.abs(tr) < 1) & (z > z_s1 + 10) & (z < cv.z[-1] + 1)
    val = iv["soft"] * (0.8 + 0.5 * np.clip(cv.base_field, -1, 1))
    cv.paint(full, LABEL_SOFT_TISSUE, val, 0.0, _sel(rect, 16.0 * np.sqrt(np.clip(1 - tr**2, 0, 1))))
    bz, by = z_s3 + 35.0, 85.0
    qb = ((z - bz) / 40.0) ** 2 + ((da - by) / 38.0) ** 2
    bladder = (qb < 1) & inner
    cv.paint(full, LABEL_FLUID, iv["fluid"], 0.0, _sel(bladder, 45.0 * np.sqrt(np.clip(1 - qb, 0, 1))))
    wall = ((qb >= 1) & (qb < 1.12)) & inner
    cv.paint(full, LABEL_MUSCLE, iv["muscle"], 0.0, _sel(wall, 45.0))


def _paint_skull_base(cv: _Canvas, geo: _Anatomy) -> None:
    """Foramen magnum region: clivus, occipital bone, brainstem, cerebellum, cisterns, C1."""
    iv = geo.iv
    z_top = geo.z_of_s(geo.dens_h + 10)
    win = cv.window(0, z_top, 0, cv.n_cols * cv.sp)
    if win is None:
        return
    u, v = cv.uv(win)
    dens_c = 0.5 * geo.d[0]
    cd1 = float(geo.canal_depth(geo.dens_h * 0.5))
    u_b, v_b = -geo.basion_gap, dens_c  # basion
    u_o, v_o = -geo.basion_gap + 3.0, -cd1 - 2.0  # opisthion
    ta = math.tan(geo.clivus_angle)
    clivus_post = v_b + np.maximum(u_b - u, 0) * ta
    occ_in = v_o - np.maximum(u_o - u, 0) * 0.75 - 0.004 * np.maximum(u_o - u, 0) ** 2
    # foramen magnum plane: line from basion to opisthion
    fm = u_b + (u_o - u_b) * (v - v_b) / (v_o - v_b)
    intra = (u < fm) & (v > occ_in) & (v < clivus_post)
    big = np.float32(1e6)
    cv.paint(win, LABEL_CSF, iv["csf"], 0.0, np.where(intra, big, -1.0))

    # occipital bone: inner table, diploe, outer table
    occ = (u < u_o + 2) & (v <= occ_in) & (v > occ_in - 8.0)
    cap = (u >= u_o - 3) & (np.hypot(u - u_o, v - (v_o - 4)) < 4.0)
    bone = occ | cap
    cv.paint(win, LABEL_SKULL, iv["cortex"], 0.0, np.where(bone, big, -1.0))
    dip = occ & (v < occ_in - 2.0) & (v > occ_in - 6.0) & (u < u_o - 3)
    cv.paint(win, LABEL_SKULL, iv["diploe"], 0.0, np.where(dip, big, -1.0))

    # clivus (basiocciput): cortex and fatty marrow
    clv = (v >= clivus_post) & (v < clivus_post + 11.0) & (u < u_b + 1.5)
    cv.paint(win, LABEL_SKULL, iv["cortex"], 0.0, _sel(clv, 13.0))
    clm = (v >= clivus_post + 1.5) & (v < clivus_post + 9.5) & (u < u_b - 1.0)
    cv.paint(win, LABEL_SKULL, iv["diploe"] * 0.75, 0.0, _sel(clm, 11.5))

    # craniocervical ligaments: transverse ligament / tectorial membrane behind the dens and along
    # the clivus (dark), apical ligament and fat between the dens tip and the basion
    dens_post = dens_c - 5.2
    lig_line = np.where(
        u >= 0, dens_post, np.where(u <= u_b, clivus_post, dens_post + (v_b - dens_post) * (u / u_b))
    )
    tect = (v <= lig_line) & (v > np.minimum(lig_line - 3.0, -0.6)) & (u < geo.dens_h + 0.5 * geo.h[0])
    cv.paint(win, LABEL_LIGAMENT, iv["ligament"], 0.0, _sel(tect, 9.0 * np.ones_like(u)))
    apical = (u >= u_b - 1.0) & (u < 1.0) & (v > lig_line) & (v < dens_c + 8.0)
    cv.paint(win, LABEL_LIGAMENT, 1.6 * iv["ligament"], 0.0, _sel(apical, 10.0 * np.ones_like(u)))

    # brainstem: medulla continuous with the cord, tilting forward along the clivus, pons bulge
    v_cc = -0.5 * cd1
    w = _smoothstep(-u, -u_b - 12.0, -u_b + 6.0)
    ant = (v_cc + 5.5) * (1 - w) + np.maximum(lig_line - 5.5, v_cc + 5.5) * w
    thick = 11.0 + 13.0 * np.exp(-(((u + 45.0) / 14.0) ** 2)) * _smoothstep(-u, 15, 35)
    post = ant - thick
    # lateral to the brainstem: cerebellar hemispheres / tonsils, not CSF
    hemis = intra & (v < clivus_post - 3.0)
    cv.paint(win, LABEL_BRAIN, iv["brain"] * 1.05, np.float32(9.0), np.where(hemis, big, -1.0))
    stem = (u < fm + 3) & (v < ant) & (v > post)
    tn = np.clip((v - 0.5 * (ant + post)) / (0.5 * thick), -1, 1)
    cv.paint(win, LABEL_BRAIN, iv["brain"], 0.0, _sel(stem, (8.0 + 0.4 * thick) * np.sqrt(1 - tn**2)))
    # 4th ventricle behind the pons / upper medulla
    tent = np.clip(1 - np.abs(u + 30.0) / 16.0, 0, 1) * 9.0
    vent = (v <= post) & (v > post - tent) & (u < fm)
    # cerebellum behind, above the cisterna magna
    cb_bottom = fm - 4.0 - 0.45 * np.maximum(post - v, 0)
    cereb = (v <= post - tent - 1.2) & (v > occ_in + 2.0) & (u < cb_bottom) & (u < fm)
    r = np.hypot(u + 30.0, v - (post - tent))
    folia = np.clip(np.sin(2 * np.pi * r / 3.5), 0, 1) ** 8
    cereb_val = iv["brain"] * 1.05 + 0.2 * (iv["csf"] - iv["brain"]) * folia
    cv.paint(win, LABEL_BRAIN, cereb_val, 0.0, np.where(cereb, big, -1.0))
    cv.paint(win, LABEL_CSF, iv["csf"], 0.0, _sel(vent & ~cereb, 12.0))

    # nuchal ligament: occiput to the C7 spinous tip
    s7 = geo.s_mid[5]
    phi, length, _t = geo.spinous[5]
    tip_a = 0.1 * geo.h[5] + math.sin(math.radians(phi)) * length
    tip_b = -geo.cd[5] - 4 - math.cos(math.radians(phi)) * length
    z7, y7 = geo.point(s7, 0.0)
    th7 = float(geo.theta_of_s(s7))
    zt = z7 + tip_a * math.cos(th7) - tip_b * math.sin(th7)
    yt = y7 + tip_a * math.sin(th7) + tip_b * math.cos(th7)
    zo, yo = geo.point(u_o - 25.0, v_o - 25.0 * 0.75 - 10.0)
    lwin = cv.window(min(zo, zt) - 5, max(zo, zt) + 5, min(yo, yt) - 5, max(yo, yt) + 5)
    if lwin is not None:
        zz, yy = cv.zy(lwin)
        ez, ey = zt - zo, yt - yo
        ln = math.hypot(ez, ey)
        tt = np.clip(((zz - zo) * ez + (yy - yo) * ey) / ln**2, 0, 1)
        dist = np.hypot(zz - zo - tt * ez, yy - yo - tt * ey)
        cv.paint(lwin, LABEL_LIGAMENT, iv["ligament"], 0.0, _sel(dist < 1.6, 3.0))

    # C1: anterior arch (in front of the dens), posterior arch, lateral masses
    s2 = geo.s_mid[0]
    h2 = geo.h[0]
    rwin = _rigid_window(cv, geo, s2, h2 / 2 + geo.dens_h + 15, -cd1 - 20, 40)
    a, b = _rigid(cv, geo, s2, rwin)
    rd = 5.2
    specs = [
        (-(h2 / 2 + geo.dens_h * 0.55), dens_c + rd + 1.5 + 4.5, 5.5, 4.5, 11.0),
        (-(h2 / 2 + geo.dens_h * 0.45), -cd1 - 4.5, 4.8, 5.0, 22.0),
    ]
    for ac, bc, ah, bh, hw in specs:
        f = ((a - ac) / ah) ** 2 + ((b - bc) / bh) ** 2
        cv.paint(rwin, 1, iv["cortex"], 0.0, _sel(f <= 1, hw * np.ones_like(f)))
        f2 = ((a - ac) / (ah - 1.3)) ** 2 + ((b - bc) / (bh - 1.3)) ** 2
        cv.paint(rwin, 1, geo.marrow_k[0], 0.0, _sel(f2 <= 1, (hw - 1.3) * np.ones_like(f)))
    lm = (a > -(h2 / 2 + geo.dens_h + 1)) & (a < -(h2 / 2) - 0.5) & (b > -3) & (b < geo.d[0] + 3)
    cv.paint(rwin, 1, geo.marrow_k[0], np.float32(10.0), _sel(lm, 24.0))


def _paint_canal(cv: _Canvas, geo: _Anatomy) -> None:
    """Bony canal: epidural fat, thecal sac with CSF, cord (conus), cauda equina, foramina."""
    iv = geo.iv
    u_fm = -geo.basion_gap + 1.0
    s_end_canal = geo.sacral_seg[3, 0]
    z0 = geo.z_of_s(u_fm - 5)
    z1 = geo.z_of_s(s_end_canal + 5)
    win = cv.window(z0 - 30, z1 + 30, 0, cv.n_cols * cv.sp)
    u, v = cv.uv(win)
    cd = geo.canal_depth(u)
    ws = geo.sac_hw(u)
    in_range = (u > u_fm) & (u < s_end_canal)
    canal = in_range & (v > -cd) & (v < 0.3)
    tc = (v + 0.5 * cd) / (0.5 * cd + 0.3)
    # neural foramina / lateral recess: fat lateral to the sac
    s_l5 = geo.s_bot[-2]
    foramen = canal & (u > geo.dens_h) & (u < s_l5 + 5)
    cv.paint(
        win,
        LABEL_FAT,
        iv["fat"] * 0.9,
        0.0,
        _sel(foramen, (ws + 9.0) * np.sqrt(np.clip(1 - tc**2, 0, 1)) ** 0.5),
    )
    cv.paint(
        win,
        LABEL_FAT,
        iv["fat"] * 0.9,
        0.0,
        _sel(canal, (ws + 2.0) * np.sqrt(np.clip(1 - tc**2, 0, 1)) ** 0.5),
    )

    # thecal sac: posterior epidural fat grows caudally, sac ends at S2
    lv = np.interp(
        u,
        [geo.s_mid[0], geo.s_mid[6], geo.s_mid[12], geo.s_mid[18], geo.s_mid[23]],
        [0.3, 0.8, 2.2, 2.6, 4.0],
    )
    ef_p = lv * geo.epidural_fat
    ef_a = 0.6
    s_sac_end = 0.5 * (geo.sacral_seg[0, 0] + geo.sacral_seg[0, 1])
    taper = np.clip((s_sac_end - u) / 18.0, 0.0, 1.0)
    top = -cd + ef_p
    bot = -ef_a
    vsc = 0.5 * (top + bot)
    hs = 0.5 * (bot - top) * np.sqrt(taper)
    t = (v - vsc) / np.maximum(hs, 1e-3)
    sac = canal & (np.abs(t) < 1) & (taper > 0)
    # cauda equina: fine dark roots lying dorsally below the conus, and the filum
    rng = np.random.default_rng(int(geo.s_conus_tip * 1000) % (2**32))
    roots = np.zeros_like(v)
    for _ in range(9):
        pos = rng.uniform(-0.95, 0.2)
        roots = np.maximum(roots, np.exp(-(((t - pos) * hs / 0.45) ** 2)))
    below = _smoothstep(u, geo.s_conus_tip - 8.0, geo.s_conus_tip + 4.0)
    csf_val = iv["csf"] * (1.0 - 0.4 * roots * below)
    cv.paint(win, LABEL_CSF, csf_val, 0.0, _sel(sac, ws * np.sqrt(np.clip(1 - t**2, 0, 1)) * np.sqrt(taper)))

    # cord: cervical and lumbar enlargements, conus tapering to the tip
    sm = np.concatenate([[u_fm - 5], geo.s_mid])
    rc = np.interp(u, sm, np.concatenate([[5.5], geo.cord_r]))
    wc = np.interp(u, sm, np.concatenate([[8.0], geo.cord_w]))
    conus = np.clip((geo.s_conus_tip - u) / 28.0, 0.0, 1.0) ** 0.6
    rc = rc * conus
    wc = wc * np.clip(conus, 0.0, 1.0) ** 0.5
    vcc = vsc - 0.3
    tcord = (v - vcc) / np.maximum(rc, 1e-3)
    cord = canal & (np.abs(tcord) < 1) & (u < geo.s_conus_tip) & (rc > 0.3)
    cv.paint(win, LABEL_CORD, iv["cord"], 0.0, _sel(cord, wc * np.sqrt(np.clip(1 - tcord**2, 0, 1))))


def _paint_posterior_elements(cv: _Canvas, geo: _Anatomy) -> None:
    """Ligamentum flavum, pedicles, facet columns, laminae and spinous processes, sacral plate."""
    iv = geo.iv
    win = cv.window(0, cv.n_rows * cv.sp, 0, cv.n_cols * cv.sp)
    u, v = cv.uv(win)
    cd = geo.canal_depth(u)
    ws = geo.sac_hw(u)
    s_s1 = geo.s_top[-1]
    # ligamentum flavum along the posterior canal wall, interspinous tissue in the midline
    flav = (u > geo.dens_h) & (u < s_s1) & (v <= -cd + 0.3) & (v > -cd - 3.0)
    cv.paint(win, LABEL_LIGAMENT, iv["ligament"] * 1.3, 0.0, _sel(flav, ws * 0.8))
    tip_u, tip_v = [], []
    for j in range(geo.h.size - 1):
        phi, length, _t = geo.spinous[j]
        ph = math.radians(phi)
        tip_u.append(geo.s_mid[j] + 0.1 * geo.h[j] + math.sin(ph) * length)
        tip_v.append(-float(geo.canal_depth(geo.s_mid[j])) - 2.0 - math.cos(ph) * length)
    v_tip = np.interp(u, tip_u, tip_v)
    isp = (u > geo.dens_h) & (u < s_s1) & (v <= -cd - 3.0) & (v > v_tip - 3.0)
    isp_val = 0.75 * iv["muscle"] + 0.1 * iv["fat"]
    cv.paint(win, LABEL_LIGAMENT, isp_val, 0.0, _sel(isp, 3.0 * np.ones_like(v)))

    # sacral posterior plate (fused laminae) and median crest
    s_plate_end = geo.sacral_seg[3, 0]
    plate = (u > s_s1 - 3) & (u < s_plate_end) & (v <= -cd + 0.5) & (v > -cd - 7.0)
    cv.paint(win, LABEL_POSTERIOR_ELEMENTS, iv["cortex"], 0.0, _sel(plate, 30.0 * np.ones_like(v)))
    plate_m = plate & (v < -cd - 1.2) & (v > -cd - 5.8)
    cv.paint(
        win, LABEL_POSTERIOR_ELEMENTS, geo.marrow_k[-1] * 1.1, 0.0, _sel(plate_m, 28.0 * np.ones_like(v))
    )
    crest_u = geo.sacral_seg[:3, 0] + 3
    for uc in crest_u:
        f = ((u - uc) / 5.0) ** 2 + ((v - (-cd - 9.0)) / 4.0) ** 2
        cv.paint(win, LABEL_POSTERIOR_ELEMENTS, iv["cortex"] * 1.5, 0.0, _sel(f <= 1, 4.0 * np.ones_like(v)))

    nv = geo.h.size
    for j in range(nv - 1):  # C2..L5 (S1 handled by the plate)
        s_mid, h = geo.s_mid[j], geo.h[j]
        cdk = float(geo.canal_depth(s_mid))
        wsk = float(geo.sac_hw(s_mid))
        hd_below = geo.disc_h[j] if j < geo.disc_h.size else 4.0
        hd_above = geo.disc_h[j - 1] if j > 0 else 4.0
        phi, length, thick = geo.spinous[j]
        rwin = _rigid_window(cv, geo, s_mid, h / 2 + 50, -cdk - length - 12, 2)
        a, b = _rigid(cv, geo, s_mid, rwin)
        ones = np.ones_like(a)

        # pedicles (lateral to the sac), facet columns with joint lines
        ped = (a > -0.45 * h) & (a < 0.1 * h) & (b < 1.0) & (b > -0.65 * cdk)
        cv.paint(
            rwin,
            LABEL_POSTERIOR_ELEMENTS,
            geo.marrow_k[j] * 0.95,
            np.float32(wsk - 0.5),
            _sel(ped, (wsk + 6.0) * ones),
        )
        col = (a > -h / 2 - hd_above / 2) & (a < h / 2 + hd_below / 2) & (b < -0.45 * cdk) & (b > -cdk - 5.5)
        cv.paint(
            rwin,
            LABEL_POSTERIOR_ELEMENTS,
            geo.marrow_k[j] * 0.9,
            np.float32(wsk + 1.0),
            _sel(col, (wsk + 12.0) * ones),
        )
        tilt = math.radians(35 if j < 6 else (55 if j < 18 else 80))
        a_joint = h / 2 + hd_below / 2 + (b + 0.7 * cdk) * math.tan(math.pi / 2 - tilt) * 0.3
        jnt = col & (np.abs(a - a_joint) < 0.9)
        cv.paint(rwin, LABEL_LIGAMENT, iv["fat"] * 0.6, np.float32(wsk + 1.0), _sel(jnt, (wsk + 12.0) * ones))

        # lamina: hugs the posterior canal wall, moves anteriorly off the midline
        tl = 4.0 if j < 6 else (5.0 if j < 18 else 6.0)
        a0, a1 = -0.35 * h, 0.55 * h + 0.4 * hd_below
        ac, ah = 0.5 * (a0 + a1), 0.5 * (a1 - a0)
        e = (tl / 2) * np.clip(1 - np.abs((a - ac) / ah) ** 4, 0, 1) ** 0.25
        bl = -cdk - tl / 2
        xf = wsk + 3.0
        k = 0.55 * cdk
        lo_x = xf * np.sqrt(np.clip((b - bl - e) / k, 0, None))
        hi_x = np.minimum(xf * np.sqrt(np.clip((b - bl + e) / k, 0, None)), xf)
        lam = (np.abs((a - ac) / ah) < 1) & (b - bl + e > 0)
        cv.paint(
            rwin, LABEL_POSTERIOR_ELEMENTS, iv["cortex"], np.where(lam, lo_x, 1.0), np.where(lam, hi_x, -1.0)
        )
        lam_in = lam & (e > 1.2)
        e2 = np.maximum(e - 1.2, 0)
        lo2 = xf * np.sqrt(np.clip((b - bl - e2) / k, 0, None))
        hi2 = np.minimum(xf * np.sqrt(np.clip((b - bl + e2) / k, 0, None)), xf - 1.0)
        cv.paint(
            rwin,
            LABEL_POSTERIOR_ELEMENTS,
            geo.marrow_k[j] * 0.95,
            np.where(lam_in, lo2, 1.0),
            np.where(lam_in, hi2, -1.0),
        )

        # spinous process: a bar pointing posteriorly and inferiorly, bulbous tip
        ph = math.radians(phi)
        sa, sb = 0.1 * h, -cdk - tl * 0.4
        ea, eb = math.sin(ph), -math.cos(ph)
        xi = (a - sa) * ea + (b - sb) * eb
        eta = (a - sa) * (-eb) + (b - sb) * ea
        t_base = max(0.55 * h, 0.8 * thick)
        t_tip = thick * (1.0 if j >= 18 else 0.75)
        frac = np.clip(xi / length, 0, 1) ** 0.7
        half_t = 0.5 * (t_base + (t_tip - t_base) * frac) + 1.0 * np.exp(-(((xi - length + 3) / 3.0) ** 2))
        f = np.abs((xi - 0.5 * length) / (0.5 * length)) ** 4 + np.abs(eta / half_t) ** 2.5
        sp_hw = (3.0 + 3.5 * np.clip(1 - xi / length, 0, 1)) * np.sqrt(
            np.clip(1 - (eta / half_t) ** 2, 0, 1)
        ) ** 0.5
        cv.paint(rwin, LABEL_POSTERIOR_ELEMENTS, iv["cortex"], 0.0, _sel(f <= 1, sp_hw))
        lin = length - 2.4
        f2 = (
            np.abs((xi - 0.5 * length) / (0.5 * lin)) ** 4
            + np.abs(eta / np.maximum(half_t - 1.2, 0.1)) ** 2.5
        )
        cv.paint(
            rwin,
            LABEL_POSTERIOR_ELEMENTS,
            geo.marrow_k[j],
            0.0,
            _sel((f2 <= 1) & (half_t > 2.2), sp_hw - 1.2),
        )


def _paint_discs(cv: _Canvas, geo: _Anatomy) -> None:
    """Intervertebral discs C2-C3..L5-S1: dark annulus, bright nucleus, optional cleft/herniation."""
    iv = geo.iv
    nd = geo.s_disc.size
    for j in range(nd):
        k = j + 2  # vertebra above
        s_c = geo.s_disc[j]
        hd = geo.disc_h[j]
        dd = 0.5 * (geo.d[j] + geo.d[j + 1])
        wd = 0.5 * (geo.w[j] + geo.w[j + 1])
        dth = abs(float(geo.theta_of_s(geo.s_mid[j + 1]) - geo.theta_of_s(geo.s_mid[j])))
        hh = 0.5 * hd + 0.5 * dd * dth + 2.5
        win = _rigid_window(cv, geo, s_c, hh + 4, -8, dd + 4)
        u, v = cv.uv(win)
        uu = u - s_c
        bulge_a, bulge_p = 1.0, 0.8 + 1.2 * geo.disc_deg[j]
        vdc = 0.5 * dd + 0.5 * (bulge_a - bulge_p)
        hdp = 0.5 * dd + 0.5 * (bulge_a + bulge_p)
        f = np.abs(uu / hh) ** 4 + np.abs((v - vdc) / hdp) ** 4
        label = DISC_LABEL_OFFSET + k
        ann = iv["annulus"] * (1 + 0.5 * geo.disc_deg[j])
        cv.paint(win, label, ann, 0.0, _sel(f <= 1, _half_width((v - vdc) / hdp, 0.5 * wd)))
        region_gain = 0.9 if j < 6 else (0.92 if j < 18 else 1.0)
        nuc = iv["nucleus"] * region_gain * (1 - 0.75 * geo.disc_deg[j])
        # mildly degenerated discs stay clearly brighter than marrow; only the one markedly
        # degenerated disc (deg > 0.5) may approach the marrow signal
        nuc = max(nuc, (1.15 if geo.disc_deg[j] > 0.5 else 1.6) * geo.marrow_k[j])
        vnc = 0.47 * dd
        rn = 0.33 * dd * (1 - 0.3 * geo.disc_deg[j])
        fn = np.abs(uu / hh) ** 2 + np.abs((v - vnc) / rn) ** 2.5
        val = nuc * np.ones_like(u)
        if geo.disc_cleft and j >= 6:
            val = val * (1 - 0.45 * np.exp(-((uu / 0.7) ** 2)) * (np.abs(v - vnc) < 0.7 * rn))
        cv.paint(win, label, val, 0.0, _sel(fn <= 1, _half_width((v - vnc) / rn, 0.3 * wd, q=2.0)))
        hern = geo.herniation[j]
        if hern > 0:
            fh = (uu / (0.45 * hd + 1.0)) ** 2 + ((v + 0.3 * hern) / (0.9 * hern)) ** 2
            cv.paint(win, label, ann * 1.2, 0.0, _sel((fh <= 1) & (v < 1), 6.0 * np.ones_like(u)))


def _paint_bodies(cv: _Canvas, geo: _Anatomy) -> None:
    """Vertebral bodies C2..S1 (cortex, marrow, basivertebral vein), the dens, sacrum and coccyx."""
    iv = geo.iv
    nv = geo.h.size
    tc = 1.0
    bodies = [(geo.s_mid[j], geo.h[j], geo.d[j], geo.w[j], j + 2, geo.marrow_k[j]) for j in range(nv)]
    for s0, s1, depth, width in geo.sacral_seg[4:]:  # coccygeal segments stay separate
        bodies.append((0.5 * (s0 + s1), s1 - s0, depth, width, SACRUM_LABEL, geo.marrow_k[-1] * 0.9))
    # fused sacrum: an envelope of remnant-disc tissue bridging S1..S5, bodies painted over it
    seg = geo.sacral_seg
    s_a, s_b = geo.s_mid[-1], 0.5 * (seg[3, 0] + seg[3, 1])
    win = cv.window(geo.z_of_s(s_a) - 40, geo.z_of_s(s_b) + 40, 0, cv.n_cols * cv.sp)
    u, v = cv.uv(win)
    dep = np.interp(
        u,
        np.concatenate([[geo.s_mid[-1]], 0.5 * (seg[:4, 0] + seg[:4, 1])]),
        np.concatenate([[geo.d[-1]], seg[:4, 2]]),
    )
    wid = np.interp(
        u,
        np.concatenate([[geo.s_mid[-1]], 0.5 * (seg[:4, 0] + seg[:4, 1])]),
        np.concatenate([[geo.w[-1]], seg[:4, 3]]),
    )
    s_b = seg[3, 1]
    tv = (v - dep / 2) / (dep / 2)
    fu = np.clip((u - s_b + 6.0) / 6.0, 0, 1)  # rounded lower end
    env = (u > s_a) & (u < s_b) & (np.abs(tv) < np.sqrt(1 - fu**2))
    cv.paint(win, SACRUM_LABEL, iv["cortex"], 0.0, _sel(env, _half_width(tv, wid / 2)))
    tvi = (v - dep / 2) / np.maximum(dep / 2 - tc, 0.5)
    env_i = (u > s_a) & (u < s_b - tc) & (np.abs(tvi) < np.sqrt(np.clip(1 - fu**2, 0, 1)) - 0.02)
    sac_marrow = geo.marrow_k[-1] * 1.1 * (1 + 0.1 * _smoothstep(u, s_a, s_b))
    cv.paint(win, SACRUM_LABEL, sac_marrow, 0.0, _sel(env_i, _half_width(tvi, wid / 2 - tc)))
    for i in range(4):  # remnant discs between the fused segments
        gap_c = seg[i, 0] - 0.5 * seg[i, 3]
        rem = env_i & (np.abs(u - gap_c) < 0.5 * seg[i, 3] + 0.3) & (np.abs(tv) < 0.8)
        cv.paint(
            win, SACRUM_LABEL, geo.iv["annulus"] * (1.6 - 0.2 * i), 0.0, _sel(rem, 0.3 * _half_width(tv, wid))
        )
    for s_mid, h, depth, width, label, marrow in bodies:
        win = _rigid_window(cv, geo, s_mid, h / 2 + 3, -3, depth + 3)
        a, b = _rigid(cv, geo, s_mid, win)
        tb = (b - depth / 2) / (depth / 2)
        ec = 0.8 * np.clip(1 - tb**2, 0, 1)
        ah = np.maximum(h / 2 - ec, 0.5)
        f = np.abs(a / ah) ** 5 + np.abs(tb) ** 5
        cv.paint(win, label, iv["cortex"], 0.0, _sel(f <= 1, _half_width(tb, width / 2)))
        tbi = (b - depth / 2) / (depth / 2 - tc)
        fi = np.abs(a / np.maximum(ah - tc, 0.3)) ** 5 + np.abs(tbi) ** 5
        cv.paint(win, label, marrow, 0.0, _sel(fi <= 1, _half_width(tbi, width / 2 - tc)))
        if label <= 25 and h > 10:
            bv = (np.abs(a) < 0.9) & (b > tc) & (b < tc + 2.5)
            cv.paint(win, label, marrow * 1.35, 0.0, _sel(bv, 2.5 * np.ones_like(a)))

    # dens of C2: a rounded peg above the body
    s2, h2, d2 = geo.s_mid[0], geo.h[0], geo.d[0]
    win = _rigid_window(cv, geo, s2, h2 / 2 + geo.dens_h + 3, -3, d2 + 3)
    a, b = _rigid(cv, geo, s2, win)
    bc, rd = 0.5 * d2, 5.2
    a_top, a_bot = -(h2 / 2 + geo.dens_h), -h2 / 2 + 3.0
    ac, ahh = 0.5 * (a_top + a_bot), 0.5 * (a_bot - a_top)
    f = np.abs((a - ac) / ahh) ** 3 + np.abs((b - bc) / rd) ** 2
    tb = (b - bc) / rd
    cv.paint(win, 2, iv["cortex"], 0.0, _sel(f <= 1, 5.5 * np.sqrt(np.clip(1 - tb**2, 0, 1))))
    fi = np.abs((a - ac) / (ahh - tc)) ** 3 + np.abs((b - bc) / (rd - tc)) ** 2
    cv.paint(
        win,
        2,
        geo.marrow_k[0],
        0.0,
        _sel((fi <= 1) & (a > a_top + tc), 4.3 * np.sqrt(np.clip(1 - tb**2, 0, 1))),
    )


# --------------------------------------------------------------------------------------------------
# Rendering: textures, partial volume, bias field, Rician noise

_TEXTURE_AMP = np.zeros(256, np.float32)
_TEXTURE_AMP[1:27] = 0.08
_TEXTURE_AMP[DISC_LABEL_OFFSET + 2 : DISC_LABEL_OFFSET + 25] = 0.05
_TEXTURE_AMP[LABEL_POSTERIOR_ELEMENTS] = 0.08
_TEXTURE_AMP[LABEL_FAT] = 0.07
_TEXTURE_AMP[LABEL_SOFT_TISSUE] = 0.15
_TEXTURE_AMP[LABEL_LUNG] = 0.3
_TEXTURE_AMP[LABEL_BRAIN] = 0.05
_TEXTURE_AMP[LABEL_CORD] = 0.03
_TEXTURE_AMP[LABEL_CSF] = 0.02
_TEXTURE_AMP[LABEL_SKULL] = 0.08
_STRIATION_AMP = np.zeros(256, np.float32)
_STRIATION_AMP[LABEL_MUSCLE] = 0.18
_STRIATION_AMP[LABEL_FAT] = 0.05
_STRIATION_AMP[LABEL_LIGAMENT] = 0.25


def _smooth_field(rng: np.random.Generator, shape, cell_mm, sp) -> np.ndarray:
    """Smooth unit-variance random field: coarse Gaussian noise, linearly upsampled (cheap in 3D)."""
    coarse_shape = tuple(max(2, int(math.ceil(n * sp / c)) + 2) for n, c in zip(shape, cell_mm))
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32), 0.7)
    coarse /= max(float(coarse.std()), 1e-6)
    out = coarse
    for axis, (n, c) in enumerate(zip(shape, cell_mm)):
        pos = np.arange(n) * sp / c + 0.5
        i0 = np.clip(np.floor(pos).astype(int), 0, out.shape[axis] - 2)
        w = (pos - i0).astype(np.float32)
        wshape = [1] * 3
        wshape[axis] = n
        w = w.reshape(wshape)
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i0 + 1, axis=axis) * w
    return out


def _render(cv: _Canvas, geo: _Anatomy, rng: np.random.Generator, noise: bool, bias: bool) -> np.ndarray:
    sp = cv.sp
    img = cv.img
    lab = cv.lab
    shape = img.shape
    mod = _smooth_field(rng, shape, (4.0, 4.0, 4.0), sp)
    mod *= _TEXTURE_AMP[lab]
    stri = _smooth_field(rng, shape, (2.5, 14.0, 2.5), sp)
    stri *= _STRIATION_AMP[lab]
    mod += stri
    del stri
    mod += 1.0
    img *= mod
    del mod
    sigma = 0.45 / sp
    if sigma > 0.2:  # partial volume: a small point-spread function
        img = ndimage.gaussian_filter(img, sigma=sigma, truncate=2.0)
    np.maximum(img, 0, out=img)
    if bias:
        s = geo.bias_strength
        z = cv.z / 700.0
        yv = cv.y / 256.0
        xv = cv.x / 64.0
        ph = rng.uniform(0, 2 * np.pi, 4)
        bz = 0.08 * s * np.sin(2 * np.pi * z * rng.uniform(1.5, 3.0) + ph[0]) + 0.05 * s * np.sin(
            2 * np.pi * z + ph[1]
        )
        # receive coil behind the patient: signal falls off anteriorly
        y_post = float(np.min(cv.post_skin_y))
        by = -0.55 * s * np.clip((cv.y - y_post) / 256.0, 0, None) + 0.04 * s * np.sin(2 * np.pi * yv + ph[2])
        bx = 0.05 * s * np.cos(np.pi * xv + ph[3])
        field = np.exp(bx[:, None, None] + bz[None, :, None] + by[None, None, :]).astype(np.float32)
        field /= float(np.exp(np.mean(bz)) * np.exp(by[int(np.median(cv.canal_y) / sp)]))
        img *= field
        del field
    if noise:
        sd = np.float32(geo.noise_sigma)
        n1 = rng.standard_normal(shape, dtype=np.float32)
        n1 *= sd
        n1 += img
        np.square(n1, out=n1)
        n2 = rng.standard_normal(shape, dtype=np.float32)
        n2 *= sd
        np.square(n2, out=n2)
        n1 += n2
        del n2
        img = np.sqrt(n1, out=n1)
    return img.astype(np.float32, copy=False)
