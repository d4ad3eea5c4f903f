"""`fovcompletion import-checkpoint`: turn reference (monai-generative 0.2.x) checkpoints into a bundle."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError


def _json_file(text: str) -> dict:
    try:
        return json.loads(Path(text).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise argparse.ArgumentTypeError(f"cannot read architecture JSON {text}: {error}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-checkpoint",
        help="write a bundle from reference-implementation checkpoints",
        description="Import VQ-VAE and UNet state dicts saved by the reference implementation "
        "(monai-generative 0.2.x, reference architecture unless overridden) into a verified bundle.",
    )
    parser.add_argument("--vqvae", type=Path, required=True, help="VQ-VAE state dict (.pth/.pt)")
    parser.add_argument("--unet", type=Path, required=True, help="diffusion UNet state dict (.pth/.pt)")
    parser.add_argument("--name", default="reference-imported", help="bundle name")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="bundle folder (default: the user model folder / NAME)",
    )
    scale = parser.add_mutually_exclusive_group(required=True)
    scale.add_argument("--scale-factor", type=float, help="latent scale factor used in training")
    scale.add_argument(
        "--scale-from-data",
        type=Path,
        metavar="FOLDER",
        help="compute 1/std of unquantised latents over the scans in FOLDER (BIDS or NIfTI files)",
    )
    parser.add_argument(
        "--autoencoder-args",
        type=_json_file,
        default=None,
        metavar="JSON",
        help="VQ-VAE arguments if not the reference architecture",
    )
    parser.add_argument(
        "--unet-args",
        type=_json_file,
        default=None,
        metavar="JSON",
        help="UNet arguments if not the reference architecture",
    )
    parser.add_argument("--licence", default="as granted by the checkpoints' authors")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..reference_import import import_reference_checkpoints
    from ..registry import user_models_dir

    for path in (args.vqvae, args.unet):
        if not path.is_file():
            raise InputError(f"checkpoint not found: {path}")
    output = args.output or user_models_dir() / args.name
    folder = import_reference_checkpoints(
        args.vqvae,
        args.unet,
        output,
        args.name,
        scale_factor=args.scale_factor,
        scale_data=args.scale_from_data,
        autoencoder_args=args.autoencoder_args,
        unet_args=args.unet_args,
        licence=args.licence,
    )
    print(f"wrote bundle {folder}", file=sys.stderr)
    return 0
