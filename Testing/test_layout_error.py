"""The trainer's layout error: the clean-latent estimate at the noisiest steps against the truth, which the
validation loss hardly registers there."""

from __future__ import annotations

import pytest
import torch

from fovcompletion.bundle import SchedulerSpec
from fovcompletion.sampling import alphas_cumprod
from fovcompletion.training.config import TrainConfig
from fovcompletion.training.diffusion import LAYOUT_LEVELS, ValidationSet, layout_error
from fovcompletion.training.objective import training_target


class FixedEstimate(torch.nn.Module):
    """A stand-in UNet whose prediction, in the target of `kind`, implies a given clean estimate: `scale` x the
    truth, plus `known_offset` on the cells the input marks as known. It checks the input it receives."""

    def __init__(self, truth, scale, known_offset, kind, alphas, conditioned) -> None:
        super().__init__()
        self.truth, self.scale, self.known_offset = truth, scale, known_offset
        self.kind, self.alphas, self.conditioned = kind, alphas, conditioned
        self.timesteps: set[int] = set()
        self.known_cells = 0
        self.seen = 0  # windows so far: the trainer hands them over in order, batch by batch, once per level

    def forward(self, model_input: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        channels = self.truth.shape[1]
        assert model_input.shape[1] == (2 * channels + 1 if self.conditioned else channels)
        mask = model_input[:, -1:] if self.conditioned else torch.zeros_like(model_input[:, :1])
        self.known_cells += int(mask.sum())
        self.timesteps.update(int(t) for t in timesteps)
        first = self.seen % len(self.truth)
        self.seen += len(model_input)
        truth = self.truth[first : first + len(model_input)]
        estimate = self.scale * truth + self.known_offset * mask
        noisy = model_input[:, :channels]
        a = self.alphas[timesteps].view(-1, 1, 1, 1)
        noise = (noisy - a.sqrt() * estimate) / (1 - a).sqrt()  # the noise that makes the estimate exact
        return training_target(estimate, noise, timesteps, self.alphas, self.kind)


@pytest.mark.parametrize("conditioning", ["masked_latent", "none"])
@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_layout_error_is_the_estimates_relative_distance(kind, conditioning):
    config = TrainConfig()
    config.diffusion.scheduler = {**config.diffusion.scheduler, "prediction_type": kind}
    config.diffusion.conditioning = conditioning
    config.diffusion.batch_size = 4  # two batches of the six windows
    alphas = alphas_cumprod(SchedulerSpec(**config.diffusion.scheduler)).float()
    torch.manual_seed(0)
    latents = torch.randn(6, 4, 16, 12)
    inside = torch.ones(6, 16, 12, dtype=torch.bool)
    inside[:, 12:] = False  # padding past the scan's end never counts
    latents[:, :, 12:] = 100.0
    inside_only = latents.clone()
    inside_only[:, :, 12:] = 0.0
    conditioned = conditioning != "none"

    def error(truth, scale=1.0, known_offset=0.0) -> tuple[float, FixedEstimate]:
        unet = FixedEstimate(truth, scale, known_offset, kind, alphas, conditioned)
        windows = ValidationSet(latents, inside, 1.0, alphas, torch.device("cpu"), config)
        return layout_error(unet, windows), unet

    assert error(latents)[0] == pytest.approx(0.0, abs=1e-3)
    assert error(inside_only)[0] == pytest.approx(0.0, abs=1e-3)
    assert error(latents, scale=0.5)[0] == pytest.approx(0.5, abs=1e-3)
    assert error(latents, scale=0.0)[0] == pytest.approx(1.0, abs=1e-3)
    # wrong only where the context is known: those cells are not generated, so they do not count
    value, unet = error(latents, known_offset=10.0)
    assert value == pytest.approx(0.0, abs=1e-3)
    assert unet.timesteps == {int(level * len(alphas)) for level in LAYOUT_LEVELS}
    assert (unet.known_cells > 0) == conditioned
