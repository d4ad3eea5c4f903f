"""Per-method summaries over cases: means with 95% t-intervals for quality, medians/maxima for cost."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import stats

from .runner import BenchmarkRun, Outcome

QUALITY_KEYS = (
    "ssim",
    "psnr",
    "mae",
    "ssim_near",
    "ssim_far",
    "psnr_near",
    "psnr_far",
    "mae_near",
    "mae_far",
    "seam",
    "seam_jump",
    "seam_natural",
    "ssim_tissue",
    "sharpness",
    "seam_brightness",
    "canal_continuity",
    "slice_consistency",
    "value_range_violations",
)
LEVEL_KEYS = (
    "vertebra_count_error",
    "disc_f1",
    "vertebrae_abs_err",
    "discs_abs_err",
    "vertebrae_found",
    "vertebrae_true",
    "discs_found",
    "discs_true",
    "vertebrae_detected_in_truth",
    "discs_detected_in_truth",
    "disc_position_f1",
    "disc_position_f1_detected_in_truth",
    "vertebra_count_error_along_own_canal",
    "vertebrae_found_along_own_canal",
    "discs_found_along_own_canal",
)


def mean_ci(values: Iterable[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of the finite values; NaN where there are none (interval NaN for one value)."""
    data = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size == 1:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return mean, mean - half, mean + half


def summarise(outcomes: list[Outcome]) -> dict:
    """One method's row of results.json."""
    done = [o for o in outcomes if o.skipped is None]
    row: dict = {"cases": len(done), "skipped": len(outcomes) - len(done)}
    ci: dict[str, list[float]] = {}
    for key in QUALITY_KEYS:
        mean, low, high = mean_ci(o.metrics.get(key, math.nan) for o in done)
        row[key] = mean
        ci[key] = [low, high]
    row["known_max_abs_err"] = max((o.metrics["known_max_abs_err"] for o in done), default=math.nan)
    row["nfe"] = int(np.median([o.nfe for o in done])) if done else 0
    row["seconds_per_volume"] = float(np.mean([o.seconds for o in done])) if done else math.nan
    ci["seconds_per_volume"] = list(mean_ci(o.seconds for o in done)[1:])
    nfe = sum(o.nfe for o in done)
    unet = sum(o.unet_seconds for o in done)
    inputs = sum(o.nfe * o.unet_batch for o in done)  # per image the UNet sees, as bundles record speed
    row["seconds_per_unet_step"] = unet / nfe if nfe else None
    row["seconds_per_unet_step_per_slice"] = unet / inputs if inputs else None
    row["peak_rss_mb"] = max((o.peak_rss_mb for o in done), default=math.nan)
    levels = [o.levels for o in done if o.levels]
    if levels:
        row["levels"] = {key: mean_ci(level[key] for level in levels)[0] for key in LEVEL_KEYS}
    row["ci95"] = ci
    return row


def summarise_run(run: BenchmarkRun, source: str | None, cases: set[str] | None = None) -> dict[str, dict]:
    """Rows for every method over the cases of one source ("real", "phantom"; None for all), or of `cases`."""
    rows = {}
    for method in run.methods:
        chosen = [
            o
            for o in run.outcomes
            if o.method == method.name
            and (source is None or o.source == source)
            and (cases is None or o.case in cases)
        ]
        if chosen:
            rows[method.name] = summarise(chosen)
    return rows
