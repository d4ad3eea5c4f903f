"""Stage 2: the latent diffusion UNet, epsilon-prediction MSE on the autoencoder's latents (encoded once),
with the loss masked to latent cells inside the scan so that the model never learns that anatomy ends
where a regional scan happens to stop. A `masked_latent` UNet also sees a known band of rows, drawn like
the engine's outpainting windows, and is scored mostly on the rest. Resumable, DDP under torchrun, EMA
weights for sampling."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..bundle import SchedulerSpec
from ..conditioning import conditioned_input, outpainting_masks
from ..errors import InputError
from ..latent_codec import decode, latent_downsample_factor
from ..networks import build_from_spec, count_parameters
from ..residual_latent import apply_residual_factors
from ..sampling import LatentInpainter, SamplerOptions, alphas_cumprod, clean_latent
from .augment_labels import build_unet, labelled_weights, parameter_groups, plain_unet
from .autoencoder import STAGE as AUTOENCODER_STAGE
from .checkpoints import LAST, continue_rng, interrupts_deferred, load_checkpoint, restore, save_checkpoint
from .config import (
    AugmentConfig,
    TrainConfig,
    augmentation_key,
    check_counts,
    config_from_dict,
    latent_identity,
)
from .distributed import (
    barrier,
    gather_rng_states,
    loader,
    mean_over_ranks,
    setup,
    teardown,
    unwrap,
    wrap,
)
from .initialise import starting_unet_weights
from .latents import LatentWindowDataset, encode_maps, pack, scale_factor, unpack
from .logs import CsvLog, Progress, format_row, log_line, save_grid
from .lr_schedule import check_lr_schedule, learning_rate
from .objective import PREDICTION_TYPES, add_noise, min_snr_weights, training_target
from .runner import (
    CONFIG_FILE,
    DATA_FILE,
    Budget,
    TrainingData,
    add_templates,
    autocast,
    configure_threads,
    continues_checkpoint,
    grad_scaler,
    load_training_data,
    resolve_run_config,
)

STAGE = "diffusion"
LATENT_CACHE = "latents.pt"
# What a resume reads from the stage's checkpoint.
RESUMED = ("model", "optimizer", "scaler", "scale_factor", "config", "epoch", "step", "elapsed_s")
RESUME_HINT = "resume with the run's own"


def load_trained_autoencoder(run_dir: Path, config: TrainConfig, device: torch.device) -> torch.nn.Module:
    path = run_dir / AUTOENCODER_STAGE / LAST
    if not path.is_file():
        raise InputError(f"no trained autoencoder in {run_dir} ({path} missing): run train-autoencoder first")
    model = build_from_spec(config.autoencoder.spec())
    state = load_checkpoint(path, restore_rng=False, stage=AUTOENCODER_STAGE, required=("model",))
    restore(model, state, "model", path, "autoencoder", "the run's autoencoder stage must hold its own")
    if state.get("residual_factors") is not None:  # residual channels at the bundle's channels' spread
        apply_residual_factors(model, state["residual_factors"])
    return model.to(device).eval()


def masked_mse(
    prediction: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error weighted per latent cell (B, h, w), e.g. 0 outside the scan (plain mean for None),
    and per sample (B,), e.g. by noise level; the cell weights alone normalise, so sample weights scale."""
    error = (prediction.float() - target.float()) ** 2
    cells = torch.ones_like(error[:, 0]) if weight is None else weight.to(error.dtype)
    norm = cells.sum().clamp_min(1.0) * error.shape[1]
    if sample_weight is not None:
        cells = cells * sample_weight.to(error.dtype).view(-1, 1, 1)
    return (error * cells[:, None]).sum() / norm


