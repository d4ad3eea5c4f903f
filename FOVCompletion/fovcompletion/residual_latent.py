"""Residual latent channels: a second encoder adds channels of detail to a trained VQ-VAE's latent, whose own
channels stay exactly what they were.

The bundled model's 4-channel /4 latent is what caps its autoencoder (docs/training.md: no decoder, loss or
longer training moved its ceiling past tissue SSIM 0.76 against the 2 mm grid's 0.87), and a new latent would
throw away the UNet that 44 000 iterations taught. Widening keeps both: the base encoder is frozen, a residual
encoder (started from the base encoder's weights) adds R channels, the decoder takes 4 + R (the new inputs start
at zero weight, so the widened autoencoder starts as the one it widens), and the UNet, widened the same way
(`widen_unet_state`), keeps what it knows of the first channels while it learns the new ones.

In a bundle: `"residual": {"latent_channels": R}` in the autoencoder entry (a codebook-free VQ-VAE only),
optionally with the residual encoder's own widths (`latent_codec.residual_channels`,
`networks.residual_encoder_args`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .errors import BundleError


class ConcatenatedEncoder(torch.nn.Module):
    """The base encoder's channels, then the residual encoder's: the latent of a widened autoencoder."""

    def __init__(self, base: torch.nn.Module, residual: torch.nn.Module) -> None:
        super().__init__()
        self.base = base
        self.residual = residual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.base(images), self.residual(images)], dim=1)


def attach_residual_encoder(vqvae: torch.nn.Module, residual_encoder: torch.nn.Module) -> None:
    """Make `vqvae.encoder` the concatenation of its own encoder and `residual_encoder` (its decoder must
    already take both, `networks.build_from_spec` builds it so)."""
    vqvae.encoder = ConcatenatedEncoder(vqvae.encoder, residual_encoder)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Freeze everything but the residual encoder and the decoder: the base channels, which the UNet was
    trained on, stay exactly the same."""
    trained = []
    for name, parameter in model.named_parameters():
        train = name.startswith(("encoder.residual.", "decoder."))
        parameter.requires_grad_(train)
        if train:
            trained.append(parameter)
    return trained


def hold_base_frozen(model: torch.nn.Module) -> None:
    """Keep the frozen base encoder in inference mode while the rest trains."""
    model.encoder.base.eval()


def _widened(own: torch.Tensor, old: torch.Tensor, sources: dict[int, int], axis: int) -> torch.Tensor:
    """`own`'s shape, holding `old` slices moved along `axis` as `sources` says (new index -> old index) and zeros
    elsewhere."""
    widened = torch.zeros_like(own)
    for new, source in sources.items():
        widened.select(axis, new).copy_(old.select(axis, source))
    return widened


def widen_autoencoder_state(
    model: torch.nn.Module, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A base VQ-VAE's weights laid into a widened model: the base encoder as it was, the residual encoder from
    the base encoder's weights wherever the shapes fit (its last convolution, of R outputs, stays fresh), the
    decoder as it was with zero weight on the new latent inputs. The widened model then decodes exactly as the
    base one did."""
    own = model.state_dict()
    result = dict(own)
    for key, value in state.items():
        if key.startswith("encoder."):
            result["encoder.base." + key[len("encoder.") :]] = value
            residual = "encoder.residual." + key[len("encoder.") :]
            if residual in own and own[residual].shape == value.shape:
                result[residual] = value.clone()
        elif key.startswith("decoder.") and key in own and own[key].shape != value.shape:
            result[key] = _widened(own[key], value, {i: i for i in range(value.shape[1])}, axis=1)
        else:
            result[key] = value
    return result


def _last_encoder_convolution(encoder: torch.nn.Module) -> torch.nn.Conv2d:
    return [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]


def _first_decoder_convolution(decoder: torch.nn.Module) -> torch.nn.Conv2d:
    return next(m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d))


@torch.no_grad()
def residual_spread_factors(model: torch.nn.Module, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """Per residual channel, the factor that brings its spread (standard deviation over `batches` of images) to
    the base channels' mean spread, so that the bundle's one latent scale factor fits every channel."""
    base_channels = _base_channels(model)
    latents = torch.cat([model.encoder(images) for images in batches])
    spread = latents.transpose(0, 1).flatten(1).std(dim=1)
    return spread[:base_channels].mean() / spread[base_channels:].clamp(min=1e-6)


@torch.no_grad()
def apply_residual_factors(model: torch.nn.Module, factors: torch.Tensor) -> None:
    """Scale the residual channels by `factors` (the residual encoder's last convolution) and the decoder's
    matching inputs inversely: the decoded images do not change."""
    base_channels = _base_channels(model)
    factors = factors.to(next(model.parameters()).device)
    last = _last_encoder_convolution(model.encoder.residual)
    last.weight.mul_(factors[:, None, None, None])
    if last.bias is not None:
        last.bias.mul_(factors)
    _first_decoder_convolution(model.decoder).weight[:, base_channels:].div_(factors[None, :, None, None])


def _base_channels(model: torch.nn.Module) -> int:
    return (
        _first_decoder_convolution(model.decoder).in_channels
        - _last_encoder_convolution(model.encoder.residual).out_channels
    )


def unet_channel_sources(old_latent: int, new_latent: int, conditioning: str) -> dict[int, int]:
    """Where each of a widened UNet's input channels comes from in the narrower UNet's input (new -> old): the
    noisy latent, then under `masked_latent` conditioning the known latent and the mask
    (`conditioning.conditioned_input`); new latent channels have no source."""
    sources = {i: i for i in range(old_latent)}
    if conditioning == "masked_latent":
        sources.update({new_latent + i: old_latent + i for i in range(old_latent)})
        sources[2 * new_latent] = 2 * old_latent
    return sources


def widen_unet_state(
    model: torch.nn.Module, state: dict[str, torch.Tensor], old_latent: int, conditioning: str
) -> dict[str, torch.Tensor]:
    """A UNet trained on `old_latent` channels laid into one for a widened latent: its input convolution reads
    each input where it used to be, and the new inputs at zero weight; its output convolution predicts the old
    channels as before and zero for the new ones. Every other weight is the same."""
    own = model.state_dict()
    new_latent = int(model.out_channels)
    inputs = unet_channel_sources(old_latent, new_latent, conditioning)
    outputs = {i: i for i in range(old_latent)}
    result = {}
    for key, value in state.items():
        target = own.get(key)
        if target is None or target.shape == value.shape:
            result[key] = value
        elif target.ndim == 4 and target.shape[0] == value.shape[0]:  # the input convolution
            result[key] = _widened(target, value, inputs, axis=1)
        elif target.shape[0] == new_latent and value.shape[0] == old_latent:  # the output convolution
            result[key] = _widened(target, value, outputs, axis=0)
        else:
            raise BundleError(f"cannot widen the UNet's {key}: {tuple(value.shape)} -> {tuple(target.shape)}")
    return result
