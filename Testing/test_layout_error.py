"""The trainer's layout error: the clean-latent estimate at the noisiest steps against the truth, which the
validation loss hardly registers there."""

from __future__ import annotations

import pytest
import torch

from fovcompletion.bundle import SchedulerSpec
from fovcompletion.sampling import alphas_cumprod
from fovcompletion.schedule import PREDICTION_TYPES
from fovcompletion.training.config import TrainConfig
from fovcompletion.training.diffusion import layout_error
from fovcompletion.training.objective import add_noise, clean_estimate, training_target


class FixedEstimate(torch.nn.Module):
    """A stand-in UNet whose prediction, in the target of `kind`, implies the given clean estimate."""

    def __init__(self, estimate: torch.Tensor, kind: str, alphas: torch.Tensor) -> None:
        super().__init__()
        self.estimate, self.kind, self.alphas = estimate, kind, alphas

    def forward(self, model_input: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        noisy = model_input[:, : self.estimate.shape[1]]
        a = self.alphas[timesteps].view(-1, 1, 1, 1)
        noise = (noisy - a.sqrt() * self.estimate) / (1 - a).sqrt()  # the noise that makes the estimate exact
        return training_target(self.estimate, noise, timesteps, self.alphas, self.kind)


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_clean_estimate_inverts_the_target(kind):
    alphas = alphas_cumprod(SchedulerSpec()).float()
    latents, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    timesteps = torch.tensor([10, 500, 990])
    noisy = add_noise(latents, noise, timesteps, alphas)
    target = training_target(latents, noise, timesteps, alphas, kind)
    assert torch.allclose(clean_estimate(target, noisy, timesteps, alphas, kind), latents, atol=1e-3)


@pytest.mark.parametrize("conditioning", ["masked_latent", "none"])
@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_layout_error_is_the_estimates_relative_distance(kind, conditioning):
    config = TrainConfig()
    config.diffusion.scheduler = {**config.diffusion.scheduler, "prediction_type": kind}
    config.diffusion.conditioning = conditioning
    alphas = alphas_cumprod(SchedulerSpec(**config.diffusion.scheduler)).float()
    torch.manual_seed(0)
    latents = torch.randn(6, 4, 16, 12)
    inside = torch.ones(6, 16, 12, dtype=torch.bool)
    inside[:, 12:] = False  # padding past the scan's end never counts
    latents[:, :, 12:] = 100.0
    inside_only = latents.clone()
    inside_only[:, :, 12:] = 0.0

    def error(estimate: torch.Tensor) -> float:
        unet = FixedEstimate(estimate, kind, alphas)
        return layout_error(unet, latents, inside, alphas, torch.device("cpu"), config)

    assert error(latents) == pytest.approx(0.0, abs=1e-3)
    assert error(inside_only) == pytest.approx(0.0, abs=1e-3)
    assert error(0.5 * latents) == pytest.approx(0.5, abs=1e-3)
    assert error(torch.zeros_like(latents)) == pytest.approx(1.0, abs=1e-3)
