"""The low-pass that keeps the guide-alone steps' push at the layout's scale (`latent_filter`)."""

from __future__ import annotations

import math

import torch

from fovcompletion.latent_filter import gaussian_low_pass


def test_a_constant_field_stays_at_any_size_and_sigma_zero_changes_nothing():
    for shape in ((2, 4, 8, 8), (1, 4, 2, 2), (1, 4, 1, 3)):  # smaller than the kernel's reach too
        field = torch.full(shape, 0.7)
        torch.testing.assert_close(gaussian_low_pass(field, 1.0), field)
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    assert gaussian_low_pass(noise, 0.0) is noise


def test_pixel_scale_alternation_is_removed_and_the_layout_scale_kept():
    """At sigma 1 latent pixel a checkerboard (the speckle's scale) loses over 98% of its amplitude, a wave of 16
    pixels (128 mm on the bundled model's 8 mm latent grid) keeps over 90%, and each channel stays its own."""
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    checker = ((rows + cols) % 2 * 2 - 1).expand(1, 1, 32, 32)
    wave = torch.sin(2 * math.pi * rows / 16).expand(1, 1, 32, 32)
    filtered = gaussian_low_pass(torch.cat([checker, wave], dim=1), 1.0)[0, :, 8:24, 8:24]  # off the edges
    assert filtered[0].abs().max() < 0.02
    centre = wave[0, 0, 8:24, 8:24]
    assert (filtered[1] / centre)[centre.abs() > 0.5].min() > 0.9


def test_under_autocast_the_filter_stays_at_full_precision():
    """The guide's push is combined in float32 (`sampling.LatentInpainter`): half precision would round it by
    about 1% where the unfiltered push keeps full precision."""
    push = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        filtered = gaussian_low_pass(push, 1.0)
    assert filtered.dtype == torch.float32
    torch.testing.assert_close(filtered, gaussian_low_pass(push, 1.0), rtol=0, atol=0)
