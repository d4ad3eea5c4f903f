"""The completion engine: a partial sagittal scan in, a geometry-exact completed volume out.

Data flow: volume -> model orientation, model spacing, chosen slices, normalised -> canvas layout ->
for each sample and window: autoencoder encode, latent inpainting, decode, feathered seam (with `candidates` K,
the inpainting K times and the candidate whose canal lasts furthest kept) -> back to the scan's
own in-plane grid over the extended field of view, clipped to the input's intensity range, known pixels
pasted back exactly -> input axis order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .arguments import MAX_SEED, is_finite_number, is_whole_number
from .bundle import METADATA_FILE, Bundle, BundleMetadata, load_bundle, read_metadata
from .candidates import best_candidate, canal_score
from .device import autocast_dtype, is_out_of_memory, resolve_device
from .errors import BundleError, InputError, OutOfMemoryError
from .estimate import estimate_run
from .geometry import axcodes_of, reorient, sample_at
from .image_io import (
    Volume,
    check_output_path,
    read_volume,
    same_file,
    validate_volume,
    write_all_or_none,
    write_volume,
)
from .latent_codec import decode, encode
from .layout import CanvasLayout, check_extension, crossfade_rows, plan_layout
from .memory import advice as memory_advice
from .memory import check_memory
from .preprocess import PreparedSlab, check_slice_choice, prepare_slab
from .progress import ProgressCallback, ProgressTracker
from .regions import visible_range
from .registry import resolve_bundle
from .sampling import (
    CancelCheck,
    LatentInpainter,
    SamplerOptions,
    count_model_evaluations,
    latent_mask,
    nearest_latent_mask,
)
from .schedule import DEFAULT_CANDIDATES, guide_alone_share, guide_batch_size, unet_batch_size
from .seam import blend_seam, crossfade_weights
from .window_brightness import EASE_MM, JOIN_BAND_MM, WindowRows, match_brightness_at_joins

DEFAULT_FEATHER_MM = 16.0
DEFAULT_WINDOW_OVERLAP_MM = 32.0
# Live preview: receives the current estimate of the completed volume (output geometry, scanner units) every few
# steps and returns what the progress events report for it (the file it was written to), or None.
PreviewCallback = Callable[[Volume], Optional[str]]  # evaluated at import: no `X | Y` (Python 3.9)


@dataclass
class CompletionResult:
    """The completed volume in the input's axis order and world space.

    `image` holds the chosen slices over the extended field of view at the input's in-plane spacing (the
    mean when several samples were drawn), `mask` is 1 where the input was known, `spread` the per-voxel
    standard deviation across samples (None for one sample).
    """

    image: np.ndarray
    affine: np.ndarray
    mask: np.ndarray
    spread: np.ndarray | None
    model: str
    device: str
    samples: int
    nfe: int
    seconds: float
    slice_indices: np.ndarray

    @property
    def volume(self) -> Volume:
        return Volume(self.image, self.affine)


@lru_cache(maxsize=4)
def _cached_bundle(path: str, device: str, stamp: tuple) -> Bundle:
    return load_bundle(path, device)


def get_bundle(model: str | os.PathLike | Bundle | None, device: torch.device) -> Bundle:
    """A loaded bundle: an object as is, else by path or name (verified once, then cached while neither its
    metadata nor any weight file changes: a replaced or corrupted file is verified again)."""
    if isinstance(model, Bundle):
        return model.to(device)
    folder = resolve_bundle(str(model) if model else None)
    metadata = read_metadata(folder)  # a clear BundleError for anything that is not a bundle folder
    files = [METADATA_FILE] + sorted(weight.file for weight in metadata.weights.values())
    try:
        stamp = tuple(_file_stamp(folder / name) for name in files)
    except OSError:  # a missing weight file: loading says which, in one line
        stamp = ()
    return _cached_bundle(str(folder.resolve()), str(device), stamp)


def _file_stamp(path: Path) -> tuple[int, int, int]:
    status = path.stat()
    return status.st_mtime_ns, status.st_size, status.st_ino


def _mosaic(slab: PreparedSlab, layout: CanvasLayout, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """The scan on the full mosaic (all rows any window touches) and its known mask."""
    n_slices = slab.model.shape[0]
    image = np.full((n_slices, layout.height, layout.width), padding, dtype=np.float32)
    known = np.zeros(image.shape, dtype=bool)
    row0 = -layout.top
    rows = slice(max(row0, 0), min(row0 + layout.n_rows, layout.height))
    source_rows = slice(rows.start - row0, rows.stop - row0)
    col0 = layout.col_offset
    first, last = layout.known_cols or (0, layout.n_cols)  # the reference's central strip, or every column
    cols = slice(max(col0 + first, 0), min(col0 + last, layout.width))
    source_cols = slice(cols.start - col0, cols.stop - col0)
    image[:, rows, cols] = slab.model[:, source_rows, source_cols]
    known[:, rows, cols] = True
    return image, known


class _Completer:
    """One run's state: the networks, the sampler and the progress over every window and sample."""

    def __init__(
        self,
        bundle: Bundle,
        device: torch.device,
        options: SamplerOptions,
        seed: int,
        tracker: ProgressTracker,
        should_cancel: CancelCheck | None,
        on_preview: Callable[[np.ndarray], str | None] | None = None,
        preview_every: int = 0,
    ) -> None:
        self.bundle = bundle
        self.device = device
        self.options = options
        self.tracker = tracker
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._samples_drawn = 0
        self.on_preview = on_preview
        # (mosaic, rows of the window being sampled, its known pixels, keep, feather) while a window is sampled
        self._canvas: tuple | None = None
        self._details: dict[str, str] = {}  # reported with the next progress event
        metadata = bundle.metadata
        self.inpainter = LatentInpainter(
            bundle.unet,
            metadata.scheduler,
            self.generator,
            on_step=lambda done, total: tracker.advance("sampling", **self._take_details()),
            should_cancel=should_cancel,
            autocast_dtype=autocast_dtype(device),
            conditioning=metadata.conditioning,
            on_estimate=self._preview if on_preview is not None else None,
            estimate_every=preview_every,
            guide=bundle.guide,
            guide_scale=metadata.guide_scale,
        )

    def _take_details(self) -> dict[str, str]:
        details, self._details = self._details, {}
        return details

    def _decode(self, latent: torch.Tensor) -> np.ndarray:
        """Scaled latents -> decoded slices (slice by slice: the autoencoder's full-resolution maps dominate memory)."""
        scale = self.bundle.metadata.latent_scale_factor
        autoencoder = self.bundle.autoencoder
        with torch.no_grad():
            decoded = torch.cat([decode(autoencoder, z[None] / scale) for z in latent])
        return decoded[:, 0].float().cpu().numpy()

    def _place(
        self, window: np.ndarray, known: np.ndarray, keep: np.ndarray, decoded: np.ndarray, feather_px: float
    ) -> np.ndarray:
        """A decoded window on what the window's rows held: known pixels of rows kept whole (`keep` 1) stay and
        the seam into the new ones is feathered, rows made again (0 < keep < 1) are cross-faded; the reference
        keeps the decoded canvas as is, known part included."""
        if self.options.method == "reference":
            return decoded
        placed = blend_seam(decoded, window, known & (keep >= 1.0)[None, :, None], feather_px)
        # The earlier content's share of a row made again (0 in rows kept, whose known pixels `placed` holds).
        fade = np.where(keep < 1.0, keep, 0.0)[None, :, None]
        return (fade * window + (1.0 - fade) * placed).astype(np.float32)

    def _preview(self, estimate: torch.Tensor) -> None:
        """The clean estimate of the window being sampled, decoded and placed on a copy of the mosaic."""
        image, rows, known, keep, feather_px = self._canvas
        mosaic = image.copy()
        mosaic[:, rows] = self._place(image[:, rows], known, keep, self._decode(estimate), feather_px)
        reported = self.on_preview(mosaic)
        if reported:
            self._details = {"preview": reported}

    def window(self, pixels: np.ndarray, given: np.ndarray) -> np.ndarray:
        """Complete one canvas window once (slices as one batch) from its pixels and known pixels; returns the
        decoded window."""
        metadata = self.bundle.metadata
        with torch.no_grad():
            images = torch.from_numpy(pixels[:, None]).to(self.device)
            mask = torch.from_numpy(given[:, None].astype(np.float32)).to(self.device)
            # The autoencoder works slice by slice: its full-resolution maps dominate memory, the UNet batches.
            autoencoder = self.bundle.autoencoder
            latent = torch.cat([encode(autoencoder, p[None], metadata.latent_quantized) for p in images])
            if self.options.method == "reference":
                cells = nearest_latent_mask(mask, tuple(latent.shape[-2:]))
            else:
                cells = latent_mask(mask, metadata.latent_factor, self.options.mask_erosion)
            sampled = self.inpainter.run(latent * metadata.latent_scale_factor, cells, self.options)
        return self._decode(sampled)

    def _candidate_seed(self, sample: int, window: int, candidate: int) -> int:
        """The noise of candidate 2, 3... of a window: its own stream, so that candidate 1 and everything after
        the window draw exactly what a run without candidates draws (the first candidate is that run's)."""
        return int(np.random.SeedSequence([self.seed, sample, window, candidate]).generate_state(1)[0])

    def _best_window(
        self,
        pixels: np.ndarray,
        known: np.ndarray,
        keep: np.ndarray,
        feather_px: float,
        where: tuple[int, int],
        scan_scale: tuple[float, float],
        requested: np.ndarray,
    ) -> np.ndarray:
        """Complete one canvas window (slices as one batch) `options.candidates` times and place each; keep the
        candidate whose canal, on the scan's intensity scale, lasts furthest past the seam
        (`candidates.canal_score`; the first of equals), and report the choice as a progress event of its own.
        `where` is (sample, window) of the run, for the candidates' seeds; `requested` marks the window's rows
        that the output keeps (one contiguous run): a canvas taller than the extension makes rows beyond it,
        which are cut off and must not decide the choice."""
        count = self.options.candidates
        given = known & (keep >= 1.0)[None, :, None]
        made = [self._place(pixels, known, keep, self.window(pixels, given), feather_px)]
        if count == 1:
            return made[0]
        state = (
            self.generator.get_state()
        )  # the run's stream goes on after candidate 1, as without candidates
        for candidate in range(1, count):
            self.generator.manual_seed(self._candidate_seed(*where, candidate))
            made.append(self._place(pixels, known, keep, self.window(pixels, given), feather_px))
        self.generator.set_state(state)
        spacing = tuple(float(mm) for mm in self.bundle.metadata.canvas.spacing_mm)
        given_rows = given.any(axis=(0, 2))[requested]
        scores = [canal_score(candidate[:, requested], given_rows, spacing, scan_scale) for candidate in made]
        kept = best_candidate(scores)
        lasts = (
            f"its canal lasts {scores[kept].reach_mm:.0f} mm past the seam"
            if scores[kept].reach_mm > 0
            else "no candidate's canal lasts past the seam: kept the brightest"
        )
        self.tracker.emit(
            "candidates",
            f"kept candidate {kept + 1} of {count}: {lasts}",
            kept=kept + 1,
            canal_mm=[round(score.reach_mm, 1) for score in scores],
            canal_ridge=[round(score.ridge, 4) for score in scores],
        )
        return made[kept]

    def sample(
        self,
        slab: PreparedSlab,
        layout: CanvasLayout,
        feather_px: float,
        overlap_px: int,
        match_brightness: bool,
    ) -> np.ndarray:
        """One completed mosaic (model grid, normalised), windows in order, each conditioned on all before and
        cross-faded over `overlap_px` rows into what the windows before it made; with `match_brightness`, the
        rows before each join then brought to the later window's brightness (`window_brightness`)."""
        number, self._samples_drawn = self._samples_drawn, self._samples_drawn + 1  # seeds its candidates
        metadata = self.bundle.metadata
        image, known = _mosaic(slab, layout, metadata.canvas.padding_value)
        scan_rows = known.any(axis=(0, 2))
        scan_scale = visible_range(image, scan_rows)
        scan_row = np.arange(layout.height) + layout.top  # each mosaic row's row on the scan's model grid
        requested = (scan_row >= -layout.above) & (scan_row < layout.n_rows + layout.below)
        filled = scan_rows.copy()
        windows: list[WindowRows] = []
        for index, start in enumerate(layout.window_starts):
            rows = slice(start - layout.top, start - layout.top + layout.window_height)
            keep = crossfade_weights(filled[rows], ~scan_rows[rows], overlap_px)
            windows.append(WindowRows(rows, keep, ~scan_rows[rows]))
            self._canvas = (image, rows, known[:, rows], keep, feather_px)
            image[:, rows] = self._best_window(
                image[:, rows], known[:, rows], keep, feather_px, (number, index), scan_scale, requested[rows]
            )
            known[:, rows] = True
            filled[rows] = True
        self._canvas = None
        if match_brightness:
            band_rows, ease_rows = (
                max(1, round(mm / metadata.canvas.spacing_mm[0])) for mm in (JOIN_BAND_MM, EASE_MM)
            )
            match_brightness_at_joins(image, windows, slab.scaling.zero_level(), band_rows, ease_rows)
        return image


