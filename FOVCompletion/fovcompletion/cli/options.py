"""Argument types and option groups shared by several subcommands."""

from __future__ import annotations

import argparse

from ..device import DEVICE_CHOICES
from ..schedule import DEFAULT_CANDIDATES, SamplerOptions


def slice_range(text: str) -> tuple[int, int]:
    """`A:B` -> (A, B), end excluded, as in Python slicing."""
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"slice range must look like A:B (got {text!r})") from None
    return start, stop


def add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="bundle name or folder (default: the bundled model)")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        metavar="|".join((*DEVICE_CHOICES, "cuda:N")),
        help="auto picks CUDA, then MPS, then CPU (default: auto)",
    )


def add_completion_options(parser: argparse.ArgumentParser, default_inferior: float = 0.0) -> None:
    """What `complete` and `demo` share: slices, steps, extension, seed, samples, device, model."""
    add_model_option(parser)
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument(
        "--slices", type=int, default=None, help="number of central sagittal slices (default: the model's)"
    )
    chosen.add_argument(
        "--slice-range",
        type=slice_range,
        default=None,
        metavar="A:B",
        help="sagittal slices A to B-1 along the input's left-right axis",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="denoising steps, 1..1000 (default: the model's setting, `fovcompletion models` lists it; with "
        "--sampler reference every training timestep, 1000, as the original ran)",
    )
    parser.add_argument(
        "--extend-superior", type=float, default=0.0, metavar="MM", help="millimetres to add above the scan"
    )
    parser.add_argument(
        "--extend-inferior",
        type=float,
        default=default_inferior,
        metavar="MM",
        help=f"millimetres to add below the scan (default: {default_inferior:g})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (CPU runs are bit-reproducible)")
    parser.add_argument(
        "--samples",
        type=int,
        default=1,
        help="number of samples; more than one gives their mean and a spread map",
    )
    add_device_option(parser)
    sampler = parser.add_argument_group("sampler")
    sampler.add_argument(
        "--sampler",
        choices=("ddim", "reference"),
        default="ddim",
        help="ddim (default) or the reference implementation's DDPM algorithm",
    )
    sampler.add_argument(
        "--resample", type=int, default=1, help="RePaint resamples per jump (1 = none; ddim only)"
    )
    sampler.add_argument(
        "--jump-length", type=int, default=1, help="RePaint jump length in steps (ddim only)"
    )
    sampler.add_argument(
        "--mask-erosion", type=int, default=0, help="erode the latent known mask by N cells (ddim only)"
    )
    sampler.add_argument(
        "--candidates",
        type=int,
        default=None,
        metavar="K",
        help="complete every window K times and keep the candidate whose bright canal lasts furthest past the "
        f"seam (default: the model's setting, {DEFAULT_CANDIDATES} with --sampler reference; K times the time)",
    )
    sampler.add_argument(
        "--eta",
        type=float,
        default=None,
        help="DDIM eta: the share of fresh noise at each step (default: the model's setting; 0 = deterministic "
        "steps; ddim only)",
    )
    sampler.add_argument(
        "--guidance",
        type=float,
        default=None,
        metavar="W",
        help="classifier-free guidance: how much more than the UNet alone the completion follows the known "
        "region (default: the model's setting; 1 = none; other values take twice the time per step)",
    )
    sampler.add_argument(
        "--autoguidance",
        type=float,
        default=None,
        metavar="W",
        help="autoguidance: how far each step moves away from the model's smaller guide UNet, towards sharper "
        "detail (default: the model's setting; 0 = none; needs a model with a guide; ddim only)",
    )
    sampler.add_argument(
        "--guide-alone-from",
        type=int,
        default=None,
        metavar="T",
        help="under autoguidance, the noisiest steps (timestep T and above, of 1000), where the layout is drawn, "
        "take all their guidance from the guide UNet, at the layout's scale: fewer UNet passes (default: the "
        "model's setting; 1000 = never; needs a model with a guide; ddim only)",
    )
    sampler.add_argument(
        "--slice-noise-correlation",
        type=float,
        default=SamplerOptions.slice_noise_correlation,
        metavar="R",
        help="0..1: how much of the noise the slices share, so that neighbouring slices agree "
        f"(default: {SamplerOptions.slice_noise_correlation:g}; 0 = independent slices; ddim only)",
    )


def sampler_options(args: argparse.Namespace) -> SamplerOptions:
    return SamplerOptions(
        method=args.sampler,
        steps=args.steps,
        eta=args.eta,
        resample=args.resample,
        jump_length=args.jump_length,
        mask_erosion=args.mask_erosion,
        slice_noise_correlation=args.slice_noise_correlation,
        guidance=args.guidance,
        candidates=args.candidates,
        autoguidance=args.autoguidance,
        guide_alone_from=args.guide_alone_from,
    )


def completion_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of `pipeline.complete` from parsed options."""
    return {
        "model": args.model,
        "slices": args.slices,
        "slice_range": args.slice_range,
        "extend_superior_mm": args.extend_superior,
        "extend_inferior_mm": args.extend_inferior,
        "seed": args.seed,
        "samples": args.samples,
        "device": args.device,
        "sampler": sampler_options(args),
    }
