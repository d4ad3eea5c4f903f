"""Non-leaky augmentation for the UNet (Karras et al. 2022, "Elucidating the design space of diffusion-based
generative models", appendix on augmentation regularisation).

Nineteen training scans are few: augmentation shows the UNet other spines (rotated, zoomed, stretched,
re-contrasted), but an augmented spine is also what it learns to draw, so strong augmentation leaks into the
completions. Here the UNet is told each training latent's augmentation, the parameters drawn for it
(`AUGMENT_LABEL_NAMES`; all zero for a clean copy), through MONAI's class-embedding path: a linear map without a
bias, added to the time embedding. At inference the labels are zero, so the map adds nothing, and a bundle holds the
plain DiffusionModelUNet without it (`plain_weights`): the engine needs nothing new.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InputError
from ..networks import build_network

AUGMENT_LABEL_NAMES: tuple[str, ...] = (
    "rotation_rad",
    "log_zoom",
    "log_stretch",
    "log_gamma",
    "log_intensity_scale",
    "intensity_shift",
)
LABEL_MAP = "class_embedding."  # MONAI's name for what the map replaces
PREFIX = "unet."
# The map starts at zero, and at a fine-tune's rate (3e-5) a first version of it (11 labels, with a bias) had moved by
# 0.004 in 3000 iterations: labels then shifted the time embedding by 3 % of its norm and the UNet's output by 0.4 %,
# too little to keep the augmentation out of what it draws. The map alone learns at this multiple of the stage's rate.
LABEL_MAP_RATE = 30.0


def label_vector(record: dict[str, float] | None) -> torch.Tensor:
    """The UNet's label for one latent: what `window_transform` and `augment_intensity` recorded; zeros (no
    augmentation) for a clean copy or an unrecorded parameter."""
    record = record or {}
    return torch.tensor([float(record.get(name, 0.0)) for name in AUGMENT_LABEL_NAMES], dtype=torch.float32)


class AugmentLabelledUNet(torch.nn.Module):
    """A DiffusionModelUNet whose class embedding is a linear map of the augmentation label, zero at the start (it
    then computes exactly what the plain UNet of the same weights does). Called without labels, it is asked for
    what it learned from the clean copies."""

    def __init__(self, args: dict[str, Any]) -> None:
        super().__init__()
        unet = build_network("DiffusionModelUNet", args)
        width = unet.time_embed[-1].out_features
        unet.class_embedding = torch.nn.Linear(len(AUGMENT_LABEL_NAMES), width, bias=False)
        torch.nn.init.zeros_(unet.class_embedding.weight)
        unet.num_class_embeds = len(AUGMENT_LABEL_NAMES)  # MONAI's forward then adds class_embedding(labels)
        self.unet = unet
        self.out_channels = unet.out_channels

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        if labels is None:
            labels = x.new_zeros((x.shape[0], len(AUGMENT_LABEL_NAMES)))
        return self.unet(x, timesteps, class_labels=labels.to(x.dtype))


def build_unet(args: dict[str, Any], augment_labels: bool) -> torch.nn.Module:
    """The UNet a training run trains: plain, or told the augmentation of what it sees."""
    return AugmentLabelledUNet(args) if augment_labels else build_network("DiffusionModelUNet", args)


def parameter_groups(unet: torch.nn.Module) -> list[dict[str, Any]]:
    """The optimiser's groups: the label map at `LABEL_MAP_RATE` times the stage's rate (`rate_scale`), the rest at
    it; a plain UNet's parameters in one group."""
    if not isinstance(unet, AugmentLabelledUNet):
        return [{"params": list(unet.parameters())}]
    label_map = list(unet.unet.class_embedding.parameters())
    rest = [p for p in unet.parameters() if all(p is not q for q in label_map)]
    return [{"params": rest}, {"params": label_map, "rate_scale": LABEL_MAP_RATE}]


def plain_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """The DiffusionModelUNet inside a labelled UNet, or the UNet itself."""
    return unet.unet if isinstance(unet, AugmentLabelledUNet) else unet


def plain_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A labelled UNet's weights as the plain UNet's that computes what it does at label zero (where the map adds
    nothing): without the map and the prefix. A plain UNet's weights come back as they are."""
    extra = [
        key for key in state if key.startswith(PREFIX + LABEL_MAP) and key != PREFIX + LABEL_MAP + "weight"
    ]
    if extra:  # a map with a bias would add it at label zero too: leaving it out would change the UNet
        raise InputError(f"a label map this version does not make ({', '.join(extra)}): not exported")
    return {
        key[len(PREFIX) :] if key.startswith(PREFIX) else key: value
        for key, value in state.items()
        if not key.startswith(PREFIX + LABEL_MAP)
    }


def labelled_weights(plain: dict[str, torch.Tensor], unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A plain UNet's weights (a bundle's) for `unet`: as they are for a plain UNet; for a labelled one, under its
    prefix and with a zero label map, so that it starts as the plain UNet."""
    if not isinstance(unet, AugmentLabelledUNet):
        return plain
    weights = {PREFIX + key: value for key, value in plain.items()}
    weights[PREFIX + LABEL_MAP + "weight"] = torch.zeros_like(unet.unet.class_embedding.weight)
    return weights
