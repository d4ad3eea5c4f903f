"""Pixels <-> latents for both autoencoder families a bundle may hold, so that the engine, the training and the
benchmark go through one definition.

- `VQVAE` (the reference's and v0.5.0's): a latent is the encoder output, quantised or not as the bundle says;
  decoding snaps to the codebook. A VQ-VAE built with `"codebook": false` (v0.6.0, the v1 preset;
  `networks.without_codebook`) has no quantiser at all: the encoder's output is the latent, decoded as it is.
- `AutoencoderKL` (the kl2 preset): a continuous latent, the encoder's mean (never a random draw, so a known
  region encodes the same way at every run); decoding is the decoder alone, so no codebook caps what a cell can
  hold (docs/training.md has the measurements).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import BundleError

if TYPE_CHECKING:
    import torch

AUTOENCODER_CLASSES = ("VQVAE", "AutoencoderKL")


def _class_of(autoencoder: dict[str, Any]) -> str:
    name = autoencoder.get("class")
    if name not in AUTOENCODER_CLASSES:
        raise BundleError(f"unsupported autoencoder class {name!r} (expected one of {AUTOENCODER_CLASSES})")
    return str(name)


def uses_codebook(autoencoder: dict[str, Any]) -> bool:
    """Whether a bundle's autoencoder entry snaps latents to a codebook: a VQ-VAE unless it says
    `"codebook": false`; an AutoencoderKL never has one (and may not say false: there is nothing to switch off)."""
    name = _class_of(autoencoder)
    codebook = autoencoder.get("codebook", True)
    if not isinstance(codebook, bool) or (not codebook and name != "VQVAE"):
        raise BundleError(f"'codebook' must be true or false, and false only for a VQVAE (got {codebook!r})")
    return codebook and name == "VQVAE"


def codebook_free(spec: dict[str, Any]) -> bool:
    """Whether a network spec is a VQ-VAE used without its codebook; a malformed "codebook" is refused. Specs that
    do not name one (UNets, autoencoders with their default) are not."""
    if spec.get("codebook", True) is True:
        return False
    uses_codebook(spec)  # refuses anything but false on a VQVAE
    return True


# What a residual encoder may set ("residual" in an autoencoder's spec, `residual_latent`): the channels it adds,
# and its own widths and depth.
RESIDUAL_ARGS = ("latent_channels", "channels", "num_res_channels", "num_res_layers")


def residual_channels(autoencoder: dict[str, Any]) -> int:
    """Latent channels a spec's residual encoder adds to its autoencoder's (0 without one); only a codebook-free
    VQ-VAE may have one, and a malformed entry is refused."""
    residual = autoencoder.get("residual")
    if residual is None:
        return 0
    if not isinstance(residual, dict) or not isinstance(residual.get("latent_channels"), int):
        raise BundleError(
            f"an autoencoder's 'residual' must be an object with 'latent_channels', got {residual!r}"
        )
    foreign = sorted(set(residual) - set(RESIDUAL_ARGS))
    if foreign:
        raise BundleError(
            f"an autoencoder's residual may set only {', '.join(RESIDUAL_ARGS)}; it sets {', '.join(foreign)}"
        )
    if _class_of(autoencoder) != "VQVAE" or uses_codebook(autoencoder):
        raise BundleError('residual latent channels need a VQ-VAE without its codebook ("codebook": false)')
    if residual["latent_channels"] < 1:
        raise BundleError(f"residual latent_channels must be at least 1, got {residual['latent_channels']}")
    return int(residual["latent_channels"])


def latent_channels(autoencoder: dict[str, Any]) -> int:
    """Channels of a latent map, from a bundle's `autoencoder` entry ({"class": ..., "args": ...}): the
    encoder's, plus a residual encoder's."""
    args = autoencoder["args"]
    own = int(args["embedding_dim"] if _class_of(autoencoder) == "VQVAE" else args["latent_channels"])
    return own + residual_channels(autoencoder)


def latent_downsample_factor(autoencoder: dict[str, Any]) -> int:
    """Pixels per latent cell along each axis: the VQ-VAE's strides multiplied, or one /2 per extra level of an
    AutoencoderKL."""
    args = autoencoder["args"]
    if _class_of(autoencoder) == "AutoencoderKL":
        return 2 ** (len(args["channels"]) - 1)
    factor = 1
    for stride, *_ in args["downsample_parameters"]:
        factor *= int(stride)
    return factor


def is_continuous(module: torch.nn.Module) -> bool:
    from monai.networks.nets import AutoencoderKL

    return isinstance(module, AutoencoderKL)


def encode(module: torch.nn.Module, pixels: torch.Tensor, quantized: bool = True) -> torch.Tensor:
    """Latents of (batch, 1, rows, cols) pixels: a KL encoder's mean, or a VQ encoder's output (quantised when
    the bundle's UNet was trained on quantised latents)."""
    if is_continuous(module):
        return module.encode(pixels)[0]
    return module.encode_stage_2_inputs(pixels) if quantized else module.encode(pixels)


def decode(module: torch.nn.Module, latent: torch.Tensor) -> torch.Tensor:
    """Pixels of latents (unscaled): the KL decoder, or the VQ-VAE's codebook snap and decoder."""
    if is_continuous(module):
        return module.decode(latent)
    return module.decode_stage_2_outputs(latent)
