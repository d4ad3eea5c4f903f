"""Training data: scans from BIDS roots or file lists, prepared by the inference code path, cut into windows.

Every scan goes through `preprocess.prepare_slab` (reorientation, model spacing, central slices, intensity
normalisation) exactly as at inference. Windows are cut at random positions, including positions that run past
the scan's superior or inferior end (padded with the canvas padding value, with an inside-the-scan mask),
because a window model must learn to continue anatomy from partial context.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import FOVCompletionError, InputError
from ..image_io import Volume, read_volume
from ..preprocess import prepare_slab
from .augment import augment_intensity, cut_window, mirrors, window_transform
from .config import AugmentConfig, TrainConfig

SCAN_PATTERNS = (
    "sub-*/anat/*_T2w.nii.gz",
    "sub-*/anat/*_T2w.nii",
    "sub-*/ses-*/anat/*_T2w.nii.gz",
    "sub-*/ses-*/anat/*_T2w.nii",
)


@dataclass(frozen=True)
class ScanRecord:
    """One training scan: where it is and what participants.tsv says about it (never the image)."""

    path: str
    subject: str
    region: str = "unknown"
    source: str = ""
    licence: str = ""

    def describe(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "file": Path(self.path).name,
            "region": self.region,
            "source": self.source,
            "licence": self.licence,
        }


def subject_of(path: Path) -> str:
    """The BIDS subject of a scan: the nearest `sub-*` of its name and folders, so that a root stored under a
    folder named `sub-...` does not make every scan one subject."""
    for part in reversed(Path(path).parts):
        match = re.match(r"sub-[A-Za-z0-9]+", part)
        if match:
            return match.group(0)
    return Path(path).name.split(".")[0]


def read_participants(root: Path) -> dict[str, dict[str, str]]:
    table = root / "participants.tsv"
    if not table.is_file():
        return {}
    with open(table, newline="") as stream:
        return {row["participant_id"]: row for row in csv.DictReader(stream, delimiter="\t")}


def find_scans(roots: list[str], files: list[str]) -> list[ScanRecord]:
    """Every T2w scan under the BIDS roots plus the explicit files, with their participants.tsv entries."""
    records: list[ScanRecord] = []
    for root_text in roots:
        root = Path(root_text).expanduser()
        if not root.is_dir():
            raise InputError(f"training data folder not found: {root}")
        participants = read_participants(root)
        paths = sorted({p for pattern in SCAN_PATTERNS for p in root.glob(pattern)})
        if not paths:
            raise InputError(f"no BIDS T2w scans (sub-*/anat/*_T2w.nii.gz) under {root}")
        for path in paths:
            row = participants.get(subject_of(path), {})
            records.append(
                ScanRecord(
                    str(path),
                    subject_of(path),
                    row.get("region", "unknown"),
                    row.get("source", ""),
                    row.get("license", row.get("licence", "")),
                )
            )
    for file_text in files:
        path = Path(file_text).expanduser()
        if not path.is_file():
            raise InputError(f"training scan not found: {path}")
        records.append(ScanRecord(str(path), subject_of(path)))
    if not records:
        raise InputError("no training scans: give --data BIDS_ROOT or --files")
    return records


def split_scans(records: list[ScanRecord], held_out: list[str]) -> tuple[list[ScanRecord], list[ScanRecord]]:
    """(training, validation) by subject id; naming a subject that does not exist is an error."""
    known = {r.subject for r in records}
    missing = sorted(set(held_out) - known)
    if missing:
        raise InputError(f"held-out subjects not in the data: {', '.join(missing)}")
    train = [r for r in records if r.subject not in held_out]
    val = [r for r in records if r.subject in held_out]
    if not train:
        raise InputError("every scan is held out; nothing left to train on")
    return train, val


@dataclass
class Slab:
    """A scan's central slices on the model grid, normalised (slices, rows S->I, cols A-P).

    `valid` marks the pixels that hold data (None: all of them); a composite's or a template's unknown parts
    are False, and windows treat them like the padding past a scan's ends: never a training target.
    """

    image: np.ndarray
    record: ScanRecord
    valid: np.ndarray | None = None

    def valid_mask(self) -> np.ndarray:
        return np.ones(self.image.shape, dtype=bool) if self.valid is None else self.valid


def load_slab(record: ScanRecord, config: TrainConfig, volume: Volume | None = None) -> Slab:
    """Prepare one scan exactly as inference does."""
    try:
        volume = volume or read_volume(record.path)
        prepared = prepare_slab(volume, config.preprocessing_metadata(), slices=config.data.slices)
    except FOVCompletionError as error:
        raise InputError(f"cannot use training scan {record.path}: {error}") from None
    return Slab(prepared.model, record)


def phantom_slabs(config: TrainConfig, count: int, seed: int = 1000) -> list[Slab]:
    """Synthetic whole-spine phantoms (if the phantom generator is installed), prepared like scans."""
    if count <= 0:
        return []
    try:
        from ..phantom import generate_phantom
    except ImportError:
        print("training: phantom generator not available; training on scans only", flush=True)
        return []
    slabs = []
    for index in range(count):
        # Generated at the model spacing (fast); slices 2 mm apart are fine for per-slice 2D training.
        phantom = generate_phantom(seed=seed + index, spacing_mm=min(config.data.spacing_mm), n_slices=16)
        record = ScanRecord(
            f"phantom-seed{seed + index}",
            f"phantom{seed + index}",
            "phantom",
            "fovcompletion.phantom (synthetic whole spine)",
            "Apache-2.0 (generated)",
        )
        slabs.append(load_slab(record, config, Volume(np.asarray(phantom.image, np.float32), phantom.affine)))
    return slabs


class WindowSampler:
    """Draws augmented (window, inside-mask) pairs from slabs; deterministic for a given seed."""

    def __init__(
        self,
        slabs: list[Slab],
        config: TrainConfig,
        augment: bool = True,
        shape: tuple[int, int] | None = None,
        on_grid: bool = False,
    ) -> None:
        if not slabs:
            raise InputError("no slabs to cut training windows from")
        self.slabs = slabs
        self.shape = tuple(int(v) for v in (shape or config.data.canvas))
        self.padding = float(config.data.padding_value)
        self.clip_high = bool(config.data.intensity_clip)
        self.min_inside = float(config.data.min_inside_fraction)
        self.aug: AugmentConfig | None = config.augment if augment else None
        self.on_grid = on_grid
        self.weights = self._weights(config.data.balance_regions)

    def _weights(self, balance: bool) -> np.ndarray:
        """Each scan equally likely, or each region equally likely (then scans equally within a region)."""
        regions = [s.record.region for s in self.slabs]
        if not balance:
            weights = np.ones(len(self.slabs))
        else:
            counts = {r: regions.count(r) for r in set(regions)}
            weights = np.array([1.0 / counts[r] for r in regions])
        return weights / weights.sum()

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One window: (rows, cols) image and boolean inside-the-scan mask."""
        slab = self.slabs[int(rng.choice(len(self.slabs), p=self.weights))]
        stack, valid_stack = slab.image, slab.valid_mask()
        if self.aug is not None and mirrors(rng, self.aug):
            stack, valid_stack = stack[::-1], valid_stack[::-1]
        index = int(rng.integers(stack.shape[0]))
        plane, valid = stack[index], valid_stack[index]
        n_rows, n_cols = plane.shape
        height, width = self.shape
        # Window centre rows: at least `min_inside` of the window's rows stay inside the scan.
        inside = min(n_rows, int(np.ceil(self.min_inside * height)))
        lo, hi = inside - height / 2, n_rows - inside + height / 2
        centre_row = rng.uniform(min(lo, hi), max(lo, hi))
        spare = abs(n_cols - width) / 2
        centre_col = (n_cols - 1) / 2 + rng.uniform(-spare, spare)
        if self.on_grid:  # whole-pixel offsets, no rotation or zoom: every pixel is a copy, none interpolated
            centre_row = round(centre_row - height / 2) + height / 2
            centre_col = round(centre_col - (width - 1) / 2) + (width - 1) / 2
        geometric = self.aug is not None and not self.on_grid
        matrix, offset = window_transform(
            rng if geometric else None, self.aug, (centre_row - 0.5, centre_col), self.shape
        )
        window, mask = cut_window(plane, valid, matrix, offset, self.shape, self.padding)
        if self.aug is not None:
            window = augment_intensity(rng, self.aug, window, mask, clip_high=self.clip_high)
        return window, mask


class WindowDataset(torch.utils.data.Dataset):
    """`length` windows per epoch; item i of epoch e is always the same window (resumable, DDP-friendly)."""

    def __init__(self, sampler: WindowSampler, length: int, seed: int) -> None:
        self.sampler = sampler
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        window, mask = self.sampler.draw(rng)
        return torch.from_numpy(window[None]), torch.from_numpy(mask[None])


def fixed_windows(sampler: WindowSampler, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed validation set: the same windows every time it is evaluated."""
    rng = np.random.default_rng([seed, 7919])
    pairs = [sampler.draw(rng) for _ in range(count)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None])
    masks = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None])
    return images, masks
