"""`fovcompletion train-autoencoder | train-diffusion | export-bundle`: the three training stages.

A run folder holds `config.json` (written by the first stage), each stage's checkpoints, CSV logs and sample
PNGs. Later stages and `--resume` read the saved configuration; options given on the command line override
only the stage's own section (and the time budget, device and threads). Launch with `torchrun` for DDP.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ..conditioning import CONDITIONING_MODES
from ..errors import BundleError, InputError
from ..schedule import DEFAULT_CANDIDATES, DEFAULT_STEPS
from ..training.config import COMPOSITE_UNITS, PRESETS
from ..training.lr_schedule import LR_SCHEDULES
from ..training.objective import PREDICTION_TYPES


def _number(text: str) -> float:
    """The number `text` spells, or NaN (which every range check then refuses)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def non_negative_mm(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected millimetres >= 0 (got {text!r})")
    return value


def add_flatten_option(parser) -> None:
    parser.add_argument(
        "--flatten-si",
        dest="flatten_sigma_mm",
        type=non_negative_mm,
        default=None,
        metavar="MM",
        help="divide out each scan's slow superior-inferior gain (receive-coil falloff), estimated at this "
        "Gaussian width (30 suits regional scans); 0 = off (default)",
    )


def factor_range(text: str) -> tuple[float, float]:
    """LO,HI: two positive factors, LO <= HI (a zoom, a stretch, a gamma)."""
    parts = text.split(",")
    low, high = (_number(part) for part in parts) if len(parts) == 2 else (math.nan, math.nan)
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise argparse.ArgumentTypeError(f"expected LO,HI with 0 < LO <= HI, such as 0.8,1.25 (got {text!r})")
    return low, high


def non_negative_degrees(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and 0 <= value < 90):
        raise argparse.ArgumentTypeError(f"expected degrees in [0, 90) (got {text!r})")
    return value


def add_augmentation_options(parser) -> None:
    """The augmentation of the UNet's latent copies, and whether the UNet is told it."""
    group = parser.add_argument_group(
        "augmentation of the latent copies (--latent-augmentations; the run's config.json holds the rest)"
    )
    group.add_argument(
        "--augment-labels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tell the UNet each copy's augmentation and sample at none (non-leaky augmentation, Karras et al. "
        "2022), so that strong augmentation need not show in the completions; the exported bundle is a plain "
        "UNet (a new UNet stage or --init-from only)",
    )
    group.add_argument("--rotate-deg", type=non_negative_degrees, default=None, help="rotation up to +-DEG")
    group.add_argument(
        "--zoom", type=factor_range, default=None, metavar="LO,HI", help="isotropic zoom range"
    )
    group.add_argument(
        "--stretch",
        type=factor_range,
        default=None,
        metavar="LO,HI",
        help="superior-inferior stretch range: taller or flatter vertebrae (1,1 = off, the presets')",
    )
    group.add_argument(
        "--gamma", type=factor_range, default=None, metavar="LO,HI", help="intensity gamma range"
    )


def apply_augmentation_options(config, args: argparse.Namespace, resuming: bool) -> None:
    """The options over the run's augmentation; a resumed UNet keeps its choice of labels (its weights have the
    label map or not), while a new stage, from scratch or from a bundle's plain UNet, may take them."""
    if args.augment_labels is not None:
        if resuming and args.augment_labels != config.diffusion.augment_labels:
            raise InputError(
                f"--{'' if args.augment_labels else 'no-'}augment-labels: the run's UNet was trained "
                f"{'without' if args.augment_labels else 'with'} augmentation labels"
            )
        config.diffusion.augment_labels = args.augment_labels
    options = (("rotate_deg", "rotate_deg"), ("zoom", "scale"), ("stretch", "stretch"), ("gamma", "gamma"))
    apply_given(config.augment, args, options)


def apply_given(target, args: argparse.Namespace, options) -> None:
    """Each (option, attribute) pair's option, where the command line gave it, onto `target`'s attribute."""
    for option, attribute in options:
        value = getattr(args, option, None)
        if value is not None:
            setattr(target, attribute, value)


def add_whole_spine_options(parser) -> None:
    parser.add_argument(
        "--templates",
        action="append",
        default=None,
        metavar="BIDS_ROOT",
        help="BIDS root of a whole-cord template with disc and cord labels, e.g. the PAM50 (repeatable): "
        "the thoracic part of whole-spine composites, and bent copies",
    )
    parser.add_argument(
        "--composites",
        type=int,
        default=None,
        help="whole-spine composites (labelled cervical scan + bent template + labelled lumbar scan)",
    )
    parser.add_argument(
        "--template-copies", type=int, default=None, help="randomly bent copies of each template"
    )
    parser.add_argument(
        "--composite-units",
        choices=COMPOSITE_UNITS,
        default=None,
        help="composites in their cervical scan's intensity units (the default), or every second one in its "
        "lumbar scan's own (alternate): what completing a cervical and a lumbar scan each show the model",
    )


def apply_whole_spine_options(config, args: argparse.Namespace) -> None:
    if args.templates is not None:
        config.data.templates = [str(Path(p).resolve()) for p in args.templates]
    for option in ("composites", "template_copies"):
        value = getattr(args, option)
        if value is not None:
            if value < 0:
                raise InputError(f"--{option.replace('_', '-')} must be 0 or more (got {value})")
            setattr(config.data, option, value)
    if args.composite_units is not None:
        config.data.composite_units = args.composite_units


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="run folder (checkpoints, logs, samples)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the stage's last checkpoint (none yet: the stage starts from the beginning and says so)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="total epochs of this stage")
    parser.add_argument("--iterations-per-epoch", type=int, default=None, help="iterations per epoch")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size per process")
    parser.add_argument("--lr", type=float, default=None, help="learning rate")
    parser.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=None,
        help="constant or cosine decay to --lr-min at the stage's last epoch (--epochs); default: the preset's "
        "(constant for the default preset; v1, kl2 and gpu decay some stages along a cosine), on --resume the "
        "run's; the UNet warms up over its first epoch either way",
    )
    parser.add_argument(
        "--lr-min",
        type=float,
        default=None,
        help="where the cosine schedule ends (default: the preset's, 0 or 1e-5; on --resume the run's)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop with a checkpoint after this many minutes of this invocation (resume later)",
    )
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--validate-every", type=int, default=None, help="epochs between validation losses")
    parser.add_argument("--sample-every", type=int, default=None, help="epochs between sample PNGs")


