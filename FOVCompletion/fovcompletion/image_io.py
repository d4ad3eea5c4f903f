"""Read and write 3D volumes (NIfTI, NRRD) as a float array plus a voxel-to-RAS affine.

Reading validates what completion needs (3D, finite, not constant); writing is atomic so that a failed or
cancelled run never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, first_line

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd")  # a detached .nhdr header cannot be written atomically
# NRRD space names -> sign flips that turn that space into RAS.
_NRRD_TO_RAS = {
    "left-posterior-superior": (-1, -1, 1),
    "lps": (-1, -1, 1),
    "right-anterior-superior": (1, 1, 1),
    "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1),
    "las": (-1, 1, 1),
}


@dataclass
class Volume:
    """A 3D image: `array[i, j, k]` with `affine @ [i, j, k, 1]` its RAS world position in mm."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def exact_float_type(dtype: np.dtype) -> type:
    """float32 where it holds every value of `dtype` (the usual int16, uint8 and float32 scans), else float64
    (int32 and float64 data, NIfTI scale factors): the completion's known voxels are the input's, exactly."""
    return np.float32 if np.can_cast(dtype, np.float32, casting="safe") else np.float64


def validate_volume(array: np.ndarray, affine: np.ndarray, label: str = "input") -> Volume:
    """Refuse what cannot be completed: not 3D, NaN/inf, constant, degenerate geometry."""
    array = np.asarray(array)
    while array.ndim > 3 and array.shape[-1] == 1:  # NIfTI keeps trailing axes of length 1 (time, components)
        array = array[..., 0]
    if array.ndim != 3:
        kind = {2: "a 2D image", 4: "a 4D series"}.get(array.ndim, f"{array.ndim}D data")
        raise InputError(f"{label} is {kind} (shape {array.shape}); a 3D sagittal volume is required")
    if min(array.shape) < 1 or array.size == 0:
        raise InputError(f"{label} is empty (shape {array.shape})")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"{label} has a non-real voxel type ({array.dtype})")
    array = array.astype(exact_float_type(array.dtype), copy=False)
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(f"{label} contains {bad} NaN or infinite voxels; clean or mask them first")
    if float(array.max()) == float(array.min()):
        raise InputError(
            f"{label} is constant (every voxel is {float(array.min()):g}); nothing to complete from"
        )
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{label} has a degenerate voxel-to-world matrix")
    return Volume(array, affine)


def _read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nrrd

    data, header = nrrd.read(str(path))
    if header.get("space directions") is None:
        raise InputError(
            f"{path.name}: the NRRD header has no space directions, so its orientation is unknown"
        )
    # A non-spatial axis (a list of values, a time point) has no direction: pynrrd gives None or a row of NaN.
    rows = [
        d
        for d in header["space directions"]
        if d is not None and not np.all(np.isnan(np.asarray(d, dtype=float)))
    ]
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space not in _NRRD_TO_RAS or len(rows) != 3:
        raise InputError(
            f"{path.name}: unsupported NRRD geometry (space {space!r}, {len(rows)} spatial axes)"
        )
    flips = np.diag(_NRRD_TO_RAS[space])
    affine = np.eye(4)
    affine[:3, :3] = flips @ np.asarray(rows, dtype=float).T
    affine[:3, 3] = flips @ np.asarray(header.get("space origin", [0, 0, 0]), dtype=float)
    return data, affine


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a NIfTI or NRRD volume; any unreadable file becomes one clear InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    suffix = _suffix(path)
    try:
        if suffix in NRRD_SUFFIXES:
            array, affine = _read_nrrd(path)
        else:
            image = _load_nifti(path, suffix)
            array, affine = np.asanyarray(image.dataobj), image.affine
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - every parser failure means "not an image"
        detail = first_line(error)
        raise InputError(f"{path.name} is not a readable NIfTI or NRRD image ({detail})") from None
    return validate_volume(array, affine, label=path.name)


