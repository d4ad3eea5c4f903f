"""`fovcompletion benchmark`: hide part of scans the model never saw, phantoms and templates, complete it with every
method and the representation's ceilings, measure."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from ..device import DEVICE_CHOICES
from ..errors import InputError
from ..schedule import SamplerOptions

LONG_DRAWS = 3  # draws of each long completion unless told: reach is nearly all or nothing per draw

QUICK = {
    "steps": [10, 25],
    "resample": [2],
    "real_cases": 2,
    "phantoms": 1,
    "reference_cases": 1,
    "resample_steps": 10,
    "speed_steps": 1,
}
FULL = {
    "steps": [10, 25, 50, 100],
    "resample": [2, 5],
    "real_cases": None,
    "phantoms": 3,
    "reference_cases": None,
    "resample_steps": 25,
    "speed_steps": 3,
}


def int_list(text: str, minimum: int = 1) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (got {text!r})") from None
    if not values or min(values) < minimum:
        kind = "positive integers" if minimum == 1 else f"integers of at least {minimum}"
        raise argparse.ArgumentTypeError(f"expected {kind} (got {text!r})")
    return values


def count_list(text: str) -> list[int]:
    """Comma-separated counts that may be 0 (the unnamed row of an option that 0 turns off)."""
    return int_list(text, minimum=0)


def non_negative_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(dict.fromkeys(float(part) for part in text.split(",") if part.strip()))  # once each
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers (got {text!r})") from None
    if not values or not all(math.isfinite(value) and value >= 0 for value in values):
        raise argparse.ArgumentTypeError(f"expected numbers >= 0 (got {text!r})")
    return values


def name_list(text: str) -> set[str]:
    return {part.strip() for part in text.split(",") if part.strip()}


def subject_list(text: str) -> list[str]:
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated subjects (got {text!r})")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="measure completion quality and speed against baselines and the reference sampler",
        description="Hide one end of scans the model never saw (and whole regions of phantoms, and the thoracic and "
        "lumbar spine of a template), complete it with each method and measure the representation's ceiling "
        "(grid, autoencoder, denoise); write results.json, results.md, quality_vs_steps.png and examples.png.",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="any BIDS root (sub-*/anat/sub-*_T2w.nii.gz); subjects in the model's training list are never "
        "evaluated; its held-out subjects are used if present, else every other subject",
    )
    parser.add_argument(
        "--subjects",
        type=subject_list,
        default=None,
        metavar="LIST",
        help="evaluate only these subjects of --data (comma-separated, e.g. sub-a,sub-b)",
    )
    parser.add_argument(
        "--training-subjects",
        action="store_true",
        help="evaluate the model's training subjects of --data instead (with --subjects, those named): a check of "
        "fit, whose gap to the held-out figures is what the model learned of its own scans, never a measurement "
        "of completion quality; the results say so",
    )
    parser.add_argument(
        "--templates",
        type=Path,
        default=None,
        metavar="ROOT",
        help="a template root with disc labels (the PAM50 template): C1-C7 kept, completed down to L1, levels scored",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--model", default=None, help="bundle name or folder (default: the bundled model)")
    parser.add_argument(
        "--methods",
        type=name_list,
        default=None,
        metavar="LIST",
        help="comma-separated families: grid,autoencoder,denoise (the ceilings),ours,resample,reference,constant,"
        "mirror,noise,retrieval (default: all of these), and retrieval-oracle (other real spines of the library "
        "chosen by the truth itself: a yardstick for reading the figures, not a method; only when named)",
    )
    parser.add_argument(
        "--hide-mm", type=float, default=64.0, help="millimetres hidden at one end (default: 64)"
    )
    parser.add_argument(
        "--direction",
        choices=("superior", "inferior", "both"),
        default="both",
        help="which end is hidden; both = each in turn (default)",
    )
    parser.add_argument(
        "--steps",
        type=int_list,
        default=None,
        metavar="N,N",
        help="our sampler's step counts (default: 10,25,50,100; quick: 10,25)",
    )
    parser.add_argument(
        "--resample",
        type=int_list,
        default=None,
        metavar="R,R",
        help="RePaint resample counts (default: 2,5; quick: 2)",
    )
    parser.add_argument(
        "--resample-steps",
        type=int,
        default=None,
        help="steps of the resampling runs (default: 25; quick: 10)",
    )
    parser.add_argument(
        "--jump-length",
        type=int_list,
        default=[1],
        metavar="J,J",
        help="RePaint jump lengths of the resampling rows (after every J steps, go J steps back), each value a row "
        "of its own named ...-jumpJ, 1 unnamed (default: 1)",
    )
    parser.add_argument(
        "--candidates",
        type=int_list,
        default=[1],
        metavar="K,K",
        help="candidates per window of our sampler's rows (the one whose canal lasts furthest is kept), each value "
        "a row of its own named ...-bestK, 1 unnamed (default: 1)",
    )
    parser.add_argument(
        "--mask-erosion",
        type=count_list,
        default=[0],
        metavar="N,N",
        help="latent cells by which our sampler's rows shrink the known region, so that the UNet also redraws the "
        "scan's last cells before the seam (the engine's --mask-erosion), each value a row of its own named "
        "...-erosionN, 0 unnamed (default: 0)",
    )
    parser.add_argument(
        "--denoise-levels",
        type=int_list,
        default=[100],
        metavar="T,T",
        help="timesteps of the denoise ceiling: the truth's own latent noised to T and denoised by the bundle's "
        "sampler, the UNet's fidelity when the layout is given, each value a row named denoise-tT (default: 100)",
    )
    parser.add_argument(
        "--slice-noise-correlation",
        type=float,
        default=SamplerOptions.slice_noise_correlation,
        metavar="R",
        help="how much of the noise our sampler's slices share (default: the engine's, "
        f"{SamplerOptions.slice_noise_correlation:g})",
    )
    parser.add_argument(
        "--guidance",
        type=non_negative_list,
        default=(None,),
        metavar="W,W",
        help="classifier-free guidance of our sampler's runs, each value a row of its own named ...-guidanceW "
        "(default: the bundle's, rows unnamed; 1 = none)",
    )
    parser.add_argument(
        "--autoguidance",
        type=non_negative_list,
        default=(None,),
        metavar="W,W",
        help="autoguidance of our sampler's runs (a model with a guide UNet), each value a row of its own named "
        "...-autoguidanceW (default: the bundle's, rows unnamed; 0 = none)",
    )
    parser.add_argument(
        "--guide-alone-from",
        type=count_list,
        default=(None,),
        metavar="T,T",
        help="the timestep from which our sampler's steps take all their guidance from the guide UNet "
        "(see `complete --guide-alone-from`), each value a row of its own named ...-guidealoneT (default: the "
        "bundle's, rows unnamed; 1000 = never)",
    )
    parser.add_argument(
        "--eta",
        type=non_negative_list,
        default=(None,),
        metavar="E,E",
        help="DDIM eta of our sampler's runs (0 deterministic, 1 as much fresh noise per step as DDPM), each value "
        "a row of its own named ...-etaE (default: the bundle's, rows unnamed)",
    )
    parser.add_argument(
        "--reference-steps",
        type=int,
        default=None,
        help="DDPM steps of the reference sampler (default: the model's training steps, 1000)",
    )
    parser.add_argument(
        "--reference-cases",
        type=int,
        default=None,
        help="run the reference sampler on this many cases (default: all; quick: 1)",
    )
    parser.add_argument(
        "--phantoms",
        type=int,
        default=None,
        help="whole-spine phantoms to add, seeds from --seed on (default: 3; quick: 1; 0 for none)",
    )
    parser.add_argument(
        "--phantom-keep", default="cervical", help="phantom region left visible (default: cervical)"
    )
    parser.add_argument(
        "--phantom-spacing",
        type=float,
        default=None,
        help="phantom voxel size in mm (default: the model's canvas spacing)",
    )
    parser.add_argument("--max-cases", type=int, default=None, help="at most this many real cases")
    parser.add_argument(
        "--slices", type=int, default=None, help="central sagittal slices (default: the model's)"
    )
    parser.add_argument("--examples", type=int, default=3, help="cases shown in examples.png (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case (then +1 per case)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        metavar="K",
        help="draws of each of our sampler's rows (and of the denoise ceilings and the noise baseline) per case, "
        "each with a seed of its own (draw k: the case's seed + 1000 k): rows report the mean over draws and the "
        "spread of the mean, the sampler's own noise (default: 1)",
    )
    parser.add_argument(
        "--long-inferior",
        type=float,
        default=None,
        metavar="MM",
        help="also complete each real cervical scan whole, MM below its field of view, at the model's default "
        "setting, and report how far a bright canal lasts there (canal reach in mm; no truth reaches that far) "
        "and the brightness at each window join (1 = no step where a later window takes over)",
    )
    parser.add_argument(
        "--long-draws",
        type=int,
        default=None,
        metavar="N",
        help=f"with --long-inferior: draws of each long completion, seeds --seed to --seed + N - 1 (default: "
        f"{LONG_DRAWS})",
    )
    parser.add_argument(
        "--no-speed",
        action="store_true",
        help="skip the speed section: timing the model's UNet and the reference-size one (random weights)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a subset for frequent runs: 2 real cases, 1 phantom, steps 10,25, resample 2 at 10 steps, "
        "the reference sampler on one case",
    )
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="default: auto")
    parser.set_defaults(handler=run)


def canonical_command(args: argparse.Namespace) -> str:
    """The command as a person would retype it (options left at their defaults omitted)."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    defaults = vars(parser.parse_args(["benchmark", "--out", "."]))
    parts = ["fovcompletion", "benchmark"]
    for key, value in vars(args).items():
        if key not in defaults or key == "handler" or (key != "out" and value == defaults[key]):
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, set, tuple)):
            parts += [flag, ",".join(str(v) for v in (sorted(value) if isinstance(value, set) else value))]
        else:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(parts)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..benchmark.runner import DEFAULT_FAMILIES

    preset = QUICK if args.quick else FULL
    families = args.methods or set(DEFAULT_FAMILIES)
    phantoms = preset["phantoms"] if args.phantoms is None else args.phantoms
    explicit_phantoms = args.phantoms is not None
    if args.hide_mm <= 0:
        raise InputError(f"--hide-mm must be positive (got {args.hide_mm:g})")
    check_long_range(args.long_inferior, args.long_draws)
    if args.data is None and phantoms <= 0 and args.templates is None:
        raise InputError("nothing to benchmark: give --data BIDS_ROOT, --templates ROOT and/or --phantoms N")
    if (args.subjects or args.training_subjects) and args.data is None:
        raise InputError(
            "--subjects and --training-subjects choose among the subjects of --data; give --data BIDS_ROOT"
        )
    if phantoms < 0 or (args.max_cases is not None and args.max_cases < 1):
        raise InputError("--phantoms must be 0 or more and --max-cases at least 1")
    if args.repeats < 1:
        raise InputError(f"--repeats must be at least 1 (got {args.repeats})")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} exists and is not a folder")
    return _run(args, preset, families, phantoms, explicit_phantoms)


