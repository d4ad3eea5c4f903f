"""Sampling schedules and options: which timesteps a run visits and how many UNet evaluations it costs.

Torch-free, so that run-time estimates (the Slicer panel, `fovcompletion models`) need no deep-learning import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .arguments import is_number, is_whole_number
from .errors import InputError

METHODS = ("ddim", "reference")
NOISE_SCHEDULES = ("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine")  # MONAI's NoiseSchedules
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")  # what a UNet may have been trained to predict
DEFAULT_STEPS = 50  # for a bundle that names no steps
DEFAULT_CANDIDATES = 1


# The numeric options: field, None allowed (the bundle's setting decides), a whole number (else any number).
NUMBER_FIELDS = (
    ("steps", True, True),
    ("candidates", True, True),
    ("resample", False, True),
    ("jump_length", False, True),
    ("mask_erosion", False, True),
    ("eta", True, False),
    ("guidance", True, False),
    ("autoguidance", True, False),
    ("guide_alone_from", True, True),
    ("slice_noise_correlation", False, False),
)


@dataclass(frozen=True)
class SamplerOptions:
    """How to sample. `resample` > 1 repeats every `jump_length` steps (RePaint); NFE grows accordingly.

    `slice_noise_correlation` r couples the noise of the slices sampled together (adjacent sagittal slices):
    each slice's noise is sqrt(r) x one shared draw + sqrt(1 - r) x its own, still unit Gaussian, so every slice
    alone is an ordinary sample while neighbours start, and stay, alike (DDIM only: the reference sampler keeps
    the original's independent noise). The default 0.9 was measured: on the
    held-out scans it brought the completions' slice consistency from 0.4-0.5 to 0.99-1.00 (the truth's own),
    while SSIM, tissue SSIM, sharpness and seam brightness moved only within the spread of seeds.

    `guidance` w is classifier-free guidance for a conditioned UNet: each step runs it with and without the
    known region (the UNet learned both: a tenth of its training windows have no context) and extrapolates,
    eps = eps_without + w (eps_with - eps_without), so that the completion follows the context more than a
    small model on its own does. 1 = off (one UNet pass per step); None = the bundle's setting.

    `autoguidance` w_a adds w_a (eps_with - eps_guide) at every step, where eps_guide is the bundle's guide UNet (a
    smaller, shorter-trained model on the same task) reading the same input: the completion moves away from what a
    weaker model would draw, towards the detail and structure the UNet is surer of (Karras et al. 2024, "Guiding a
    diffusion model with a bad version of itself"). 0 = off; None = the bundle's setting (0 without a guide).

    `guide_alone_from` T: under autoguidance, the steps at timesteps t >= T (the noisiest, where the layout is
    drawn) take their whole guidance from the guide, at the layout's scale: no run without the context, and the
    classifier-free share moved onto the guide, eps = eps_with + (w - 1 + w_a) G(eps_with - eps_guide), G a
    Gaussian low-pass of one latent pixel (only where w > 1 and w_a > 0). Unfiltered, the guide's pixel-scale
    disagreement at that weight speckled dark regions. The low-pass reaches a few latent pixels across the seam,
    where the known cells are pasted back after the step. Measured on v0.9.0's networks from T = 500: held-out SSIM
    within its spread, a little softer, in 0.89 of the time (docs/training.md, "Guidance from the UNet itself").
    None = the bundle's setting; T >= the model's training timesteps (1000): never.

    `eta` is DDIM's share of fresh noise at each step: 0 = deterministic steps, 1 = as much as DDPM; None = the
    bundle's setting (the engine resolves it; a sampler given None steps deterministically).

    `candidates` K > 1 completes every window K times and keeps the candidate whose bright canal lasts furthest
    past the seam (`candidates.canal_score`; no truth needed), at K times the UNet passes. 1 = one draw.

    `steps` and `candidates` None = the bundle's settings, like guidance and eta: a bundle records the ones its
    model was measured best with (`pipeline.resolve_sampler` fills them in before the sampler runs)."""

    method: str = "ddim"
    steps: int | None = None
    eta: float | None = None
    resample: int = 1
    jump_length: int = 1
    mask_erosion: int = 0
    slice_noise_correlation: float = 0.9
    guidance: float | None = None
    candidates: int | None = None
    autoguidance: float | None = None
    guide_alone_from: int | None = None

    def check_types(self) -> None:
        """Counts whole numbers and weights numbers, before their ranges are checked (None only where the bundle
        decides: steps, candidates, eta, guidance, autoguidance, guide_alone_from): the API takes what the command
        line's parser would refuse."""
        for field, optional, whole in NUMBER_FIELDS:
            value = getattr(self, field)
            if not ((is_whole_number if whole else is_number)(value) or (optional and value is None)):
                kind = "a whole number" if whole else "a number"
                raise InputError(f"{field.replace('_', ' ')} must be {kind} (got {value!r})")

    def in_python_numbers(self) -> SamplerOptions:
        """The options checked (`check_types`) and as Python ints and floats: a caller's numpy scalars would
        otherwise reach the results (a count of UNet passes that `json` cannot write)."""
        self.check_types()
        plain = {}
        for field, _, whole in NUMBER_FIELDS:
            value = getattr(self, field)
            plain[field] = None if value is None else (int if whole else float)(value)
        return replace(self, **plain)

    def validate(self, num_train_timesteps: int) -> None:
        self.check_types()
        if self.method not in METHODS:
            raise InputError(f"unknown sampler {self.method!r} (choose from {', '.join(METHODS)})")
        if self.steps is None or self.candidates is None:
            raise InputError("steps and candidates are not set: resolve them with pipeline.resolve_sampler")
        if not 1 <= self.steps <= num_train_timesteps:
            raise InputError(f"steps must be between 1 and {num_train_timesteps} (got {self.steps})")
        if self.resample < 1 or self.jump_length < 1 or self.mask_erosion < 0:
            raise InputError("resample and jump length must be at least 1, mask erosion at least 0")
        check_resampling(self.steps, self.resample, self.jump_length)
        if self.candidates < 1:
            raise InputError(f"candidates must be at least 1 (got {self.candidates})")
        if self.eta is not None and not (math.isfinite(self.eta) and self.eta >= 0):
            raise InputError(f"eta must be a number >= 0 (got {self.eta})")
        for name in ("guidance", "autoguidance"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise InputError(f"{name} must be a number >= 0 (got {value})")
        if self.guide_alone_from is not None and self.guide_alone_from < 0:
            raise InputError(f"guide alone from must be a timestep >= 0 (got {self.guide_alone_from})")
        if not 0.0 <= self.slice_noise_correlation <= 1.0:
            raise InputError(
                f"slice noise correlation must be between 0 and 1 (got {self.slice_noise_correlation})"
            )


def ddim_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """Evenly spaced timesteps from T-1 down to 0, followed by -1 (the clean sample)."""
    grid = np.unique(np.round(np.linspace(num_train_timesteps - 1, 0, steps)).astype(int))[::-1]
    return [int(t) for t in grid] + [-1]


def check_resampling(steps: int, resample: int, jump_length: int) -> None:
    """Refuse RePaint asked for where it cannot happen: it goes back only after every `jump_length` steps before
    the last (`repaint_transitions`), and a jump as long as the run has none, which would run plain steps."""
    if resample > 1 and jump_length >= steps:
        raise InputError(
            f"jump length {jump_length} resamples nothing in {steps} steps: choose one below the number of steps"
        )


def repaint_transitions(n_steps: int, resample: int, jump_length: int) -> list[tuple[int, int]]:
    """(from, to) index pairs over the timestep list: down is a model step, up re-noises (RePaint schedule)."""
    jumps = {index: resample - 1 for index in range(jump_length, n_steps, jump_length)}
    transitions, index = [], 0
    while index < n_steps:
        transitions.append((index, index + 1))
        index += 1
        if jumps.get(index, 0) > 0:
            jumps[index] -= 1
            for _ in range(jump_length):
                transitions.append((index, index - 1))
                index -= 1
    return transitions


def count_model_evaluations(options: SamplerOptions, num_train_timesteps: int) -> int:
    """UNet evaluations (NFE) of one inpainting with these options (a window completes `candidates` of them)."""
    if options.steps is None:
        raise InputError("the number of steps is not set: resolve the options with pipeline.resolve_sampler")
    if options.method == "reference":
        return options.steps
    n_steps = len(ddim_timesteps(num_train_timesteps, options.steps)) - 1
    return len(forward_transitions(options, n_steps))


def forward_transitions(options: SamplerOptions, n_steps: int) -> list[tuple[int, int]]:
    """The (from, to) index pairs of a DDIM run's UNet steps over its `n_steps`-step grid, RePaint's repeats
    included (its re-noising jumps, which call no UNet, left out)."""
    return [(a, b) for a, b in repaint_transitions(n_steps, options.resample, options.jump_length) if b > a]


def guide_acts_alone(guidance: float, autoguidance: float, alone_from: int | None, t: int) -> bool:
    """Whether the step at timestep t takes all its guidance from the guide (`SamplerOptions.guide_alone_from`):
    from `alone_from` up, under autoguidance and classifier-free guidance above 1."""
    return alone_from is not None and autoguidance > 0 and guidance > 1.0 and t >= alone_from


def step_guidance(
    guidance: float, autoguidance: float, alone_from: int | None, t: int
) -> tuple[float, float]:
    """The classifier-free and autoguidance weights of the step at timestep t: where the guide acts alone
    (`guide_acts_alone`), the classifier-free share moves onto the guide; otherwise the run's own weights."""
    if guide_acts_alone(guidance, autoguidance, alone_from, t):
        return 1.0, guidance - 1.0 + autoguidance
    return guidance, autoguidance


def guide_alone_share(options: SamplerOptions, num_train_timesteps: int) -> float:
    """The share of a DDIM run's UNet steps (RePaint's repeats counted) that take all their guidance from the guide
    and so run the UNet on the slices once, not twice (`guide_acts_alone`). Pass resolved options
    (`pipeline.resolve_sampler`)."""
    if options.method == "reference" or options.steps is None or options.guidance is None:
        return 0.0
    timesteps = ddim_timesteps(num_train_timesteps, options.steps)
    forward = [timesteps[a] for a, b in forward_transitions(options, len(timesteps) - 1)]
    weights = (options.guidance, options.autoguidance or 0.0)
    alone = sum(1 for t in forward if guide_acts_alone(*weights, options.guide_alone_from, t))
    return alone / len(forward)


def unet_batch_size(slices: int, guidance: float | None) -> int:
    """Inputs per UNet call: guidance runs every slice twice, with the known region and without it. Pass the
    resolved guidance (`pipeline.resolve_sampler`): None counts as none here, not as the bundle's."""
    return slices * (1 if guidance in (None, 1.0) else 2)


def guide_batch_size(slices: int, autoguidance: float | None) -> int:
    """Inputs per call of the autoguidance guide: every slice once, with its context; 0 when autoguidance is off.
    Pass the resolved weight (`pipeline.resolve_sampler`): None counts as off here, not as the bundle's."""
    return slices if autoguidance is not None and autoguidance > 0 else 0
