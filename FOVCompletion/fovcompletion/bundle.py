"""Model bundles: a folder with `bundle.json` (everything needed to use the weights) and weight files.

Weights are safetensors (or `torch.load(weights_only=True)` files) and never unpickle code; every weight
file's sha256 is in the metadata and is checked on load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import string
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .arguments import is_finite_number, is_whole_number
from .conditioning import CONDITIONING_MODES, unet_input_channels
from .errors import BundleError, first_line
from .latent_codec import (
    codebook_free,
    latent_channels,
    latent_downsample_factor,
    residual_channels,
    uses_codebook,
)
from .networks import decoder_args, unet_size_multiple
from .schedule import DEFAULT_CANDIDATES, DEFAULT_STEPS

if TYPE_CHECKING:  # torch is imported only when weights are loaded, so listing bundles stays light
    import torch

METADATA_FILE = "bundle.json"
FORMAT = "fovcompletion-bundle"
# 2: an autoencoder entry may say "codebook": false, which version 1 readers would ignore; 3: it may give its
# decoder widths of their own ("decoder"), which version 2 readers could not load weights for; 4: a residual
# encoder that adds latent channels ("residual", `residual_latent`); 5: a guide UNet for autoguidance ("guide"),
# which version 4 readers would ignore.
FORMAT_VERSION = 5
ORIENTATION = "LIA"  # axis 0 left-right, axis 1 superior->inferior, axis 2 posterior->anterior


@dataclass(frozen=True)
class SchedulerSpec:
    """The noise schedule the UNet was trained with; samplers rebuild MONAI schedulers from it."""

    num_train_timesteps: int = 1000
    schedule: str = "scaled_linear_beta"
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    prediction_type: str = "epsilon"


@dataclass(frozen=True)
class IntensitySpec:
    """Per-volume normalisation: percentile `lower`..`upper` of the scan maps to `out_min`..`out_max`.

    `flatten_sigma_mm` > 0 first divides out the scan's slow superior-inferior gain (receive-coil falloff),
    estimated at that Gaussian width (`intensity.row_gain`); 0 keeps the scan's own profile.
    """

    lower_percentile: float = 0.0
    upper_percentile: float = 95.0
    out_min: float = -1.0
    out_max: float = 1.0
    clip: bool = True
    flatten_sigma_mm: float = 0.0


@dataclass(frozen=True)
class CanvasSpec:
    """The model's input window: `shape` = (superior-inferior, anterior-posterior) pixels at `spacing_mm`.

    `ap_policy` "fit" widens the canvas to the scan's A-P extent (networks are fully convolutional);
    "fixed" centre-crops/pads to the trained width, as the reference implementation did.
    """

    shape: tuple[int, int] = (1280, 512)
    spacing_mm: tuple[float, float] = (1.0, 1.0)
    padding_value: float = -1.0
    ap_policy: str = "fit"
    context_fraction: float = 0.5


@dataclass(frozen=True)
class WeightFile:
    file: str
    sha256: str


def _oldest_format(autoencoder: dict[str, Any], guide: dict[str, Any]) -> int:
    """The oldest format version that reads the bundle right, so that older readers keep loading what they can."""
    if guide:
        return 5
    if residual_channels(autoencoder):
        return 4
    if autoencoder.get("decoder"):
        return 3
    return 2 if codebook_free(autoencoder) else 1


@dataclass(frozen=True)
class BundleMetadata:
    """Everything needed to use a bundle's weights, as stored in `bundle.json`."""

    name: str
    autoencoder: dict[str, Any]
    diffusion: dict[str, Any]
    latent_scale_factor: float
    weights: dict[str, WeightFile]
    latent_quantized: bool = (
        True  # the UNet saw VQ-quantised latents (ours) or raw encoder output (reference)
    )
    conditioning: str = "none"  # what the UNet sees of the known region (see `conditioning`)
    guidance: float = 1.0  # classifier-free guidance the sampler uses unless told otherwise (1: none)
    eta: float = 0.0  # DDIM eta the sampler uses unless told otherwise (0: deterministic steps)
    steps: int = DEFAULT_STEPS  # denoising steps the sampler uses unless told otherwise
    candidates: int = DEFAULT_CANDIDATES  # completions per window, the best canal kept, unless told otherwise
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    canvas: CanvasSpec = field(default_factory=CanvasSpec)
    intensity: IntensitySpec = field(default_factory=IntensitySpec)
    orientation: str = ORIENTATION
    default_slices: int = 5
    version: str = "0.0.0"
    description: str = ""
    licence: str = "unspecified"
    training: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, Any] = field(default_factory=dict)
    # Autoguidance (`sampling`): a smaller, shorter-trained UNet on the same latents and conditioning, {"class",
    # "args", "latent_scale_factor" (its own training's), "weight" (the sampler's default), optionally "alone_from"
    # (the sampler's default `guide_alone_from`; absent: never)}; {} = none.
    guide: dict[str, Any] = field(default_factory=dict)

    def sampler_counts(self, steps: int | None, candidates: int | None) -> tuple[int, int]:
        """The caller's steps and candidates where given, else the ones this model was measured best with."""
        return (self.steps if steps is None else steps, self.candidates if candidates is None else candidates)

    @property
    def autoguidance(self) -> float:
        """The sampler's default autoguidance weight: the guide's, 0 for a bundle without a guide."""
        return float(self.guide["weight"]) if self.guide else 0.0

    @property
    def guide_alone_from(self) -> int:
        """The sampler's default `guide_alone_from`: the guide's, else the training timesteps' count (never)."""
        never = self.scheduler.num_train_timesteps
        return int(self.guide.get("alone_from", never)) if self.guide else never

    @property
    def guide_scale(self) -> float:
        """How many times larger the guide UNet reads a latent than the UNet does (each learned its own scale)."""
        return self.guide["latent_scale_factor"] / self.latent_scale_factor if self.guide else 1.0

    @property
    def latent_factor(self) -> int:
        return latent_downsample_factor(self.autoencoder)

    @property
    def size_multiple(self) -> int:
        """Canvas sizes in pixels must be multiples of this (autoencoder stride x UNet depth)."""
        return self.latent_factor * unet_size_multiple(self.diffusion["args"])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.guide:
            del data["guide"]  # a bundle without a guide reads as before in older versions
        return {"format": FORMAT, "format_version": _oldest_format(self.autoencoder, self.guide), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleMetadata:
        """Any malformed content is one BundleError (a listing skips that bundle and goes on)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise BundleError(f"not a FOVCompletion bundle: {METADATA_FILE} has format {found!r}")
        try:
            if int(data.get("format_version", 0)) > FORMAT_VERSION:
                raise BundleError(
                    f"bundle format version {data['format_version']} is newer than this FOVCompletion supports "
                    f"({FORMAT_VERSION}): update fovcompletion"
                )
            canvas = dict(data.get("canvas", {}))
            for key in ("shape", "spacing_mm"):
                if key in canvas:
                    canvas[key] = tuple(canvas[key])
            metadata = cls(
                name=str(data["name"]),
                autoencoder=dict(data["autoencoder"]),
                diffusion=dict(data["diffusion"]),
                latent_scale_factor=float(data["latent_scale_factor"]),
                latent_quantized=bool(data.get("latent_quantized", True)),
                conditioning=str(data.get("conditioning", "none")),
                guidance=float(data.get("guidance", 1.0)),
                eta=float(data.get("eta", 0.0)),
                steps=int(data.get("steps", DEFAULT_STEPS)),
                candidates=int(data.get("candidates", DEFAULT_CANDIDATES)),
                weights={role: WeightFile(**spec) for role, spec in data["weights"].items()},
                scheduler=SchedulerSpec(**data.get("scheduler", {})),
                canvas=CanvasSpec(**canvas),
                intensity=IntensitySpec(**data.get("intensity", {})),
                orientation=str(data.get("orientation", ORIENTATION)),
                default_slices=int(data.get("default_slices", 5)),
                version=str(data.get("version", "0.0.0")),
                description=str(data.get("description", "")),
                licence=str(data.get("licence", "unspecified")),
                training=dict(data.get("training", {})),
                quality=dict(data.get("quality", {})),
                speed=dict(data.get("speed", {})),
                guide=dict(data.get("guide", {})),
            )
            metadata.validate()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError) as error:
            raise BundleError(f"{METADATA_FILE} is incomplete or malformed: {error!r}") from None
        return metadata

    def validate(self) -> None:
        """Refuse settings the networks cannot process or the window planner cannot move along (bundle.json is
        not hashed: a hand-edited value must fail here, in one line, not mid-run or as NaN in the output)."""
        for role, weight in self.weights.items():
            if not (isinstance(weight.file, str) and weight.file and Path(weight.file).name == weight.file):
                raise BundleError(
                    f"bundle {self.name!r}: the {role} weight file must be a file name in the bundle"
                )
            digest = weight.sha256
            if not (
                isinstance(digest, str) and len(digest) == 64 and all(c in string.hexdigits for c in digest)
            ):
                raise BundleError(f"bundle {self.name!r}: the {role} weights' sha256 must be 64 hex digits")
        if not (math.isfinite(self.latent_scale_factor) and self.latent_scale_factor > 0):
            raise BundleError(f"bundle {self.name!r}: latent_scale_factor must be a number > 0")
        _validate_scheduler(self.name, self.scheduler)
        shape, spacing = self.canvas.shape, self.canvas.spacing_mm
        if len(shape) != 2 or len(spacing) != 2 or not all(math.isfinite(v) and v > 0 for v in spacing):
            raise BundleError(
                f"bundle {self.name!r}: the canvas needs a shape and a spacing of two numbers > 0"
            )
        for role, spec in (("autoencoder", self.autoencoder), ("diffusion", self.diffusion)):
            if not isinstance(spec.get("class"), str) or not isinstance(spec.get("args"), dict):
                raise BundleError(
                    f'bundle {self.name!r}: its {role} names no network "class" with its "args"'
                )
        multiple = self.size_multiple
        height, width = self.canvas.shape
        if height % multiple or width % multiple or height < 2 * multiple:
            raise BundleError(
                f"bundle {self.name!r}: canvas {height}x{width} must be multiples of {multiple} (autoencoder stride x "
                f"UNet depth) and at least {2 * multiple} rows high"
            )
        if not math.isfinite(self.intensity.flatten_sigma_mm) or self.intensity.flatten_sigma_mm < 0:
            raise BundleError(f"bundle {self.name!r}: flatten_sigma_mm must be a number >= 0")
        if not 0.0 < self.canvas.context_fraction < 1.0:
            raise BundleError(f"bundle {self.name!r}: context_fraction must be between 0 and 1")
        if self.canvas.ap_policy not in ("fit", "fixed"):
            raise BundleError(f"bundle {self.name!r}: ap_policy must be 'fit' or 'fixed'")
        if self.conditioning not in CONDITIONING_MODES:
            raise BundleError(
                f"bundle {self.name!r}: conditioning {self.conditioning!r} is not one of "
                f"{', '.join(CONDITIONING_MODES)} (made by a newer fovcompletion?)"
            )
        for name in ("guidance", "eta"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise BundleError(f"bundle {self.name!r}: {name} must be a number >= 0")
        if not 1 <= self.steps <= self.scheduler.num_train_timesteps or self.candidates < 1:
            raise BundleError(
                f"bundle {self.name!r}: steps must be between 1 and {self.scheduler.num_train_timesteps} and "
                f"candidates at least 1 (got {self.steps} and {self.candidates})"
            )
        if self.guidance != 1.0 and self.conditioning == "none":
            raise BundleError(
                f"bundle {self.name!r}: guidance needs a conditioned UNet (conditioning is 'none')"
            )
        self._validate_guide()
        problem = speed_problem(self.speed)
        if problem:
            raise BundleError(f"bundle {self.name!r}: {problem}")
        uses_codebook(self.autoencoder)  # refuses a malformed "codebook"
        if "decoder" in self.autoencoder:
            decoder_args(self.autoencoder)  # refuses a malformed "decoder"
        latent = latent_channels(self.autoencoder)
        expected = unet_input_channels(latent, self.conditioning)
        unet_in, unet_out = (int(self.diffusion["args"][k]) for k in ("in_channels", "out_channels"))
        if unet_in != expected or unet_out != latent:
            raise BundleError(
                f"bundle {self.name!r}: a {self.conditioning!r} UNet on {latent}-channel latents needs "
                f"{expected} input and {latent} output channels, the bundle says {unet_in} and {unet_out}"
            )

    def _validate_guide(self) -> None:
        """A guide must read and predict what the UNet does; its weights are a file like the others."""
        if bool(self.guide) != ("guide" in self.weights):
            raise BundleError(f"bundle {self.name!r}: a guide UNet needs both its entry and its weight file")
        if not self.guide:
            return
        if self.scheduler.prediction_type != "epsilon":
            raise BundleError(
                f"bundle {self.name!r}: autoguidance is built for UNets that predict the noise (epsilon), this "
                f"one predicts {self.scheduler.prediction_type}"
            )
        if not isinstance(self.guide.get("class"), str) or not isinstance(self.guide.get("args"), dict):
            raise BundleError(f'bundle {self.name!r}: its guide names no network "class" with its "args"')
        for key in ("in_channels", "out_channels"):
            if int(self.guide["args"][key]) != int(self.diffusion["args"][key]):
                raise BundleError(
                    f"bundle {self.name!r}: its guide UNet has {self.guide['args'][key]} {key.replace('_', ' ')}, "
                    f"its UNet {self.diffusion['args'][key]}"
                )
        scale, weight = self.guide.get("latent_scale_factor"), self.guide.get("weight")
        if not (is_finite_number(scale) and scale > 0 and is_finite_number(weight) and weight >= 0):
            raise BundleError(
                f"bundle {self.name!r}: its guide needs a latent_scale_factor > 0 and a weight >= 0"
            )
        if "alone_from" in self.guide and not (
            is_whole_number(self.guide["alone_from"]) and self.guide["alone_from"] >= 0
        ):
            raise BundleError(f"bundle {self.name!r}: its guide's alone_from must be a timestep >= 0")


def _positive(value: Any) -> bool:
    return is_finite_number(value) and value > 0


def _calls_by_batch(calls: Any) -> bool:
    """Whether timed calls map distinct batch sizes (decimal strings, > 0) to seconds > 0."""
    decimal = isinstance(calls, dict) and all(str(b).isascii() and str(b).isdecimal() for b in calls)
    batches = {int(b) for b in calls} if decimal else set()
    return decimal and len(batches) == len(calls) and 0 not in batches and all(map(_positive, calls.values()))


def speed_problem(speed: Any) -> str | None:
    """What is wrong with a bundle's `speed` (None: nothing) among the figures the run-time estimate reads: per
    device kind ("cpu", "cuda", "mps") an object with `seconds_per_unet_step_per_slice` (> 0), optionally
    `seconds_per_unet_call` and `guide_seconds_per_unet_call` ({batch: seconds}) and the `canvas` ([rows, cols])
    they were timed on. Checked on load and on export, so a wrong entry fails in one line there, not as a
    traceback in every run."""
    if not isinstance(speed, dict):
        return "speed must be an object keyed by device kind (cpu, cuda, mps)"
    for kind, figures in speed.items():
        where = f"speed[{kind!r}]"
        if not isinstance(figures, dict):
            return f"{where} must be an object with seconds_per_unet_step_per_slice"
        per_slice = figures.get("seconds_per_unet_step_per_slice")
        if not _positive(per_slice):
            return (
                f"{where}.seconds_per_unet_step_per_slice must be a number of seconds > 0 (got {per_slice!r})"
            )
        for key in ("seconds_per_unet_call", "guide_seconds_per_unet_call"):
            calls = figures.get(key, {})
            if not _calls_by_batch(calls):
                return f"{where}.{key} must map distinct batch sizes to seconds > 0 (got {calls!r})"
        canvas = figures.get("canvas", [1, 1])
        if not (isinstance(canvas, (list, tuple)) and len(canvas) == 2 and all(_positive(v) for v in canvas)):
            return f"{where}.canvas must be two numbers > 0, the rows and columns timed (got {canvas!r})"
    return None


def _validate_scheduler(name: str, spec: SchedulerSpec) -> None:
    from .schedule import NOISE_SCHEDULES, PREDICTION_TYPES

    if spec.schedule not in NOISE_SCHEDULES or spec.prediction_type not in PREDICTION_TYPES:
        raise BundleError(
            f"bundle {name!r}: noise schedule {spec.schedule!r} with prediction type {spec.prediction_type!r}: "
            f"expected one of {', '.join(NOISE_SCHEDULES)} and one of {', '.join(PREDICTION_TYPES)}"
        )
    betas_ok = all(math.isfinite(b) and 0 < b < 1 for b in (spec.beta_start, spec.beta_end))
    if int(spec.num_train_timesteps) < 1 or not betas_ok:
        raise BundleError(
            f"bundle {name!r}: the noise schedule needs timesteps >= 1 and betas between 0 and 1"
        )


@dataclass
class Bundle:
    """A loaded, verified model: metadata plus the two networks in eval mode."""

    path: Path
    metadata: BundleMetadata
    autoencoder: torch.nn.Module
    unet: torch.nn.Module
    guide: torch.nn.Module | None = None  # the autoguidance UNet, where the bundle has one

    @property
    def name(self) -> str:
        return self.metadata.name

    def to(self, device: torch.device | str) -> Bundle:
        for module in (self.autoencoder, self.unet, self.guide):
            if module is not None:
                module.to(device)
        return self


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(path: str | os.PathLike) -> BundleMetadata:
    """Read and validate `bundle.json` of a bundle folder (no weights loaded)."""
    folder = Path(path)
    metadata_path = folder / METADATA_FILE
    try:
        if not metadata_path.is_file():
            raise BundleError(f"{folder} is not a model bundle: {METADATA_FILE} is missing")
        data = json.loads(metadata_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"cannot read {metadata_path}: {error}") from None
    return BundleMetadata.from_dict(data)


def verify_bundle(path: str | os.PathLike) -> BundleMetadata:
    """Check metadata, presence and sha256 of every weight file; raise BundleError with one line if not."""
    folder = Path(path)
    metadata = read_metadata(folder)
    for role in ("autoencoder", "diffusion"):
        if role not in metadata.weights:
            raise BundleError(f"bundle {metadata.name!r} lists no {role} weights")
    for role, weight in metadata.weights.items():
        weight_path = folder / weight.file
        if not weight_path.is_file():
            raise BundleError(f"bundle {metadata.name!r}: weight file {weight.file} ({role}) is missing")
        try:
            actual = sha256_of(weight_path)
        except OSError as error:
            raise BundleError(
                f"bundle {metadata.name!r}: cannot read {weight.file}: {error.strerror}"
            ) from None
        if actual != weight.sha256.lower():  # hex digits in either case
            raise BundleError(
                f"bundle {metadata.name!r}: {weight.file} has sha256 {actual[:12]}..., expected "
                f"{weight.sha256[:12]}... (corrupted or modified file)"
            )
    return metadata


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors without executing pickled code: safetensors, or torch.load(weights_only=True)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to parse a weight file is a bundle error
        reason = first_line(error)
        if "Weights only load failed" in reason:  # torch's own advice, to load unsafely, is not ours to give
            reason = "it holds pickled objects, not only tensors (save the network's state_dict() instead)"
        raise BundleError(f"cannot read weights {path.name}: {reason}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BundleError(f"{path.name} does not hold a state dict")
    return state


def first_mismatch(error: Exception) -> str:
    """The first missing, unexpected or mis-shaped key of a failed `load_state_dict`, for a one-line error
    (the error's own first line only names the network); any other error's first line."""
    parts = str(error).split("\n\t")
    return (parts[1].strip() if len(parts) > 1 and parts[1].strip() else first_line(error))[:300]


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], label: str) -> None:
    """Strictly load a state dict; any missing, unexpected or mis-shaped key is an architecture mismatch."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise BundleError(
            f"{label} weights do not match the bundle's architecture: {first_mismatch(error)}"
        ) from None


def load_bundle(path: str | os.PathLike, device: torch.device | str = "cpu") -> Bundle:
    """Verify and load a bundle folder (or a bundle name known to the registry) onto `device`: a torch device, or
    a name as `complete` takes it (auto, cpu, cuda, cuda:N, mps), so that an absent one is an `InputError`."""
    from .device import resolve_device
    from .networks import build_from_spec
    from .registry import resolve_bundle

    if isinstance(device, str):
        device = resolve_device(device)
    folder = resolve_bundle(str(path))
    metadata = verify_bundle(folder)
    autoencoder = build_from_spec(metadata.autoencoder)
    unet = build_from_spec(metadata.diffusion)
    load_weights(
        autoencoder, load_state_dict_file(folder / metadata.weights["autoencoder"].file), "autoencoder"
    )
    load_weights(unet, load_state_dict_file(folder / metadata.weights["diffusion"].file), "diffusion UNet")
    guide = None
    if metadata.guide:
        guide = build_from_spec(metadata.guide)
        load_weights(guide, load_state_dict_file(folder / metadata.weights["guide"].file), "guide UNet")
        guide.eval()
    autoencoder.eval()
    unet.eval()
    return Bundle(folder, metadata, autoencoder, unet, guide).to(device)


def _save_safetensors(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {key: value.detach().cpu().contiguous().clone() for key, value in module.state_dict().items()}
    save_file(state, str(path))


def _apply_umask(folder: Path) -> None:
    """mkdtemp makes a private folder; a finished bundle gets ordinary permissions, as if made by mkdir."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for item in folder.iterdir():
        item.chmod(0o666 & ~umask)


def save_bundle(
    folder: str | os.PathLike,
    metadata: BundleMetadata,
    autoencoder: torch.nn.Module,
    unet: torch.nn.Module,
    extra_files: dict[str, str | os.PathLike] | None = None,
    guide: torch.nn.Module | None = None,
) -> Path:
    """Write a complete bundle atomically: weights as safetensors, their sha256 in `bundle.json`.

    The folder appears only once everything is written and its metadata validated, so an interrupted or invalid
    export leaves nothing behind.
    `extra_files` maps names inside the bundle (a model card, example images) to files to copy; `guide` is the
    autoguidance UNet that `metadata.guide` describes.
    """
    target = Path(folder)
    if target.exists() and any(target.iterdir()):
        raise BundleError(f"{target} already exists and is not empty")
    reserved = {f"{role}.safetensors" for role in ("autoencoder", "diffusion", "guide")} | {METADATA_FILE}
    clashing = sorted(reserved & set(extra_files or {}))
    if clashing:
        raise BundleError(f"a file to include would replace the bundle's own {', '.join(clashing)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        weights = {}
        networks = [("autoencoder", autoencoder), ("diffusion", unet)] + (
            [("guide", guide)] if guide is not None else []
        )
        for role, module in networks:
            file_name = f"{role}.safetensors"
            _save_safetensors(module, staging / file_name)
            weights[role] = WeightFile(file_name, sha256_of(staging / file_name))
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, staging / name)
        final = BundleMetadata(**{**metadata.__dict__, "weights": weights})
        (staging / METADATA_FILE).write_text(json.dumps(final.to_dict(), indent=2) + "\n")
        read_metadata(staging)  # validated as a reader sees it: an invalid bundle is never published
        _apply_umask(staging)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
