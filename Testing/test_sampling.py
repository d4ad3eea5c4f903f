"""Sampler behaviour: reproducibility, RePaint schedule, cancellation, progress, several samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import synthetic_scan, with_output_weights
from fovcompletion.bundle import load_bundle
from fovcompletion.errors import CancelledError, InputError
from fovcompletion.pipeline import complete
from fovcompletion.sampling import (
    SamplerOptions,
    count_model_evaluations,
    ddim_timesteps,
    repaint_transitions,
)

AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def run(bundle, **options):
    defaults = {"model": bundle, "slices": 2, "steps": 4, "extend_inferior_mm": 30}
    return complete(synthetic_scan((6, 40, 30)), AFFINE, **{**defaults, **options})


def test_same_seed_is_bit_identical_and_another_seed_differs(tiny_bundle):
    first, second, other = run(tiny_bundle, seed=3), run(tiny_bundle, seed=3), run(tiny_bundle, seed=4)
    assert np.array_equal(first.image, second.image)
    generated = first.mask == 0
    assert not np.allclose(first.image[generated], other.image[generated])
    known = first.mask == 1
    assert np.array_equal(first.image[known], other.image[known])


def test_ddim_timesteps_descend_to_the_clean_sample():
    steps = ddim_timesteps(1000, 10)
    assert steps[0] == 999 and steps[-2] == 0 and steps[-1] == -1
    assert all(a > b for a, b in zip(steps, steps[1:]))
    assert len(ddim_timesteps(1000, 1000)) == 1001
    assert ddim_timesteps(1000, 1) == [999, -1]  # one step denoises from pure noise, not from t=0


def test_repaint_schedule_repeats_each_jump():
    plain = repaint_transitions(10, 1, 1)
    assert plain == [(i, i + 1) for i in range(10)]
    resampled = repaint_transitions(10, resample=3, jump_length=2)
    downs = [t for t in resampled if t[1] > t[0]]
    ups = [t for t in resampled if t[1] < t[0]]
    assert len(ups) == 2 * 2 * 4  # jumps at 2, 4, 6, 8; two extra passes of two steps each
    assert len(downs) == 10 + len(ups)
    assert resampled[-1] == (9, 10)
    assert count_model_evaluations(SamplerOptions(steps=10, resample=3, jump_length=2), 1000) == len(downs)


def test_resampling_and_mask_erosion_run_with_the_counted_evaluations(tiny_bundle):
    options = SamplerOptions(steps=4, resample=2, jump_length=1, mask_erosion=1)
    result = run(tiny_bundle, sampler=options, steps=None)
    assert result.nfe == count_model_evaluations(options, 1000)
    assert np.isfinite(result.image).all()


def test_progress_reports_every_step_with_elapsed_and_eta(tiny_bundle):
    events = []
    result = run(tiny_bundle, progress=events.append)
    steps = [e for e in events if e.stage == "sampling"]
    assert events[0].stage == "start" and events[0].details["slices"] == 2
    assert [e.step for e in steps] == list(range(1, result.nfe + 1))
    assert all(e.total == result.nfe for e in steps)
    assert steps[-1].eta_s == pytest.approx(0.0, abs=1e-9)
    assert all(b.elapsed_s >= a.elapsed_s for a, b in zip(steps, steps[1:]))


def test_cancellation_stops_within_a_step(tiny_bundle):
    calls = []

    def cancel_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(CancelledError):
        run(tiny_bundle, cancel=cancel_after_two, steps=20)
    assert len(calls) == 3


def test_several_samples_give_a_mean_and_a_spread(tiny_bundle):
    single = [run(tiny_bundle, seed=0).image]
    result = run(tiny_bundle, samples=3, seed=0)
    assert result.spread is not None and result.spread.shape == result.image.shape
    assert np.all(result.spread[result.mask == 1] == 0)
    assert result.spread[result.mask == 0].mean() > 0
    assert result.nfe == 3 * single_nfe(tiny_bundle)
    assert not np.array_equal(result.image, single[0])


def single_nfe(bundle) -> int:
    return run(bundle).nfe


def test_reference_sampler_keeps_no_pixels_and_uses_its_own_placement(tiny_fixed_bundle):
    options = SamplerOptions(method="reference", steps=5)
    scan = synthetic_scan((6, 40, 30))
    result = complete(scan, AFFINE, model=tiny_fixed_bundle, slices=1, sampler=options, extend_inferior_mm=20)
    assert result.nfe == 5
    known = result.mask == 1
    assert not np.allclose(result.image[known], scan[2:3].transpose(0, 1, 2).ravel()[: known.sum()])
    with pytest.raises(InputError, match="one canvas"):
        complete(scan, AFFINE, model=tiny_fixed_bundle, slices=1, sampler=options, extend_inferior_mm=200)


@pytest.mark.parametrize(
    ("setting", "said"),
    [({"eta": 0.0}, "eta 0"), ({"resample": 2}, "resample 2"), ({"mask_erosion": 1}, "mask erosion 1")],
)
def test_the_reference_sampler_refuses_ddims_settings_instead_of_ignoring_them(
    tiny_fixed_bundle, setting, said
):
    options = SamplerOptions(method="reference", steps=5, **setting)
    with pytest.raises(InputError, match=f"^{said} cannot be used: the reference sampler"):
        complete(
            synthetic_scan((6, 40, 30)),
            AFFINE,
            model=tiny_fixed_bundle,
            slices=1,
            sampler=options,
            extend_inferior_mm=20,
        )


@pytest.mark.parametrize("steps", [0, 1001])
def test_steps_out_of_range_are_refused(tiny_bundle, steps):
    with pytest.raises(InputError, match="steps must be between"):
        run(tiny_bundle, steps=steps)


def test_a_repaint_jump_as_long_as_the_run_is_refused(tiny_bundle):
    with pytest.raises(InputError, match="jump length 4 resamples nothing in 4 steps"):
        run(tiny_bundle, sampler=SamplerOptions(steps=4, resample=2, jump_length=4))
    run(tiny_bundle, sampler=SamplerOptions(steps=4, resample=1, jump_length=4))  # no resampling asked: fine


def _generated_slice_spread(result) -> float:
    """Mean absolute difference between the slices' generated pixels (identical input slices)."""
    generated = result.image[:, result.mask[0] == 0]
    return float(np.abs(generated - generated[:1]).mean())


