"""What every stage shares: the run folder, the configuration it holds, seeding, threads, data loading,
mixed precision and the time budget."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..device import autocast_dtype
from ..errors import InputError
from .config import TrainConfig, load_config
from .data import ScanRecord, Slab, find_scans, load_slab, phantom_slabs, split_scans
from .distributed import DistributedContext, mean_over_ranks
from .logs import log_line

CONFIG_FILE = "config.json"
DATA_FILE = "data.json"


def run_config_path(run_dir: Path, resumed_stage: str | None = None) -> Path:
    """Where a run's saved settings are read: a resumed stage that saved its own (the UNet's: an --init-from,
    augmentation labels, other augmentation) reads those, for the run's may no longer fit its checkpoint."""
    if resumed_stage is not None and (run_dir / resumed_stage / CONFIG_FILE).is_file():
        return run_dir / resumed_stage / CONFIG_FILE
    return run_dir / CONFIG_FILE


def resolve_run_config(
    run_dir: Path, config: TrainConfig | None, resumed_stage: str | None = None
) -> TrainConfig:
    """The given configuration, else the one the run folder holds (later stages, resumes: `run_config_path`)."""
    if config is not None:
        return config
    saved = run_config_path(run_dir, resumed_stage)
    if not saved.is_file():
        raise InputError(f"{run_dir} holds no {CONFIG_FILE}: start the run with train-autoencoder first")
    return load_config(saved)


def continues_checkpoint(last: Path, resume: bool, main: bool) -> bool:
    """Whether the stage continues its last checkpoint. `--resume` before the stage's first checkpoint starts
    the stage (so a time-sliced script may pass it every time), and says so rather than silently."""
    if resume and not last.exists():
        log_line(f"--resume: no checkpoint at {last} yet, so the stage starts from the beginning", main)
    return resume and last.exists()


def write_run_config(run_dir: Path, config: TrainConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / CONFIG_FILE)


def configure_threads(config: TrainConfig) -> None:
    if config.threads:
        torch.set_num_threads(int(config.threads))


@dataclass
class TrainingData:
    train: list[Slab]
    val: list[Slab]
    train_records: list[ScanRecord] = field(default_factory=list)
    val_records: list[ScanRecord] = field(default_factory=list)
    phantoms: int = 0  # synthetic phantoms among `train`
    template_records: list[ScanRecord] = field(default_factory=list)
    whole_spine: int = 0  # composites and bent templates among `train` (`whole_spine`)

    def scans(self) -> list[Slab]:
        """The training side's real scans: `train` without phantoms, composites and templates."""
        return [slab for slab in self.train if slab.record in self.train_records]


def load_training_data(config: TrainConfig, verbose: bool = True) -> TrainingData:
    """Scans split by subject, prepared by the inference code path; phantoms join the training side."""
    records = find_scans(config.data.roots, config.data.files)
    train_records, val_records = split_scans(records, config.data.held_out)
    train = [load_slab(r, config) for r in train_records]
    phantoms = phantom_slabs(config, config.data.phantoms)
    templates, whole_spine = [], []
    if config.data.templates:
        from .whole_spine import whole_spine_slabs

        templates = find_scans(config.data.templates, [])
        whole_spine = whole_spine_slabs(config, train_records, templates)
    val = [load_slab(r, config) for r in val_records]
    log_line(
        f"data: {len(train) + len(phantoms) + len(whole_spine)} training volumes ({len(train_records)} scans, "
        f"{len(phantoms)} phantoms, {len(whole_spine)} composites and bent templates), {len(val)} held-out "
        f"scans ({', '.join(r.subject for r in val_records) or 'none'})",
        verbose,
    )
    return TrainingData(
        train + phantoms + whole_spine,
        val,
        train_records,
        val_records,
        phantoms=len(phantoms),
        template_records=templates,
        whole_spine=len(whole_spine),
    )


def write_data_manifest(run_dir: Path, data: TrainingData) -> None:
    """Names and sources of the scans used (never the images), for the bundle's training record. What the UNet
    stage added (`diffusion.record_synthetic_data`: its phantoms, composites and templates) is kept: a resumed
    autoencoder stage rewrites this file, and the UNet's latents, which that record describes, stay valid."""
    path = run_dir / DATA_FILE
    previous = json.loads(path.read_text()) if path.is_file() else {}
    manifest = {
        "training": [r.describe() for r in data.train_records],
        "held_out": [r.describe() for r in data.val_records],
        "phantoms": data.phantoms,
        "templates": [r.describe() for r in data.template_records],
        "whole_spine": data.whole_spine,
    }
    for key in ("phantoms_diffusion", "whole_spine_diffusion"):
        if key in previous:
            manifest[key] = previous[key]
    add_templates(manifest, previous.get("templates", []))
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def add_templates(manifest: dict, templates: list[dict]) -> None:
    """Add template entries to a data manifest, each subject once (either stage may use a template)."""
    known = {t["subject"] for t in manifest.get("templates", [])}
    manifest["templates"] = manifest.get("templates", []) + [
        t for t in templates if t["subject"] not in known
    ]


def autocast(device: torch.device):
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling only for float16 (bfloat16 and float32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=autocast_dtype(device) == torch.float16)


class Budget:
    """A wall-clock budget for this invocation, so that a long run trains in slices of a known length;
    `elapsed` (logged and checkpointed) also counts the run's time before the resume."""

    def __init__(self, max_minutes: float | None, already_s: float = 0.0) -> None:
        self.limit_s = None if max_minutes is None else 60.0 * max_minutes
        self.start = time.perf_counter()
        self.already_s = already_s

    @property
    def elapsed(self) -> float:
        return self.already_s + time.perf_counter() - self.start

    def session_s(self) -> float:
        return time.perf_counter() - self.start

    def exhausted(self, context: DistributedContext) -> bool:
        """All ranks agree (rank 0's clock decides when clocks differ slightly)."""
        over = self.limit_s is not None and self.session_s() >= self.limit_s
        return mean_over_ranks(float(over), context) > 0
