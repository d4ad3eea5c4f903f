"""Training configurations: the CPU-trainable default window model, the same window model sized for a GPU,
and the reference architecture.

A configuration is plain data (dataclasses <-> JSON) so that the exact settings of a run are saved in its
folder and copied into the exported bundle.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from ..bundle import BundleMetadata, CanvasSpec, IntensitySpec, SchedulerSpec
from ..conditioning import unet_input_channels
from ..errors import InputError, first_line
from ..latent_codec import latent_channels
from ..networks import autoencoder_kl_args, reference_autoencoder_args, reference_unet_args

PRESETS = ("default", "v1", "kl2", "gpu", "reference")
# A regional scan is normalised on its own percentiles, which put the canal's CSF at 6-9 in a cervical scan
# (mostly dark neck and air) and at 1-2 in a lumbar one (bright fat and discs): a composite in the cervical
# scan's units shows lumbar anatomy 1.7-6.5 times as bright as a lumbar scan the model completes.
COMPOSITE_UNITS = ("cervical", "alternate")


@dataclass
class DataConfig:
    """Where scans come from and how training windows are cut from them."""

    roots: list[str] = field(default_factory=list)  # BIDS roots (sub-*/[ses-*/]anat/*_T2w.nii[.gz])
    files: list[str] = field(default_factory=list)  # or explicit scan paths
    held_out: list[str] = field(default_factory=list)  # subject ids kept for validation only
    slices: int = 5  # central sagittal slices per volume
    canvas: tuple[int, int] = (128, 128)  # window rows (S-I) x cols (A-P) in pixels
    spacing_mm: tuple[float, float] = (2.0, 2.0)
    padding_value: float = -1.0
    ap_policy: str = "fit"
    context_fraction: float = 0.5
    min_inside_fraction: float = 0.4  # a window keeps at least this fraction of its rows inside the scan
    balance_regions: bool = True  # sample participants.tsv regions equally often
    phantoms: int = 0  # synthetic phantoms added to the training scans (needs fovcompletion.phantom)
    # BIDS roots of whole-cord templates with disc and cord labels (the PAM50): never trained on straight,
    # but bent (`template_copies` per template) and as the thoracic part of `composites` (`whole_spine`).
    templates: list[str] = field(default_factory=list)
    composites: int = 0
    template_copies: int = 0
    # Whose intensity units a composite is in: "cervical", its cervical scan's (what a cervical scan completed
    # downwards shows the model), or "alternate": every second composite in its lumbar scan's own units instead
    # (what a lumbar scan completed upwards shows it); see COMPOSITE_UNITS.
    composite_units: str = "cervical"
    # Gaussian width of the superior-inferior gain divided out of every scan (IntensitySpec); 0 = off, the
    # default (docs/training.md says what it measured) and what configurations written before it mean.
    flatten_sigma_mm: float = 0.0
    # Percentiles of each volume mapped to [-1, 1], and whether values past them are clipped; configurations
    # written before these keys mean the reference's 0..95 with a clip.
    intensity_percentiles: tuple[float, float] = (0.0, 95.0)
    intensity_clip: bool = True


@dataclass
class AugmentConfig:
    """MRI-suited augmentation. Never a superior-inferior or anterior-posterior flip."""

    rotate_deg: float = 8.0
    scale: tuple[float, float] = (0.9, 1.1)
    gamma: tuple[float, float] = (0.7, 1.5)
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    intensity_shift: float = 0.05
    bias_field: float = 0.15  # amplitude of a smooth multiplicative (log) bias field
    flip_lr: float = 0.5  # probability of a left-right mirror (slice order of a multi-slice sample)
    # Superior-inferior stretch (log-uniform; taller or flatter vertebrae, longer or shorter spines); (1, 1) = off.
    stretch: tuple[float, float] = (1.0, 1.0)


@dataclass
class AutoencoderConfig:
    """Autoencoder recipe: L1 + quantisation (VQ-VAE) or KL (AutoencoderKL) + perceptual (optional, needs
    weights) + patch adversarial."""

    args: dict[str, Any] = field(default_factory=dict)
    network: str = "VQVAE"  # or "AutoencoderKL" (latent_codec); configurations written before it mean VQVAE
    # False: a VQ-VAE trained and used without its quantiser (networks.without_codebook), continuous latents.
    codebook: bool = True
    # The decoder's own widths where they differ from the encoder's (`networks.DECODER_ARGS`), e.g.
    # {"channels": [64, 128], "num_res_channels": [64, 128]}: detail is lost in the decoder more than in the
    # latent, and a wider decoder costs the engine little (it decodes once per window). None = symmetric.
    decoder: dict[str, Any] | None = None
    # Train the decoder alone, the encoder (and codebook) frozen as --init-from left them: the latents do not
    # change, so a UNet trained on them stays valid and needs no retraining.
    freeze_encoder: bool = False
    # {"latent_channels": R}: a residual encoder adds R latent channels to --init-from's codebook-free VQ-VAE,
    # whose encoder stays frozen; it and the decoder train (`residual_latent`). None = the latent as it is.
    residual: dict[str, Any] | None = None
    kl_weight: float = 1e-6  # weight of the KL term of an AutoencoderKL (the MONAI tutorials' value)
    # An AutoencoderKL's training decodes its mean, as the engine does, instead of a random draw (noise of
    # sigma about 0.37 on a latent spread of 1.26 at weight 1e-6): held-out whole-region SSIM 0.77-0.80
    # instead of 0.70-0.71, tissue SSIM alike (docs/training.md).
    decode_mean: bool = False
    # Training crops (rows, cols) cut instead of whole canvases: the networks are fully convolutional, and
    # smaller crops give more updates per second on a CPU. None = the canvas.
    crop: tuple[int, int] | None = None
    # Crops cut on the pixel grid (whole-pixel offsets, no rotation or zoom; intensity augmentation stays):
    # interpolation blurs the noise texture that the autoencoder must learn to reproduce.
    crop_on_grid: bool = False
    batch_size: int = 16
    epochs: int = 30
    iterations_per_epoch: int = 50
    lr: float = 3e-4
    # The generator's rate: "constant" or a cosine to lr_min at the stage's last planned iteration, so the
    # last checkpoint is a settled one (at a constant 3e-4, two checkpoints 450 iterations apart differed by
    # 0.02 in held-out tissue SSIM).
    lr_schedule: str = "constant"
    lr_min: float = 0.0
    lr_discriminator: float = 3e-4
    adversarial_weight: float = 0.01
    adversarial_warmup_epochs: int = 10
    discriminator_channels: int = 32
    discriminator_layers: int = 3
    perceptual_weight: float = 0.0
    perceptual_network: str = "alex"
    perceptual_weights: str | None = None  # local weights file; None = let MONAI download them
    validation_windows: int = 32
    init_from: dict[str, Any] | None = None  # the bundle whose VQ-VAE this stage started from (initialise)

    def spec(self) -> dict[str, Any]:
        """The network as a bundle names it: {"class": ..., "args": ...}, plus "codebook": false without one,
        "decoder": {...} with a decoder of its own widths and "residual": {...} with residual latent channels."""
        spec: dict[str, Any] = {"class": self.network, "args": self.args}
        if not self.codebook:
            spec["codebook"] = False
        if self.decoder:
            spec["decoder"] = dict(self.decoder)
        if self.residual:
            spec["residual"] = dict(self.residual)
        return spec


@dataclass
class DiffusionConfig:
    """Latent diffusion UNet recipe: epsilon-MSE on the autoencoder's latents, masked to cells inside the scan."""

    args: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=lambda: asdict(SchedulerSpec()))
    batch_size: int = 16
    epochs: int = 40
    iterations_per_epoch: int = 50
    lr: float = 3e-4
    lr_schedule: str = "constant"  # after the first epoch's warm-up: "constant" or "cosine" (to lr_min)
    lr_min: float = 0.0  # where "cosine" ends, at the stage's last planned iteration
    ema_decay: float = 0.999
    mask_padding_loss: bool = True
    conditioning: str = "none"  # "masked_latent": the UNet also sees the known latent and mask
    known_loss_weight: float = 0.1  # loss weight of known cells relative to generated ones (conditioned)
    snr_gamma: float | None = None  # min-SNR-gamma loss weighting (None: plain MSE, as the reference)
    latent_augmentations: int = 6  # augmented copies of each training scan encoded once before training
    # Non-leaky augmentation (`augment_labels`): the UNet is told each copy's augmentation and samples at none, so
    # that strong augmentation need not show in the completions as rotated or stretched anatomy.
    augment_labels: bool = False
    validation_windows: int = 32
    sample_steps: int = 25
    init_from: dict[str, Any] | None = None  # the bundle whose UNet this stage started from (initialise)


