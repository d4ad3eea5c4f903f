"""The representation's ceiling: the truth itself through what every completion of a bundle goes through.

No completion can hold more than survives the bundle's preprocessing and, for a latent model, its autoencoder.
Two benchmark rows measure that on the same cases as the methods:

- `grid`: the whole truth (hidden rows included) prepared as the engine prepares a scan (`prepare_slab`:
  model orientation, the canvas spacing with its anti-aliasing, and the intensity normalisation the engine
  fits to the visible part, clip included), then sampled back onto the scan's grid and into scanner units,
  clipped to the input's range as the engine clips; no network.
- `autoencoder`: the same with the bundle's autoencoder encode and decode on the canvas in between (a VQ-VAE's
  latents quantised when the bundle says they are; a KL autoencoder's mean), as the engine encodes the known
  part and decodes the sampled latent.

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
from ..preprocess import PreparedSlab, prepare_slab
from .cases import Case

CEILINGS = ("grid", "autoencoder")


def prepared_truth(case: Case, metadata, slices: int) -> tuple[PreparedSlab, PreparedSlab]:
    """(the visible part as the engine prepares it, the whole truth normalised with its scaling and gain)."""
    visible = prepare_slab(case.partial(), metadata, slices)
    above, _ = case.hidden_rows
    gain = visible.gain_over(above, case.truth.shape[1])
    whole = prepare_slab(Volume(case.truth, case.affine), metadata, slices, intensity=(visible.scaling, gain))
    return visible, whole


def round_trip(bundle, model: np.ndarray, layout_width: int, col_offset: int) -> np.ndarray:
    """A normalised model-grid slab through the bundle's autoencoder, slice by slice, on a canvas padded like the
    engine's (the scan at `col_offset` of `layout_width` columns, rows to the size multiple)."""
    metadata = bundle.metadata
    n_slices, n_rows, n_cols = model.shape
    multiple = metadata.size_multiple
    width = max(layout_width, round_up(n_cols, multiple))
    offset = col_offset if layout_width >= n_cols else (width - n_cols) // 2
    canvas = np.full((n_slices, round_up(n_rows, multiple), width), metadata.canvas.padding_value, np.float32)
    canvas[:, :n_rows, offset : offset + n_cols] = model
    autoencoder = bundle.autoencoder
    device = next(autoencoder.parameters()).device
    with torch.no_grad():
        pixels = torch.from_numpy(canvas[:, None]).to(device)
        decoded = torch.cat(
            [decode(autoencoder, encode(autoencoder, p[None], metadata.latent_quantized)) for p in pixels]
        )
    return decoded[:, 0, :n_rows, offset : offset + n_cols].float().cpu().numpy()


def ceiling_fill(kind: str, case: Case, bundle, slices: int) -> np.ndarray:
    """The `grid` or `autoencoder` ceiling of one case: (slices, rows, cols) on the truth's chosen slices."""
    if kind not in CEILINGS:
        raise ValueError(f"unknown ceiling {kind!r}")
    metadata = bundle.metadata
    visible, whole = prepared_truth(case, metadata, slices)
    model = whole.model
    if kind == "autoencoder":
        layout = plan_layout(metadata, visible.model.shape[1], visible.model.shape[2], *case.extension_mm)
        model = round_trip(bundle, model, layout.width, layout.col_offset)
    step = np.diag(whole.model_to_native)[:3]
    offset = whole.model_to_native[:3, 3]
    rows = (np.arange(whole.native.shape[1]) - offset[1]) / step[1]
    cols = (np.arange(whole.native.shape[2]) - offset[2]) / step[2]
    values = whole.to_scanner_units(sample_at(model, rows, cols), 0)
    partial = case.partial().array
    values = np.clip(values, float(partial.min()), float(partial.max()))  # as the engine clips its output
    values[:, case.known_rows] = whole.native[:, case.known_rows]
    return values.astype(np.float32)