def test_slices_sharing_their_noise_agree_and_independent_slices_do_not(tiny_bundle):
    """Neighbouring sagittal slices look alike; with correlated noise, so do their completions."""
    scan = np.repeat(synthetic_scan((1, 40, 30)), 6, axis=0)  # every slice the same
    kwargs = {"model": tiny_bundle, "slices": 3, "steps": 4, "extend_inferior_mm": 30, "seed": 1}

    def spread(r: float) -> float:
        options = SamplerOptions(steps=4, slice_noise_correlation=r)
        return _generated_slice_spread(complete(scan, AFFINE, **{**kwargs, "sampler": options}))

    independent, half, shared = spread(0.0), spread(0.5), spread(1.0)
    assert shared == pytest.approx(0.0, abs=1e-6)
    assert 0 < half < independent


def test_correlated_noise_is_still_unit_gaussian_per_slice():
    import torch

    from fovcompletion.bundle import SchedulerSpec
    from fovcompletion.sampling import LatentInpainter

    inpainter = LatentInpainter(torch.nn.Identity(), SchedulerSpec(), torch.Generator().manual_seed(0))
    inpainter.slice_noise_correlation = 0.8
    noise = inpainter._noise(torch.zeros(2, 4, 64, 64))
    assert noise.std().item() == pytest.approx(1.0, abs=0.03)
    correlation = torch.corrcoef(noise.reshape(2, -1))[0, 1].item()
    assert correlation == pytest.approx(0.8, abs=0.03)


@pytest.mark.parametrize("r", [-0.1, 1.5])
def test_slice_noise_correlation_outside_0_1_is_refused(tiny_bundle, r):
    with pytest.raises(InputError, match="slice noise correlation must be between 0 and 1"):
        run(tiny_bundle, sampler=SamplerOptions(steps=4, slice_noise_correlation=r), steps=None)


def test_the_reference_sampler_keeps_independent_slice_noise(tiny_fixed_bundle):
    """The reference algorithm is reproduced as it ran: the slice noise correlation does not touch it."""
    scan = synthetic_scan((6, 40, 30))

    def reference(r: float) -> np.ndarray:
        options = SamplerOptions(method="reference", steps=3, slice_noise_correlation=r)
        return complete(
            scan, AFFINE, model=tiny_fixed_bundle, slices=2, sampler=options, extend_inferior_mm=20
        ).image

    assert np.array_equal(reference(0.0), reference(0.9))


def start_inputs(bundle):
    """A known latent with its top half given, a different 'truth' latent, the cell mask and an inpainter maker."""
    from fovcompletion.latent_codec import latent_channels
    from fovcompletion.sampling import LatentInpainter

    channels = latent_channels(bundle.metadata.autoencoder)
    generator = torch.Generator().manual_seed(7)
    known = torch.randn((2, channels, 8, 8), generator=generator)
    truth = torch.randn((2, channels, 8, 8), generator=generator)
    mask = torch.zeros((2, 1, 8, 8))
    mask[:, :, :4] = 1.0

    def inpainter():
        metadata = bundle.metadata
        return LatentInpainter(
            bundle.unet,
            metadata.scheduler,
            torch.Generator().manual_seed(0),
            conditioning=metadata.conditioning,
        )

    return known, truth, mask, inpainter