@dataclass
class TrainConfig:
    """Everything a run needs; saved as `config.json` in the run folder and in the exported bundle."""

    name: str = "fovcompletion-spine-t2w-window"
    preset: str = "default"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    validate_every: int = 2  # epochs between validation losses
    sample_every: int = 5  # epochs between sample PNGs
    max_minutes: float | None = None  # stop (with a checkpoint) once this much time is spent
    device: str = "auto"
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def preprocessing_metadata(self) -> BundleMetadata:
        """The run's bundle metadata before weights and provenance: what `prepare_slab` needs (training and
        inference prepare data one way) and what `export_bundle` completes."""
        return BundleMetadata(
            name=self.name,
            autoencoder=self.autoencoder.spec(),
            diffusion={"class": "DiffusionModelUNet", "args": self.diffusion.args},
            latent_scale_factor=1.0,
            weights={},
            scheduler=SchedulerSpec(**self.diffusion.scheduler),
            canvas=self.canvas_spec(),
            intensity=self.intensity_spec(),
            default_slices=self.data.slices,
            conditioning=self.diffusion.conditioning,
            latent_quantized=self.autoencoder.codebook,
        )

    def intensity_spec(self) -> IntensitySpec:
        lower, upper = self.data.intensity_percentiles
        return IntensitySpec(
            lower_percentile=float(lower),
            upper_percentile=float(upper),
            clip=bool(self.data.intensity_clip),
            flatten_sigma_mm=self.data.flatten_sigma_mm,
        )

    def canvas_spec(self) -> CanvasSpec:
        return CanvasSpec(
            shape=tuple(self.data.canvas),
            spacing_mm=tuple(self.data.spacing_mm),
            padding_value=self.data.padding_value,
            ap_policy=self.data.ap_policy,
            context_fraction=self.data.context_fraction,
        )