REFERENCE_HAS_NONE = "the reference sampler runs the original algorithm, which has none: use the ddim sampler"


def _refuse_what_the_reference_lacks(options: SamplerOptions) -> None:
    """DDIM's settings asked of the reference algorithm would be ignored without a word: refused instead (the
    slice noise correlation, which has a default, is documented as DDIM's and left alone)."""
    asked = [
        f"{name} {value:g}"
        for name, value, default in (
            ("eta", options.eta, None),
            ("resample", options.resample, 1),
            ("jump length", options.jump_length, 1),
            ("mask erosion", options.mask_erosion, 0),
        )
        if value != default
    ]
    if asked:
        raise InputError(f"{', '.join(asked)} cannot be used: {REFERENCE_HAS_NONE}")


def _resolve_autoguidance(options: SamplerOptions, metadata: BundleMetadata) -> SamplerOptions:
    """The caller's autoguidance weight and `guide_alone_from`, else the bundle's guide's (0 and never without a
    guide or for the reference sampler); asking for either where there is no guide is an error, not a silent
    no-op (with a guide, `guide_alone_from` changes nothing under autoguidance 0 or guidance 1 or below, as
    `schedule.step_guidance` says)."""
    available = bool(metadata.guide) and options.method != "reference"
    reason = REFERENCE_HAS_NONE if options.method == "reference" else f"{metadata.name} has no guide UNet"
    never = metadata.scheduler.num_train_timesteps
    if options.guide_alone_from is None:
        options = replace(options, guide_alone_from=metadata.guide_alone_from if available else never)
    elif options.guide_alone_from < never and not available:
        raise InputError(f"guide alone from {options.guide_alone_from} cannot be used: {reason}")
    if options.autoguidance is None:
        return replace(options, autoguidance=metadata.autoguidance if available else 0.0)
    if options.autoguidance > 0 and not available:
        raise InputError(f"autoguidance {options.autoguidance:g} cannot be used: {reason}")
    return options


