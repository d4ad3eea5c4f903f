"""`fovcompletion demo`: the whole job on the bundled model with a generated partial phantom, offline."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..progress import TextProgressBar
from .options import add_completion_options, completion_kwargs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="complete a generated cervical phantom with the bundled model",
        description="Generate a whole-spine phantom, keep one region of it (the cervical spine by default), "
        "complete it inferiorly, and write the partial input, the completion, its mask and a preview PNG (and "
        "the samples' spread map with --samples 2 or more).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("fovcompletion-demo"),
        help="output folder (default: fovcompletion-demo)",
    )
    parser.add_argument("--phantom-seed", type=int, default=7, help="phantom variant (default: 7)")
    parser.add_argument(
        "--region",
        choices=("cervical", "thoracic", "lumbar"),
        default="cervical",
        help="the part of the phantom kept as the partial input (default: cervical)",
    )
    add_completion_options(parser, default_inferior=128.0)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..phantom import crop_phantom, generate_phantom, save_phantom
    from ..pipeline import complete_file

    made = [folder for folder in (args.out, *args.out.parents) if not folder.exists()]  # innermost first
    args.out.mkdir(parents=True, exist_ok=True)
    # The phantoms wait in a folder of their own until the completion is written: a failed or cancelled demo
    # leaves the output folder as it found it (the completion's own files are written all or none).
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=args.out))
    try:
        whole = generate_phantom(seed=args.phantom_seed)
        inputs = [f"phantom_{args.region}.nii.gz", "phantom_whole.nii.gz", "phantom_whole_labels.nii.gz"]
        save_phantom(whole, staging / inputs[1], staging / inputs[2])
        save_phantom(crop_phantom(whole, args.region), staging / inputs[0])
        output = args.out / f"phantom_{args.region}_completed.nii.gz"
        mask = args.out / f"phantom_{args.region}_known_mask.nii.gz"
        preview = args.out / f"phantom_{args.region}_preview.png"
        spread = args.out / f"phantom_{args.region}_spread.nii.gz" if args.samples > 1 else None
        result = complete_file(
            staging / inputs[0],
            output,
            mask_path=mask,
            spread_path=spread,
            preview_path=preview,
            steps=args.steps,
            progress=TextProgressBar(),
            **completion_kwargs(args),
        )
        for name in inputs:
            os.replace(staging / name, args.out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # the folders this run made, left empty by a failure or a cancel
            if any(folder.iterdir()):
                break
            folder.rmdir()
    input_path = args.out / inputs[0]
    print(f"partial input:      {input_path}")
    print(
        f"completed volume:   {output}  ({result.seconds:.1f} s, {result.nfe} UNet evaluations, {result.device})"
    )
    print(f"known-region mask:  {mask}")
    if spread is not None:
        print(f"samples' spread:    {spread}")
    print(f"preview PNG:        {preview}")
    print(f"whole-spine truth:  {args.out / 'phantom_whole.nii.gz'}", file=sys.stderr)
    return 0
