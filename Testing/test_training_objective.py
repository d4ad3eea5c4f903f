"""The UNet's training target matches what the sampler reads back, for every prediction type, and min-SNR
weighting caps the low-noise timesteps only."""

from __future__ import annotations

import pytest
import torch

from fovcompletion.bundle import SchedulerSpec
from fovcompletion.sampling import LatentInpainter, alphas_cumprod
from fovcompletion.training.config import preset_config
from fovcompletion.training.diffusion import masked_mse
from fovcompletion.training.objective import (
    PREDICTION_TYPES,
    add_noise,
    min_snr_weights,
    training_target,
)


class PerfectPredictor(torch.nn.Module):
    """Returns the exact training target for one known (latent, noise) pair: what a perfect UNet would."""

    def __init__(self, latents, noise, alphas, kind):
        super().__init__()
        self.latents, self.noise, self.alphas, self.kind = latents, noise, alphas, kind

    def forward(self, model_input, timesteps):
        return training_target(self.latents, self.noise, timesteps, self.alphas, self.kind)


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_sampler_recovers_the_clean_latent_from_the_training_target(kind):
    spec = SchedulerSpec(prediction_type=kind)
    alphas = alphas_cumprod(spec).float()
    latents, noise = torch.randn(2, 4, 6, 5), torch.randn(2, 4, 6, 5)
    inpainter = LatentInpainter(PerfectPredictor(latents, noise, alphas, kind), spec, torch.Generator())
    mask = torch.zeros(2, 1, 6, 5)
    for t in (3, 400, 999):
        noisy = add_noise(latents, noise, torch.full((2,), t), alphas)
        eps, x0 = inpainter._eps_and_x0(noisy, t, latents, mask)
        assert torch.allclose(x0, latents, atol=1e-3), (kind, t)
        assert torch.allclose(eps, noise, atol=1e-3), (kind, t)


def test_unknown_prediction_type_is_refused():
    alphas = alphas_cumprod(SchedulerSpec()).float()
    with pytest.raises(ValueError, match="prediction type"):
        training_target(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.tensor([0]), alphas, "x")


def test_min_snr_caps_only_the_low_noise_timesteps():
    alphas = alphas_cumprod(SchedulerSpec()).float()
    timesteps = torch.arange(0, 1000, 10)
    snr = alphas[timesteps] / (1 - alphas[timesteps])
    weights = min_snr_weights(timesteps, alphas, 5.0, "epsilon")
    assert torch.all(weights <= 1.0 + 1e-6)
    assert torch.allclose(weights[snr <= 5.0], torch.ones_like(weights[snr <= 5.0]))
    assert weights[0] < 0.05  # t = 0 is almost noise-free: its easy correction barely counts
    assert min_snr_weights(timesteps, alphas, None, "epsilon") is None
    v_weights = min_snr_weights(timesteps, alphas, 5.0, "v_prediction")
    assert torch.allclose(v_weights, (snr.clamp(max=5.0) / (snr + 1)).float())


def test_sample_weights_scale_the_masked_loss():
    prediction, target = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    inside = torch.ones(2, 4, 4)
    assert masked_mse(prediction, target, inside) == pytest.approx(1.0)
    assert masked_mse(prediction, target, inside, torch.tensor([1.0, 0.0])) == pytest.approx(0.5)
    assert masked_mse(prediction, target, None, torch.tensor([0.0, 0.0])) == 0


def test_presets_choose_their_weighting():
    assert preset_config("default").diffusion.snr_gamma == 5.0
    assert preset_config("reference").diffusion.snr_gamma is None
