"""Latent inpainting samplers: DDIM with known-region blending and optional RePaint resampling, and the
reference implementation's algorithm (DDPM, known latent noised to level t) kept for comparison."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .bundle import SchedulerSpec
from .conditioning import conditioned_input
from .errors import CancelledError, InputError
from .latent_filter import gaussian_low_pass
from .schedule import (
    SamplerOptions,
    count_model_evaluations,
    ddim_timesteps,
    guide_acts_alone,
    repaint_transitions,
    step_guidance,
)

__all__ = [
    "CancelCheck",
    "LatentInpainter",
    "SamplerOptions",
    "count_model_evaluations",
    "latent_mask",
    "nearest_latent_mask",
]

# The guide-alone steps' push away from the guide is kept above this scale only (a Gaussian of this many latent
# pixels): the layout is decided there, while the guide's pixel-scale disagreement, at twice the usual weight,
# speckles dark regions (docs/training.md, "Guidance from the UNet itself").
GUIDE_ALONE_SIGMA = 1.0

StepCallback = Callable[[int, int], None]
CancelCheck = Callable[[], bool]
# Receives the current estimate of the clean latent: the prediction of x0 for the unknown cells, the known latent
# for the known ones (what the sample would become if the remaining steps changed nothing).
EstimateCallback = Callable[[torch.Tensor], None]


def alphas_cumprod(spec: SchedulerSpec) -> torch.Tensor:
    """The cumulative signal fraction of the bundle's schedule, taken from MONAI's own scheduler."""
    from monai.networks.schedulers import DDPMScheduler

    scheduler = DDPMScheduler(
        num_train_timesteps=spec.num_train_timesteps,
        schedule=spec.schedule,
        beta_start=spec.beta_start,
        beta_end=spec.beta_end,
        prediction_type=spec.prediction_type,
    )
    return scheduler.alphas_cumprod.to(torch.float64)


def nearest_latent_mask(pixel_mask: torch.Tensor, latent_shape: tuple[int, int]) -> torch.Tensor:
    """The reference implementation's mask: nearest-neighbour downsampling, cells straddling the seam included."""
    return F.interpolate(pixel_mask, size=latent_shape, mode="nearest")


def latent_mask(pixel_mask: torch.Tensor, factor: int, erosion: int = 0) -> torch.Tensor:
    """A latent cell is known only when all its pixels are known; `erosion` shrinks it further."""
    mask = -F.max_pool2d(-pixel_mask, kernel_size=factor, stride=factor)
    for _ in range(erosion):
        mask = -F.max_pool2d(-mask, kernel_size=3, stride=1, padding=1)
    return mask