def register(subparsers: argparse._SubParsersAction) -> None:
    ae = subparsers.add_parser(
        "train-autoencoder",
        help="train the autoencoder (stage 1 of 3)",
        description="Train the autoencoder (VQ-VAE or AutoencoderKL, as the preset or configuration says) on "
        "windows of sagittal T2w scans (stage 1 of 3).",
    )
    _common(ae)
    new = ae.add_argument_group("new runs (ignored on --resume: the run's config.json is used)")
    new.add_argument(
        "--preset",
        default="default",
        choices=PRESETS,
        help="default: the v0.5.0 2 mm window model's recipe; v1: its successor, fine-tuned from it with "
        "--init-from (intensities with headroom, the VQ-VAE without its codebook); kl2: a measured /2 "
        "AutoencoderKL alternative; gpu: the default with a wider UNet and a GPU's schedule (docs/training.md); "
        "reference: the reference recipe (whole-spine data, GPU)",
    )
    new.add_argument("--config", type=Path, default=None, help="a full training configuration (JSON)")
    new.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="BIDS_ROOT",
        help="BIDS root with sub-*/anat/*_T2w.nii.gz (repeatable)",
    )
    new.add_argument("--files", nargs="+", default=[], metavar="SCAN", help="explicit scan files")
    new.add_argument("--held-out", default="", help="comma-separated subject ids kept for validation")
    new.add_argument("--phantoms", type=int, default=None, help="synthetic phantoms added to training")
    add_whole_spine_options(new)
    add_flatten_option(new)
    new.add_argument("--seed", type=int, default=None)
    new.add_argument("--name", default=None, help="model name (bundle name on export)")
    new.add_argument(
        "--init-from",
        default=None,
        metavar="BUNDLE",
        help="start from this bundle's VQ-VAE (name or folder), with its architecture and preprocessing: "
        "fine-tuning; --epochs 0 takes it as is",
    )
    new.add_argument(
        "--decoder-channels",
        type=channel_list,
        default=None,
        metavar="C,C",
        help="widths of the decoder's levels, where they differ from the encoder's (e.g. 64,128 for the v1 "
        "VQ-VAE's 32,64): a decoder of its own",
    )
    new.add_argument(
        "--decoder-res-layers", type=int, default=None, help="residual layers per decoder level (VQ-VAE)"
    )
    new.add_argument(
        "--residual-channels",
        type=int,
        default=None,
        metavar="R",
        help="widen --init-from's latent by R channels of a residual encoder, trained with the decoder while "
        "the bundle's encoder stays frozen (its UNet, widened by train-diffusion --init-from the same bundle, "
        "keeps what it learned); a VQ-VAE without its codebook only",
    )
    new.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="train the decoder alone on --init-from's encoder: the latents stay the bundle's, so its UNet "
        "needs no retraining (train-diffusion --init-from the same bundle --epochs 0)",
    )
    loss = ae.add_argument_group("losses")
    loss.add_argument("--perceptual-weight", type=float, default=None, help="0 disables (default)")
    loss.add_argument("--perceptual-network", default=None, help="MONAI PerceptualLoss network_type")
    loss.add_argument("--perceptual-weights", default=None, help="local pretrained weights file")
    loss.add_argument("--adversarial-weight", type=float, default=None)
    loss.add_argument(
        "--adversarial-warmup", type=int, default=None, help="epochs before the adversarial loss"
    )
    ae.set_defaults(handler=run_autoencoder)

    diffusion = subparsers.add_parser(
        "train-diffusion",
        help="train the latent diffusion UNet (stage 2 of 3)",
        description="Train the diffusion UNet on latents of the run's VQ-VAE.",
    )
    _common(diffusion)
    diffusion.add_argument(
        "--latent-augmentations",
        type=int,
        default=None,
        help="augmented copies of each scan encoded before training",
    )
    diffusion.add_argument(
        "--phantoms",
        type=int,
        default=None,
        help="synthetic whole-spine phantoms added to the UNet's training latents",
    )
    add_whole_spine_options(diffusion)
    add_flatten_option(diffusion)
    add_augmentation_options(diffusion)
    diffusion.add_argument(
        "--init-from",
        default=None,
        metavar="BUNDLE",
        help="start a new UNet stage from this bundle's UNet, noise schedule and latent scale (the run's "
        "VQ-VAE must have the bundle's architecture)",
    )
    diffusion.add_argument("--ema-decay", type=float, default=None, help="EMA of the UNet weights (0 = off)")
    diffusion.add_argument(
        "--snr-gamma",
        type=float,
        default=None,
        help="min-SNR-gamma loss weighting (default preset: 5; 0 = plain MSE, as the reference)",
    )
    diffusion.add_argument(
        "--conditioning",
        choices=CONDITIONING_MODES,
        default=None,
        help="masked_latent: the UNet also sees the known latent and mask (default preset); none: "
        "unconditional, as the reference (a UNet from scratch only: refused on a resume or --init-from that differs)",
    )
    diffusion.add_argument(
        "--prediction-type",
        choices=PREDICTION_TYPES,
        default=None,
        help="what a new UNet stage learns to predict: epsilon (the presets'), v_prediction (a UNet trained from "
        "scratch on two cores then samples without diverging; docs/training.md) or sample",
    )
    diffusion.set_defaults(handler=run_diffusion)

    export = subparsers.add_parser(
        "export-bundle",
        help="export a trained run as a model bundle (stage 3 of 3)",
        description="Write a verified bundle from the run's two final checkpoints.",
    )
    export.add_argument("--run", type=Path, required=True, help="run folder")
    export.add_argument("-o", "--output", type=Path, required=True, help="bundle folder to create")
    export.add_argument("--name", default=None, help="bundle name (default: the run's model name)")
    export.add_argument("--version", default="0.1.0")
    export.add_argument("--description", default=None)
    export.add_argument(
        "--licence", default=None, help="licence of the weights (default: derived from the data)"
    )
    export.add_argument("--model-card", type=Path, default=None, help="MODEL_CARD.md to include")
    export.add_argument(
        "--extra", nargs="+", default=[], type=Path, help="more files to include (PNG examples)"
    )
    export.add_argument(
        "--metadata-json",
        type=Path,
        default=None,
        help="JSON with 'quality' and/or 'speed' dicts to record in bundle.json",
    )
    export.add_argument("--no-ema", action="store_true", help="export the raw UNet weights, not their EMA")
    export.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        metavar="W",
        help="the sampler's default classifier-free guidance for this model, as measured with "
        "`fovcompletion benchmark --guidance` (default 1: none)",
    )
    export.add_argument(
        "--eta",
        type=float,
        default=0.0,
        metavar="E",
        help="the sampler's default DDIM eta for this model, as measured with `fovcompletion benchmark --eta` "
        "(default 0: deterministic steps)",
    )
    export.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        metavar="N",
        help="the sampler's default denoising steps for this model, as measured with `fovcompletion benchmark "
        f"--steps` (default {DEFAULT_STEPS})",
    )
    export.add_argument(
        "--candidates",
        type=int,
        default=DEFAULT_CANDIDATES,
        metavar="K",
        help="the sampler's default candidates per window for this model, as measured with `fovcompletion "
        f"benchmark --candidates` (default {DEFAULT_CANDIDATES})",
    )
    export.set_defaults(handler=run_export)

    guide = subparsers.add_parser(
        "attach-guide",
        help="give a bundle a guide UNet for autoguidance",
        description="Write a copy of a bundle with the UNet of another run as its autoguidance guide: a smaller, "
        "shorter-trained UNet on the bundle's own latents (docs/training.md, 'Autoguidance').",
    )
    guide.add_argument("bundle", help="bundle folder or name")
    guide.add_argument("--guide-run", type=Path, required=True, help="run folder of the guide UNet")
    guide.add_argument("-o", "--output", type=Path, required=True, help="bundle folder to create")
    guide.add_argument(
        "--autoguidance",
        type=float,
        default=1.0,
        metavar="W",
        help="the sampler's default autoguidance for this model, as measured with `fovcompletion benchmark "
        "--autoguidance` (default 1)",
    )
    guide.add_argument(
        "--guide-alone-from",
        type=int,
        default=None,
        metavar="T",
        help="the sampler's default timestep from which the steps take all their guidance from the guide, as "
        "measured with `fovcompletion benchmark --guide-alone-from` (default: never)",
    )
    guide.add_argument("--version", default=None, help="the new bundle's version (default: the bundle's)")
    guide.set_defaults(handler=run_attach_guide)