def diffusion_loss(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    inside: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    alphas: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """One training (or validation) loss: noise the latents, build the UNet input, regress the target.
    `labels`: the latents' augmentation labels, for a UNet that is told them (`augment_labels`)."""
    kind = config.diffusion.scheduler.get("prediction_type", "epsilon")
    model_input, weight, _ = unet_inputs(
        add_noise(latents, noise, timesteps, alphas), latents, inside, config, generator
    )
    target = training_target(latents, noise, timesteps, alphas, kind)
    sample_weight = min_snr_weights(timesteps, alphas, config.diffusion.snr_gamma, kind)
    with autocast(latents.device):
        prediction = unet(model_input, timesteps) if labels is None else unet(model_input, timesteps, labels)
    return masked_mse(prediction, target, weight, sample_weight)


def unet_inputs(
    noisy: torch.Tensor,
    latents: torch.Tensor,
    inside: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The UNet's input for the run's conditioning, the loss weight of each latent cell and the mask of the
    known cells (None without conditioning)."""
    cfg = config.diffusion
    weight = inside.float() if cfg.mask_padding_loss else None
    if cfg.conditioning == "none":
        return noisy, weight, None
    mask = outpainting_masks(inside, config.data.context_fraction, generator).to(latents.device)
    known_weight = 1.0 - (1.0 - cfg.known_loss_weight) * mask[:, 0]
    weight = known_weight if weight is None else weight * known_weight
    return conditioned_input(noisy, latents, mask), weight, mask


class EMA:
    """Exponential moving average of the UNet weights, warmed up so that short runs still benefit."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        averages, currents = self.model.state_dict().values(), model.state_dict().values()
        if len(averages) != len(currents):
            raise ValueError("the averaged model and the trained model have different parameters")
        for averaged, current in zip(averages, currents):
            if averaged.dtype.is_floating_point:
                averaged.mul_(decay).add_(current.detach(), alpha=1 - decay)
            else:
                averaged.copy_(current)


def same_tensors(state: dict, model: torch.nn.Module) -> bool:
    """Whether a saved state dict holds exactly `model`'s weights."""
    current = model.state_dict()
    return state.keys() == current.keys() and all(
        torch.equal(state[k].cpu(), current[k].cpu()) for k in state
    )


def latent_cache_key(config: TrainConfig) -> dict:
    """What the cached latents were encoded from: a change (more phantoms, say) re-encodes them."""
    key = {
        "phantoms": config.data.phantoms,
        "latent_augmentations": config.diffusion.latent_augmentations,
        "held_out": sorted(config.data.held_out),
    }
    if config.data.flatten_sigma_mm:  # absent when off, so that older runs keep their cache
        key["flatten_sigma_mm"] = config.data.flatten_sigma_mm
    if config.data.templates:
        key["whole_spine"] = [
            sorted(config.data.templates),
            config.data.composites,
            config.data.template_copies,
        ]
        # absent at the default, so that older runs keep their cache
        if config.data.composite_units != "cervical":
            key["whole_spine"].append(config.data.composite_units)
    augmentation = augmentation_key(config.augment)
    if config.diffusion.augment_labels or augmentation != augmentation_key(AugmentConfig()):
        key["augmentation"] = augmentation  # absent at the defaults, as above
    if config.diffusion.init_from:  # the scale then comes from that bundle
        key["init_from"] = config.diffusion.init_from["sha256"]
    return key


def prepare_latents(run_dir: Path, config: TrainConfig, device: torch.device, main: bool, context) -> dict:
    """Encode training and held-out slices once (rank 0), cache them in the run folder, load everywhere.

    A resumed UNet keeps the latent scale it was trained with even when the data or the autoencoder changed
    under it, and a UNet started from a bundle keeps the bundle's."""
    cache = run_dir / STAGE / LATENT_CACHE
    key = latent_cache_key(config)
    cached = None
    if main and cache.is_file():
        try:
            cached = load_checkpoint(cache, restore_rng=False)
        except InputError as error:  # a cache, made again rather than refused
            log_line(f"{error}: encoding again")
            cache.unlink()
    if cached is not None:
        if cached.get("key") != key:
            stale = "the training data or its augmentation changed"
        elif not same_tensors(
            cached.get("autoencoder", {}), load_trained_autoencoder(run_dir, config, torch.device("cpu"))
        ):
            stale = "the autoencoder changed"
        else:
            stale = ""
            # The same weights may come from an autoencoder stage run anew since: the UNet names the run's own.
            cached["autoencoder_id"] = run_autoencoder_id(run_dir) or cached.get("autoencoder_id")
        if stale:
            log_line(f"{stale} since {cache} was written: encoding again")
            cached = None  # freed before encoding: the cache can take gigabytes
            cache.unlink()
    if main and not cache.is_file():
        write_latent_cache(run_dir, config, device, cache, key)
    barrier(context)
    return cached if cached is not None else load_checkpoint(cache, restore_rng=False)  # read once


def write_latent_cache(
    run_dir: Path, config: TrainConfig, device: torch.device, cache: Path, key: dict
) -> None:
    """Encode and save; a function of its own so that the encoded maps are freed before the cache is loaded."""
    data = load_training_data(config, verbose=True)
    autoencoder = load_trained_autoencoder(run_dir, config, device)
    log_line(
        f"encoding {len(data.train)} training volumes x {config.diffusion.latent_augmentations + 1} "
        "versions with the autoencoder (once)"
    )
    last = run_dir / STAGE / LAST
    if last.is_file():
        scale = float(
            load_checkpoint(last, restore_rng=False, stage=STAGE, required=("scale_factor",))["scale_factor"]
        )
    elif config.diffusion.init_from:
        scale = float(config.diffusion.init_from["latent_scale_factor"])
    else:
        # Real scans alone: a composite's thoracic and lumbar parts, in its cervical scan's units, are bright
        # over most of their area; with phantoms and composites the factor came out at 0.43, not the scans' 0.93.
        scale = scale_factor(autoencoder, data.scans() or data.train, config, device)
    train = encode_maps(
        autoencoder, data.train, config, config.diffusion.latent_augmentations, device, config.seed
    )
    val = encode_maps(autoencoder, data.val or data.train, config, 0, device, config.seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    autoencoder_state = load_checkpoint(run_dir / AUTOENCODER_STAGE / LAST, restore_rng=False)
    save_checkpoint(
        cache,
        {
            "key": key,
            "scale": scale,
            "train": pack(train),
            "val": pack(val),
            "autoencoder": autoencoder.state_dict(),
            "autoencoder_config": autoencoder_state.get("config", {}),
            "autoencoder_elapsed_s": float(autoencoder_state.get("elapsed_s", 0.0)),
            "autoencoder_steps": int(autoencoder_state.get("step", 0)),
            "autoencoder_id": autoencoder_state.get("autoencoder_id"),
        },
    )
    log_line(f"latent scale factor {scale:.5f}; {len(train)} training and {len(val)} validation maps")
    record_synthetic_data(run_dir, data)


def record_synthetic_data(run_dir: Path, data: TrainingData) -> None:
    """The UNet may see phantoms, composites and templates the autoencoder did not: the run's data manifest
    says how many, and which templates."""
    path = run_dir / DATA_FILE
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest["phantoms_diffusion"] = data.phantoms
    manifest["whole_spine_diffusion"] = data.whole_spine
    add_templates(manifest, [r.describe() for r in data.template_records])
    path.write_text(json.dumps(manifest, indent=2) + "\n")


@dataclass(frozen=True, eq=False)  # tensors: compared by identity, never field by field
class ValidationSet:
    """The run's fixed held-out windows (latents times `scale`, and their cells inside the scan) with what every
    check of them reads: the same windows, schedule and settings at every epoch keep the checks comparable."""

    latents: torch.Tensor
    inside: torch.Tensor
    scale: float
    alphas: torch.Tensor
    device: torch.device
    config: TrainConfig


def validate(unet: torch.nn.Module, windows: ValidationSet) -> float:
    """The training loss on fixed windows with fixed timesteps, noise and masks: comparable across epochs."""
    latents, inside, alphas = windows.latents, windows.inside, windows.alphas
    device, config = windows.device, windows.config
    generator = torch.Generator().manual_seed(config.seed)
    timesteps = torch.randint(0, len(alphas), (len(latents),), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    total, count = 0.0, 0
    batch = config.diffusion.batch_size
    unet.eval()
    with torch.no_grad():
        for start in range(0, len(latents), batch):
            part = slice(start, start + batch)
            z, eps, t = latents[part].to(device), noise[part].to(device), timesteps[part].to(device)
            loss = diffusion_loss(unet, z, inside[part].to(device), eps, t, alphas, config, generator)
            total += float(loss) * len(z)
            count += len(z)
    return total / max(count, 1)


# Two of the noisiest noise levels, as fractions of the schedule (t = 800 and 900 of 1000), where the sampler lays
# out canal and vertebrae (t = 990 is left out: there even the default model's UNet is no nearer than zero).
LAYOUT_LEVELS = (0.8, 0.9)


def layout_error(unet: torch.nn.Module, windows: ValidationSet) -> float:
    """How far the UNet's clean-latent estimate at the `LAYOUT_LEVELS` lies from the truth, over the generated
    cells inside the scan, as a fraction of the truth's norm (1: no nearer than an estimate of zero), averaged
    over those levels; fixed noise, context bands drawn as in training, full precision: comparable across epochs.

    The validation loss misses this: it is the error in the training target, and at these levels a large error in
    the clean estimate is a small one in the noise (divided by 15-34 for epsilon on the default schedule). A UNet
    trained from scratch reached a lower validation loss than the default's with a worse layout (docs/training.md,
    "A labelled UNet from scratch")."""
    latents, inside, alphas = windows.latents, windows.inside, windows.alphas
    device, config = windows.device, windows.config
    kind = config.diffusion.scheduler.get("prediction_type", "epsilon")
    batch = config.diffusion.batch_size
    errors = []
    unet.eval()
    with torch.no_grad():
        for level in LAYOUT_LEVELS:
            t = int(level * len(alphas))
            generator = torch.Generator().manual_seed(config.seed + t)
            squared_error, squared_truth = 0.0, 0.0
            for start in range(0, len(latents), batch):
                truth = latents[start : start + batch].to(device)
                cells = inside[start : start + batch].to(device).bool().unsqueeze(1)
                noise = torch.randn(truth.shape, generator=generator).to(device)
                timesteps = torch.full((len(truth),), t, device=device)
                noisy = add_noise(truth, noise, timesteps, alphas)
                model_input, _, mask = unet_inputs(noisy, truth, cells[:, 0], config, generator)
                estimate = clean_latent(unet(model_input, timesteps).float(), noisy, float(alphas[t]), kind)
                generated = (cells if mask is None else cells & (mask < 0.5)).expand_as(truth)
                squared_error += float((estimate - truth)[generated].square().sum())
                squared_truth += float(truth[generated].square().sum())
            errors.append((squared_error / max(squared_truth, 1e-24)) ** 0.5)
    return sum(errors) / len(errors)


def write_samples(
    path: Path, unet: torch.nn.Module, autoencoder: torch.nn.Module, windows: ValidationSet
) -> float:
    """Outpainting check: the top half of held-out windows is known, the bottom half is generated. Returns the
    generated half's latent spread over the truth's (`latent_spread_ratio`)."""
    cfg, device = windows.config.diffusion, windows.device
    generator = torch.Generator().manual_seed(0)
    inpainter = LatentInpainter(
        unet.eval(), SchedulerSpec(**cfg.scheduler), generator, conditioning=cfg.conditioning
    )
    known = windows.latents[:4].to(device)
    mask = torch.zeros(known.shape[0], 1, *known.shape[2:], device=device)
    mask[:, :, : known.shape[2] // 2] = 1
    with torch.no_grad():
        # The batch holds windows of different scans, not neighbouring slices: their noise stays independent.
        sampled = inpainter.run(
            known, mask, SamplerOptions(steps=cfg.sample_steps, slice_noise_correlation=0.0)
        )
        truth = decode(autoencoder, known / windows.scale).float().cpu()
        generated = decode(autoencoder, sampled / windows.scale).float().cpu()
    half = truth.shape[2] // 2
    rows = []
    for t, g in zip(truth, generated):
        context = t[0].numpy().copy()
        context[half:] = -1
        rows.append([t[0].numpy(), context, g[0].numpy()])
    save_grid(path, rows)
    return latent_spread_ratio(sampled, known, mask == 0)


def latent_spread_ratio(sampled: torch.Tensor, truth: torch.Tensor, generated: torch.Tensor) -> float:
    """Standard deviation of the sampled latents over the truth's, per channel over the generated cells, averaged:
    about 1 for a sampler that draws latents of the data's spread; well above 1 when sampling diverges (noise left
    in, decoded as speckle), well below when it settles on a grey mean. The loss alone shows neither."""
    where = generated.expand_as(sampled)
    ratios = [
        sampled[:, c][where[:, c]].float().std() / truth[:, c][where[:, c]].float().std().clamp(min=1e-6)
        for c in range(sampled.shape[1])
    ]
    return float(torch.stack(ratios).mean())


def run_autoencoder_id(run_dir: Path) -> str | None:
    """The id the run's autoencoder stage recorded (None: none yet, or a checkpoint older than the ids)."""
    path = run_dir / AUTOENCODER_STAGE / LAST
    return (
        load_checkpoint(path, restore_rng=False, stage=AUTOENCODER_STAGE).get("autoencoder_id")
        if path.is_file()
        else None
    )


def check_same_latents(state: dict, config: TrainConfig, path: Path, run_dir: Path) -> None:
    """Refuse to resume a UNet trained on other latents (another run's, another preset's, those of an autoencoder
    since trained anew): its architecture may well fit, and it would train on as if nothing had changed."""
    recorded, own = latent_identity(config_from_dict(state["config"], path)), latent_identity(config)
    differing = [key for key in own if recorded.get(key) != own[key]]
    if not differing and state.get("autoencoder_id"):
        run_id = run_autoencoder_id(run_dir)
        differing = ["autoencoder's weights"] if run_id and run_id != state["autoencoder_id"] else []
    if differing:
        raise InputError(
            f"{path} is a UNet for other latents than this run's (its {', '.join(differing)} differ): resume it "
            "in its own run, or start this run's UNet stage anew"
        )


def starting_point(
    config: TrainConfig, run_dir: Path, resuming: bool
) -> tuple[dict | None, dict[str, torch.Tensor] | None]:
    """(the checkpoint a resume continues, the bundle weights a new UNet starts from), read and checked against
    a UNet built on the side before the latents are encoded, so that one that does not fit is refused before
    anything is written. The side UNet draws its initial weights from a forked RNG: the run's draws stay as
    they were."""
    cfg, last = config.diffusion, run_dir / STAGE / LAST
    if not resuming and not cfg.init_from:
        return None, None
    with torch.random.fork_rng(devices=[]):
        probe = build_unet(cfg.args, cfg.augment_labels)
    if resuming:
        state = load_checkpoint(last, restore_rng=False, stage=STAGE, required=RESUMED)
        check_same_latents(state, config, last, run_dir)
        restore(probe, state, "model", last, "UNet", RESUME_HINT)
        return state, None
    weights = labelled_weights(
        starting_unet_weights(plain_unet(probe), cfg.init_from, cfg.conditioning), probe
    )
    restore(
        probe,
        {"weights": weights},
        "weights",
        Path(cfg.init_from["path"]),
        "UNet",
        "its weights are not those its bundle.json names: a damaged bundle",
    )
    return None, weights


def train_diffusion(config: TrainConfig | None, run_dir: Path, resume: bool = False) -> Path:
    """Train (or resume) the UNet of `run_dir` on its autoencoder's latents; returns the last checkpoint's path.

    Without a `config`, a resume reads the stage's own saved settings (`runner.run_config_path`)."""
    run_dir = Path(run_dir)
    context = setup(config.device if config else "auto")
    main, device = context.is_main, context.device
    config = resolve_run_config(run_dir, config, STAGE if resume else None)
    configure_threads(config)
    stage_dir = run_dir / STAGE
    last = stage_dir / LAST
    if last.exists() and not resume:
        raise InputError(f"{last} exists: pass --resume to continue that run, or choose another --run folder")
    cfg = config.diffusion
    kind = cfg.scheduler.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise InputError(f"unknown prediction type {kind!r} (choose from {', '.join(PREDICTION_TYPES)})")
    check_lr_schedule(cfg.lr_schedule, cfg.lr, cfg.lr_min)
    check_counts(config, cfg)
    torch.manual_seed(config.seed + 1 + context.rank)
    state, starting = starting_point(config, run_dir, continues_checkpoint(last, resume, main))
    cached = prepare_latents(run_dir, config, device, main, context)
    scale = float(cached["scale"])
    factor = latent_downsample_factor(config.autoencoder.spec())
    train_maps, val_maps = unpack(cached["train"]), unpack(cached["val"])
    for item in train_maps + val_maps:
        item.latent.mul_(scale)  # in place: the loaded cache is not kept twice
    length = cfg.iterations_per_epoch * cfg.batch_size * context.world_size
    dataset = LatentWindowDataset(
        train_maps, config, factor, length, config.seed, config.data.balance_regions
    )
    val_latents, val_inside = LatentWindowDataset(val_maps, config, factor, 1, config.seed, False).fixed(
        cfg.validation_windows, config.seed
    )
    batches = loader(dataset, cfg.batch_size, context, config.seed)
    alphas = alphas_cumprod(SchedulerSpec(**cfg.scheduler)).float()
    windows = ValidationSet(val_latents, val_inside, scale, alphas, device, config)

    unet = build_unet(cfg.args, cfg.augment_labels).to(device)
    groups = parameter_groups(unet)
    rate_scales = [group.pop("rate_scale", 1.0) for group in groups]  # from the code, never from a checkpoint
    optimiser = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.0)
    scaler = grad_scaler(device)
    ema = EMA(unet, cfg.ema_decay) if cfg.ema_decay > 0 else None
    # Everything that draws random numbers is built before the RNG state is restored.
    autoencoder = build_from_spec(config.autoencoder.spec()).to(device).eval()
    autoencoder.load_state_dict(cached["autoencoder"])
    start_epoch, step, elapsed = 0, 0, 0.0
    if state is not None:
        continue_rng(state, last, context.rank)
        restore(unet, state, "model", last, "UNet", RESUME_HINT)
        restore(optimiser, state, "optimizer", last, "optimiser", RESUME_HINT)
        restore(scaler, state, "scaler", last, "grad scaler", RESUME_HINT)
        if ema is not None:  # a run that trained without an EMA starts one from its weights, not from scratch
            averaged = "ema" if state.get("ema") is not None else "model"
            restore(ema.model, state, averaged, last, "UNet", RESUME_HINT)
        start_epoch, step, elapsed = state["epoch"] + 1, state["step"], state["elapsed_s"]
        del state  # the networks hold it now
        log_line(f"resumed {last} at epoch {start_epoch} (step {step})", main)
    elif starting is not None:
        unet.load_state_dict(starting)
        if ema is not None:
            ema.model.load_state_dict(starting)
        origin = cfg.init_from
        log_line(f"UNet starts from bundle {origin['bundle']} {origin['version']} ({origin['path']})", main)
    if (
        main
    ):  # only settings that built and loaded a UNet are written: a failed resume leaves the run as it was
        stage_dir.mkdir(parents=True, exist_ok=True)
        config.save(stage_dir / CONFIG_FILE)  # what a resume reads (`run_config_path`)
    log_line(
        f"UNet: {count_parameters(unet) / 1e6:.2f} M parameters; {context.world_size} process(es) on "
        f"{device}; latent windows {dataset.shape}, scale {scale:.5f}",
        main,
    )
    ddp_unet = wrap(unet, context)
    log = CsvLog(stage_dir / "log.csv") if main else None
    budget = Budget(config.max_minutes, elapsed)
    progress = Progress(
        cfg.epochs * cfg.iterations_per_epoch, start_epoch * cfg.iterations_per_epoch, "UNet", main
    )
    warmup = max(1, cfg.iterations_per_epoch)  # linear warm-up over the stage's first epoch
    planned = cfg.epochs * cfg.iterations_per_epoch

    def checkpoint(epoch: int, step: int) -> dict:
        return {
            "stage": STAGE,
            "epoch": epoch,
            "step": step,
            "elapsed_s": budget.elapsed,
            "model": unwrap(ddp_unet).state_dict(),
            "ema": ema.model.state_dict() if ema else None,
            "optimizer": optimiser.state_dict(),
            "scaler": scaler.state_dict(),
            "scale_factor": scale,
            "autoencoder": autoencoder.state_dict(),
            "config": config.to_dict(),
            "autoencoder_elapsed_s": float(cached.get("autoencoder_elapsed_s", 0.0)),
            "autoencoder_steps": int(cached.get("autoencoder_steps", 0)),
            "autoencoder_config": cached.get("autoencoder_config", {}),
            "autoencoder_id": cached.get("autoencoder_id"),
        }

    for epoch in range(start_epoch, cfg.epochs):
        dataset.set_epoch(epoch)
        batches.sampler.set_epoch(epoch)
        unet.train()
        total = 0.0
        for latents, inside, labels in batches:
            latents, inside = latents.to(device, non_blocking=True), inside.to(device, non_blocking=True)
            labels = labels.to(device) if cfg.augment_labels else None
            rate = learning_rate(step, cfg.lr, warmup, planned, cfg.lr_schedule, cfg.lr_min)
            for group, rate_scale in zip(optimiser.param_groups, rate_scales):
                group["lr"] = rate * rate_scale
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, len(alphas), (len(latents),), device=device)
            loss = diffusion_loss(ddp_unet, latents, inside, noise, timesteps, alphas, config, labels=labels)
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimiser)
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            scaler.step(optimiser)
            scaler.update()
            if ema is not None:
                ema.update(unet, step)
            step += 1
            total += loss.item()
            progress.update(loss=loss.item())
        row = {
            "epoch": epoch,
            "step": step,
            "loss": mean_over_ranks(total / max(len(batches), 1), context),
            "lr": optimiser.param_groups[0]["lr"],
        }
        last_epoch = epoch == cfg.epochs - 1
        stop = budget.exhausted(context)
        sampler_net = ema.model if ema is not None else unet
        rank_rng = gather_rng_states(context)  # every rank, before rank 0 validates and saves
        if main:
            if (epoch + 1) % config.validate_every == 0 or last_epoch or stop:
                row["val_loss"] = validate(unet, windows)
                if ema is not None:
                    row["val_loss_ema"] = validate(ema.model, windows)
                row["val_layout_error"] = layout_error(sampler_net, windows)
            if (epoch + 1) % config.sample_every == 0 or last_epoch or stop:
                row["sample_spread"] = write_samples(
                    stage_dir / "samples" / f"epoch{epoch:04d}.png", sampler_net, autoencoder, windows
                )
                spread = row["sample_spread"]
                if not 0.5 <= spread <= 2.0:
                    verdict = "sampling diverges (noise left in)" if spread > 2.0 else "a grey mean"
                    log_line(
                        f"samples' latent spread is {spread:.2f} x the data's: {verdict}; see {stage_dir / 'samples'}"
                    )
            row["elapsed_s"] = round(budget.elapsed, 1)
            with interrupts_deferred():  # the log gets an epoch's row once its checkpoint is in place
                save_checkpoint(last, checkpoint(epoch, step), rank_rng)
                log.write(row)
            log_line(format_row(row))
        barrier(context)
        if stop and not last_epoch:
            log_line(f"time budget of {config.max_minutes} min reached; resume with --resume", main)
            break
    if main and not last.exists():  # 0 epochs: the starting point (a bundle's UNet, say) is the result
        save_checkpoint(last, checkpoint(start_epoch - 1, step))
    progress.close()
    teardown(context)
    return last
