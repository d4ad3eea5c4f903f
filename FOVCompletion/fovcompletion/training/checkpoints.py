"""Checkpoints that make any run resumable: models, optimisers, scaler, epoch, step and every RNG state.

Written atomically (temporary file, flushed to disk, then rename) so an interrupted save, a killed job or a
crashed machine never corrupts the last good one, and read with `weights_only=True`: a checkpoint holds tensors
and plain data, never code.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bundle import first_mismatch
from ..errors import InputError, first_line

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


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back while the block runs and deliver them once it is done: a cancel that
    lands inside `torch.save` would otherwise tear its writer apart (a traceback, not a clean cancel) and lose
    the epoch being saved. Only the main thread can handle signals; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):  # the command line turns each into a cancel
        signum = getattr(signal, name, None)
        handler = signal.getsignal(signum) if signum is not None else None
        if handler is None or handler is signal.SIG_IGN:  # set outside Python, or ignored: left alone
            continue
        previous[signum] = signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):  # each once, to the handler it was meant for
            signal.raise_signal(signum)


def save_checkpoint(
    path: Path, payload: dict[str, Any], rank_rng: list[dict[str, Any]] | None = None
) -> Path:
    """Atomic save of a checkpoint dict (`rng`, this process's RNG state, is added here), with interrupts held
    back until it is in place. `rank_rng`: under DDP, every process's state (`distributed.gather_rng_states`), so
    that each rank resumes its own stream."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "rng": rng_state()}
    if rank_rng is not None:
        payload["rng_ranks"] = rank_rng
    with interrupts_deferred():
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


def load_checkpoint(
    path: Path,
    restore_rng: bool = True,
    rank: int = 0,
    stage: str | None = None,
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Load a checkpoint on the CPU; with `restore_rng` the global RNGs continue where the run stopped: rank 0
    from the state saved with the checkpoint, another rank from its own (`rng_ranks`), or, where the run had no
    such rank, from the seed it was given (never rank 0's, which would make the ranks draw alike).

    An unreadable file, one of another `stage` (a UNet's in the autoencoder's place) or one without the
    `required` entries is one line, before anything is loaded from it."""
    if not path.is_file():
        raise InputError(f"no checkpoint to resume from at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is a user-facing problem
        raise InputError(f"cannot read checkpoint {path}: {first_line(error)}") from None
    if not isinstance(payload, dict):
        raise InputError(f"{path} is not a checkpoint: it holds a {type(payload).__name__}, not a dict")
    found = payload.get("stage", stage)
    if stage is not None and found != stage:
        raise InputError(f"{path} is a checkpoint of the {found!r} stage, not of the {stage!r} stage")
    missing = [key for key in required if key not in payload]
    if missing:
        raise InputError(f"{path} is not a complete checkpoint: it has no {', '.join(map(repr, missing))}")
    if restore_rng:
        continue_rng(payload, path, rank)
    return payload


def continue_rng(payload: dict[str, Any], path: Path, rank: int = 0) -> None:
    """Restore the RNG state a checkpoint saved for `rank` (none saved for it: the seed it was given stays)."""
    try:
        ranks = payload.get("rng_ranks") or []
        own = payload.get("rng") if rank == 0 else (ranks[rank] if rank < len(ranks) else None)
        if own is not None:
            set_rng_state(own)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        raise InputError(
            f"{path}: its random-number state cannot be restored ({first_line(error)})"
        ) from None


def restore(target: Any, state: dict[str, Any], key: str, path: Path, what: str, hint: str) -> None:
    """Load `state[key]` into `target` (a network, an optimiser, a grad scaler): an entry that does not fit, a
    checkpoint of another network, preset or run, is one line naming the first mismatch, not a traceback that
    lists hundreds of keys. `hint` says what to do instead."""
    try:
        target.load_state_dict(state[key])
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
        raise InputError(
            f"{path} does not fit the {what} these settings build ({hint}): {first_mismatch(error)}"
        ) from None