def _load_nifti(path: Path, suffix: str):
    """nibabel chooses the format by the name's extension and knows only lower case: a `.Nii` or `.NII.GZ`
    file is read from its bytes instead of being looked for under another name."""
    import nibabel as nib

    if path.name.endswith(suffix):
        return nib.load(str(path))
    raw = path.read_bytes()
    if suffix == ".nii.gz":
        import gzip

        raw = gzip.decompress(raw)
    try:
        return nib.Nifti1Image.from_bytes(raw)
    except Exception:  # noqa: BLE001 - not NIfTI-1: NIfTI-2, or not an image (its error is the one to report)
        return nib.Nifti2Image.from_bytes(raw)


def _nifti_bytes_writer(volume: Volume, path: Path) -> None:
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(volume.array), volume.affine)
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    nib.save(image, str(path))


def _nrrd_writer(volume: Volume, path: Path) -> None:
    import nrrd

    flips = np.diag([-1.0, -1.0, 1.0])
    header = {
        "space": "left-posterior-superior",
        "space directions": (flips @ volume.affine[:3, :3]).T,
        "space origin": flips @ volume.affine[:3, 3],
        "encoding": "gzip",
    }
    nrrd.write(str(path), np.asarray(volume.array), header)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary_path)` in the target folder, then rename: a reader never sees a partial file.

    The temporary file gets the permissions a plain new file would have (umask), not mkstemp's 0600, and the
    target's extension in lower case: writers that choose the format by the name (nibabel) know no other, and
    given `.Nii` nibabel wrote beside the temporary file, which was renamed onto the target empty.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_suffix(path), dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_all_or_none(writers: list[tuple[Path, Callable[[Path], Path]]]) -> None:
    """Write every file beside its target under a temporary name, then rename them all: a failure part-way,
    while writing or while renaming (an interrupt included), leaves no new file and every file that was there
    before (an earlier run's output) as it was."""
    staged: list[tuple[Path, Path]] = []
    temporaries: list[Path] = []  # the one being written too: a writer may leave part of a file
    try:
        for target, write in writers:
            # A hidden name beside the target that keeps its extension (writers choose the format by it).
            temporaries.append(target.with_name(f".partial-{os.getpid()}-{target.name}"))
            try:
                staged.append((Path(write(temporaries[-1])), target))
            except OSError as error:  # named by the file asked for, not by its temporary name
                raise OSError(error.errno, error.strerror or str(error), str(target)) from None
        rename_together(staged)
    except BaseException:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
        raise


def rename_together(staged: list[tuple[Path, Path]]) -> None:
    """Rename each (temporary, target) onto its target, an existing target first set aside; if any rename
    fails, every target is put back as it was."""
    placed: list[tuple[Path, Path | None]] = []  # (target, where its earlier file is set aside, or None)
    try:
        for temporary, target in staged:
            earlier = target.with_name(f".earlier-{os.getpid()}-{target.name}") if target.exists() else None
            placed.append((target, earlier))  # before the move: an interrupt during it is rolled back too
            if earlier is not None:
                os.replace(target, earlier)
            os.replace(temporary, target)
    except BaseException:
        for target, earlier in reversed(placed):
            if earlier is not None and earlier.exists():
                os.replace(earlier, target)
            elif earlier is None:
                target.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError, KeyboardInterrupt):  # the results are in place: the run has succeeded
        for _, earlier in placed:
            if earlier is not None:
                earlier.unlink(missing_ok=True)


def check_output_path(path: str | os.PathLike, suffixes: tuple[str, ...] = WRITABLE_SUFFIXES) -> Path:
    """Refuse an output path before any work is done: wrong extension, missing or read-only folder."""
    path = Path(path)
    if _suffix(path) not in suffixes:
        raise InputError(f"output {path.name}: use a file name ending in {', '.join(suffixes)}")
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise InputError(f"output folder does not exist: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"output folder is not writable: {path.parent}")
    return path


def write_volume(volume: Volume, path: str | os.PathLike) -> Path:
    """Write NIfTI or NRRD (by extension) atomically."""
    path = check_output_path(path)
    writer = _nrrd_writer if _suffix(path) == ".nrrd" else _nifti_bytes_writer
    return atomic_write(path, lambda temporary: writer(volume, temporary))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths name the same file (output must never overwrite the input)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()
