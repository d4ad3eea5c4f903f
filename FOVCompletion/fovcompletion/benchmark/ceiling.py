"""The representation's ceiling: the truth itself through what every completion of a bundle goes through.

No completion can hold more than survives the bundle's preprocessing and, for a latent model, its autoencoder.
Three kinds of benchmark row measure that on the same cases as the methods:

- `grid`: the whole truth (hidden rows included) prepared as the engine prepares a scan (`prepare_slab`:
  model orientation, the canvas spacing with its anti-aliasing, and the intensity normalisation the engine
  fits to the visible part, clip included), then sampled back onto the scan's grid and into scanner units,
  clipped to the input's range as the engine clips; no network.
- `autoencoder`: the same with the bundle's autoencoder encode and decode on the canvas in between (a VQ-VAE's
  latents quantised when the bundle says they are; a KL autoencoder's mean), as the engine encodes the known
  part and decodes the sampled latent.
- `denoise` at level t: the truth's own latent noised to timestep t and denoised by the bundle's UNet with its
  sampler (steps, guidance, eta, the known cells imposed as the engine imposes them), then decoded. Which anatomy
  lies where is given; what the UNet keeps of it is its fidelity, apart from what no model can know below a seam.
  One canvas covers the whole truth (at low noise the UNet works locally); the draw is seeded like the sampler's rows.

The visible rows are then pasted back, as the engine pastes them. Everything comes from the bundle's metadata,
so a bundle with another canvas spacing or normalisation gets its own ceiling.
"""

from __future__ import annotations

import numpy as np
import torch

from ..geometry import sample_at
from ..image_io import Volume
from ..latent_codec import decode, encode
from ..layout import plan_layout, round_up
from ..pipeline import resolve_sampler
from ..preprocess import PreparedSlab, prepare_slab
from ..sampling import LatentInpainter, SamplerOptions, latent_mask
from .cases import Case

CEILINGS = ("grid", "autoencoder", "denoise")
# The default level: noise sd 0.42 of a unit latent, which hides fine detail but not the layout.
DENOISE_LEVELS = (100,)
DENOISE_PREFIX = "denoise-t"


def denoise_name(level: int) -> str:
    """The row of the `denoise` ceiling at one timestep."""
    return f"{DENOISE_PREFIX}{level}"


def is_ceiling(name: str) -> bool:
    """Whether a results row is a ceiling (reads the truth), from its name alone."""
    level = name.removeprefix(DENOISE_PREFIX)
    return name in CEILINGS or (level != name and level.isdigit())


def prepared_truth(case: Case, metadata, slices: int) -> tuple[PreparedSlab, PreparedSlab]:
    """(the visible part as the engine prepares it, the whole truth normalised with its scaling and gain)."""
    visible = prepare_slab(case.partial(), metadata, slices)
    above, _ = case.hidden_rows
    gain = visible.gain_over(above, case.truth.shape[1])
    whole = prepare_slab(Volume(case.truth, case.affine), metadata, slices, intensity=(visible.scaling, gain))
    return visible, whole


def padded_canvas(metadata, model: np.ndarray, layout_width: int, col_offset: int) -> tuple[np.ndarray, int]:
    """A normalised model-grid slab on a canvas padded like the engine's (the scan at `col_offset` of
    `layout_width` columns, rows to the size multiple), and the canvas column of the slab's first."""
    n_slices, n_rows, n_cols = model.shape
    multiple = metadata.size_multiple
    width = max(layout_width, round_up(n_cols, multiple))
    offset = col_offset if layout_width >= n_cols else (width - n_cols) // 2
    canvas = np.full((n_slices, round_up(n_rows, multiple), width), metadata.canvas.padding_value, np.float32)
    canvas[:, :n_rows, offset : offset + n_cols] = model
    return canvas, offset


def _encode(bundle, canvas: np.ndarray) -> torch.Tensor:
    """Latents of a canvas's slices, slice by slice as the engine encodes them."""
    autoencoder = bundle.autoencoder
    device = next(autoencoder.parameters()).device
    pixels = torch.from_numpy(canvas[:, None]).to(device)
    quantized = bundle.metadata.latent_quantized
    return torch.cat([encode(autoencoder, p[None], quantized) for p in pixels])


def _decode(bundle, latent: torch.Tensor) -> np.ndarray:
    return torch.cat([decode(bundle.autoencoder, z[None]) for z in latent])[:, 0].float().cpu().numpy()