def default_autoencoder_args() -> dict[str, Any]:
    """A small VQ-VAE (latent /4, 4 channels) that trains on 2 CPU cores in half an hour."""
    return {
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [32, 64],
        "num_res_channels": [32, 64],
        "num_res_layers": 2,
        "downsample_parameters": [[2, 4, 1, 1]] * 2,
        "upsample_parameters": [[2, 4, 1, 1, 0]] * 2,
        "num_embeddings": 256,
        "embedding_dim": 4,
    }


def default_unet_args() -> dict[str, Any]:
    """A small conditioned UNet (about 3.9 M parameters, attention only at the lowest level): sized so that
    a few hours on 2 CPU cores train it through about ten thousand steps."""
    latent = default_autoencoder_args()["embedding_dim"]
    return {
        "spatial_dims": 2,
        "in_channels": unet_input_channels(latent, "masked_latent"),
        "out_channels": latent,
        "channels": [32, 64, 128],
        "attention_levels": [False, False, True],
        "num_head_channels": [0, 0, 32],
        "num_res_blocks": 2,
        "norm_num_groups": 16,
    }


def kl_autoencoder_args(latent_channels: int = 4) -> dict[str, Any]:
    """The kl2 preset's autoencoder: a continuous latent of `latent_channels` per 2 x 2 pixels (MONAI
    AutoencoderKL, two levels, no attention, 0.23 M parameters). It reached the /2 VQ-VAE's tissue SSIM in
    about half the iterations, with higher whole-region SSIM (docs/training.md)."""
    return autoencoder_kl_args([32, 64], latent_channels, norm_num_groups=16)


def gpu_unet_args() -> dict[str, Any]:
    """The window model's UNet widened for a GPU run (about 9 M parameters, attention at 16 x 16 as well as
    8 x 8 so that a window lays out its sequence of levels as a whole): its bundle stays under 50 MB and a
    5-slice, 50-step completion on 2 CPU cores under 30 s, the limits of the model shipped with the extension."""
    return {
        **default_unet_args(),
        "channels": [48, 96, 192],
        "attention_levels": [False, True, True],
        "num_head_channels": [0, 32, 32],
    }


def set_conditioning(config: TrainConfig, mode: str) -> None:
    """Switch a run's UNet between unconditional and `masked_latent`; its input channels follow."""
    latent = latent_channels(config.autoencoder.spec())
    try:
        channels = unet_input_channels(latent, mode)
    except ValueError as error:
        raise InputError(str(error)) from None
    config.diffusion.conditioning = mode
    config.diffusion.args = {**config.diffusion.args, "in_channels": channels, "out_channels": latent}


