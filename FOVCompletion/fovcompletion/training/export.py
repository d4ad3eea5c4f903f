"""Stage 3: a verified bundle from a run: the autoencoder and (EMA) UNet weights, the latent scale factor the UNet
was trained with, the exact training configuration, the scans used (names and sources, never images),
the held-out subjects and the data licences."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..arguments import is_finite_number, is_whole_number
from ..bundle import save_bundle, speed_problem
from ..errors import InputError, first_line
from ..networks import build_from_spec, build_network, count_parameters
from ..schedule import DEFAULT_CANDIDATES, DEFAULT_STEPS
from .augment_labels import plain_weights
from .checkpoints import LAST, load_checkpoint, restore
from .config import TrainConfig, config_from_dict
from .diffusion import STAGE as DIFFUSION_STAGE
from .runner import DATA_FILE

# The checkpoint's networks are built from its own configuration: a part that does not fit is a damaged or
# hand-assembled checkpoint.
EXPORT_HINT = "its own recorded settings: a damaged or mixed-up checkpoint"


def default_description(config: TrainConfig) -> str:
    """The bundle's one-line description, with the window the run actually trained (presets differ)."""
    rows, _ = config.data.canvas
    row_mm, _ = config.data.spacing_mm
    return (
        f"Window latent diffusion model ({row_mm:g} mm pixels, {rows * row_mm:g} mm superior-inferior windows, "
        "progressive outpainting) for sagittal T2w spine MRI, trained on regional cervical and lumbar scans. "
        "Research use only, not for diagnosis."
    )


def data_licences(scans: list[dict[str, str]]) -> list[str]:
    return sorted({scan["licence"] for scan in scans if scan.get("licence")})


def _earlier_training(config_dict: dict[str, Any], role: str) -> tuple[int, float]:
    """Steps and seconds a stage's starting bundle (`--init-from`) had already trained its weights for."""
    origin = config_dict.get(role, {}).get("init_from") or {}
    return int(origin.get("steps", 0)), float(origin.get("seconds", 0.0))


def training_record(run_dir: Path, state: dict[str, Any], config_dict: dict[str, Any]) -> dict[str, Any]:
    """What the bundle says about its training: config, scans, held-out subjects, steps and time.

    Steps and seconds count all the training the weights had, a starting bundle's included; the config's
    `init_from` says how much of it was that bundle's."""
    manifest_path = run_dir / DATA_FILE
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    scans = manifest.get("training", [])
    held_out = manifest.get("held_out", [])
    autoencoder_before = _earlier_training(config_dict, "autoencoder")
    unet_before = _earlier_training(config_dict, "diffusion")
    return {
        "config": config_dict,
        "scans": scans,
        "held_out": [scan["subject"] for scan in held_out],
        "held_out_scans": held_out,
        "phantoms": {
            "autoencoder": manifest.get("phantoms", 0),
            "diffusion": manifest.get("phantoms_diffusion", manifest.get("phantoms", 0)),
            "generator": "fovcompletion.phantom.generate_phantom(seed=1000 + i, spacing_mm=2)",
        },
        "templates": manifest.get("templates", []),
        "whole_spine": {
            "autoencoder": manifest.get("whole_spine", 0),
            "diffusion": manifest.get("whole_spine_diffusion", manifest.get("whole_spine", 0)),
            "recipe": "fovcompletion.training.whole_spine: composites (real cervical + bent template + real "
            "lumbar) and bent templates",
        },
        "data_licences": data_licences(scans + manifest.get("templates", [])),
        "autoencoder_config": state.get("autoencoder_config", {}),
        "autoencoder_steps": autoencoder_before[0] + int(state.get("autoencoder_steps", 0)),
        "unet_steps": unet_before[0] + int(state.get("step", 0)),
        "unet_epochs": int(state.get("epoch", -1)) + 1,
        "training_seconds": {
            "autoencoder": round(autoencoder_before[1] + float(state.get("autoencoder_elapsed_s", 0.0)), 1),
            "diffusion": round(unet_before[1] + float(state.get("elapsed_s", 0.0)), 1),
        },
    }


def read_measurements(path: Path) -> dict:
    """The `quality` and `speed` figures to record (`--metadata-json`), read before anything is written."""
    try:
        measured = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read --metadata-json {path}: {first_line(error)}") from None
    unknown = sorted(set(measured) - {"quality", "speed"}) if isinstance(measured, dict) else []
    if not isinstance(measured, dict) or unknown or not isinstance(measured.get("quality", {}), dict):
        raise InputError(
            f"--metadata-json {path} must hold a JSON object with 'quality' and/or 'speed' (objects)"
            + (f", not {', '.join(map(repr, unknown))}" if unknown else "")
        )
    problem = speed_problem(measured.get("speed", {}))
    if problem:
        raise InputError(f"--metadata-json {path}: {problem}")
    return measured


def trained_unet(run_dir: Path, use_ema: bool, required: tuple[str, ...]) -> tuple:
    """The run's last UNet checkpoint: (path, state, config, UNet with its EMA weights where asked and kept, which
    weights those are)."""
    path = run_dir / DIFFUSION_STAGE / LAST
    if not path.is_file():
        raise InputError(f"no trained UNet in {run_dir} ({path} missing): run train-diffusion first")
    state = load_checkpoint(path, restore_rng=False, stage=DIFFUSION_STAGE, required=required)
    config = config_from_dict(state["config"], path)
    unet = build_network("DiffusionModelUNet", config.diffusion.args)
    exported = "ema" if use_ema and state.get("ema") is not None else "model"
    weights = state[exported]
    # a UNet trained with augmentation labels is exported as the plain one it is at label zero
    if isinstance(weights, dict):
        weights = plain_weights(weights)
    restore(unet, {exported: weights}, exported, path, "UNet", EXPORT_HINT)
    return path, state, config, unet, exported


