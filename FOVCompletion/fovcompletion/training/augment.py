"""MRI-suited augmentation of model-space slices (rows superior->inferior, cols anterior-posterior).

Allowed: intensity gamma/scale/shift, a smooth bias field, small in-plane rotations and scaling, a
superior-inferior stretch (when asked), and the left-right mirror. A sagittal slice has no left-right axis
in-plane, so the mirror only reverses the slice order of a multi-slice sample; superior-inferior and
anterior-posterior flips are never applied because the spine is not symmetric along them (and the model must
learn which way is down).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .config import AugmentConfig


def window_transform(
    rng: np.random.Generator | None,
    aug: AugmentConfig | None,
    center_src: tuple[float, float],
    out_shape: tuple[int, int],
    record: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset mapping output window pixels to source pixels: a rotation, an isotropic zoom and, when
    the configuration asks, a superior-inferior stretch (taller or flatter vertebrae). `record`, when given,
    receives what was drawn (`augment_labels`)."""
    angle, zoom, stretch = 0.0, 1.0, 1.0
    if rng is not None and aug is not None:
        angle = math.radians(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
        zoom = float(rng.uniform(*aug.scale))
        if stretches(aug):  # drawn only when asked: the default runs' draws stay as they were
            stretch = float(np.exp(rng.uniform(*np.log(aug.stretch))))
    if record is not None:
        record.update(rotation_rad=angle, log_zoom=math.log(zoom), log_stretch=math.log(stretch))
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    # the scan is stretched along its own superior-inferior axis, then rotated (a stretch after the rotation would
    # shear it): one source row spans `stretch` output pixels along the spine
    matrix = np.array([[cos / stretch, -sin / stretch], [sin, cos]])  # determinant > 0: never a flip
    center_out = (np.array(out_shape, dtype=float) - 1) / 2
    offset = np.asarray(center_src, dtype=float) - matrix @ center_out
    return matrix, offset


def stretches(aug: AugmentConfig) -> bool:
    """Whether the augmentation stretches superior-inferior at all."""
    return tuple(aug.stretch) != (1.0, 1.0)


def cut_window(
    image: np.ndarray,
    valid: np.ndarray,
    matrix: np.ndarray,
    offset: np.ndarray,
    out_shape: tuple[int, int],
    padding: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a window (and its inside-the-scan mask) from a slice; outside the scan is `padding`."""
    window = ndimage.affine_transform(
        image, matrix, offset=offset, output_shape=out_shape, order=1, mode="constant", cval=padding
    )
    inside = (
        ndimage.affine_transform(
            valid.astype(np.float32),
            matrix,
            offset=offset,
            output_shape=out_shape,
            order=1,
            mode="constant",
            cval=0.0,
        )
        > 0.999
    )
    window[~inside] = padding
    return window.astype(np.float32), inside


def bias_field(rng: np.random.Generator, shape: tuple[int, int], amplitude: float) -> np.ndarray:
    """A smooth multiplicative field exp(quadratic polynomial), as receive-coil inhomogeneity looks."""
    rows = np.linspace(-1, 1, shape[0])[:, None]
    cols = np.linspace(-1, 1, shape[1])[None, :]
    c = rng.uniform(-amplitude, amplitude, size=5)
    log_field = c[0] * rows + c[1] * cols + c[2] * rows * cols + c[3] * rows**2 + c[4] * cols**2
    return np.exp(log_field)


def augment_intensity(
    rng: np.random.Generator,
    aug: AugmentConfig,
    window: np.ndarray,
    inside: np.ndarray,
    low: float = -1.0,
    high: float = 1.0,
    clip_high: bool = True,
    record: dict[str, float] | None = None,
) -> np.ndarray:
    """Gamma, scale, shift and bias field on the [low, high] model range; padding is left untouched.

    `clip_high` False keeps values above `high`: a normalisation with headroom (no clip at its upper
    percentile) must not have its bright tissue capped by the augmentation either. `record`, when given,
    receives the gamma, scale and shift drawn (`augment_labels`; not the bias field, whose polynomial spans the
    whole slice, so that its numbers would not say what a window cut from it holds).
    """
    ceiling = 1.0 if clip_high else None
    unit = (window - low) / (high - low)
    gamma = rng.uniform(*aug.gamma)
    unit = np.clip(unit, 0, ceiling) ** gamma
    if aug.bias_field > 0:
        unit = unit * bias_field(rng, window.shape[-2:], aug.bias_field)
    scale = rng.uniform(*aug.intensity_scale)
    shift = rng.uniform(-aug.intensity_shift, aug.intensity_shift)
    unit = unit * scale + shift
    if record is not None:
        record.update(log_gamma=math.log(gamma), log_intensity_scale=math.log(scale), intensity_shift=shift)
    out = low + np.clip(unit, 0, ceiling) * (high - low)
    return np.where(inside, out, window).astype(np.float32)


def mirrors(rng: np.random.Generator, aug: AugmentConfig) -> bool:
    """Whether this sample is mirrored left-right (one draw, shared by an image and its masks)."""
    return bool(rng.random() < aug.flip_lr)


def flip_left_right(rng: np.random.Generator, aug: AugmentConfig, stack: np.ndarray) -> np.ndarray:
    """Mirror a (slices, rows, cols) stack left-right: reverse the slice axis only."""
    return stack[::-1].copy() if mirrors(rng, aug) else stack