def _run(args, preset: dict, families: set[str], phantoms: int, explicit_phantoms: bool) -> int:
    from ..benchmark import cases as case_lib
    from ..benchmark.baselines import RetrievalBaseline
    from ..benchmark.ceiling import CEILINGS
    from ..benchmark.long_range import long_cases
    from ..benchmark.report import write_reports
    from ..benchmark.runner import LEARNED, Settings, build_methods, run_benchmark
    from ..benchmark.subjects import bundle_lists, choose_subjects
    from ..benchmark.templates import template_cases
    from ..bundle import read_metadata
    from ..preprocess import max_inplane_spacing_mm
    from ..registry import resolve_bundle

    learned = bool(families & set(LEARNED))
    needs_bundle = learned or bool(families & set(CEILINGS))
    metadata = read_metadata(resolve_bundle(args.model)) if needs_bundle or args.model else None
    reference_steps = args.reference_steps or (metadata.scheduler.num_train_timesteps if metadata else 1000)
    methods = build_methods(
        families,
        args.steps or preset["steps"],
        args.resample or preset["resample"],
        args.resample_steps or preset["resample_steps"],
        reference_steps,
        args.slice_noise_correlation,
        args.guidance,
        args.eta,
        tuple(dict.fromkeys(args.jump_length)),
        tuple(dict.fromkeys(args.candidates)),
        tuple(dict.fromkeys(args.mask_erosion)),
        tuple(dict.fromkeys(args.denoise_levels)),
        args.autoguidance,
        tuple(dict.fromkeys(args.guide_alone_from)),
    )
    timesteps = metadata.scheduler.num_train_timesteps if metadata else 0
    if "denoise" in families and max(args.denoise_levels) >= timesteps:
        raise InputError(
            f"--denoise-levels: {max(args.denoise_levels)} is not a timestep of the model (0..{timesteps - 1})"
        )
    cases, retrieval, extra = [], {}, {}
    spacing = args.phantom_spacing or (metadata.canvas.spacing_mm[0] if metadata else 1.0)
    if args.data is not None:
        subjects = case_lib.bids_subjects(args.data)
        trained, held_out = bundle_lists(metadata.training if metadata else None)
        choice = choose_subjects(subjects, trained, held_out, args.subjects, args.training_subjects)
        skipped = (
            ""
            if choice.training_fit
            else f"{len(choice.excluded_training)} in the model's training list skipped; "
        )
        log(
            f"real cases from {len(choice.evaluated)} subject(s): {choice.reason}; {skipped}"
            f"retrieval over {len(choice.library)} subject(s)"
        )
        real = case_lib.real_cases(
            subjects,
            choice.evaluated,
            args.hide_mm,
            args.direction,
            log=log,
            max_inplane_mm=max_inplane_spacing_mm(metadata),
        )
        if preset["real_cases"]:
            real = case_lib.pick_quick(real, preset["real_cases"])
        cases += real[: args.max_cases] if args.max_cases else real
        retrieval["real"] = RetrievalBaseline(case_lib.real_library(subjects, choice.library))
        extra["subjects"] = choice.to_dict()
    if args.templates is not None:
        cases += template_cases(args.templates, log=log)
        retrieval["template"] = RetrievalBaseline(case_lib.phantom_library(spacing))  # only phantoms reach L1
    if phantoms > 0:
        try:
            cases += case_lib.phantom_cases(phantoms, spacing, args.phantom_keep, first_seed=args.seed)
            retrieval["phantom"] = RetrievalBaseline(case_lib.phantom_library(spacing))
        except ImportError as error:
            if explicit_phantoms:
                raise InputError(f"phantoms are not available in this installation ({error})") from None
            log(f"no phantoms: {error}")
    if not cases:
        raise InputError("no usable case: every volume is too short for the hidden length")
    long = long_cases(cases) if args.long_inferior is not None else []
    if args.long_inferior is not None and not long:
        raise InputError(
            "--long-inferior needs a real cervical scan among the cases (participants.tsv region)"
        )
    log(f"{len(cases)} case(s) x {len(methods)} method(s): {', '.join(m.name for m in methods)}")
    settings = Settings(
        model=args.model,
        device=args.device,
        seed=args.seed,
        slices=args.slices,
        reference_cases=args.reference_cases
        if args.reference_cases is not None
        else preset["reference_cases"],
        examples=args.examples,
        repeats=args.repeats,
    )
    run_result = run_benchmark(cases, methods, settings, retrieval, log=log)
    extra = {
        **extra,
        "direction": args.direction,
        "quick": bool(args.quick),
        "command": canonical_command(args),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "slices": settings.slices or (metadata.default_slices if metadata else 5),
        "phantom_keep": args.phantom_keep,
        "reference_steps": reference_steps,
        "seed": args.seed,  # `fovcompletion compare` pairs runs of the same seeds only
    }
    if long:
        extra["long_range"] = _long_range(args, long, settings)
    if not args.no_speed and learned:
        extra["speed"] = _speed(args, preset["speed_steps"])
    results = write_reports(run_result, args.out, args.hide_mm, extra)
    log(
        f"wrote {args.out / 'results.json'} and results.md, quality_vs_steps.png, examples.png "
        f"({results['cases']} case(s))"
    )
    print((args.out / "results.md").read_text())
    return 0


