"""The UNet's learning rate at each iteration: a linear warm-up, then constant or a cosine decay.

A cosine decay to a small floor over a stage's planned iterations is the usual way to end a diffusion run: the
last iterations take small steps and settle in a minimum instead of hovering around it. It is a function of
the global step only, so a resumed run takes exactly the rates an uninterrupted one would have taken.
"""

from __future__ import annotations

import math

from ..errors import InputError

LR_SCHEDULES = ("constant", "cosine")


def check_lr_schedule(schedule: str, lr: float, lr_min: float) -> None:
    """One-line refusal of a schedule the loop could not follow."""
    if schedule not in LR_SCHEDULES:
        raise InputError(
            f"unknown learning-rate schedule {schedule!r} (choose from {', '.join(LR_SCHEDULES)})"
        )
    if not (math.isfinite(lr_min) and 0.0 <= lr_min <= lr):
        raise InputError(f"--lr-min (lr_min) must be between 0 and the learning rate {lr:g}, not {lr_min:g}")


def learning_rate(
    step: int, lr: float, warmup: int, total: int, schedule: str = "constant", lr_min: float = 0.0
) -> float:
    """The rate for iteration `step` (0-based) of a stage planned for `total` iterations.

    Warm-up scales `lr` linearly over the first `warmup` iterations; after it, "cosine" falls from `lr` to
    `lr_min`, which the stage's last planned iteration (`total - 1`) takes, and stays there if the stage is
    extended past its plan. The stage checks the settings once with `check_lr_schedule`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    progress = min(1.0, (step + 1 - warmup) / max(1, total - warmup))
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * progress))