def _base_config(args: argparse.Namespace, stage_is_first: bool):
    from ..training.config import load_config, preset_config
    from ..training.diffusion import STAGE
    from ..training.runner import CONFIG_FILE, run_config_path

    saved = run_config_path(args.run, STAGE if args.resume and not stage_is_first else None)
    if saved.is_file() and (args.resume or not stage_is_first):
        return load_config(saved), False
    if not stage_is_first:
        raise InputError(f"{args.run} holds no {CONFIG_FILE}: start the run with train-autoencoder first")
    return (load_config(args.config) if args.config else preset_config(args.preset)), True


def _stage_overrides(section, args: argparse.Namespace) -> None:
    options = ("epochs", "iterations_per_epoch", "batch_size", "lr", "lr_schedule", "lr_min")
    apply_given(section, args, [(option, option) for option in options])


def _run_overrides(config, args: argparse.Namespace) -> None:
    config.max_minutes = args.max_minutes
    options = ("device", "threads", "validate_every", "sample_every")
    apply_given(config, args, [(option, option) for option in options])


def channel_list(text: str) -> list[int]:
    try:
        channels = [int(value) for value in text.split(",")]
    except ValueError:
        channels = []
    if not channels or min(channels) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive widths such as 64,128, got {text!r}"
        )
    return channels