def clean_latent(
    prediction: torch.Tensor, noisy: torch.Tensor, alpha: float | torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """The clean latent that a UNet output of `prediction_type` implies for a sample noised to the cumulative
    alpha `alpha` (a number, or a tensor that broadcasts): the sampler's x0, and the trainer's layout check."""
    if prediction_type == "epsilon":
        return (noisy - (1 - alpha) ** 0.5 * prediction) / alpha**0.5
    if prediction_type == "v_prediction":
        return alpha**0.5 * noisy - (1 - alpha) ** 0.5 * prediction
    if prediction_type == "sample":
        return prediction
    raise InputError(f"unsupported prediction type {prediction_type!r}")


class LatentInpainter:
    """Runs one inpainting of a batch of latents; noise comes from one seeded CPU generator.

    With `conditioning="masked_latent"` the UNet also receives the known latent and the mask (see
    `conditioning`); the known region is imposed after every step either way. With `estimate_every` N > 0,
    `on_estimate` gets the current clean estimate after every N-th step (not after the last: the result follows)."""

    def __init__(
        self,
        unet: torch.nn.Module,
        schedule: SchedulerSpec,
        generator: torch.Generator,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
        autocast_dtype: torch.dtype | None = None,
        conditioning: str = "none",
        on_estimate: EstimateCallback | None = None,
        estimate_every: int = 0,
        guide: torch.nn.Module | None = None,
        guide_scale: float = 1.0,
    ) -> None:
        self.unet = unet
        self.guide = guide  # the autoguidance UNet, which reads latents `guide_scale` times the UNet's
        self.guide_scale = float(guide_scale)
        self.on_estimate = on_estimate
        self.estimate_every = int(estimate_every)
        self.conditioning = conditioning
        self.schedule = schedule
        self.alphas = alphas_cumprod(schedule)
        self.generator = generator
        self.on_step = on_step or (lambda done, total: None)
        self.should_cancel = should_cancel or (lambda: False)
        self.autocast_dtype = autocast_dtype
        self.slice_noise_correlation = 0.0  # set per run from its options
        self.guidance = 1.0  # likewise
        self.autoguidance = 0.0  # likewise
        self.guide_alone_from: int | None = None  # likewise; None: never (`step_guidance`)

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        """Unit Gaussian noise shaped like the batch (the slices), correlated across it as the run asks."""
        noise = torch.randn(like.shape, generator=self.generator, dtype=torch.float32)
        r = self.slice_noise_correlation
        if r > 0 and like.shape[0] > 1:
            shared = torch.randn((1, *like.shape[1:]), generator=self.generator, dtype=torch.float32)
            noise = r**0.5 * shared + (1 - r) ** 0.5 * noise
        return noise.to(like.device)

    def _alpha(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alphas[t])

    def _eps_and_x0(
        self, z: torch.Tensor, t: int, known: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.should_cancel():
            raise CancelledError("cancelled by the user; nothing was written")
        timesteps = torch.full((z.shape[0],), t, device=z.device, dtype=torch.long)
        autocast = (
            torch.autocast(device_type=z.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        model_input = z if self.conditioning == "none" else conditioned_input(z, known, mask)
        guidance, autoguidance = step_guidance(self.guidance, self.autoguidance, self.guide_alone_from, t)
        alone = guide_acts_alone(self.guidance, self.autoguidance, self.guide_alone_from, t)
        with torch.no_grad(), autocast:
            if guidance == 1.0:
                with_context = output = self.unet(model_input, timesteps).float()
            else:  # one batch: with the context and without it
                without_context = conditioned_input(z, known, torch.zeros_like(mask))
                both = self.unet(torch.cat([model_input, without_context]), torch.cat([timesteps, timesteps]))
                with_context, without = both.float().chunk(2)
                output = without + guidance * (with_context - without)
            if autoguidance > 0:  # away from the weaker guide's reading of the same input
                push = with_context - self._guide_eps(z, t, known, mask)
                if alone:  # the layout's scale only: at this weight the pixel-scale disagreement speckles
                    push = gaussian_low_pass(push, GUIDE_ALONE_SIGMA)
                output = output + autoguidance * push
        a_t = self._alpha(t)
        kind = self.schedule.prediction_type
        x0 = clean_latent(output, z, a_t, kind)
        if kind == "epsilon":
            eps = output
        elif kind == "v_prediction":
            eps = (1 - a_t) ** 0.5 * z + a_t**0.5 * output
        else:  # "sample"
            eps = (z - a_t**0.5 * x0) / (1 - a_t) ** 0.5
        return eps, x0

    def _guide_eps(self, z: torch.Tensor, t: int, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The guide's noise prediction for the sample z at step t. The guide learned latents r = `guide_scale`
        times the UNet's: to it, z is the sample of r x the clean latent at the timestep of the same signal-to-noise
        ratio, a' / (1 - a') = a / (r^2 (1 - a)), scaled by sqrt(a' / a) r, and its noise is z's own."""
        r, a = self.guide_scale, self._alpha(t)
        a_guide = a / (a + r * r * (1 - a))
        t_guide = int(torch.argmin((self.alphas - a_guide).abs()))
        noisy = z * (r * (a_guide / a) ** 0.5)
        guide_input = noisy if self.conditioning == "none" else conditioned_input(noisy, known * r, mask)
        timesteps = torch.full((z.shape[0],), t_guide, device=z.device, dtype=torch.long)
        return self.guide(guide_input, timesteps).float()

    def _estimate(
        self, done: int, total: int, known: torch.Tensor, mask: torch.Tensor, x0: torch.Tensor
    ) -> None:
        """Hand the clean estimate to `on_estimate` every `estimate_every` steps (never after the last one)."""
        if (
            self.on_estimate is None
            or self.estimate_every <= 0
            or done % self.estimate_every
            or done >= total
        ):
            return
        self.on_estimate(mask * known + (1 - mask) * x0)

    def _noised_known(self, known: torch.Tensor, t: int) -> torch.Tensor:
        a = self._alpha(t)
        return known if t < 0 else a**0.5 * known + (1 - a) ** 0.5 * self._noise(known)

    def ddim(
        self,
        known: torch.Tensor,
        mask: torch.Tensor,
        options: SamplerOptions,
        start: tuple[torch.Tensor, int] | None = None,
    ) -> torch.Tensor:
        """DDIM from pure noise; after each step the known latent, noised to the produced level, is blended in.

        `start` = (a clean latent, a timestep t): begin instead from that latent noised to t and take the grid's
        steps below t (SDEdit). Given the truth's own latent, what comes back is what the UNet keeps of an anatomy
        whose layout is given, the benchmark's `denoise` ceiling."""
        timesteps = ddim_timesteps(self.schedule.num_train_timesteps, options.steps)
        if start is None:
            z = self._noise(known)
        else:
            latent, level = start
            if not 0 < level < self.schedule.num_train_timesteps:
                raise InputError(
                    f"a start level must lie in 1..{self.schedule.num_train_timesteps - 1} (got {level})"
                )
            timesteps = [level] + [t for t in timesteps if t < level]
            z = self._noised_known(mask * known + (1 - mask) * latent, level)
        transitions = repaint_transitions(len(timesteps) - 1, options.resample, options.jump_length)
        total = sum(1 for a, b in transitions if b > a)
        done = 0
        eta = options.eta or 0.0  # None (no bundle's setting resolved): deterministic
        for source, target in transitions:
            t, t_next = timesteps[source], timesteps[target]
            if target < source:  # RePaint: go back up one step by re-noising
                ratio = self._alpha(t_next) / self._alpha(t)
                z = ratio**0.5 * z + (1 - ratio) ** 0.5 * self._noise(z)
                continue
            eps, x0 = self._eps_and_x0(z, t, known, mask)
            a_t, a_next = self._alpha(t), self._alpha(t_next)
            sigma = eta * ((1 - a_next) / (1 - a_t) * (1 - a_t / a_next)) ** 0.5 if t_next >= 0 else 0.0
            z = a_next**0.5 * x0 + max(1 - a_next - sigma**2, 0.0) ** 0.5 * eps
            if sigma > 0:
                z = z + sigma * self._noise(z)
            z = mask * self._noised_known(known, t_next) + (1 - mask) * z
            done += 1
            self._estimate(done, total, known, mask, x0)
            self.on_step(done, total)
        return z

    def reference(self, known: torch.Tensor, mask: torch.Tensor, options: SamplerOptions) -> torch.Tensor:
        """The reference algorithm: ancestral DDPM over `steps` (1000 in the original) with MONAI's default
        x0 clipping to [-1, 1]; after each step the known latent, noised to level t (one level noisier than the
        sample just produced), replaces the known area: with the initial noise after the first step, then with
        noise drawn afresh after each step's own, as the reference's inferer does."""
        n = self.schedule.num_train_timesteps
        timesteps = list(range(n - 1, -1, -max(1, n // options.steps)))[: options.steps]
        known_noise = self._noise(known)
        z = known_noise
        for done, t in enumerate(timesteps, start=1):
            t_prev = timesteps[done] if done < len(timesteps) else -1
            _, x0 = self._eps_and_x0(z, t, known, mask)
            x0 = x0.clamp(-1.0, 1.0)
            a_t, a_prev = self._alpha(t), self._alpha(t_prev)
            beta = 1 - a_t / a_prev
            mean = (a_prev**0.5 * beta / (1 - a_t)) * x0 + ((1 - beta) ** 0.5 * (1 - a_prev) / (1 - a_t)) * z
            variance = beta * (1 - a_prev) / (1 - a_t)
            z = mean + (variance**0.5 * self._noise(z) if t_prev >= 0 else 0.0)
            a_known = self._alpha(t)
            z = mask * (a_known**0.5 * known + (1 - a_known) ** 0.5 * known_noise) + (1 - mask) * z
            known_noise = self._noise(known)
            self._estimate(done, len(timesteps), known, mask, x0)
            self.on_step(done, len(timesteps))
        return z

    def run(
        self,
        known: torch.Tensor,
        mask: torch.Tensor,
        options: SamplerOptions,
        start: tuple[torch.Tensor, int] | None = None,
    ) -> torch.Tensor:
        """Inpaint the unknown cells of `known` (`mask` 1 where known); `start` as in `ddim`."""
        if options.steps is None:
            raise InputError(
                "the number of steps is not set: resolve the options with pipeline.resolve_sampler"
            )
        # The reference algorithm is kept as the original ran it: every slice draws its own noise.
        reference = options.method == "reference"
        self.slice_noise_correlation = 0.0 if reference else options.slice_noise_correlation
        self.guidance = 1.0 if reference or options.guidance is None else options.guidance
        if self.guidance != 1.0 and self.conditioning == "none":
            raise InputError("guidance needs a UNet that sees the known region; this one is unconditional")
        self.autoguidance = 0.0 if reference or options.autoguidance is None else options.autoguidance
        if self.autoguidance > 0 and self.guide is None:
            raise InputError("autoguidance needs a guide UNet")
        self.guide_alone_from = None if reference else options.guide_alone_from
        if reference:
            if start is not None:
                raise InputError("the reference sampler starts from pure noise only: use the ddim sampler")
            return self.reference(known, mask, options)
        return self.ddim(known, mask, options, start)
