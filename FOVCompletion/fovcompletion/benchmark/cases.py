"""Benchmark cases: a whole volume (the truth) and which of its superior-inferior rows the method may see.

Everything is kept in the model orientation (axis 0 left-right, axis 1 superior->inferior, axis 2 anterior),
so hiding "the superior end" is hiding the first rows. Real cases come from a BIDS root (which subjects:
`subjects.choose_subjects`); phantom cases hide whole spinal regions of a generated whole-spine phantom, whose
label map is the anatomical truth; template cases (`templates`) keep the cervical spine of the PAM50 template.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import MODEL_AXCODES, check_sagittal_resolution, reorient
from ..image_io import Volume, read_volume
from ..preprocess import max_inplane_spacing_mm
from .baselines import LibraryEntry

DIRECTIONS = ("superior", "inferior", "both")
MIN_VISIBLE_MM = 32.0
LIBRARY_PHANTOM_SEED = (
    1000  # training adds phantoms from seed 1000 on: the retrieval library for phantom cases
)
LIBRARY_PHANTOMS = 3


@dataclass
class Case:
    """One benchmark case; `truth` is the whole volume, `known_rows` marks its visible S-I rows."""

    name: str
    subject: str
    source: str  # "real" | "phantom"
    region: str
    truth: np.ndarray  # (L-R slices, S-I rows, A-P cols), model orientation
    affine: np.ndarray  # voxel-to-RAS of `truth`
    known_rows: np.ndarray  # bool per S-I row
    labels: np.ndarray | None = None  # phantom label map on the truth's grid
    centerline_cols: np.ndarray | None = None  # phantom: canal column per S-I row (model orientation)
    label_names: dict = field(default_factory=dict)

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def hidden_rows(self) -> tuple[int, int]:
        """How many rows are hidden above and below the visible part."""
        rows = np.flatnonzero(self.known_rows)
        return int(rows[0]), int(len(self.known_rows) - 1 - rows[-1])

    @property
    def extension_mm(self) -> tuple[float, float]:
        above, below = self.hidden_rows
        return above * float(self.spacing[1]), below * float(self.spacing[1])

    def partial(self) -> Volume:
        """The visible rows as a volume of their own, with the affine that keeps them where they were."""
        above, _ = self.hidden_rows
        shift = np.eye(4)
        shift[1, 3] = above
        return Volume(np.ascontiguousarray(self.truth[:, self.known_rows]), self.affine @ shift)


def hide_rows(n_rows: int, hidden: int, direction: str) -> np.ndarray:
    """Known-row mask with `hidden` rows removed at the superior (first rows) or inferior (last rows) end."""
    known = np.ones(n_rows, dtype=bool)
    if direction == "superior":
        known[:hidden] = False
    elif direction == "inferior":
        known[n_rows - hidden :] = False
    else:
        raise InputError(f"unknown direction {direction!r} (choose from superior, inferior)")
    return known


def directions_of(direction: str) -> tuple[str, ...]:
    if direction not in DIRECTIONS:
        raise InputError(f"unknown direction {direction!r} (choose from {', '.join(DIRECTIONS)})")
    return ("superior", "inferior") if direction == "both" else (direction,)


def to_model_orientation(volume: Volume) -> Volume:
    array, affine = reorient(volume.array, volume.affine, MODEL_AXCODES)
    return Volume(array.astype(np.float32), affine)


# ---------------------------------------------------------------------------------------------- BIDS data


def subject_id(name: str | dict) -> str:
    """`errsm11`, `sub-errsm11` and a training manifest's {"subject": ...} name one subject."""
    if isinstance(name, dict):
        name = name.get("subject", "")
    name = str(name).strip()
    return name if name.startswith("sub-") else f"sub-{name}"