def apply_decoder_options(cfg, args: argparse.Namespace) -> None:
    """A decoder of its own widths, and whether it trains alone (after --init-from, which brings the bundle's)."""
    decoder = dict(cfg.decoder or {})
    if args.decoder_channels is not None:
        if len(args.decoder_channels) != len(cfg.args["channels"]):
            raise InputError(
                f"--decoder-channels needs {len(cfg.args['channels'])} widths, one per level of the encoder "
                f"({','.join(map(str, cfg.args['channels']))})"
            )
        decoder["channels"] = args.decoder_channels
        if cfg.network == "VQVAE":
            decoder["num_res_channels"] = args.decoder_channels
    if args.decoder_res_layers is not None:
        if cfg.network != "VQVAE" or args.decoder_res_layers < 1:
            raise InputError("--decoder-res-layers takes a count >= 1 and applies to a VQ-VAE")
        decoder["num_res_layers"] = args.decoder_res_layers
    cfg.decoder = decoder or None
    cfg.freeze_encoder = cfg.freeze_encoder or args.freeze_encoder


def apply_residual_option(config, channels: int | None) -> None:
    """Residual latent channels on the bundle the run starts from; the run's UNet is sized to the wider latent."""
    from ..latent_codec import residual_channels
    from ..training.config import set_conditioning

    if channels is None:
        return
    if not config.autoencoder.init_from:
        raise InputError("--residual-channels widens a bundle's latent: give --init-from BUNDLE")
    if config.autoencoder.residual:
        raise InputError("--residual-channels: the bundle's latent has residual channels already")
    config.autoencoder.residual = {"latent_channels": channels}
    try:
        residual_channels(config.autoencoder.spec())
    except BundleError as error:
        raise InputError(f"--residual-channels: {error}") from None
    set_conditioning(config, config.diffusion.conditioning)


