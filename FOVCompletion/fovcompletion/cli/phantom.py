"""`fovcompletion phantom`: write a synthetic whole-spine T2w phantom (and its label map) as NIfTI.

Why: a whole spine with exactly known anatomy, for trying the tool offline, for tests and benchmarks,
and as a partial scan (``--crop``) whose hidden part is known.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import InputError

REGION_CHOICES = ("cervical", "thoracic", "lumbar")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``phantom`` subcommand."""
    parser = subparsers.add_parser(
        "phantom",
        help="write a synthetic whole-spine sagittal T2w phantom and its labels",
        description="Generate a synthetic whole-spine sagittal T2-weighted volume (orientation LIA) with a "
        "label map of vertebrae (1-26), discs (102-124) and tissues (200-219). The same seed always gives "
        "the same phantom.",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="image file (.nii or .nii.gz)")
    parser.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="label-map file (default: next to the output, with _labels before the extension)",
    )
    parser.add_argument("--seed", type=int, default=0, help="phantom variant (default 0)")
    parser.add_argument("--spacing", type=float, default=1.0, help="isotropic voxel size in mm (default 1)")
    parser.add_argument(
        "--crop",
        choices=REGION_CHOICES,
        default=None,
        help="keep only this region, as a partial scan in the same world position",
    )
    parser.add_argument(
        "--float32",
        action="store_true",
        help="store the image as float32 instead of rounded int16",
    )
    parser.set_defaults(handler=run)


def default_labels_path(output: Path) -> Path:
    """``whole.nii.gz`` -> ``whole_labels.nii.gz`` (same folder)."""
    name = output.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return output.with_name(name[: -len(suffix)] + "_labels" + name[-len(suffix) :])
    raise InputError(f"output {output} must end in .nii or .nii.gz")


def _check_path(path: Path, what: str) -> None:
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise InputError(f"{what} {path} must end in .nii or .nii.gz")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"folder {folder} for the {what} does not exist")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder")


def run(args: argparse.Namespace) -> int:
    """Generate, optionally crop, and write the phantom; print where it went."""
    from ..phantom import crop_phantom, generate_phantom, save_phantom

    output = Path(args.output)
    _check_path(output, "output")
    labels = Path(args.labels) if args.labels is not None else default_labels_path(output)
    _check_path(labels, "labels file")
    if output.resolve() == labels.resolve():
        raise InputError("the image and the labels must go to different files")
    if args.seed < 0:
        raise InputError(f"--seed must be 0 or more (got {args.seed})")
    if not math.isfinite(args.spacing) or not 0.25 <= args.spacing <= 8.0:
        raise InputError(f"--spacing must be between 0.25 and 8 mm (got {args.spacing:g})")
    if args.crop is not None and args.crop not in REGION_CHOICES:
        raise InputError(f"--crop must be one of {', '.join(REGION_CHOICES)} (got {args.crop!r})")

    phantom = generate_phantom(seed=args.seed, spacing_mm=args.spacing)
    if args.crop:
        phantom = crop_phantom(phantom, args.crop)
    save_phantom(phantom, output, labels, image_dtype="float32" if args.float32 else "int16")
    shape = "x".join(str(n) for n in phantom.image.shape)
    what = f"{args.crop} part of " if args.crop else ""
    print(f"phantom image:  {output}  ({what}seed {args.seed}, {shape} voxels of {args.spacing:g} mm, LIA)")
    print(f"phantom labels: {labels}")
    return 0