def resolve_sampler(options: SamplerOptions, metadata: BundleMetadata) -> SamplerOptions:
    """The caller's steps, candidates, guidance, autoguidance, guide_alone_from and eta, else the bundle's (the
    settings its model was measured best with), validated; the reference algorithm runs as the original, one draw
    over every training timestep unless told otherwise (the bundle's settings are its DDIM sampler's), and it and
    unconditional UNets have no guidance, which only an explicit request makes an error."""
    if options.method == "reference":
        _refuse_what_the_reference_lacks(options)
        steps = metadata.scheduler.num_train_timesteps if options.steps is None else options.steps
        candidates = DEFAULT_CANDIDATES if options.candidates is None else options.candidates
    else:
        steps, candidates = metadata.sampler_counts(options.steps, options.candidates)
    eta = metadata.eta if options.eta is None else options.eta
    options = replace(options, steps=steps, candidates=candidates, eta=eta)
    options.validate(metadata.scheduler.num_train_timesteps)
    options = _resolve_autoguidance(options, metadata)
    guidance = metadata.guidance if options.guidance is None else options.guidance
    if guidance == 1.0:
        return replace(options, guidance=guidance)
    if options.method == "reference":
        refusal = REFERENCE_HAS_NONE
    elif metadata.conditioning == "none":
        refusal = f"the UNet of {metadata.name} does not see the known region"
    else:
        return replace(options, guidance=guidance)
    if options.guidance is not None:
        raise InputError(f"guidance {guidance:g} cannot be used: {refusal}")
    return replace(options, guidance=1.0)


