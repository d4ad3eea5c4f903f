"""Stage 1: the autoencoder (a VQ-VAE, or an AutoencoderKL), with the reference recipe's losses (L1 +
quantisation or KL + perceptual + patch adversarial after a warm-up), resumable, distributed with DDP when
launched by torchrun."""

from __future__ import annotations

import uuid
from pathlib import Path

import torch

from ..errors import InputError, first_line
from ..latent_codec import decode, encode
from ..networks import build_from_spec, count_parameters
from ..residual_latent import hold_base_frozen, residual_spread_factors, trainable_parameters
from .checkpoints import LAST, interrupts_deferred, load_checkpoint, restore, save_checkpoint
from .config import AutoencoderConfig, TrainConfig, check_counts
from .data import WindowDataset, WindowSampler, fixed_windows
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
from .initialise import initial_weights, load_starting_autoencoder, own_decoder
from .logs import CsvLog, Progress, format_row, log_line, save_grid
from .lr_schedule import check_lr_schedule, learning_rate
from .runner import (
    Budget,
    autocast,
    configure_threads,
    continues_checkpoint,
    grad_scaler,
    load_training_data,
    resolve_run_config,
    write_data_manifest,
    write_run_config,
)

STAGE = "autoencoder"
# What a resume loads, each into the part these settings build (`checkpoints.restore`).
RESUMED = (
    ("model", "autoencoder"),
    ("discriminator", "discriminator"),
    ("optimizer", "optimiser"),
    ("optimizer_discriminator", "discriminator's optimiser"),
    ("scaler", "grad scaler"),
    ("scaler_discriminator", "discriminator's grad scaler"),
)


def build_discriminator(config: AutoencoderConfig) -> torch.nn.Module:
    from monai.networks.nets import PatchDiscriminator

    return PatchDiscriminator(
        spatial_dims=2,
        channels=config.discriminator_channels,
        in_channels=1,
        num_layers_d=config.discriminator_layers,
    )


def build_perceptual(
    config: AutoencoderConfig, device: torch.device, verbose: bool
) -> torch.nn.Module | None:
    """The perceptual term needs a pretrained network; off by default because offline machines lack it."""
    if config.perceptual_weight <= 0:
        log_line(
            "perceptual loss: off (weight 0). It needs pretrained weights (downloaded by MONAI/lpips, or a "
            "local file with --perceptual-weights); enable it with --perceptual-weight 0.001",
            verbose,
        )
        return None
    from monai.losses import PerceptualLoss

    try:
        loss = PerceptualLoss(
            spatial_dims=2,
            network_type=config.perceptual_network,
            pretrained=True,
            pretrained_path=config.perceptual_weights,
        )
    except Exception as error:  # noqa: BLE001 - missing package, no network, bad file: all the same to the user
        detail = first_line(error)
        raise InputError(
            f"perceptual loss ({config.perceptual_network}) needs pretrained weights that could not be loaded "
            f"({detail}); give a local file with --perceptual-weights or use --perceptual-weight 0"
        ) from None
    log_line(f"perceptual loss: {config.perceptual_network}, weight {config.perceptual_weight}", verbose)
    return loss.to(device).eval()


