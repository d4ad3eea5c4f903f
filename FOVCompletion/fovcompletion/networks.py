"""Build the MONAI generative networks from the architecture arguments stored in a bundle."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import BundleError, first_line

if TYPE_CHECKING:
    import torch

SUPPORTED_CLASSES = ("VQVAE", "AutoencoderKL", "DiffusionModelUNet")
# An autoencoder's arguments that its decoder may set on its own ("decoder" in its spec): widths and depth. The
# rest (latent channels, strides, codebook) define the latent, which encoder and decoder must share.
DECODER_ARGS = ("channels", "num_res_channels", "num_res_layers", "num_res_blocks", "attention_levels")


def reference_autoencoder_args() -> dict[str, Any]:
    """VQ-VAE of the reference implementation (disc-labeling-playground, monai-generative 0.2.2)."""
    return {
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [128, 256, 512],
        "num_res_channels": 512,
        "num_res_layers": 2,
        "downsample_parameters": [[2, 4, 1, 1]] * 3,
        "upsample_parameters": [[2, 4, 1, 1, 0]] * 3,
        "num_embeddings": 512,
        "embedding_dim": 16,
    }


def reference_unet_args() -> dict[str, Any]:
    """Latent diffusion UNet of the reference implementation (about 254 M parameters). Its attention blocks have
    no output layer: monai-generative 0.2, which trained it, built one and never applied it (MONAI issue 7991)."""
    return {
        "spatial_dims": 2,
        "in_channels": 16,
        "out_channels": 16,
        "channels": [128, 256, 512, 1024],
        "attention_levels": [False, True, True, True],
        "num_head_channels": [0, 32, 32, 32],
        "num_res_blocks": 2,
        "include_fc": False,
    }


def autoencoder_kl_args(channels: list[int], latent_channels: int, norm_num_groups: int) -> dict[str, Any]:
    """An AutoencoderKL with one res block per level and no attention (each level past the first halves the
    latent grid): the family of the kl2 preset's autoencoder and of the tests' tiny one."""
    return {
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "channels": list(channels),
        "latent_channels": latent_channels,
        "num_res_blocks": [1] * len(channels),
        "attention_levels": [False] * len(channels),
        "norm_num_groups": norm_num_groups,
        "with_encoder_nonlocal_attn": False,
        "with_decoder_nonlocal_attn": False,
    }


def _tuples(value: Any) -> Any:
    """JSON stores tuples as lists; MONAI's VQ-VAE checks for tuples of tuples."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def build_network(class_name: str, args: dict[str, Any]) -> torch.nn.Module:
    """Instantiate a MONAI core network by class name; a bad argument set is a bundle error."""
    from monai.networks import nets

    if class_name not in SUPPORTED_CLASSES:
        raise BundleError(f"unsupported network class {class_name!r} (expected one of {SUPPORTED_CLASSES})")
    kwargs = {key: _tuples(value) for key, value in args.items()}
    try:
        return getattr(nets, class_name)(**kwargs)
    # MONAI and torch refuse bad arguments in different ways
    except (TypeError, ValueError, RuntimeError, AssertionError) as error:
        detail = first_line(error)
        raise BundleError(f"cannot build {class_name} from the bundle's arguments: {detail}") from None


def build_from_spec(spec: dict[str, Any]) -> torch.nn.Module:
    """Instantiate a network named the way bundles and run configs name it: {"class": ..., "args": ...}, for a
    VQ-VAE optionally "codebook": false (`without_codebook`), and for an autoencoder optionally "decoder": the
    widths of a decoder of its own (`decoder_args`), and optionally "residual": an encoder that adds latent
    channels (`residual_latent`)."""
    from .latent_codec import codebook_free, residual_channels

    module = build_network(spec["class"], spec["args"])
    if codebook_free(spec):
        without_codebook(module)
    residual = residual_channels(spec)
    if spec.get("decoder") or residual:
        module.decoder = build_network(spec["class"], decoder_args(spec)).decoder
    if residual:
        from .residual_latent import attach_residual_encoder

        attach_residual_encoder(module, build_network(spec["class"], residual_encoder_args(spec)).encoder)
    return module


def decoder_args(spec: dict[str, Any]) -> dict[str, Any]:
    """The arguments of an autoencoder whose decoder is the spec's: its own arguments with the decoder's widths
    (and the residual encoder's channels as inputs). Anything that would change the latent is refused, since the
    encoder's latents must fit it."""
    overrides = spec.get("decoder") or {}
    if not isinstance(overrides, dict):
        raise BundleError(f"an autoencoder's 'decoder' must be an object of arguments, got {overrides!r}")
    if spec.get("class") not in ("VQVAE", "AutoencoderKL"):
        raise BundleError(f"only an autoencoder may have a decoder of its own, not {spec.get('class')!r}")
    foreign = sorted(set(overrides) - set(DECODER_ARGS))
    if foreign:
        raise BundleError(
            f"an autoencoder's decoder may set only {', '.join(DECODER_ARGS)}; it sets {', '.join(foreign)}"
        )
    from .latent_codec import latent_channels, residual_channels

    args = {**spec["args"], **overrides}
    if residual_channels(spec):  # it decodes the residual encoder's channels too: the whole latent
        args["embedding_dim"] = latent_channels(spec)
    return args


def residual_encoder_args(spec: dict[str, Any]) -> dict[str, Any]:
    """Arguments of a VQ-VAE whose encoder is a spec's residual one: the autoencoder's own, with the residual
    entry's widths and its latent channels as the embedding size."""
    residual = dict(spec["residual"])
    count = residual.pop("latent_channels")
    return {**spec["args"], **residual, "embedding_dim": count}


def without_codebook(vqvae: torch.nn.Module) -> None:
    """Use a VQ-VAE with continuous latents: its quantiser becomes the identity (no loss), so training, encoding
    and decoding all pass the encoder's output to the decoder as it is. A codebook of 256 codes of 4 costs the
    v0.5.0 VQ-VAE a fifth of its round-trip error, and snapping a sampled latent to it throws detail away;
    keeping the architecture lets a codebook-free model start from a quantised one's weights."""

    def identity(encodings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return encodings, encodings.new_zeros(())

    vqvae.quantize = identity


def unet_size_multiple(unet_args: dict[str, Any]) -> int:
    """Latent sizes must be divisible by this for the UNet's down/up path to line up."""
    return 2 ** (len(unet_args["channels"]) - 1)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
