"""Distributed training as torchrun runs it: 2 processes, gloo backend, CPU, tiny model and tiny NIfTI data."""

from __future__ import annotations

import csv
import os
import socket

import torch
import torch.multiprocessing as mp
from training_helpers import tiny_config, write_bids

from fovcompletion.training.checkpoints import LAST, load_checkpoint

WORLD = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, root: str, run: str, port: int, stage: str) -> None:
    """What torchrun does for each process: set the rendezvous variables, then run one stage (one command)."""
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
        }
    )
    from pathlib import Path

    from fovcompletion.training.autoencoder import train_autoencoder
    from fovcompletion.training.diffusion import train_diffusion

    torch.set_num_threads(1)
    config = tiny_config(Path(root))
    (train_autoencoder if stage == "autoencoder" else train_diffusion)(config, Path(run))


def test_two_process_gloo_training(tmp_path, capfd):
    root = write_bids(tmp_path / "bids")
    run = tmp_path / "run"
    # One process group per command, as with torchrun: each stage is its own launch on a fresh port.
    for stage in ("autoencoder", "diffusion"):
        mp.spawn(_worker, args=(str(root), str(run), _free_port(), stage), nprocs=WORLD, join=True)
    for stage in ("autoencoder", "diffusion"):
        state = load_checkpoint(run / stage / LAST, restore_rng=False)
        assert state["epoch"] == 1 and state["step"] == 4  # steps per process: 2 epochs x 2 iterations
        ranks = state["rng_ranks"]  # each rank's own stream, for a resume: they must not draw alike
        assert len(ranks) == WORLD and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
        with open(run / stage / "log.csv") as stream:
            assert [int(r["epoch"]) for r in csv.DictReader(stream)] == [0, 1]  # rank 0 only logs
    logged = capfd.readouterr().err
    assert "2 process(es) on cpu" in logged  # the process group was formed
    assert logged.count("M parameters, discriminator") == 1  # and only rank 0 logs
