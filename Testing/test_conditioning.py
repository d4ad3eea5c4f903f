"""The `masked_latent` UNet: training masks shaped like the engine's windows, the UNet really seeing the
known latent, and bundles whose channel counts contradict their conditioning refused on load."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import synthetic_scan, with_output_weights
from fovcompletion.bundle import SchedulerSpec, load_bundle, read_metadata
from fovcompletion.bundle_factory import create_random_bundle
from fovcompletion.conditioning import conditioned_input, outpainting_masks, unet_input_channels
from fovcompletion.errors import BundleError, InputError
from fovcompletion.pipeline import complete
from fovcompletion.sampling import LatentInpainter, SamplerOptions

AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def conditioned_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundles") / "conditioned"
    return create_random_bundle(folder, name="tiny-conditioned", conditioning="masked_latent")


def test_masks_are_bands_of_whole_rows_at_one_end_and_only_inside_the_scan():
    inside = torch.ones(400, 16, 8, dtype=torch.bool)
    inside[:, :, 0] = False  # a column outside the scan is never known
    masks = outpainting_masks(inside, 0.5, torch.Generator().manual_seed(0))[:, 0].bool()
    assert masks.shape == (400, 16, 8)
    assert not masks[:, :, 0].any()
    rows = masks[:, :, 1:].all(dim=2)
    assert torch.equal(rows, masks[:, :, 1:].any(dim=2))  # whole rows
    counts = rows.sum(dim=1)
    for row, count in zip(rows, counts):
        if count > 0:  # contiguous and touching the top or the bottom
            top, bottom = row[:count].all(), row[-count:].all()
            assert top or bottom
    assert 0.3 < (counts == 8).float().mean() < 0.7  # the bundle's context fraction, half of the time
    assert 0.04 < (counts == 0).float().mean() < 0.2  # some windows with no context
    assert counts.max() < 16  # something is always left to generate
    top_known = rows[:, 0] & (counts > 0)
    assert 0.35 < top_known.float().sum() / (counts > 0).sum() < 0.65  # both directions


def test_conditioned_input_zeroes_the_unknown_latent():
    noisy, known = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    mask = torch.zeros(2, 1, 6, 6)
    mask[:, :, :3] = 1
    stacked = conditioned_input(noisy, known, mask)
    assert stacked.shape[1] == unet_input_channels(4, "masked_latent") == 9
    assert torch.equal(stacked[:, :4], noisy)
    assert torch.equal(stacked[:, 4:8, :3], known[:, :, :3])
    assert not stacked[:, 4:8, 3:].any()
    assert torch.equal(stacked[:, 8:], mask)


@pytest.mark.parametrize(("conditioning", "sees_context"), [("none", False), ("masked_latent", True)])
def test_only_a_conditioned_unet_uses_the_context_from_the_first_step(tmp_path, conditioning, sees_context):
    """One DDIM step from the same noise: an unconditional UNet cannot know the context yet."""
    bundle = with_output_weights(
        load_bundle(create_random_bundle(tmp_path / "b", conditioning=conditioning, seed=1))
    )
    mask = torch.zeros(1, 1, 8, 8)
    mask[:, :, :4] = 1
    generated = []
    for value in (-1.0, 1.0):
        inpainter = LatentInpainter(
            bundle.unet, SchedulerSpec(), torch.Generator().manual_seed(0), conditioning=conditioning
        )
        known = torch.full((1, 4, 8, 8), value)
        generated.append(inpainter.run(known, mask, SamplerOptions(steps=1))[:, :, 4:])
    assert (not torch.allclose(*generated)) == sees_context


def test_conditioned_bundle_completes_and_keeps_the_known_voxels(conditioned_bundle):
    scan = synthetic_scan((6, 40, 30))
    result = complete(scan, AFFINE, model=conditioned_bundle, slices=2, steps=3, extend_inferior_mm=40)
    known = result.mask == 1
    assert (~known).any() and np.isfinite(result.image).all()
    chosen = scan[result.slice_indices]
    assert known.sum() == chosen.size  # the known block, in the same C order as the input's voxels
    assert np.array_equal(result.image[known], chosen.ravel())


@pytest.mark.parametrize(
    ("conditioning", "match"),
    [("none", "needs 4 input and 4 output channels, the bundle says 9"), ("film", "is not one of")],
)
def test_conditioning_that_contradicts_the_unet_is_refused(conditioned_bundle, tmp_path, conditioning, match):
    folder = tmp_path / "edited"
    shutil.copytree(conditioned_bundle, folder)
    metadata = json.loads((folder / "bundle.json").read_text())
    metadata["conditioning"] = conditioning
    (folder / "bundle.json").write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match=match):
        read_metadata(folder)


def _one_step_x0(unet, conditioning: str, known_value: float, guidance: float) -> torch.Tensor:
    """The generated half of one DDIM step from the same noise (the clean estimate), with this guidance."""
    mask = torch.zeros(1, 1, 8, 8)
    mask[:, :, :4] = 1
    inpainter = LatentInpainter(
        unet, SchedulerSpec(), torch.Generator().manual_seed(0), conditioning=conditioning
    )
    known = torch.full((1, 4, 8, 8), known_value)
    return inpainter.run(known, mask, SamplerOptions(steps=1, guidance=guidance))[:, :, 4:]


def test_guidance_extrapolates_from_the_prediction_without_context(tmp_path):
    """w = 0 is the UNet without the known region (blind to it), w = 1 the plain conditioned step, and any other
    w lies on the line through the two: eps = eps_without + w (eps_with - eps_without)."""
    bundle = with_output_weights(
        load_bundle(create_random_bundle(tmp_path / "b", conditioning="masked_latent", seed=1))
    )
    without, plain, guided = (_one_step_x0(bundle.unet, "masked_latent", 1.0, w) for w in (0.0, 1.0, 3.0))
    assert not torch.allclose(without, plain)
    torch.testing.assert_close(guided, without + 3.0 * (plain - without), rtol=1e-4, atol=1e-5)
    blind = _one_step_x0(bundle.unet, "masked_latent", -1.0, 0.0)
    torch.testing.assert_close(blind, without)  # w = 0 never looks at the known latent
    with pytest.raises(InputError, match="unconditional"):
        _one_step_x0(load_bundle(create_random_bundle(tmp_path / "u")).unet, "none", 1.0, 2.0)


def test_the_bundles_guidance_is_the_default_and_the_callers_wins(tmp_path, tiny_bundle):
    # a random UNet barely reacts to its context channels: a strong guidance makes the difference measurable
    folder = create_random_bundle(tmp_path / "g", conditioning="masked_latent", guidance=20.0, seed=3)
    assert read_metadata(folder).guidance == 20.0
    bundle = with_output_weights(load_bundle(folder))
    scan = synthetic_scan((6, 40, 30))

    def run(**options):
        return complete(scan, AFFINE, model=bundle, slices=2, steps=2, extend_inferior_mm=30, **options).image

    default = run()
    np.testing.assert_array_equal(default, run(sampler=SamplerOptions(steps=2, guidance=20.0)))
    assert np.abs(default - run(sampler=SamplerOptions(steps=2, guidance=1.0))).max() > 1e-2
    # the reference algorithm has no guidance: the bundle's is not applied, an explicit one is refused
    complete(
        scan, AFFINE, model=folder, slices=2, extend_inferior_mm=30, sampler=SamplerOptions("reference", 2)
    )
    with pytest.raises(InputError, match="the reference sampler runs the original algorithm"):
        reference = SamplerOptions("reference", 2, guidance=2.0)
        complete(scan, AFFINE, model=folder, slices=2, extend_inferior_mm=30, sampler=reference)
    with pytest.raises(
        InputError, match="guidance 2 cannot be used: the UNet of tiny-test does not see the known"
    ):
        complete(
            scan,
            AFFINE,
            model=tiny_bundle,
            extend_inferior_mm=30,
            sampler=SamplerOptions(steps=2, guidance=2.0),
        )
    with pytest.raises(InputError, match="guidance must be a number >= 0"):
        complete(
            scan, AFFINE, model=folder, extend_inferior_mm=30, sampler=SamplerOptions(steps=2, guidance=-1.0)
        )


def test_the_bundles_eta_is_the_default_and_the_callers_wins(tmp_path):
    folder = create_random_bundle(tmp_path / "e", conditioning="masked_latent", eta=1.0, seed=3)
    assert read_metadata(folder).eta == 1.0
    noisy = with_output_weights(load_bundle(folder))
    deterministic = replace(noisy, metadata=replace(noisy.metadata, eta=0.0))  # same weights, eta 0
    scan = synthetic_scan((6, 40, 30))

    def run(bundle, **options):
        return complete(scan, AFFINE, model=bundle, slices=2, steps=3, extend_inferior_mm=30, **options).image

    default = run(noisy)
    np.testing.assert_array_equal(default, run(noisy, sampler=SamplerOptions(steps=3, eta=1.0)))
    assert np.abs(default - run(deterministic)).max() > 1e-3  # the bundle's eta draws fresh noise per step
    np.testing.assert_array_equal(run(deterministic), run(noisy, sampler=SamplerOptions(steps=3, eta=0.0)))
    with pytest.raises(InputError, match="eta must be a number >= 0"):
        run(noisy, sampler=SamplerOptions(steps=3, eta=float("nan")))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"guidance": -0.5}, "guidance must be a number >= 0"),
        ({"eta": -1.0}, "eta must be a number >= 0"),
        ({"conditioning": "none"}, "needs a conditioned"),
    ],
)
def test_guidance_a_bundle_cannot_use_is_refused(tmp_path, edit, match):
    folder = create_random_bundle(tmp_path / "g", conditioning="masked_latent", guidance=2.0)
    metadata = json.loads((folder / "bundle.json").read_text())
    metadata.update(edit)
    if edit.get("conditioning") == "none":  # a UNet that matches, so that only the guidance is wrong
        metadata["diffusion"]["args"]["in_channels"] = 4
    (folder / "bundle.json").write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match=match):
        read_metadata(folder)