def check_long_range(below_mm: float | None, draws: int | None) -> None:
    """Refuse a long completion no body needs, or draws without one, before any work starts."""
    from ..layout import check_extension

    if below_mm is None:
        if draws is not None:
            raise InputError("--long-draws needs --long-inferior MM")
        return
    try:
        check_extension(0.0, below_mm)
    except InputError as error:
        raise InputError(f"--long-inferior: {error}") from None
    if draws is not None and draws < 1:
        raise InputError(f"--long-draws must be at least 1 (got {draws})")


def _long_range(args, long: list, settings) -> dict:
    """The long completions (`benchmark.long_range`) of the chosen cervical cases."""
    from ..benchmark.long_range import long_completions
    from ..device import resolve_device
    from ..pipeline import get_bundle

    bundle = get_bundle(args.model, resolve_device(args.device))
    draws = args.long_draws or LONG_DRAWS
    log(
        f"long completions: {args.long_inferior:g} mm below each cervical scan, {draws} draw(s), default setting"
    )
    return long_completions(
        long,
        bundle,
        below_mm=args.long_inferior,
        draws=draws,
        first_seed=args.seed,
        slices=settings.slices or bundle.metadata.default_slices,
        device=args.device,
        log=log,
    )


def _speed(args, steps: int) -> dict:
    """UNet seconds per step per slice: the model's and the reference-size architecture's, same machine."""
    from ..benchmark.speed import bundle_speed, reference_size_speed
    from ..device import resolve_device
    from ..pipeline import get_bundle

    bundle = get_bundle(args.model, resolve_device(args.device))
    speed = {bundle.metadata.name: bundle_speed(bundle, args.device)}
    log("timing the reference-size UNet (254 M parameters, random weights)...")
    speed["reference-size (random weights)"] = reference_size_speed(args.device, steps)
    return speed
