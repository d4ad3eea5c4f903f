"""Start a training stage from a bundle's weights: fine-tuning on new data, or more training of a shipped model.

A bundle's networks only make sense with the architecture and preprocessing they were trained with, so a stage
initialised from a bundle takes both from it; the data, the recipe and the time budget stay the run's own. The
UNet also keeps the bundle's latent scale factor, because its weights expect latents scaled that way. What the
stage started from (bundle name, version, weight sha256) is recorded in the run's configuration and so in any
bundle exported from it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..bundle import (
    BundleMetadata,
    IntensitySpec,
    first_mismatch,
    load_state_dict_file,
    read_metadata,
    sha256_of,
    verify_bundle,
)
from ..errors import InputError
from ..latent_codec import latent_channels, uses_codebook
from ..networks import decoder_args
from ..registry import resolve_bundle
from .config import AutoencoderConfig, TrainConfig, as_json, set_conditioning
from .logs import log_line


def _provenance(folder: Path, metadata: BundleMetadata, role: str) -> dict[str, Any]:
    """Where a stage started, and how much training its weights already had (the export adds the run's)."""
    steps_key = "unet_steps" if role == "diffusion" else "autoencoder_steps"
    return {
        "bundle": metadata.name,
        "version": metadata.version,
        "path": str(folder.resolve()),
        "sha256": metadata.weights[role].sha256,
        "latent_scale_factor": metadata.latent_scale_factor,
        "steps": int(metadata.training.get(steps_key, 0)),
        "seconds": float(metadata.training.get("training_seconds", {}).get(role, 0.0)),
    }


def _check_trainable_intensity(metadata: BundleMetadata) -> None:
    """Training maps two percentiles of each scan to [-1, 1]: a bundle whose networks saw another output range
    would be fine-tuned on inputs unlike its own."""
    spec = metadata.intensity
    if (spec.out_min, spec.out_max) != (IntensitySpec.out_min, IntensitySpec.out_max):
        raise InputError(
            f"bundle {metadata.name!r} normalises intensities differently from the training code "
            f"({metadata.intensity}); it cannot be fine-tuned here"
        )


def _bundle_percentiles(metadata: BundleMetadata) -> tuple[float, float]:
    return (metadata.intensity.lower_percentile, metadata.intensity.upper_percentile)


def _architecture(spec: dict[str, Any]) -> Any:
    """A network spec's class and arguments (a VQ-VAE's weights fit with or without its codebook in use)."""
    return as_json({"class": spec["class"], "args": spec["args"]})


def adopt_bundle_autoencoder(config: TrainConfig, bundle: str) -> None:
    """Make a new run's autoencoder stage start from `bundle` (name or folder): its architecture and preprocessing."""
    folder = resolve_bundle(bundle)
    metadata = verify_bundle(folder)
    _check_trainable_intensity(metadata)
    canvas = metadata.canvas
    config.autoencoder.network = str(metadata.autoencoder["class"])
    config.autoencoder.args = dict(metadata.autoencoder["args"])
    config.data.canvas = tuple(canvas.shape)
    config.data.spacing_mm = tuple(canvas.spacing_mm)
    config.data.padding_value = canvas.padding_value
    config.data.ap_policy = canvas.ap_policy
    config.data.context_fraction = canvas.context_fraction
    config.data.slices = metadata.default_slices
    config.data.flatten_sigma_mm = metadata.intensity.flatten_sigma_mm
    # The percentiles set the scale its networks know; the clip stays the run's, so a model trained with the
    # reference's cap can learn the headroom above it.
    config.data.intensity_percentiles = _bundle_percentiles(metadata)
    # A run may drop the clip or the codebook its bundle used, never bring one back: the bundle's networks
    # were trained past it (its codebook no longer matches its encoder; its decoder draws above the cap).
    config.data.intensity_clip = config.data.intensity_clip and metadata.intensity.clip
    if config.autoencoder.network == "VQVAE":
        config.autoencoder.codebook = config.autoencoder.codebook and uses_codebook(metadata.autoencoder)
    # Its decoder's widths too, unless the run gives its decoder others (train-autoencoder --decoder-channels).
    bundle_decoder = metadata.autoencoder.get("decoder")
    config.autoencoder.decoder = config.autoencoder.decoder or (
        dict(bundle_decoder) if bundle_decoder else None
    )
    # Its residual latent channels, which its UNet works on (`residual_latent`).
    bundle_residual = metadata.autoencoder.get("residual")
    config.autoencoder.residual = dict(bundle_residual) if bundle_residual else None
    config.autoencoder.init_from = _provenance(folder, metadata, "autoencoder")


def adopt_bundle_unet(config: TrainConfig, bundle: str) -> None:
    """Make a run's UNet stage start from `bundle`: its architecture, noise schedule, conditioning and scale.

    The run's autoencoder must have the bundle's architecture (the UNet works on its latents); it may have been
    fine-tuned, typically after `train-autoencoder --init-from` the same bundle, to other intensities or without
    its codebook: the UNet then learns the difference from where the bundle left it."""
    folder = resolve_bundle(bundle)
    metadata = verify_bundle(folder)
    if not metadata.latent_quantized and uses_codebook(metadata.autoencoder):
        raise InputError(
            f"bundle {metadata.name!r} has a UNet trained on unquantised latents (an imported model); "
            "only bundles trained by fovcompletion can start a UNet stage"
        )
    if _architecture(metadata.autoencoder) != _architecture(config.autoencoder.spec()):
        raise InputError(
            f"the run's autoencoder is not the architecture of bundle {metadata.name!r}, whose UNet works on that "
            "autoencoder's latents: start the run with train-autoencoder --init-from the same bundle"
        )
    bundle_residual = metadata.autoencoder.get("residual")
    if bundle_residual and bundle_residual != config.autoencoder.residual:
        raise InputError(
            f"bundle {metadata.name!r} has residual latent channels the run's autoencoder has not: start the run "
            "with train-autoencoder --init-from the same bundle"
        )
    if uses_codebook(config.autoencoder.spec()) and not uses_codebook(metadata.autoencoder):
        raise InputError(
            f"bundle {metadata.name!r} uses its VQ-VAE without a codebook and the run with one: start the run "
            "with train-autoencoder --init-from the same bundle"
        )
    _check_trainable_intensity(metadata)
    run_percentiles = tuple(map(float, config.data.intensity_percentiles))
    clip_returns = config.data.intensity_clip and not metadata.intensity.clip
    if run_percentiles != _bundle_percentiles(metadata) or clip_returns:
        raise InputError(
            f"bundle {metadata.name!r} normalises intensities differently from the run (percentiles "
            f"{_bundle_percentiles(metadata)}, clip {metadata.intensity.clip}; the run's {run_percentiles}, clip "
            f"{config.data.intensity_clip})"
        )
    run_grid = (tuple(config.data.spacing_mm), float(config.data.padding_value))
    bundle_grid = (tuple(metadata.canvas.spacing_mm), float(metadata.canvas.padding_value))
    if run_grid != bundle_grid:
        raise InputError(
            f"the run prepares scans at {run_grid[0]} mm padded with {run_grid[1]:g}, bundle "
            f"{metadata.name!r} at {bundle_grid[0]} mm padded with {bundle_grid[1]:g}"
        )
    started = (config.autoencoder.init_from or {}).get("sha256")
    if started != metadata.weights["autoencoder"].sha256:  # legitimate (a new encoder), rarely meant
        log_line(
            f"note: the run's autoencoder did not start from bundle {metadata.name!r}'s, whose latents its UNet "
            "learned; the UNet starts from weights made for other latents (train-autoencoder --init-from the "
            "same bundle keeps them)"
        )
    config.diffusion.args = dict(metadata.diffusion["args"])
    config.diffusion.scheduler = asdict(metadata.scheduler)
    set_conditioning(config, metadata.conditioning)  # sized to the run's latent: residual channels widen it
    config.data.flatten_sigma_mm = metadata.intensity.flatten_sigma_mm  # what its inputs looked like
    config.diffusion.init_from = _provenance(folder, metadata, "diffusion")


def initial_weights(init_from: dict[str, Any], role: str) -> dict[str, torch.Tensor]:
    """The recorded bundle's weights for `role`, refused unless the file still has the sha256 the run recorded
    (which `verify_bundle` checked when the run was configured): one hash, of the one file loaded."""
    folder = Path(init_from["path"])
    path = folder / read_metadata(folder).weights[role].file
    actual = sha256_of(path) if path.is_file() else "missing"
    if actual != init_from["sha256"]:
        raise InputError(
            f"bundle {folder} changed since the run was configured ({role} weights sha256 {actual[:12]}..., "
            f"recorded {init_from['sha256'][:12]}...)"
        )
    return load_state_dict_file(path)


def starting_unet_weights(
    unet: torch.nn.Module, init_from: dict[str, Any], conditioning: str
) -> dict[str, torch.Tensor]:
    """The recorded bundle's UNet weights for a run's UNet; widened (`residual_latent.widen_unet_state`) when the
    run's latent has residual channels the bundle's does not."""
    weights = initial_weights(init_from, "diffusion")
    bundle_latent = latent_channels(read_metadata(Path(init_from["path"])).autoencoder)
    if bundle_latent == int(unet.out_channels):
        return weights
    from ..residual_latent import widen_unet_state

    return widen_unet_state(unet, weights, bundle_latent, conditioning)


def own_decoder(cfg: AutoencoderConfig) -> bool:
    """Whether a run started from a bundle gives its decoder other widths than the bundle's (--decoder-channels,
    --decoder-res-layers): only then may the decoder start fresh."""
    bundle = read_metadata(Path(cfg.init_from["path"])).autoencoder
    run = {key: value for key, value in cfg.spec().items() if key != "residual"}
    if bundle.get("residual"):  # the bundle's own residual channels, which the run's decoder also takes
        run["residual"] = bundle["residual"]
    return as_json(decoder_args(run)) != as_json(decoder_args(bundle))


def load_starting_autoencoder(
    model: torch.nn.Module, state: dict[str, torch.Tensor], fresh_decoder: bool = False
) -> bool:
    """Load a bundle's autoencoder weights into a run's model; with `fresh_decoder` (a decoder of other widths
    than the bundle's, `own_decoder`) the decoder keeps its fresh weights. Everything loaded must fit exactly: a
    bundle whose decoder does not fit its own widths is broken, not a reason to start one afresh.
    Returns whether the decoder was loaded too."""
    try:
        if hasattr(model.encoder, "residual") and not any(key.startswith("encoder.base.") for key in state):
            from ..residual_latent import widen_autoencoder_state

            state = widen_autoencoder_state(model, state)  # the bundle's latent, widened by residual channels
        if fresh_decoder:
            own = model.state_dict()
            fresh = {key: value for key, value in own.items() if key.startswith("decoder.")}
            state = {**{k: v for k, v in state.items() if not k.startswith("decoder.")}, **fresh}
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise InputError(
            f"the bundle's autoencoder does not fit the run's: {first_mismatch(error)}"
        ) from None
    return not fresh_decoder