def run_autoencoder(args: argparse.Namespace) -> int:
    from ..training.autoencoder import train_autoencoder
    from ..training.initialise import adopt_bundle_autoencoder

    config, new = _base_config(args, stage_is_first=True)
    if args.init_from and not new:
        raise InputError(
            f"--init-from starts a new run; {args.run} already holds one (--resume continues it)"
        )
    if new:
        if args.data or args.files:
            config.data.roots = [str(Path(p).resolve()) for p in args.data]
            config.data.files = [str(Path(p).resolve()) for p in args.files]
        config.data.held_out = [
            s.strip() for s in args.held_out.split(",") if s.strip()
        ] or config.data.held_out
        for option, target in (
            ("phantoms", config.data),
            ("seed", config),
            ("name", config),
        ):
            value = getattr(args, option)
            if value is not None:
                setattr(target, option, value)
        apply_whole_spine_options(config, args)
        if args.init_from:
            adopt_bundle_autoencoder(config, args.init_from)
        if args.flatten_sigma_mm is not None:  # after the bundle's own setting, as train-diffusion does
            config.data.flatten_sigma_mm = args.flatten_sigma_mm
        apply_decoder_options(config.autoencoder, args)
        apply_residual_option(config, args.residual_channels)
    cfg = config.autoencoder
    losses = (
        ("perceptual_weight", "perceptual_weight"),
        ("perceptual_network", "perceptual_network"),
        ("perceptual_weights", "perceptual_weights"),
        ("adversarial_weight", "adversarial_weight"),
        ("adversarial_warmup", "adversarial_warmup_epochs"),
    )
    apply_given(cfg, args, losses)
    _stage_overrides(cfg, args)
    _run_overrides(config, args)
    path = train_autoencoder(config, args.run, resume=args.resume)
    _report(f"autoencoder checkpoint: {path}")
    return 0


def _report(line: str) -> None:
    """Rank 0 alone reports a stage's result, as it alone logs (torchrun starts one process per device)."""
    if os.environ.get("RANK", "0") == "0":
        print(line)


