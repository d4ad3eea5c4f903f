"""Where generated pixels meet others: the feathered seam at the scan, the cross-fade between windows.

Where the generated image meets the known one, the residual (known - generated) measured on the known side
is carried into the generated side and faded out over `feather` pixels, so the seam is continuous while
the known region keeps its exact values.

Where a window meets rows that an earlier window generated, nothing has to be kept exactly: the window makes
the last rows of the earlier window's part again and the two are cross-faded over them (`crossfade_weights`).
A window continues the latent it is given, not the level of what an earlier window painted, so without the
cross-fade its first generated row sits under the earlier one as a horizontal line.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_residual(residual: np.ndarray, known: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised convolution: a local mean of the residual over known pixels only."""
    weight = ndimage.gaussian_filter(known.astype(np.float32), sigma)
    total = ndimage.gaussian_filter(residual * known, sigma)
    return np.where(weight > 1e-6, total / np.maximum(weight, 1e-6), 0.0).astype(np.float32)


def blend_seam(
    generated: np.ndarray, known_values: np.ndarray, known: np.ndarray, feather: float
) -> np.ndarray:
    """Per 2D plane: known pixels from `known_values`, generated ones corrected near the seam.

    `feather` is the fade length in pixels (along any direction); 0 disables the correction.
    """
    output = np.where(known, known_values, generated).astype(np.float32)
    if feather <= 0 or known.all() or not known.any():
        return output
    for index in range(generated.shape[0]):
        plane_known = known[index]
        if not plane_known.any() or plane_known.all():
            continue
        residual = smooth_residual(known_values[index] - generated[index], plane_known, sigma=2.0)
        distance, (rows, cols) = ndimage.distance_transform_edt(~plane_known, return_indices=True)
        weight = np.clip(1.0 - distance / feather, 0.0, 1.0)
        correction = residual[rows, cols] * weight
        output[index] = np.where(plane_known, known_values[index], generated[index] + correction)
    return output


def crossfade_weights(filled: np.ndarray, generated: np.ndarray, overlap: int) -> np.ndarray:
    """Per row of a window, the weight of what the row already holds against what this window makes of it.

    `filled`: rows that hold content before this window (the scan's or an earlier window's); `generated`:
    rows not from the scan, the only ones that may be made again (those of them that are filled, an earlier
    window made). 1 = kept as is and given to the
    sampler as known; 0 = this window's; in between (generated rows within `overlap` rows of one this window
    makes) = made again and mixed, the earlier content's weight falling linearly towards the new rows.
    """
    weights = filled.astype(np.float32)
    if overlap <= 0 or filled.all() or not filled.any():
        return weights
    distance = ndimage.distance_transform_edt(filled)  # rows to the nearest row this window makes
    band = generated & filled & (distance <= overlap)
    weights[band] = distance[band] / (overlap + 1)
    return weights