def test_a_start_latent_noised_a_little_comes_back_near_itself_with_the_known_cells_kept(tiny_bundle):
    bundle = with_output_weights(load_bundle(tiny_bundle))
    known, truth, mask, inpainter = start_inputs(bundle)
    options = SamplerOptions(steps=10, eta=0.5)
    low = inpainter().run(known, mask, options, start=(truth, 20))
    high = inpainter().run(known, mask, options, start=(truth, 999))
    hidden = mask.expand_as(known) == 0
    assert torch.equal(low[~hidden], known[~hidden])  # the known cells as given, at every level
    assert torch.equal(high[~hidden], known[~hidden])
    near = (low - truth)[hidden].abs().mean().item()
    assert near < 0.2  # noise sd 0.13 at t = 20, denoised in one step by a UNet that predicts something
    assert (high - truth)[
        hidden
    ].abs().mean().item() > 3 * near  # from t = 999 the start is all but forgotten


def test_a_start_level_must_be_a_timestep_and_the_reference_sampler_refuses_one(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    known, truth, mask, inpainter = start_inputs(bundle)
    for level in (0, bundle.metadata.scheduler.num_train_timesteps):
        with pytest.raises(InputError, match="start level"):
            inpainter().run(known, mask, SamplerOptions(steps=10), start=(truth, level))
    with pytest.raises(InputError, match="pure noise"):
        inpainter().run(known, mask, SamplerOptions(method="reference", steps=10), start=(truth, 20))


def test_the_reference_sampler_is_the_reference_inferers_loop_draw_for_draw():
    """The reference's `paint` loop (disc-labeling-playground, MONAI's DDPMScheduler, all its timesteps): the
    known latent noised to level t replaces the known area after each step, with the initial noise the first time
    and fresh noise, drawn after the step's own, every later time. Same generator, same draws, same result."""
    from monai.networks.schedulers import DDPMScheduler

    from fovcompletion.bundle import SchedulerSpec
    from fovcompletion.bundle_factory import tiny_unet_args
    from fovcompletion.networks import build_network
    from fovcompletion.sampling import LatentInpainter, SamplerOptions

    torch.manual_seed(0)
    unet = build_network("DiffusionModelUNet", tiny_unet_args()).eval()
    spec = SchedulerSpec(num_train_timesteps=40)
    known = torch.randn(2, 4, 8, 8)
    mask = torch.zeros(2, 4, 8, 8)
    mask[:, :, :4] = 1.0

    inpainter = LatentInpainter(unet, spec, torch.Generator().manual_seed(3))
    ours = inpainter.reference(known, mask, SamplerOptions(method="reference", steps=40))

    generator = torch.Generator().manual_seed(3)
    scheduler = DDPMScheduler(
        num_train_timesteps=40, schedule=spec.schedule, beta_start=spec.beta_start, beta_end=spec.beta_end
    )
    noise = torch.randn(known.shape, generator=generator)
    out, new_noise = noise, noise
    with torch.no_grad():
        for t in scheduler.timesteps:
            noisy = scheduler.add_noise(original_samples=known, noise=new_noise, timesteps=t)
            step, _ = scheduler.step(unet(out, timesteps=torch.Tensor((t,))), t, out, generator=generator)
            out = step * (1 - mask) + noisy * mask
            new_noise = torch.randn(known.shape, generator=generator)
    torch.testing.assert_close(ours, out, atol=1e-4, rtol=1e-4)


def test_the_reference_samplers_known_region_is_its_central_strip(tmp_path):
    """The reference knew only the central 192 mm of a scan from back to front; the mask of its result says so,
    the columns beyond were drawn by the model."""
    from fovcompletion.bundle import CanvasSpec
    from fovcompletion.bundle_factory import create_random_bundle

    canvas = CanvasSpec(shape=(48, 128), spacing_mm=(2.0, 2.0), padding_value=0.0, ap_policy="fixed")
    bundle = create_random_bundle(tmp_path / "wide", canvas=canvas, name="wide-fixed")  # 256 mm wide
    scan = synthetic_scan((3, 240, 40))  # 240 mm from front to back at 1 mm (AFFINE: axis 1 is A-P)
    options = SamplerOptions(method="reference", steps=2)
    result = complete(scan, AFFINE, model=bundle, slices=1, sampler=options, extend_inferior_mm=20)
    known = result.mask[0].astype(bool)  # the output keeps the input's axes: (A-P, S-I) here
    columns = np.flatnonzero(known.any(axis=1))
    assert (columns[0], columns[-1] + 1) == (24, 216)  # 240 // 2 - 96 and 192 further
    ddim = complete(scan, AFFINE, model=bundle, slices=1, steps=2, extend_inferior_mm=20)
    assert ddim.mask[0].astype(bool).any(axis=1).all()  # the DDIM sampler knows every column