def export_bundle(
    run_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    name: str | None = None,
    version: str = "0.1.0",
    description: str | None = None,
    licence: str | None = None,
    model_card: str | os.PathLike | None = None,
    extra_files: list[Path] | None = None,
    metadata_json: str | os.PathLike | None = None,
    use_ema: bool = True,
    guidance: float = 1.0,
    eta: float = 0.0,
    steps: int = DEFAULT_STEPS,
    candidates: int = DEFAULT_CANDIDATES,
) -> Path:
    """Write the bundle folder `output` (atomically) and verify it; returns its path. `guidance`, `eta`, `steps`
    and `candidates`: the sampler's defaults for this model (measure them with `fovcompletion benchmark
    --guidance ... --eta ... --steps ... --candidates ...`)."""
    run_dir = Path(run_dir)
    required = ("config", "autoencoder", "model", "scale_factor")
    path, state, config, unet, exported = trained_unet(run_dir, use_ema, required)
    autoencoder = build_from_spec(config.autoencoder.spec())
    restore(autoencoder, state, "autoencoder", path, "autoencoder", EXPORT_HINT)
    extras: dict[str, Path] = {}
    if model_card is not None:
        extras["MODEL_CARD.md"] = Path(model_card)
    for extra in extra_files or []:
        extras[Path(extra).name] = Path(extra)
    for target, source in extras.items():
        if not source.is_file():
            raise InputError(f"file to include in the bundle not found: {source} ({target})")
    measured = read_measurements(Path(metadata_json)) if metadata_json else {}
    training = training_record(run_dir, state, state["config"])
    training["ema_weights"] = exported == "ema"
    training["parameters"] = {
        "autoencoder": count_parameters(autoencoder),
        "diffusion": count_parameters(unet),
    }
    licences = training["data_licences"]
    metadata = replace(
        config.preprocessing_metadata(),  # architectures, schedule, canvas, intensities: as the run trained
        name=name or config.name,
        latent_scale_factor=float(state["scale_factor"]),
        version=version,
        description=description or default_description(config),
        licence=licence
        or (
            "Apache-2.0 (weights); research use only. Training data licences: "
            + ("; ".join(licences) if licences else "unspecified")
        ),
        guidance=float(guidance),
        eta=float(eta),
        steps=int(steps),
        candidates=int(candidates),
        training=training,
        quality=measured.get("quality", {}),
        speed=measured.get("speed", {}),
    )
    return save_bundle(output, metadata, autoencoder.eval(), unet.eval(), extra_files=extras)


def attach_guide(
    bundle_path: str | os.PathLike,
    guide_run: str | os.PathLike,
    output: str | os.PathLike,
    *,
    weight: float = 1.0,
    version: str | None = None,
    alone_from: int | None = None,
) -> Path:
    """Write a copy of a bundle with the UNet of `guide_run` as its autoguidance guide (`sampling`): a smaller,
    shorter-trained UNet on the bundle's own latents, whose run started from the bundle's autoencoder
    (`train-autoencoder --init-from BUNDLE --epochs 0`). The bundle's networks and files are kept as they are.
    `alone_from`: the sampler's default `guide_alone_from` (None: never)."""
    import torch

    from ..bundle import METADATA_FILE, SchedulerSpec, load_bundle

    if not (is_finite_number(weight) and weight >= 0):
        raise InputError(f"autoguidance must be a number >= 0 (got {weight})")
    if alone_from is not None and not (is_whole_number(alone_from) and alone_from >= 0):
        raise InputError(f"guide alone from must be a timestep >= 0 (got {alone_from})")
    bundle = load_bundle(bundle_path)
    _, state, config, guide, _ = trained_unet(Path(guide_run), True, ("config", "model", "scale_factor"))
    ours = bundle.autoencoder.state_dict()
    theirs = state.get("autoencoder") or {}
    if ours.keys() != theirs.keys() or not all(torch.equal(ours[k].cpu(), theirs[k].cpu()) for k in ours):
        raise InputError(
            f"{guide_run} was not trained on the latents of {bundle.name}: its autoencoder differs from the "
            "bundle's (start the run with train-autoencoder --init-from the bundle --epochs 0)"
        )
    if SchedulerSpec(**config.diffusion.scheduler) != bundle.metadata.scheduler:
        raise InputError(f"{guide_run} was trained with another noise schedule than {bundle.name}'s")
    if config.diffusion.conditioning != bundle.metadata.conditioning:
        raise InputError(f"{guide_run}'s UNet sees the known region differently from {bundle.name}'s")
    training = dict(bundle.metadata.training)
    training["guide"] = {
        "run": str(Path(guide_run).resolve()),
        "unet_steps": int(state.get("step", 0)),
        "unet_epochs": int(state.get("epoch", -1)) + 1,
        "training_seconds": round(float(state.get("elapsed_s", 0.0)), 1),
        "parameters": count_parameters(guide),
        "config": asdict(config.diffusion),
    }
    metadata = replace(
        bundle.metadata,
        version=version or bundle.metadata.version,
        training=training,
        guide={
            "class": "DiffusionModelUNet",
            "args": dict(config.diffusion.args),
            "latent_scale_factor": float(state["scale_factor"]),
            "weight": float(weight),
            **({} if alone_from is None else {"alone_from": int(alone_from)}),
        },
    )
    own = {weight_file.file for weight_file in bundle.metadata.weights.values()} | {METADATA_FILE}
    extras = {item.name: item for item in bundle.path.iterdir() if item.is_file() and item.name not in own}
    return save_bundle(
        output, metadata, bundle.autoencoder, bundle.unet, extra_files=extras, guide=guide.eval()
    )