def masked_l1(recon: torch.Tensor, images: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the pixels that hold data: padding past a scan's ends and a composite's
    unknown parts are never a target."""
    weight = inside.to(recon.dtype)
    return ((recon - images).abs() * weight).sum() / weight.sum().clamp(min=1.0)


def judged_where_known(recon: torch.Tensor, images: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """The reconstruction where there is data and the image itself elsewhere, for the losses that look at whole
    windows (perceptual, adversarial): the unknown parts get no gradient from them, as from the L1. Left to the
    discriminator alone, the decoder learns to paint a checkerboard into the padding."""
    return torch.where(inside.bool(), recon, images)


def decode_the_mean(model: torch.nn.Module) -> None:
    """Make an AutoencoderKL's training forward decode its mean, as the engine does, instead of a random
    draw (the forward itself stays, so DDP still sees one forward per backward)."""
    model.sampling = lambda mean, sigma: mean


def reconstruction_and_penalty(
    outputs: tuple[torch.Tensor, ...], cfg: AutoencoderConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, weighted latent penalty) of a training forward: a VQ-VAE gives its quantisation (commitment)
    loss; an AutoencoderKL its KL divergence from a unit Gaussian, per image, times `kl_weight`."""
    if cfg.network == "AutoencoderKL":
        recon, mean, sigma = outputs
        variance = sigma.pow(2)
        kl = 0.5 * (mean.pow(2) + variance - torch.log(variance) - 1).sum(dim=(1, 2, 3)).mean()
        return recon, cfg.kl_weight * kl
    recon, quantisation = outputs
    return recon, quantisation.mean()


def decoder_only(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Freeze everything but the decoder (the encoder, a codebook, a KL autoencoder's latent convolutions) and
    return the decoder's parameters: the latents stay exactly what they were, so a UNet trained on them stays
    valid."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("decoder."))
    return list(model.decoder.parameters())


def hold_frozen(model: torch.nn.Module) -> None:
    """Keep the frozen parts in inference mode while the decoder trains: a VQ-VAE's codebook would otherwise go on
    moving with its exponential averages, and the latents with it."""
    for name, child in model.named_children():
        if name != "decoder":
            child.eval()


def round_trip(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Encode and decode as inference does (a KL encoder's mean, not a random draw)."""
    return decode(model, encode(model, images))


def validate(
    model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, device: torch.device, batch: int
) -> dict[str, float]:
    """L1 over whole windows and over the inside-the-scan pixels of the fixed validation windows."""
    model.eval()
    total, inside, count, count_inside = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = images[start : start + batch].to(device)
            m = masks[start : start + batch].to(device)
            error = (round_trip(model, x).float() - x).abs()
            total += float(error.sum())
            count += error.numel()
            inside += float((error * m).sum())
            count_inside += int(m.sum())
    return {"val_l1": total / max(count, 1), "val_l1_inside": inside / max(count_inside, 1)}


def write_samples(path: Path, model: torch.nn.Module, images: torch.Tensor, device: torch.device) -> None:
    model.eval()
    with torch.no_grad():
        recon = round_trip(model, images[:6].to(device)).float().cpu()
    rows = [
        [x[0].numpy(), r[0].numpy(), (r[0] - x[0]).abs().numpy() * 2 - 1] for x, r in zip(images[:6], recon)
    ]
    save_grid(path, rows)


def train_autoencoder(config: TrainConfig | None, run_dir: Path, resume: bool = False) -> Path:
    """Train (or resume) the autoencoder of `run_dir`; returns the last checkpoint's path."""
    run_dir = Path(run_dir)
    context = setup(config.device if config else "auto")
    main = context.is_main
    config = resolve_run_config(run_dir, config)
    configure_threads(config)
    stage_dir = run_dir / STAGE
    last = stage_dir / LAST
    if last.exists() and not resume:
        raise InputError(f"{last} exists: pass --resume to continue that run, or choose another --run folder")
    cfg = config.autoencoder
    check_lr_schedule(cfg.lr_schedule, cfg.lr, cfg.lr_min)
    check_counts(config, cfg)
    planned = cfg.epochs * cfg.iterations_per_epoch
    device = context.device
    torch.manual_seed(config.seed + context.rank)
    data = load_training_data(config, verbose=main)
    sampler = WindowSampler(data.train, config, shape=cfg.crop, on_grid=cfg.crop_on_grid)
    val_images, val_masks = fixed_windows(
        WindowSampler(data.val or data.train, config, augment=False), cfg.validation_windows, config.seed
    )
    dataset = WindowDataset(
        sampler, cfg.iterations_per_epoch * cfg.batch_size * context.world_size, config.seed
    )
    batches = loader(dataset, cfg.batch_size, context, config.seed)

    resuming = continues_checkpoint(last, resume, main)
    if cfg.freeze_encoder and not resuming and not cfg.init_from:
        raise InputError("--freeze-encoder trains a decoder for a bundle's encoder: give --init-from BUNDLE")
    model = build_from_spec(cfg.spec()).to(device)
    if cfg.network == "AutoencoderKL" and cfg.decode_mean:
        decode_the_mean(model)
    discriminator = build_discriminator(cfg).to(device)
    if cfg.residual:
        trained = trainable_parameters(model)
    else:
        trained = decoder_only(model) if cfg.freeze_encoder else list(model.parameters())
    opt_g = torch.optim.Adam(trained, lr=cfg.lr)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr_discriminator)
    scaler_g, scaler_d = grad_scaler(device), grad_scaler(device)
    start_epoch, step, elapsed = 0, 0, 0.0
    # This autoencoder's name, kept by its resumes: a UNet checkpoint names the latents it learned by it, so that
    # another run's UNet, or one of an autoencoder trained since from scratch, is not resumed on these.
    autoencoder_id = uuid.uuid4().hex  # os.urandom: no draw from the seeded RNGs
    if resuming:
        required = tuple(key for key, _ in RESUMED) + ("epoch", "step", "elapsed_s")
        state = load_checkpoint(last, rank=context.rank, stage=STAGE, required=required)
        parts = {"model": model, "discriminator": discriminator, "optimizer": opt_g}
        parts.update(optimizer_discriminator=opt_d, scaler=scaler_g, scaler_discriminator=scaler_d)
        for key, what in RESUMED:
            restore(parts[key], state, key, last, what, "resume with the run's own")
        start_epoch, step, elapsed = state["epoch"] + 1, state["step"], state["elapsed_s"]
        autoencoder_id = state.get("autoencoder_id") or autoencoder_id
        log_line(f"resumed {last} at epoch {start_epoch} (step {step})", main)
    elif cfg.init_from:
        decoder_loaded = load_starting_autoencoder(
            model, initial_weights(cfg.init_from, "autoencoder"), fresh_decoder=own_decoder(cfg)
        )
        origin = cfg.init_from
        log_line(
            f"{cfg.network} starts from bundle {origin['bundle']} {origin['version']} ({origin['path']})"
            + ("" if decoder_loaded else "; its decoder, of other widths, starts fresh"),
            main,
        )
    if cfg.residual:
        log_line(
            f"training a residual encoder of {cfg.residual['latent_channels']} latent channels and the decoder: "
            "the bundle's encoder and its channels stay as they are",
            main,
        )
    elif cfg.freeze_encoder:
        log_line("training the decoder alone: the encoder and its latents stay the bundle's", main)
    log_line(
        f"{cfg.network}: {count_parameters(model) / 1e6:.2f} M parameters, discriminator "
        f"{count_parameters(discriminator) / 1e6:.2f} M; {context.world_size} process(es) on {device}",
        main,
    )
    ddp_model, ddp_disc = wrap(model, context), wrap(discriminator, context)
    perceptual = build_perceptual(cfg, device, main)
    if main:  # only settings that built and loaded everything are written: a failed start leaves no trace
        write_run_config(run_dir, config)
        write_data_manifest(run_dir, data)
        stage_dir.mkdir(parents=True, exist_ok=True)
    from monai.losses import PatchAdversarialLoss

    adversarial_loss = PatchAdversarialLoss(criterion="least_squares")
    log = CsvLog(stage_dir / "log.csv") if main else None
    budget = Budget(config.max_minutes, elapsed)
    progress = Progress(
        cfg.epochs * cfg.iterations_per_epoch, start_epoch * cfg.iterations_per_epoch, cfg.network, main
    )

    # Residual channels: the factors that match their spread to the bundle's channels (one latent scale factor
    # for all, so the UNet's noise fits each alike), measured on training windows at every save and kept beside
    # the weights, never applied to the weights being trained, so that a resumed run continues them exactly; the
    # run's autoencoder is read with them applied (`diffusion.load_trained_autoencoder`).
    residual_windows = None
    if cfg.residual and main:
        residual_windows = fixed_windows(
            WindowSampler(data.train, config, augment=False), cfg.validation_windows, config.seed
        )[0]

    def residual_factors() -> torch.Tensor | None:
        if residual_windows is None:
            return None
        was_training = model.training
        model.eval()
        factors = residual_spread_factors(model, residual_windows.to(device).split(cfg.batch_size))
        model.train(was_training)
        return factors.cpu()

    def checkpoint(epoch: int, step: int, factors: torch.Tensor | None) -> dict:
        return {
            "residual_factors": factors,
            "stage": STAGE,
            "epoch": epoch,
            "step": step,
            "elapsed_s": budget.elapsed,
            "model": unwrap(ddp_model).state_dict(),
            "discriminator": unwrap(ddp_disc).state_dict(),
            "optimizer": opt_g.state_dict(),
            "optimizer_discriminator": opt_d.state_dict(),
            "scaler": scaler_g.state_dict(),
            "scaler_discriminator": scaler_d.state_dict(),
            "config": config.to_dict(),
            "autoencoder_id": autoencoder_id,
        }

    saved_epoch, factors = start_epoch - 1, None
    for epoch in range(start_epoch, cfg.epochs):
        dataset.set_epoch(epoch)
        batches.sampler.set_epoch(epoch)
        model.train()
        if cfg.residual:
            hold_base_frozen(model)
        elif cfg.freeze_encoder:
            hold_frozen(model)
        discriminator.train()
        adversarial = cfg.adversarial_weight > 0 and epoch >= cfg.adversarial_warmup_epochs
        sums = {"l1": 0.0, "latent": 0.0, "generator": 0.0, "discriminator": 0.0, "perceptual": 0.0}
        for images, inside in batches:
            images = images.to(device, non_blocking=True)
            inside = inside.to(device, non_blocking=True)
            for group in opt_g.param_groups:
                group["lr"] = learning_rate(step, cfg.lr, 0, planned, cfg.lr_schedule, cfg.lr_min)
            with autocast(device):
                recon, penalty = reconstruction_and_penalty(ddp_model(images), cfg)
                recon = recon.float()
                l1 = masked_l1(recon, images, inside)
                loss = l1 + penalty
                judged = judged_where_known(recon, images, inside)
                if perceptual is not None:
                    p_loss = perceptual(judged, images)
                    loss = loss + cfg.perceptual_weight * p_loss
                    sums["perceptual"] += p_loss.item()
                if adversarial:
                    fake_logits = ddp_disc(judged.contiguous())[-1]
                    g_loss = adversarial_loss(fake_logits, target_is_real=True, for_discriminator=False)
                    loss = loss + cfg.adversarial_weight * g_loss
                    sums["generator"] += g_loss.item()
            opt_g.zero_grad(set_to_none=True)
            scaler_g.scale(loss).backward()
            scaler_g.step(opt_g)
            scaler_g.update()
            if adversarial:
                with autocast(device):
                    # Real and fake in one forward: DDP expects one forward per backward.
                    logits = ddp_disc(torch.cat([judged.detach(), images]).contiguous())[-1]
                    fake, real = logits[: len(images)], logits[len(images) :]
                    d_loss = 0.5 * (
                        adversarial_loss(fake, target_is_real=False, for_discriminator=True)
                        + adversarial_loss(real, target_is_real=True, for_discriminator=True)
                    )
                opt_d.zero_grad(set_to_none=True)
                scaler_d.scale(cfg.adversarial_weight * d_loss).backward()
                scaler_d.step(opt_d)
                scaler_d.update()
                sums["discriminator"] += d_loss.item()
            sums["l1"] += l1.item()
            sums["latent"] += penalty.item()
            step += 1
            progress.update(l1=l1.item())
        n = max(len(batches), 1)
        row = {
            "epoch": epoch,
            "step": step,
            "adversarial": int(adversarial),
            "lr": opt_g.param_groups[0]["lr"],
            **{k: mean_over_ranks(v / n, context) for k, v in sums.items()},
        }
        last_epoch = epoch == cfg.epochs - 1
        stop = budget.exhausted(context)
        rank_rng = gather_rng_states(context)  # every rank, before rank 0 validates and saves
        if main:
            if (epoch + 1) % config.validate_every == 0 or last_epoch or stop:
                row.update(validate(model, val_images, val_masks, device, cfg.batch_size))
            if (epoch + 1) % config.sample_every == 0 or last_epoch or stop:
                write_samples(stage_dir / "samples" / f"epoch{epoch:04d}.png", model, val_images, device)
            row["elapsed_s"] = round(budget.elapsed, 1)
            factors = residual_factors()
            with interrupts_deferred():  # the log gets an epoch's row once its checkpoint is in place
                save_checkpoint(last, checkpoint(epoch, step, factors), rank_rng)
                log.write(row)
            saved_epoch = epoch
            log_line(format_row(row))
        barrier(context)
        if stop and not last_epoch:
            log_line(f"time budget of {config.max_minutes} min reached; resume with --resume", main)
            break
    if main and not last.exists():  # 0 epochs: the starting point is the result
        factors = residual_factors()
        save_checkpoint(last, checkpoint(saved_epoch, step, factors))
    if factors is not None:
        log_line(
            f"residual channels to be read at x{factors.min():.3g}-{factors.max():.3g}: the bundle's channels' "
            "spread"
        )
    progress.close()
    teardown(context)
    return last