def native_grid(slab: PreparedSlab, layout: CanvasLayout, extend_mm: tuple[float, float]) -> tuple:
    """Rows/cols of the output on the scan's own in-plane grid, and where they fall on the mosaic."""
    spacing = slab.native_spacing
    above = int(np.ceil(extend_mm[0] / spacing[1] - 1e-6))
    below = int(np.ceil(extend_mm[1] / spacing[1] - 1e-6))
    n_rows, n_cols = slab.native.shape[1:]
    native_rows = np.arange(-above, n_rows + below)
    native_cols = np.arange(n_cols)
    step = np.diag(slab.model_to_native)[:3]
    offset = slab.model_to_native[:3, 3]
    mosaic_rows = (native_rows - offset[1]) / step[1] - layout.top
    mosaic_cols = (native_cols - offset[2]) / step[2] + layout.col_offset
    return above, native_rows, mosaic_rows, mosaic_cols


def complete(
    image: np.ndarray | Volume,
    affine: np.ndarray | None = None,
    *,
    model: str | os.PathLike | Bundle | None = None,
    slices: int | None = None,
    slice_range: tuple[int, int] | None = None,
    steps: int | None = None,
    extend_superior_mm: float = 0.0,
    extend_inferior_mm: float = 0.0,
    seed: int = 0,
    samples: int = 1,
    device: str = "auto",
    sampler: SamplerOptions | None = None,
    feather_mm: float = DEFAULT_FEATHER_MM,
    window_overlap_mm: float = DEFAULT_WINDOW_OVERLAP_MM,
    match_window_brightness: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    preview: PreviewCallback | None = None,
    preview_every: int = 0,
) -> CompletionResult:
    """Complete a partial sagittal scan given as an array + voxel-to-RAS affine (or a `Volume`).

    `slices`: count of central sagittal slices (default: the model's); `slice_range`: (start, stop) along the
    input's left-right axis instead. `steps`: denoising steps (default: the model's, as are `sampler`'s fields left
    at None). `cancel`: polled every step; raises `CancelledError`. `feather_mm`: how far beyond the scan the
    seam is feathered (on the generated side: the known voxels stay the input's); `window_overlap_mm`: how many
    millimetres of an earlier window's rows each later window makes again and cross-fades (0: none; at most half
    of a window's context); `match_window_brightness`: scale the rows before each window join to the brightness of
    the later window's first rows, the correction eased in over up to 128 mm of generated rows (never the scan's;
    the last window as drawn; `window_brightness`; False: the windows as the model drew them).
    `preview`: called every `preview_every` steps with the current estimate of the result (the decoded clean
    prediction over the known part, in the output's geometry; the windows as drawn, before their brightness is
    matched); what it returns is reported in the next progress event as `preview`. Raises `FOVCompletionError`
    subclasses with one-line messages for bad input.
    """
    started = time.perf_counter()
    if not isinstance(image, Volume) and affine is None:
        raise InputError("an array needs its voxel-to-RAS affine (a 4 x 4 matrix), or pass a Volume")
    volume = validate_volume(*((image.array, image.affine) if isinstance(image, Volume) else (image, affine)))
    check_slice_choice(slices, slice_range)
    if not is_whole_number(samples) or samples < 1:
        raise InputError(f"the number of samples must be a whole number of at least 1 (got {samples!r})")
    if not is_whole_number(seed) or not 0 <= seed < MAX_SEED:
        raise InputError(f"the seed must be a whole number from 0 to 2**64 - 1 (got {seed!r})")
    check_extension(extend_superior_mm, extend_inferior_mm)  # before the model loads: a typo fails at once
    if not is_whole_number(preview_every) or preview_every < 0:
        raise InputError(
            f"the preview interval must be 0 (off) or a whole number of steps (got {preview_every!r})"
        )
    for name, millimetres in (("feather", feather_mm), ("window overlap", window_overlap_mm)):
        if not (is_finite_number(millimetres) and millimetres >= 0):
            raise InputError(f"the {name} must be a number of millimetres >= 0 (got {millimetres!r})")
    options = sampler or SamplerOptions()
    if steps is not None:
        options = replace(options, steps=steps)
    options = options.in_python_numbers()
    samples, seed, preview_every = int(samples), int(seed), int(preview_every)
    torch_device = resolve_device(device)
    bundle = get_bundle(model, torch_device)
    metadata = bundle.metadata
    options = resolve_sampler(options, metadata)
    reference = options.method == "reference"
    slab = prepare_slab(volume, metadata, slices, slice_range, fit_reference_strip=reference)
    layout = plan_layout(
        metadata,
        slab.model.shape[1],
        slab.model.shape[2],
        extend_superior_mm,
        extend_inferior_mm,
        reference_placement=reference,
    )
    unet_batch = unet_batch_size(slab.model.shape[0], options.guidance)
    guided = unet_batch > slab.model.shape[0]
    guide_batch = guide_batch_size(slab.model.shape[0], options.autoguidance)
    check_memory(metadata, torch_device, unet_batch, layout.window_height, layout.width, guided, guide_batch)
    nfe_per_window = (
        count_model_evaluations(options, metadata.scheduler.num_train_timesteps) * options.candidates
    )
    tracker = ProgressTracker(samples * layout.windows * nfe_per_window, progress)
    share = guide_alone_share(options, metadata.scheduler.num_train_timesteps)
    estimate = estimate_run(
        metadata, layout, unet_batch, tracker.total, torch_device.type, guide_batch, share
    )
    tracker.emit(
        "start",
        f"{metadata.name}: {layout.windows} window(s)"
        + (f" x {options.candidates} candidates" if options.candidates > 1 else "")
        + f", {slab.model.shape[0]} slice(s), {samples} sample(s), {tracker.total} UNet steps on {torch_device}, "
        f"{estimate.describe()}",
        slices=int(slab.model.shape[0]),
        windows=layout.windows,
        samples=samples,
        candidates=options.candidates,
        device=str(torch_device),
        estimated_s=round(estimate.seconds, 1),
    )
    feather_px = feather_mm / metadata.canvas.spacing_mm[0]
    overlap_px = crossfade_rows(layout, window_overlap_mm, metadata.canvas.spacing_mm[0])
    above, native_rows, mosaic_rows, mosaic_cols = native_grid(
        slab, layout, (extend_superior_mm, extend_inferior_mm)
    )
    known_native = slab.normalised_native()
    known_rows = np.zeros(len(native_rows), dtype=bool)
    known_rows[above : above + slab.native.shape[1]] = True
    known_cols = np.ones(slab.native.shape[2], dtype=bool)
    if layout.known_cols is not None:  # the reference's central strip: the columns beyond it were drawn
        first, last = (layout.col_offset + c - 0.5 for c in layout.known_cols)
        known_cols = (mosaic_cols >= first) & (mosaic_cols < last)
    known_mask = known_rows[None, :, None] & known_cols[None, None, :]
    known_mask = np.broadcast_to(known_mask, (slab.native.shape[0], *known_mask.shape[1:]))
    input_range = (float(np.min(volume.array)), float(np.max(volume.array)))
    shift = np.eye(4)
    shift[1, 3] = -above
    out_affine = slab.native_affine @ shift
    codes = axcodes_of(volume.affine)

    def to_output(mosaic: np.ndarray) -> np.ndarray:
        """A completed mosaic (model grid, normalised) on the scan's own grid in scanner units, known rows exact."""
        generated = sample_at(mosaic, mosaic_rows, mosaic_cols)
        if not reference:
            placed = np.zeros_like(generated)
            placed[:, known_rows] = known_native
            generated = blend_seam(generated, placed, known_mask, feather_mm / float(slab.native_spacing[1]))
        # Never darker or brighter than anything in the input (MR magnitudes are never negative).
        values = np.clip(slab.to_scanner_units(generated, above), *input_range)
        if not reference:
            values[:, known_rows] = slab.native
        return values

    def show_estimate(mosaic: np.ndarray) -> str | None:
        estimate, estimate_affine = reorient(to_output(mosaic).astype(np.float32), out_affine, codes)
        return preview(Volume(estimate, estimate_affine))

    completer = _Completer(
        bundle,
        torch_device,
        options,
        seed,
        tracker,
        cancel,
        on_preview=show_estimate if preview is not None else None,
        preview_every=preview_every,
    )
    outputs = []
    try:
        for _ in range(samples):
            mosaic = completer.sample(slab, layout, feather_px, overlap_px, match_window_brightness)
            outputs.append(to_output(mosaic))
    except Exception as error:
        if is_out_of_memory(error):
            raise OutOfMemoryError(
                f"out of memory on {torch_device.type} completing {slab.model.shape[0]} slice(s): "
                f"{memory_advice(torch_device, guided)}"
            ) from None
        raise
    stack = np.stack(outputs)
    if not np.isfinite(stack).all():  # never written: a NaN completion looks like a result in a viewer
        raise BundleError(f"bundle {metadata.name!r} produced values that are not numbers (NaN or infinite)")
    mean = stack.mean(axis=0).astype(np.result_type(np.float32, slab.exact.dtype))
    spread = stack.std(axis=0).astype(np.float32) if samples > 1 else None
    if not reference:  # exact, not just to rounding: the known region is the input, at its own precision
        mean[:, known_rows] = slab.exact
        if spread is not None:
            spread[:, known_rows] = 0.0
    out_image, final_affine = reorient(mean, out_affine, codes)
    out_mask, _ = reorient(known_mask.astype(np.uint8), out_affine, codes)
    out_spread = reorient(spread, out_affine, codes)[0] if spread is not None else None
    return CompletionResult(
        image=out_image,
        affine=final_affine,
        mask=out_mask,
        spread=out_spread,
        model=metadata.name,
        device=str(torch_device),
        samples=samples,
        nfe=samples * layout.windows * nfe_per_window,
        seconds=time.perf_counter() - started,
        slice_indices=slab.slice_indices,
    )


