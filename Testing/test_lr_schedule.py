"""The UNet's learning-rate schedule: warm-up, then constant or cosine to a floor (the run that follows it is
in test_training_stages)."""

from __future__ import annotations

import numpy as np
import pytest

from fovcompletion.errors import InputError
from fovcompletion.training.lr_schedule import check_lr_schedule, learning_rate


def test_warm_up_then_constant():
    rates = [learning_rate(step, 1e-3, warmup=4, total=20) for step in range(20)]
    assert rates[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert rates[4:] == [1e-3] * 16


def test_cosine_falls_from_the_rate_to_the_floor_on_the_last_planned_iteration():
    lr, floor, warmup, total = 1e-3, 1e-5, 10, 110
    rates = np.array([learning_rate(s, lr, warmup, total, "cosine", floor) for s in range(total + 20)])
    after = rates[warmup:total]
    assert after[0] == pytest.approx(lr, rel=1e-3)
    assert np.all(np.diff(after) < 0)
    assert after[-1] == pytest.approx(floor)
    assert rates[warmup + 49] == pytest.approx((lr + floor) / 2)  # half way through the decay
    assert np.all(rates[total:] == pytest.approx(floor))  # a stage extended past its plan stays at the floor


@pytest.mark.parametrize(
    ("schedule", "lr_min", "message"),
    [
        ("linear", 0.0, "unknown learning-rate schedule"),
        ("cosine", 2e-3, "--lr-min"),
        ("cosine", np.nan, "--lr-min"),
    ],
)
def test_bad_settings_are_refused(schedule, lr_min, message):
    with pytest.raises(InputError, match=message):
        check_lr_schedule(schedule, 1e-3, lr_min)