def run_diffusion(args: argparse.Namespace) -> int:
    from ..training.config import set_conditioning
    from ..training.diffusion import train_diffusion

    config, _ = _base_config(args, stage_is_first=False)
    cfg = config.diffusion
    _stage_overrides(cfg, args)
    if args.latent_augmentations is not None:
        cfg.latent_augmentations = args.latent_augmentations
    if args.ema_decay is not None:
        cfg.ema_decay = args.ema_decay
    if args.snr_gamma is not None:
        cfg.snr_gamma = args.snr_gamma if args.snr_gamma > 0 else None
    if args.phantoms is not None:
        config.data.phantoms = args.phantoms
    apply_whole_spine_options(config, args)
    if args.init_from:
        _start_unet_from_bundle(config, args)
    trained = _trained_unet(args)
    apply_augmentation_options(config, args, resuming=_resumes_unet(args))
    if args.conditioning is not None:
        _refuse_change(trained, "--conditioning", args.conditioning, config.diffusion.conditioning, "with")
        set_conditioning(config, args.conditioning)
    if args.prediction_type is not None:
        scheduler = config.diffusion.scheduler
        current = scheduler.get("prediction_type", "epsilon")
        _refuse_change(trained, "--prediction-type", args.prediction_type, current, "to predict")
        config.diffusion.scheduler = {**scheduler, "prediction_type": args.prediction_type}
    if args.flatten_sigma_mm is not None:  # after the bundle's own setting: fine-tuning may change it
        config.data.flatten_sigma_mm = args.flatten_sigma_mm
    _run_overrides(config, args)
    path = train_diffusion(config, args.run, resume=args.resume)
    _report(f"UNet checkpoint: {path}")
    return 0


def _resumes_unet(args: argparse.Namespace) -> bool:
    """Whether the stage continues the run's own UNet checkpoint."""
    from ..training.checkpoints import LAST
    from ..training.diffusion import STAGE

    return bool(args.resume and (args.run / STAGE / LAST).exists())


def _trained_unet(args: argparse.Namespace) -> str | None:
    """Which UNet the stage continues with weights already trained, or None for a UNet from scratch."""
    if _resumes_unet(args):
        return "the run's UNet"
    return f"bundle {args.init_from!r}'s UNet" if args.init_from else None


def _refuse_change(trained: str | None, option: str, asked: str, current: str, verb: str) -> None:
    """A UNet's inputs and target are fixed once it has weights: only a UNet from scratch may choose them
    (refused before anything is written: a changed input would not even load the checkpoint)."""
    if trained is not None and asked != current:
        raise InputError(f"{option} {asked}: {trained} was trained {verb} {current!r}")


def _start_unet_from_bundle(config, args: argparse.Namespace) -> None:
    from ..training.checkpoints import LAST
    from ..training.diffusion import STAGE
    from ..training.initialise import adopt_bundle_unet

    last = args.run / STAGE / LAST
    if last.exists():
        raise InputError(f"--init-from starts a new UNet stage, but {last} exists (--resume continues it)")
    adopt_bundle_unet(config, args.init_from)


def run_export(args: argparse.Namespace) -> int:
    from ..training.export import export_bundle

    folder = export_bundle(
        args.run,
        args.output,
        name=args.name,
        version=args.version,
        description=args.description,
        licence=args.licence,
        model_card=args.model_card,
        extra_files=args.extra,
        metadata_json=args.metadata_json,
        use_ema=not args.no_ema,
        guidance=args.guidance,
        eta=args.eta,
        steps=args.steps,
        candidates=args.candidates,
    )
    print(f"wrote bundle {folder}")
    return 0


def run_attach_guide(args: argparse.Namespace) -> int:
    from ..training.export import attach_guide

    folder = attach_guide(
        args.bundle,
        args.guide_run,
        args.output,
        weight=args.autoguidance,
        version=args.version,
        alone_from=args.guide_alone_from,
    )
    print(f"wrote bundle {folder}")
    return 0