def bids_subjects(root: str | Path) -> dict[str, tuple[Path, str]]:
    """subject -> (T2w file, region) for every subject of a BIDS root (region from participants.tsv)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data root not found: {root}")
    regions: dict[str, str] = {}
    table = root / "participants.tsv"
    if table.is_file():
        with open(table, newline="") as stream:
            for row in csv.DictReader(stream, delimiter="\t"):
                if row.get("participant_id"):
                    regions[subject_id(row["participant_id"])] = (row.get("region") or "unknown").strip()
    found = {}
    for path in sorted(root.glob("sub-*/anat/sub-*_T2w.nii*")) + sorted(
        root.glob("sub-*/ses-*/anat/sub-*_T2w.nii*")
    ):
        subject = subject_id(path.name.split("_")[0])
        found.setdefault(subject, (path, regions.get(subject, "unknown")))
    if not found:
        raise InputError(f"no sub-*/anat/sub-*_T2w.nii.gz images under {root}")
    return found


def real_cases(
    subjects: dict[str, tuple[Path, str]],
    evaluation: Sequence[str],
    hide_mm: float,
    direction: str,
    log: Callable[[str], None] = print,
    max_inplane_mm: float | None = None,
) -> list[Case]:
    """Hide `hide_mm` at one end (or each end in turn) of every evaluation subject's volume. A scan sampled more
    coarsely than `max_inplane_mm` superior-inferior or anterior-posterior (an axial thick-slice scan; default:
    what the engine accepts of any model) is refused as the engine refuses it, whichever methods are scored."""
    limit = max_inplane_spacing_mm(None) if max_inplane_mm is None else max_inplane_mm
    cases: list[Case] = []
    for subject in evaluation:
        path, region = subjects[subject]
        volume = to_model_orientation(read_volume(path))
        try:
            check_sagittal_resolution(np.linalg.norm(volume.affine[:3, :3], axis=0), limit)
        except InputError as error:
            raise InputError(f"{subject} ({path.name}): {error}") from None
        spacing = float(np.linalg.norm(volume.affine[:3, 1]))
        n_rows = volume.array.shape[1]
        hidden = int(math.ceil(hide_mm / spacing - 1e-6))
        if (n_rows - hidden) * spacing < MIN_VISIBLE_MM:
            log(f"skipping {subject}: {n_rows * spacing:.0f} mm tall, too short to hide {hide_mm:g} mm")
            continue
        for end in directions_of(direction):
            cases.append(
                Case(
                    f"{subject}/{end}",
                    subject,
                    "real",
                    region,
                    volume.array,
                    volume.affine,
                    hide_rows(n_rows, hidden, end),
                )
            )
    return cases


def pick_quick(cases: list[Case], count: int) -> list[Case]:
    """A spread subset: one case per region first (directions alternating), then the rest in order."""
    chosen: list[Case] = []
    regions = list(dict.fromkeys(case.region for case in cases))
    for number, region in enumerate(regions):
        own = [case for case in cases if case.region == region]
        wanted = ("superior", "inferior")[number % 2]
        chosen.append(next((c for c in own if c.name.endswith("/" + wanted)), own[0]))
    chosen += [case for case in cases if case not in chosen]
    return chosen[:count]


# ---------------------------------------------------------------------------------------------- phantoms


def _phantom_to_model(phantom) -> tuple[Volume, np.ndarray, np.ndarray]:
    """The phantom image, labels and canal centreline columns in the model orientation."""
    image, affine = reorient(np.asarray(phantom.image, dtype=np.float32), phantom.affine, MODEL_AXCODES)
    labels, _ = reorient(np.asarray(phantom.labels), phantom.affine, MODEL_AXCODES)
    return Volume(image, affine), labels, centerline_in_model(phantom, image.shape, affine)


def centerline_in_model(phantom, shape: tuple[int, ...], model_affine: np.ndarray) -> np.ndarray:
    """Canal column (A-P index) per S-I row of the model-oriented phantom, mid-sagittal."""
    points = np.asarray(phantom.centerline(), dtype=float)  # voxel indices of the phantom's own array
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError("phantom.centerline() must return an (n, 3) array of voxel indices")
    world = phantom.affine @ np.c_[points, np.ones(len(points))].T
    model = (np.linalg.inv(model_affine) @ world)[:3].T
    order = np.argsort(model[:, 1])
    rows = np.arange(shape[1])
    return np.interp(rows, model[order, 1], model[order, 2])


def phantom_cases(
    count: int, spacing_mm: float, keep_region: str = "cervical", first_seed: int = 0
) -> list[Case]:
    """Whole-spine phantoms with only `keep_region` visible: the rest, above and below, is to be completed."""
    from ..phantom import generate_phantom

    seeds = range(first_seed, first_seed + count)
    if seeds and seeds[-1] >= LIBRARY_PHANTOM_SEED:  # as many as a run asked for: all of them
        raise InputError(
            f"phantom seeds {LIBRARY_PHANTOM_SEED} and up are training phantoms; use lower seeds"
        )
    cases = []
    for seed in seeds:
        phantom = generate_phantom(seed=seed, spacing_mm=spacing_mm)
        volume, labels, centerline = _phantom_to_model(phantom)
        known = region_rows(phantom, keep_region, volume)
        cases.append(
            Case(
                f"phantom-{seed}/{keep_region}",
                f"phantom-{seed}",
                "phantom",
                "whole-spine",
                volume.array,
                volume.affine,
                known,
                labels,
                centerline,
                dict(getattr(phantom, "label_names", {})),
            )
        )
    return cases


def region_rows(phantom, region: str, volume: Volume) -> np.ndarray:
    """Rows of the model-oriented phantom inside `region`, from the phantom's regions in mm."""
    if region not in phantom.regions:
        raise InputError(f"phantom has no region {region!r} (has {', '.join(phantom.regions)})")
    from ..phantom import crop_phantom

    cropped = crop_phantom(phantom, region)
    cropped_image, cropped_affine = reorient(np.asarray(cropped.image), cropped.affine, MODEL_AXCODES)
    offset = np.linalg.inv(volume.affine) @ cropped_affine @ np.array([0, 0, 0, 1.0])
    first = int(round(offset[1]))
    known = np.zeros(volume.array.shape[1], dtype=bool)
    known[max(first, 0) : first + cropped_image.shape[1]] = True
    return known


def phantom_library(
    spacing_mm: float, count: int = LIBRARY_PHANTOMS, first_seed: int = LIBRARY_PHANTOM_SEED
) -> list[LibraryEntry]:
    """The retrieval baseline's training set for phantom cases: phantoms with the seeds training uses (cases
    use other seeds), since only phantoms have a whole spine to continue from."""

    def loader(seed: int):
        def load() -> Volume:
            from ..phantom import generate_phantom

            return _phantom_to_model(generate_phantom(seed=seed, spacing_mm=spacing_mm))[0]

        return load

    return [
        LibraryEntry(f"phantom-{seed}", "whole-spine", loader(seed))
        for seed in range(first_seed, first_seed + count)
    ]


def real_library(subjects: dict[str, tuple[Path, str]], training: Sequence[str]) -> list[LibraryEntry]:
    """The training subjects of the data root, read lazily, for the retrieval baseline."""

    def loader(path: Path):
        return lambda: to_model_orientation(read_volume(path))

    return [LibraryEntry(s, subjects[s][1], loader(subjects[s][0])) for s in training]
