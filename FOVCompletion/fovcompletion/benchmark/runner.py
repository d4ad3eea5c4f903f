"""Run every method on every case: complete the hidden rows, check the output lies on the truth's grid, measure.

One bundle is loaded once and shared; every method sees the same cases, slices and seeds, so differences come
from the methods alone. The ceiling rows (`grid`, `autoencoder`, `denoise`) come first: what the bundle's
representation and its UNet keep of the truth itself, the most any completion by it can reach.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..device import resolve_device
from ..errors import FOVCompletionError, InputError
from ..pipeline import CompletionResult, complete, get_bundle, resolve_sampler
from ..preprocess import select_slices
from ..sampling import SamplerOptions
from ..schedule import check_resampling, unet_batch_size
from .baselines import RetrievalBaseline, constant_fill, mirror_fill, noise_fill
from .cases import Case
from .ceiling import CEILINGS, DENOISE_LEVELS, ceiling_fill, denoise_name
from .levels import level_counts
from .metrics import NEAR_MM, hidden_ssim, quality
from .resources import describe_device, peak_rss_mb, reset_peak_rss, threads
from .seeds import draw_seed, draws_noise
from .timing import UNetTimer

BASELINES = ("constant", "mirror", "noise", "retrieval", "retrieval-oracle")
FAMILIES = (*CEILINGS, "ours", "resample", "reference", *BASELINES)
# What `--methods` leaves out unless named: the oracle asks the truth, a yardstick rather than a method.
DEFAULT_FAMILIES = tuple(family for family in FAMILIES if family != "retrieval-oracle")
LEARNED = ("ours", "resample", "reference")


@dataclass(frozen=True)
class Method:
    """One entry of the comparison; `name` is the key in results.json."""

    name: str
    family: str
    steps: int = 0
    resample: int = 1
    jump_length: int = 1
    slice_noise_correlation: float = SamplerOptions.slice_noise_correlation
    guidance: float | None = None  # None: the bundle's
    eta: float | None = None  # None: the bundle's
    candidates: int = 1
    mask_erosion: int = 0
    noise_level: int = 0  # the `denoise` ceiling's timestep
    autoguidance: float | None = None  # None: the bundle's
    guide_alone_from: int | None = None  # None: the bundle's

    @property
    def learned(self) -> bool:
        return self.family in LEARNED

    @property
    def ceiling(self) -> bool:
        return self.family in CEILINGS

    @property
    def sampled(self) -> bool:
        """The rows drawn from a seed several times per case when asked: our sampler's completions, the `denoise`
        ceiling, whose own sampler noise is part of what it measures, and the `noise` baseline, whose scores spread
        as widely from draw to draw (the reference's 1000 steps once)."""
        return self.family in ("ours", "resample", "denoise", "noise")

    @property
    def needs_bundle(self) -> bool:
        return self.learned or self.ceiling

    def sampler(self) -> SamplerOptions:
        if self.family == "reference":
            return SamplerOptions(method="reference", steps=self.steps, candidates=1)
        return SamplerOptions(
            method="ddim",
            steps=self.steps,
            resample=self.resample,
            jump_length=self.jump_length,
            slice_noise_correlation=self.slice_noise_correlation,
            guidance=self.guidance,
            eta=self.eta,
            candidates=self.candidates,
            mask_erosion=self.mask_erosion,
            autoguidance=self.autoguidance,
            guide_alone_from=self.guide_alone_from,
        )


def build_methods(
    families: set[str],
    steps: list[int],
    resamples: list[int],
    resample_steps: int,
    reference_steps: int,
    slice_noise_correlation: float = SamplerOptions.slice_noise_correlation,
    guidances: tuple[float | None, ...] = (None,),
    etas: tuple[float | None, ...] = (None,),
    jump_lengths: tuple[int, ...] = (1,),
    candidate_counts: tuple[int, ...] = (1,),
    mask_erosions: tuple[int, ...] = (0,),
    denoise_levels: tuple[int, ...] = DENOISE_LEVELS,
    autoguidances: tuple[float | None, ...] = (None,),
    guide_alone_froms: tuple[int | None, ...] = (None,),
) -> list[Method]:
    """The comparison, in the order tables and plots show it: the ceilings first (a `denoise` row per level in
    `denoise_levels`); our sampler's slices share `slice_noise_correlation` of their noise; each combination of
    `guidances`, DDIM `etas`, `candidate_counts`, `mask_erosions`, `autoguidances` and `guide_alone_froms` gives
    its own rows (None: the bundle's guidance, eta, autoguidance or guide-alone timestep, and no suffix in the row's
    name; 1 candidate or erosion 0, no suffix); each RePaint jump length its own resampling rows (1, RePaint's
    shortest, unnamed)."""
    unknown = families - set(FAMILIES)
    if unknown:
        raise InputError(
            f"unknown method(s) {', '.join(sorted(unknown))} (choose from {', '.join(FAMILIES)})"
        )
    if "resample" in families:  # refused before any case runs, as the engine would refuse each run
        for r, j in itertools.product(resamples, jump_lengths):
            check_resampling(resample_steps, r, j)
    if any(k < 1 for k in candidate_counts):
        raise InputError(f"candidates must be at least 1 (got {min(candidate_counts)})")
    if any(n < 0 for n in mask_erosions):
        raise InputError(f"mask erosion must be at least 0 (got {min(mask_erosions)})")
    if "denoise" in families and (not denoise_levels or min(denoise_levels) < 1):
        raise InputError(f"denoise levels must be timesteps of at least 1 (got {list(denoise_levels)})")
    methods: list[Method] = [Method(name, name) for name in ("grid", "autoencoder") if name in families]
    if "denoise" in families:
        methods += [Method(denoise_name(t), "denoise", noise_level=t) for t in denoise_levels]
    for guidance, eta, candidates, erosion, autoguidance, alone_from in itertools.product(
        guidances, etas, candidate_counts, mask_erosions, autoguidances, guide_alone_froms
    ):
        tag = (
            ("" if guidance is None else f"-guidance{guidance:g}")
            + ("" if autoguidance is None else f"-autoguidance{autoguidance:g}")
            + ("" if alone_from is None else f"-guidealone{alone_from}")
            + ("" if eta is None else f"-eta{eta:g}")
            + ("" if candidates == 1 else f"-best{candidates}")
            + ("" if erosion == 0 else f"-erosion{erosion}")
        )
        sampling = {
            "slice_noise_correlation": slice_noise_correlation,
            "guidance": guidance,
            "eta": eta,
            "candidates": candidates,
            "mask_erosion": erosion,
            "autoguidance": autoguidance,
            "guide_alone_from": alone_from,
        }
        if "ours" in families:
            methods += [Method(f"ours-steps{n}{tag}", "ours", n, 1, **sampling) for n in steps]
        if "resample" in families:
            methods += [
                Method(
                    f"ours-steps{resample_steps}-resample{r}{'' if j == 1 else f'-jump{j}'}{tag}",
                    "resample",
                    resample_steps,
                    resample=r,
                    jump_length=j,
                    **sampling,
                )
                for r in resamples
                if r > 1
                for j in jump_lengths
            ]
    if "reference" in families:
        methods.append(Method("reference", "reference", reference_steps))
    methods += [Method(name, name) for name in BASELINES if name in families]
    return methods


@dataclass
class Outcome:
    """One method on one case."""

    case: str
    source: str
    method: str
    metrics: dict[str, float] = field(default_factory=dict)
    nfe: int = 0
    seconds: float = 0.0
    unet_seconds: float = 0.0
    unet_batch: int = 0  # images per UNet call: the slices, twice under guidance
    peak_rss_mb: float = 0.0
    levels: dict[str, float] | None = None
    skipped: str | None = None
    draw: int = 0  # which of our sampler's draws on this case (`Settings.repeats`)
    seed: int | None = None  # the sampler's seed of this completion (None: a method that draws no noise)


@dataclass
class Example:
    """The mid-sagittal slice of one case, truth and every method, for examples.png."""

    case: str
    truth: np.ndarray
    known_rows: np.ndarray
    spacing: tuple[float, float]
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Settings:
    model: str | None = None
    device: str = "auto"
    seed: int = 0
    slices: int | None = None
    reference_cases: int | None = None  # None: every case
    examples: int = 3
    near_mm: float = NEAR_MM
    repeats: int = 1  # draws of our sampler's rows per case, each with a seed of its own


@dataclass
class BenchmarkRun:
    model: str
    device: str
    threads: int
    methods: list[Method]
    outcomes: list[Outcome]
    examples: list[Example]
    case_names: list[str]


def on_truth_grid(result: CompletionResult, case: Case, start: int, stop: int) -> None:
    """The completion must lie voxel for voxel on the truth's chosen slices (checked from the affines)."""
    index = np.linalg.inv(case.affine) @ result.affine
    expected = np.eye(4)
    expected[0, 3] = start
    shape = (stop - start, *case.truth.shape[1:])
    if not np.allclose(index, expected, atol=1e-3) or result.image.shape != shape:
        raise RuntimeError(
            f"{case.name}: completion output is not on the truth grid (output {result.image.shape}, truth slab "
            f"{shape}, truth-index-from-output map offset {np.round(index[:3, 3], 3).tolist()})"
        )


def ssim_with(truth: np.ndarray, known_rows: np.ndarray) -> Callable[[np.ndarray, slice], float]:
    """A fill's SSIM with the truth over some of its hidden rows: how the `retrieval-oracle` row chooses."""

    def score(filled: np.ndarray, rows: slice) -> float:
        return hidden_ssim(filled, truth, known_rows, rows)

    return score


def method_draws(methods: list[Method], repeats: int) -> list[tuple[Method, int]]:
    """(method, draw) in the order a case runs them: `repeats` draws of our sampler's rows, one of the rest."""
    return [(method, draw) for method in methods for draw in range(repeats if method.sampled else 1)]


def run_learned(
    method: Method, case: Case, bundle, settings: Settings, count: int, seed: int
) -> CompletionResult:
    above_mm, below_mm = case.extension_mm
    return complete(
        case.partial(),
        model=bundle,
        slices=count,
        extend_superior_mm=above_mm,
        extend_inferior_mm=below_mm,
        seed=seed,
        device=settings.device,
        sampler=method.sampler(),
    )


def warm_up(case: Case, bundle, settings: Settings, count: int) -> None:
    """One untimed one-step completion, so the first timed method does not pay for lazy initialisation."""
    above_mm, below_mm = case.extension_mm
    complete(
        case.partial(),
        model=bundle,
        slices=min(count, case.truth.shape[0]),
        steps=1,
        extend_superior_mm=above_mm,
        extend_inferior_mm=below_mm,
        device=settings.device,
    )


def run_benchmark(
    cases: list[Case],
    methods: list[Method],
    settings: Settings,
    retrieval: dict[str, RetrievalBaseline],
    log: Callable[[str], None] = print,
) -> BenchmarkRun:
    """Every method on every case (the reference on `settings.reference_cases` cases it fits on)."""
    device = resolve_device(settings.device)
    needs_model = any(m.needs_bundle for m in methods)
    bundle = get_bundle(settings.model, device) if needs_model else None
    count = settings.slices or (bundle.metadata.default_slices if bundle else 5)
    if bundle is not None and cases:
        warm_up(cases[0], bundle, settings, count)
    outcomes: list[Outcome] = []
    examples: list[Example] = []
    reference_done = 0
    for number, case in enumerate(cases):
        start, stop = select_slices(case.truth.shape[0], min(count, case.truth.shape[0]))
        truth = case.truth[start:stop]
        spacing_si, spacing_ap = float(case.spacing[1]), float(case.spacing[2])
        visible = truth[:, case.known_rows]
        given = case.truth[:, case.known_rows]  # what every method is given: all slices of the visible rows
        input_range = (float(given.min()), float(given.max()))
        above, below = case.hidden_rows
        mid = truth.shape[0] // 2
        example = (
            Example(case.name, truth[mid], case.known_rows, (spacing_si, spacing_ap))
            if number < settings.examples
            else None
        )
        for method, draw in method_draws(methods, settings.repeats):
            outcome = Outcome(case.name, case.source, method.name, unet_batch=truth.shape[0], draw=draw)
            if (
                method.family == "reference"
                and settings.reference_cases is not None
                and reference_done >= settings.reference_cases
            ):
                continue
            reset_peak_rss()
            try:
                if method.learned:
                    outcome.seed = draw_seed(settings.seed, number, draw)
                    with UNetTimer(bundle.unet) as timer:
                        result = run_learned(
                            method,
                            case,
                            bundle,
                            settings,
                            truth.shape[0],
                            outcome.seed,
                        )
                    on_truth_grid(result, case, start, stop)
                    pred = result.image
                    outcome.nfe, outcome.seconds, outcome.unet_seconds = (
                        result.nfe,
                        result.seconds,
                        timer.seconds,
                    )
                    guidance = resolve_sampler(method.sampler(), bundle.metadata).guidance
                    outcome.unet_batch = unet_batch_size(truth.shape[0], guidance)
                else:
                    started = time.perf_counter()
                    if method.ceiling:
                        seed = draw_seed(settings.seed, number, draw)
                        outcome.seed = seed if draws_noise(method.family) else None  # the denoise rows
                        pred = ceiling_fill(
                            method.family, case, bundle, truth.shape[0], method.noise_level, seed
                        )
                    elif method.family == "constant":
                        pred = constant_fill(visible, above, below)
                    elif method.family == "mirror":
                        pred = mirror_fill(visible, above, below)
                    elif method.family == "noise":  # seeded as our sampler's draw of the case
                        outcome.seed = draw_seed(settings.seed, number, draw)
                        pred = noise_fill(visible, above, below, (spacing_si, spacing_ap), outcome.seed)
                    elif case.source not in retrieval:
                        raise InputError(f"no retrieval library for {case.source} cases")
                    elif method.family == "retrieval-oracle":  # the truth chooses: a reference, no method
                        pred = retrieval[case.source].closest(
                            visible,
                            above,
                            below,
                            (spacing_si, spacing_ap),
                            case.subject,
                            ssim_with(truth, case.known_rows),
                        )
                    else:
                        pred = retrieval[case.source].fill(
                            visible, above, below, (spacing_si, spacing_ap), case.region, case.subject
                        )
                    outcome.seconds = time.perf_counter() - started
            except FOVCompletionError as error:
                outcome.skipped = str(error)
                log(f"  {case.name} {method.name}: skipped ({error})")
                outcomes.append(outcome)
                continue
            outcome.peak_rss_mb = peak_rss_mb()
            outcome.metrics = quality(
                pred,
                truth,
                case.known_rows,
                spacing_si,
                settings.near_mm,
                spacing_ap_mm=spacing_ap,
                input_range=input_range,
                canal_cols=case.centerline_cols,
            )
            if case.labels is not None:
                outcome.levels = level_counts(case, pred[mid], start + mid, input_range)
            if method.family == "reference":
                reference_done += 1
            if example is not None and draw == 0:
                example.predictions[method.name] = np.asarray(pred[mid], dtype=np.float32)
            outcomes.append(outcome)
            found = outcome.metrics
            label = f"{method.name} draw {draw}" if draw else method.name
            log(
                f"  {case.name} {label}: SSIM {found['ssim']:.3f} tissue {found['ssim_tissue']:.3f} "
                f"sharpness {found['sharpness']:.2f} MAE {found['mae']:.4f} seam {found['seam']:.2f} "
                f"NFE {outcome.nfe} {outcome.seconds:.1f} s"
            )
        if example is not None:
            examples.append(example)
    return BenchmarkRun(
        model=bundle.metadata.name if bundle else "none",
        device=describe_device(device),
        threads=threads(),
        methods=methods,
        outcomes=outcomes,
        examples=examples,
        case_names=[c.name for c in cases],
    )