def _write_live_preview(estimate: Volume, path: Path) -> str | None:
    """Write a live preview, or skip this one (None: no event names it) when the file cannot be replaced now.

    A preview is only for watching: on Windows a viewer that has the file open (Slicer reading the last one) makes
    the rename fail, and that must not end the run. Lasting failures (a folder not writable) are refused before
    the run starts (`check_output_path`)."""
    try:
        return str(write_volume(estimate, path))
    except OSError:
        return None


def complete_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    mask_path: str | os.PathLike | None = None,
    spread_path: str | os.PathLike | None = None,
    preview_path: str | os.PathLike | None = None,
    preview_volume_path: str | os.PathLike | None = None,
    preview_even_fade: bool = True,
    **options,
) -> CompletionResult:
    """Complete a NIfTI/NRRD file and write the results; nothing is written unless everything succeeded, and
    files an earlier run left at these paths stay as they were until then. Paths and settings that could
    never be written (a volume named .png, a spread map of one sample) are refused before the run.

    `preview_even_fade`: the PNG at `preview_path` with the input's coil fade divided out (`preview.montage`).

    With `preview_volume_path` and `preview_every` N > 0 the current estimate is written there every N steps (a
    live preview, replaced atomically, reported in the progress events) and removed when the run ends.
    """
    if spread_path is not None and options.get("samples", 1) < 2:
        raise InputError(
            "the spread map (--spread-output) is the spread of several samples: add --samples 2 or more"
        )
    if preview_volume_path is not None and options.get("preview_every", 0) <= 0:
        raise InputError(
            "the live preview (--preview-volume) is written every N steps: add --preview-every N"
        )
    live = preview_volume_path is not None
    volumes = [Path(p) for p in (output_path, mask_path, spread_path, preview_volume_path) if p is not None]
    targets = [check_output_path(target) for target in volumes]
    if preview_path is not None:
        targets.append(check_output_path(preview_path, (".png",)))
    for target in targets:
        if same_file(input_path, target):
            raise InputError(f"output {target} is the input file; choose another output path")
    if len({t.resolve() for t in targets}) < len(targets):
        raise InputError("the output, mask, spread and preview paths must all differ")
    volume = read_volume(input_path)
    previewed: list[str] = []  # a live preview written by this run (only that one is removed at the end)
    if live:

        def write_live(estimate: Volume) -> str | None:
            written = _write_live_preview(estimate, Path(preview_volume_path))
            if written:
                previewed.append(written)
            return written

        options["preview"] = write_live
    try:
        result = complete(volume, **options)
    finally:
        if previewed:  # the estimate is only for watching the run: the results replace it
            Path(preview_volume_path).unlink(missing_ok=True)
    writers = [(Path(output_path), lambda path: write_volume(result.volume, path))]
    if mask_path is not None:
        writers.append((Path(mask_path), lambda path: write_volume(Volume(result.mask, result.affine), path)))
    if spread_path is not None:
        writers.append(
            (Path(spread_path), lambda path: write_volume(Volume(result.spread, result.affine), path))
        )
    if preview_path is not None:
        from .preview import write_preview

        writers.append((Path(preview_path), lambda path: write_preview(result, path, preview_even_fade)))
    write_all_or_none(writers)
    return result
