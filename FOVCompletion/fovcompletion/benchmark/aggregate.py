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
    "ssim_seam",
    "psnr_seam",
    "mae_seam",
    "seam",
    "seam_jump",
    "seam_natural",
    "ssim_tissue",
    "sharpness",
    "edge_sharpness",
    "seam_brightness",
    "canal_continuity",
    "canal_reach",
    "slice_consistency",
    "value_range_violations",
)
LEVEL_KEYS = (
    "vertebra_count_error",
    "disc_f1",
    "disc_f1_near_seam",
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
    "disc_f1_near_seam_detected_in_truth",
    "vertebra_count_error_along_own_canal",
    "vertebrae_found_along_own_canal",
    "discs_found_along_own_canal",
)


def finite_values(values: Iterable[float | None]) -> np.ndarray:
    """The values that are numbers (None, NaN and infinities left out)."""
    return np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def mean_ci(values: Iterable[float | None]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of the finite values; NaN where there are none (interval NaN for one value)."""
    data = finite_values(values)
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if data.size == 1:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return mean, mean - half, mean + half


def finite_mean(values: Iterable[float | None]) -> float:
    """Mean of the finite values, NaN where there are none."""
    data = finite_values(values)
    return float(data.mean()) if data.size else math.nan


def _measures(outcome: Outcome) -> dict[str, float]:
    """An outcome's quality metrics and level counts, one flat dictionary."""
    return {**{key: outcome.metrics.get(key, math.nan) for key in QUALITY_KEYS}, **(outcome.levels or {})}


def mean_measures(outcomes: list[Outcome]) -> dict[str, float]:
    """Each measure's mean over the outcomes (finite values only)."""
    found = [_measures(o) for o in outcomes]
    keys = {key for measures in found for key in measures}
    return {key: finite_mean(measures.get(key) for measures in found) for key in keys}


def grouped(outcomes: list[Outcome], attribute: str) -> list[list[Outcome]]:
    """The outcomes split by one attribute ("case", "draw"), in order of first appearance."""
    groups: dict = {}
    for outcome in outcomes:
        groups.setdefault(getattr(outcome, attribute), []).append(outcome)
    return list(groups.values())


def draw_spread(outcomes: list[Outcome]) -> dict[str, float]:
    """The sampler's own noise in a row: the standard deviation, over draws, of the row's mean over cases with
    that draw (empty for rows drawn once). A difference between two rows smaller than this is seed, not method."""
    row_means = [mean_measures(draw) for draw in grouped(outcomes, "draw")]
    if len(row_means) < 2:
        return {}
    spread = {}
    for key in row_means[0]:
        values = [means.get(key, math.nan) for means in row_means]
        if all(math.isfinite(value) for value in values):
            spread[key] = float(np.std(values, ddof=1))
    return spread


def summarise(outcomes: list[Outcome]) -> dict:
    """One method's row of results.json: quality over cases, each case the mean of its draws."""
    done = [o for o in outcomes if o.skipped is None]
    cases = [mean_measures(case) for case in grouped(done, "case")]  # a case counts once, however often drawn
    row: dict = {
        "cases": len(cases),
        "skipped": len({o.case for o in outcomes if o.skipped is not None}),
        "draws": max((o.draw for o in done), default=0) + 1,
    }
    ci: dict[str, list[float]] = {}
    for key in QUALITY_KEYS:
        mean, low, high = mean_ci(case[key] for case in cases)
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
    if any(o.levels for o in done):
        row["levels"] = {key: finite_mean(case.get(key) for case in cases) for key in LEVEL_KEYS}
    spread = draw_spread(done)
    if spread:
        row["draw_sd"] = spread
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
