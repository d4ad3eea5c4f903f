"""Checkpoints that make any run resumable: models, optimisers, scaler, epoch, step and every RNG state.

Written atomically (temporary file, flushed to disk, then rename) so an interrupted save, a killed job or a
crashed machine never corrupts the last good one, and read with `weights_only=True`: a checkpoint holds tensors
and plain data, never code.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError

LAST = "checkpoint_last.pt"


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        ("MT19937", np.asarray(state["numpy"]).astype(np.uint32), int(state["numpy_pos"]), 0, 0.0)
    )
    random.setstate((3, tuple(int(v) for v in state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: Path, payload: dict[str, Any], rank_rng: list[dict[str, Any]] | None = None
) -> Path:
    """Atomic save of a checkpoint dict (`rng`, this process's RNG state, is added here). `rank_rng`: under DDP,
    every process's state (`distributed.gather_rng_states`), so that each rank resumes its own stream."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "rng": rng_state()}
    if rank_rng is not None:
        payload["rng_ranks"] = rank_rng
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())  # on disk before it replaces the last good one, not just cached
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)
    return path


def sync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable (POSIX: fsync the directory); a no-op where folders cannot be
    opened (Windows), where the rename is durable once it returns."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the checkpoint itself is on disk
    finally:
        os.close(handle)


def load_checkpoint(path: Path, restore_rng: bool = True, rank: int = 0) -> dict[str, Any]:
    """Load a checkpoint on the CPU; with `restore_rng` the global RNGs continue where the run stopped: rank 0
    from the state saved with the checkpoint, another rank from its own (`rng_ranks`), or, where the run had no
    such rank, from the seed it was given (never rank 0's, which would make the ranks draw alike)."""
    if not path.is_file():
        raise InputError(f"no checkpoint to resume from at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is a user-facing problem
        raise InputError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None
    if restore_rng:
        ranks = payload.get("rng_ranks") or []
        own = payload.get("rng") if rank == 0 else (ranks[rank] if rank < len(ranks) else None)
        if own is not None:
            set_rng_state(own)
    return payload