def latent_identity(config: TrainConfig) -> dict[str, Any]:
    """What makes a run's latents what they are, short of the weights: the autoencoder's encoding side (class,
    arguments, codebook, residual channels; a decoder of its own widths changes none of it) and how scans are
    prepared for it. A UNet trained on latents of one identity is of no use on another's."""
    spec = {key: value for key, value in config.autoencoder.spec().items() if key != "decoder"}
    data = config.data
    identity = {
        "autoencoder": spec,
        "spacing_mm": data.spacing_mm,
        "padding_value": data.padding_value,
        "intensity_percentiles": data.intensity_percentiles,
        "intensity_clip": data.intensity_clip,
    }
    return as_json(identity)


def as_json(value: Any) -> Any:
    """Tuples and lists alike, as they are once saved: settings compare as their JSON."""
    return json.loads(json.dumps(value))


def augmentation_key(aug: AugmentConfig) -> dict[str, Any]:
    """The augmentation settings that make a slice's latent copies what they are (not the mirror of a stack's
    slices, which latents never see)."""
    return {key: value for key, value in as_json(asdict(aug)).items() if key != "flip_lr"}


def check_augmentation(aug: AugmentConfig) -> None:
    """Ranges the augmentation draws from, checked before a stage starts (a configuration edited by hand reaches
    logarithms and powers that would fail or give NaN mid-run)."""
    for name in ("scale", "stretch", "gamma", "intensity_scale"):
        value = getattr(aug, name)
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and 0 < value[0] <= value[1] < math.inf):
            raise InputError(f"augment.{name} must be LO,HI with 0 < LO <= HI (got {value})")
    for name, low, high in (
        ("rotate_deg", 0, 90),
        ("intensity_shift", 0, math.inf),
        ("bias_field", 0, math.inf),
    ):
        if not low <= getattr(aug, name) < high:
            raise InputError(f"augment.{name} must lie in [{low}, {high}) (got {getattr(aug, name)})")
    if not 0 <= aug.flip_lr <= 1:
        raise InputError(f"augment.flip_lr must be a probability (got {aug.flip_lr})")


def check_counts(config: TrainConfig, stage: AutoencoderConfig | DiffusionConfig) -> None:
    """Counts the training loop divides or iterates by, the augmentation's ranges (`check_augmentation`) and the
    composites' units, checked before a stage starts (a zero found after its first epoch would cost that epoch
    and end in a traceback)."""
    for option, value, least in (
        ("--epochs", stage.epochs, 0),
        ("--iterations-per-epoch", stage.iterations_per_epoch, 1),
        ("--batch-size", stage.batch_size, 1),
        ("--validate-every", config.validate_every, 1),
        ("--sample-every", config.sample_every, 1),
        ("--threads", 1 if config.threads is None else config.threads, 1),
    ):
        if int(value) != value or value < least:
            raise InputError(f"{option} must be a whole number >= {least} (got {value})")
    if config.max_minutes is not None and not config.max_minutes > 0:
        raise InputError(f"--max-minutes must be more than 0 (got {config.max_minutes})")
    if config.data.composite_units not in COMPOSITE_UNITS:
        raise InputError(
            f"data.composite_units must be one of {', '.join(COMPOSITE_UNITS)} (got {config.data.composite_units!r})"
        )
    check_augmentation(config.augment)


