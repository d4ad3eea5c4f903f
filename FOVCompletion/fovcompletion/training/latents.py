"""Latents encoded once before UNet training: every training slice (clean and augmented copies) through the
trained autoencoder, padded so that windows can run past the scan's ends, with a per-cell inside-the-scan mask.

Encoding once makes UNet training cheap (no autoencoder in the loop), which is what lets it train on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..heap import release_freed_heap
from ..latent_codec import encode, latent_downsample_factor
from ..latent_scale import latent_scale_factor
from .augment import augment_intensity, cut_window, stretches, window_transform
from .augment_labels import label_vector
from .config import TrainConfig
from .data import Slab


@dataclass
class LatentMap:
    """One encoded slice: latent (C, h, w), inside-the-scan cells (h, w), the scan's region, and the label of the
    augmentation it was encoded with (`augment_labels.label_vector`; zeros for a clean copy)."""

    latent: torch.Tensor
    inside: torch.Tensor
    region: str
    augment_label: torch.Tensor = field(default_factory=lambda: label_vector(None))


def padded_shape(rows: int, cols: int, config: TrainConfig, factor: int) -> tuple[int, int]:
    """Room for windows that run past the scan's ends (S-I) and for scans narrower than the window (A-P); with a
    stretch, for the longest scan it draws, stretched and zoomed in (without one the shapes stay as they were, so a
    zoom beyond 1 + 2 x canvas / rows loses a long scan's ends; neither grows the columns for a rotation)."""
    height, width = config.data.canvas
    aug = config.augment
    longest = rows * max(aug.stretch) * max(aug.scale) if stretches(aug) else rows
    out_rows = int(np.ceil(longest)) + 2 * height
    out_cols = max(cols + width // 2, width)
    return (int(np.ceil(out_rows / factor) * factor), int(np.ceil(out_cols / factor) * factor))


def cell_mask(inside: np.ndarray, factor: int) -> np.ndarray:
    """A latent cell is inside the scan only if all of its pixels are."""
    h, w = inside.shape[0] // factor, inside.shape[1] // factor
    return inside[: h * factor, : w * factor].reshape(h, factor, w, factor).all(axis=(1, 3))


def place_slice(
    plane: np.ndarray,
    valid: np.ndarray,
    config: TrainConfig,
    factor: int,
    rng: np.random.Generator | None,
    record: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The slice centred on its padded canvas, with augmentation when `rng` is given; pixels that are not
    `valid` (a composite's unknown parts) become padding, outside the scan like its ends. `record` receives the
    augmentation drawn."""
    shape = padded_shape(*plane.shape, config, factor)
    aug = config.augment if rng is not None else None
    center = ((plane.shape[0] - 1) / 2, (plane.shape[1] - 1) / 2)
    matrix, offset = window_transform(rng, aug, center, shape, record)
    image, inside = cut_window(plane, valid, matrix, offset, shape, config.data.padding_value)
    if rng is not None:
        image = augment_intensity(
            rng, config.augment, image, inside, clip_high=config.data.intensity_clip, record=record
        )
    return image, inside


def encode_maps(
    autoencoder: torch.nn.Module,
    slabs: list[Slab],
    config: TrainConfig,
    copies: int,
    device: torch.device,
    seed: int,
) -> list[LatentMap]:
    """Latents (what inference feeds the UNet, before scaling: quantised for a VQ-VAE) of every slice, plus `copies`
    augmented versions of each."""
    factor = latent_downsample_factor(config.autoencoder.spec())
    rng = np.random.default_rng([seed, 4242])
    maps = []
    autoencoder.eval()
    with torch.no_grad():
        for slab in slabs:
            valid = slab.valid_mask()
            for index, plane in enumerate(slab.image):
                for copy in range(copies + 1):
                    record: dict[str, float] = {}
                    image, inside = place_slice(
                        plane, valid[index], config, factor, rng if copy else None, record
                    )
                    pixels = torch.from_numpy(image[None, None]).to(device)
                    latent = encode(autoencoder, pixels)[0].float().cpu()
                    cells = torch.from_numpy(cell_mask(inside, factor))
                    maps.append(LatentMap(latent, cells, slab.record.region, label_vector(record)))
                release_freed_heap()  # else the kept latents pin the freed feature maps (see `heap`)
    return maps


def scale_factor(
    autoencoder: torch.nn.Module, slabs: list[Slab], config: TrainConfig, device: torch.device
) -> float:
    """1/std of the unquantised latents of the clean training slices (cropped to whole latent cells)."""
    factor = latent_downsample_factor(config.autoencoder.spec())

    def batches():
        for slab in slabs:
            rows = slab.image.shape[1] // factor * factor
            cols = slab.image.shape[2] // factor * factor
            yield slab.image[:, None, :rows, :cols]

    return latent_scale_factor(autoencoder, batches(), device)


def pack(maps: list[LatentMap]) -> dict:
    return {
        "latents": [m.latent for m in maps],
        "inside": [m.inside for m in maps],
        "regions": [m.region for m in maps],
        "augment_labels": [m.augment_label for m in maps],
    }


def unpack(payload: dict) -> list[LatentMap]:
    """The maps of a cache; one written before the augmentation was recorded has zero labels (`LatentMap`).

    The labels may be a list of vectors or one stacked tensor (a cache written by other code: both are read)."""
    columns = (payload["latents"], payload["inside"], payload["regions"])
    labels = payload.get("augment_labels")
    labels = [label_vector(None)] * len(columns[0]) if labels is None else list(labels)
    if len({len(column) for column in (*columns, labels)}) != 1:
        raise ValueError("a latent cache whose latents, masks, regions and labels differ in number")
    return [LatentMap(*items) for items in zip(*columns, labels)]


class LatentWindowDataset(torch.utils.data.Dataset):
    """Random latent windows of the canvas size; item i of epoch e is always the same (resumable, DDP)."""

    def __init__(
        self,
        maps: list[LatentMap],
        config: TrainConfig,
        factor: int,
        length: int,
        seed: int,
        balance: bool = True,
    ) -> None:
        self.maps = maps
        self.shape = (config.data.canvas[0] // factor, config.data.canvas[1] // factor)
        self.min_inside = config.data.min_inside_fraction
        self.length, self.seed, self.epoch = length, seed, 0
        regions = [m.region for m in maps]
        counts = {r: regions.count(r) for r in set(regions)}
        weights = np.array([1.0 / counts[r] if balance else 1.0 for r in regions])
        self.weights = weights / weights.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def draw(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A window: its latent, its inside-the-scan cells, and its map's augmentation label."""
        item = self.maps[int(rng.choice(len(self.maps), p=self.weights))]
        height, width = self.shape
        rows = torch.nonzero(item.inside.any(dim=1)).flatten()
        cols = torch.nonzero(item.inside.any(dim=0)).flatten()
        first, last = int(rows[0]), int(rows[-1]) + 1
        need = min(last - first, int(np.ceil(self.min_inside * height)))
        lo = max(0, first + need - height)
        hi = min(item.inside.shape[0] - height, last - need)
        top = int(rng.integers(min(lo, hi), max(lo, hi) + 1))
        c_first, c_last = int(cols[0]), int(cols[-1]) + 1
        c_lo, c_hi = sorted(
            (
                max(0, min(c_first, c_last - width)),
                min(item.inside.shape[1] - width, max(c_first, c_last - width)),
            )
        )
        left = int(rng.integers(c_lo, c_hi + 1))
        window = (slice(top, top + height), slice(left, left + width))
        return item.latent[:, window[0], window[1]], item.inside[window[0], window[1]], item.augment_label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.draw(np.random.default_rng([self.seed, self.epoch, index]))

    def fixed(self, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` windows, the same every time (validation: clean copies, so no labels)."""
        rng = np.random.default_rng([seed, 104729])
        drawn = [self.draw(rng) for _ in range(count)]
        return torch.stack([d[0] for d in drawn]), torch.stack([d[1] for d in drawn])