def round_trip(bundle, model: np.ndarray, layout_width: int, col_offset: int) -> np.ndarray:
    """A normalised model-grid slab through the bundle's autoencoder, slice by slice, on the engine's canvas."""
    canvas, offset = padded_canvas(bundle.metadata, model, layout_width, col_offset)
    with torch.no_grad():
        decoded = _decode(bundle, _encode(bundle, canvas))
    n_rows, n_cols = model.shape[1:]
    return decoded[:, :n_rows, offset : offset + n_cols]


def denoise_trip(
    bundle,
    model: np.ndarray,
    known_rows: np.ndarray,
    layout_width: int,
    col_offset: int,
    level: int,
    seed: int,
) -> np.ndarray:
    """A normalised model-grid slab's latent noised to timestep `level` and denoised by the bundle's sampler, as
    the engine would complete it if the rows not in `known_rows` (model rows) started from their truth."""
    metadata = bundle.metadata
    canvas, offset = padded_canvas(metadata, model, layout_width, col_offset)
    given = np.zeros(canvas.shape, dtype=bool)
    given[:, : model.shape[1]][:, known_rows, offset : offset + model.shape[2]] = True
    options = resolve_sampler(SamplerOptions(), metadata)
    inpainter = LatentInpainter(
        bundle.unet,
        metadata.scheduler,
        torch.Generator().manual_seed(seed),
        conditioning=metadata.conditioning,
        guide=bundle.guide,
        guide_scale=metadata.guide_scale,
    )
    scale = metadata.latent_scale_factor
    with torch.no_grad():
        truth = _encode(bundle, canvas) * scale
        # the known cells as the engine encodes them: the hidden rows are padding, not the truth
        known = _encode(bundle, np.where(given, canvas, metadata.canvas.padding_value)) * scale
        mask = torch.from_numpy(given[:, None].astype(np.float32)).to(known.device)
        cells = latent_mask(mask, metadata.latent_factor, options.mask_erosion)
        denoised = inpainter.run(known, cells, options, start=(truth, level))
        decoded = _decode(bundle, denoised / scale)
    n_rows, n_cols = model.shape[1:]
    return decoded[:, :n_rows, offset : offset + n_cols]


def model_known_rows(whole: PreparedSlab, known_rows: np.ndarray) -> np.ndarray:
    """Model-grid rows of a prepared truth that lie wholly within its known native rows."""
    known_rows = np.asarray(known_rows, dtype=bool)
    step, offset = whole.model_to_native[1, 1], whole.model_to_native[1, 3]
    position = offset + step * np.arange(whole.model.shape[1])
    low = np.clip(np.floor(position).astype(int), 0, known_rows.size - 1)
    high = np.clip(np.ceil(position).astype(int), 0, known_rows.size - 1)
    inside = (position >= 0) & (position <= known_rows.size - 1)
    return inside & known_rows[low] & known_rows[high]


def ceiling_fill(kind: str, case: Case, bundle, slices: int, level: int = 0, seed: int = 0) -> np.ndarray:
    """The `grid`, `autoencoder` or `denoise` (at timestep `level`, noise from `seed`) ceiling of one case:
    (slices, rows, cols) on the truth's chosen slices."""
    if kind not in CEILINGS:
        raise ValueError(f"unknown ceiling {kind!r}")
    metadata = bundle.metadata
    visible, whole = prepared_truth(case, metadata, slices)
    model = whole.model
    if kind != "grid":
        layout = plan_layout(metadata, visible.model.shape[1], visible.model.shape[2], *case.extension_mm)
        if kind == "autoencoder":
            model = round_trip(bundle, model, layout.width, layout.col_offset)
        else:
            known = model_known_rows(whole, case.known_rows)
            model = denoise_trip(bundle, model, known, layout.width, layout.col_offset, level, seed)
    step = np.diag(whole.model_to_native)[:3]
    offset = whole.model_to_native[:3, 3]
    rows = (np.arange(whole.native.shape[1]) - offset[1]) / step[1]
    cols = (np.arange(whole.native.shape[2]) - offset[2]) / step[2]
    values = whole.to_scanner_units(sample_at(model, rows, cols), 0)
    partial = case.partial().array
    values = np.clip(values, float(partial.min()), float(partial.max()))  # as the engine clips its output
    values[:, case.known_rows] = whole.native[:, case.known_rows]
    return values.astype(np.float32)