def preset_config(name: str) -> TrainConfig:
    """`default`: the 2 mm window model for regional scans (v0.5.0's recipe); `v1`: v1.0's, fine-tuned from a
    bundle of it; `kl2`: a /2 AutoencoderKL alternative (measured, not shipped); `gpu`: the default with a wider
    UNet and a GPU's schedule; `reference`: the reference recipe (whole spine, GPU)."""
    if name == "default":
        config = TrainConfig()
        config.autoencoder.args = default_autoencoder_args()
        config.diffusion.args = default_unet_args()
        config.diffusion.conditioning = "masked_latent"
        config.diffusion.snr_gamma = 5.0
        return config
    if name == "v1":
        # The default model v1.0's recipe: v0.5.0's networks and 256 mm window, fine-tuned from its bundle
        # (--init-from) to intensities that keep bright tissue (0..95th percentile to [-1, 1] as before, nothing
        # clipped above it) and to continuous latents (the VQ-VAE without its codebook): the UNet keeps what
        # 44 000 iterations taught it, which two cores cannot retrain in a session (docs/training.md).
        config = preset_config("default")
        config.preset = "v1"
        config.data.intensity_clip = False
        config.data.phantoms = 24
        config.autoencoder.codebook = False
        config.autoencoder.crop = (64, 64)
        config.autoencoder.crop_on_grid = True
        config.autoencoder.adversarial_weight = 0.0
        for stage in (config.autoencoder, config.diffusion):
            stage.lr, stage.lr_schedule, stage.lr_min = 1e-4, "cosine", 1e-5
        return config
    if name == "kl2":
        # Measured, not shipped: intensities with headroom (the 99.5th percentile maps to 1, nothing is
        # clipped), a continuous /2 latent (AutoencoderKL) trained on small crops, and a 128 mm window so that
        # the UNet's latent stays near the /4 model's 256 mm one (docs/training.md).
        config = preset_config("default")
        config.preset = "kl2"
        config.data.canvas = (64, 128)
        config.data.intensity_percentiles = (0.0, 99.5)
        config.data.intensity_clip = False
        config.data.phantoms = 24
        config.autoencoder.network = "AutoencoderKL"
        config.autoencoder.args = kl_autoencoder_args()
        config.autoencoder.crop = (64, 64)
        config.autoencoder.crop_on_grid = True
        config.autoencoder.decode_mean = True
        config.autoencoder.lr_schedule = "cosine"
        config.autoencoder.lr_min = 1e-5
        config.autoencoder.adversarial_weight = 0.0
        set_conditioning(config, "masked_latent")
        return config
    if name == "gpu":
        # The default model's VQ-VAE, so a run can start from the shipped one (train-autoencoder --init-from),
        # and the data recipe that trained the shipped UNet; the UNet wider, trained from scratch through
        # 100 000 iterations of 64 windows with the learning rate decayed along a cosine. The VQ-VAE settings
        # only matter to a run that trains one from scratch instead.
        config = preset_config("default")
        config.preset = "gpu"
        config.data.phantoms = 24
        config.autoencoder.batch_size = 32
        config.autoencoder.iterations_per_epoch = 200
        config.autoencoder.epochs = 100
        config.diffusion = replace(
            config.diffusion,
            args=gpu_unet_args(),
            batch_size=64,
            epochs=200,
            iterations_per_epoch=500,
            lr=2e-4,
            lr_schedule="cosine",
            lr_min=1e-5,
            latent_augmentations=20,
        )
        config.validate_every, config.sample_every = 5, 10
        return config
    if name == "reference":
        config = TrainConfig(name="fovcompletion-spine-t2w-reference", preset="reference")
        config.data = DataConfig(
            canvas=(1280, 512),
            spacing_mm=(1.0, 1.0),
            ap_policy="fixed",
            min_inside_fraction=0.9,
            balance_regions=False,
        )
        config.autoencoder = AutoencoderConfig(
            args=reference_autoencoder_args(),
            batch_size=4,
            epochs=100,
            iterations_per_epoch=500,
            lr=1e-4,
            lr_discriminator=5e-4,
            adversarial_warmup_epochs=20,
        )
        config.diffusion = DiffusionConfig(
            args=reference_unet_args(),
            batch_size=4,
            epochs=200,
            iterations_per_epoch=500,
            lr=1e-4,
            sample_steps=50,
        )
        config.validate_every, config.sample_every = 5, 10
        return config
    raise InputError(f"unknown training preset {name!r} (choose from {', '.join(PRESETS)})")


def _from_dict(cls: type, data: Any, section: str = "") -> Any:
    """A configuration from its JSON; a section that is not an object is one line (a hand-edited file), not a
    TypeError deep in the stage that reads it."""
    where = f"'{section}'" if section else "the training configuration"
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a JSON object of settings, not {type(data).__name__} {data!r:.60}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(map(str, set(data) - set(known)))
    if unknown:
        raise InputError(f"unknown {cls.__name__} keys in the training configuration: {', '.join(unknown)}")
    values = {}
    defaults = cls()
    for key, value in data.items():
        current = getattr(defaults, key)
        if is_dataclass(current):
            value = _from_dict(type(current), value, f"{section}.{key}" if section else key)
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        values[key] = value
    return cls(**values)


def config_from_dict(data: Any, source: str | os.PathLike | None = None) -> TrainConfig:
    """A configuration from its JSON; `source` (a file, a checkpoint) is named in a refusal."""
    try:
        return _from_dict(TrainConfig, data)
    except InputError as error:
        if source is None:
            raise
        raise InputError(f"{source}: {error}") from None


def load_config(path: Path) -> TrainConfig:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read training configuration {path}: {first_line(error)}") from None
    return config_from_dict(data, path)
