"""Write what a benchmark found: results.json (the issue's shape), results.md, quality_vs_steps.png, examples.png."""

from __future__ import annotations

import contextlib
import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..image_io import write_all_or_none
from ..regions import visible_range
from .aggregate import finite_mean, summarise_run
from .ceiling import is_ceiling
from .metrics import boundary_pairs
from .runner import BenchmarkRun, Method


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


SECTIONS = {"phantom": "phantoms", "template": "templates"}  # source -> results.json key of its own section


def build_results(run: BenchmarkRun, hide_mm: float, extra: dict[str, Any]) -> dict[str, Any]:
    """The results.json document: headline `methods` over real cases (phantoms, then templates, when there are
    none); phantoms and templates get sections of their own."""
    sources = {o.source for o in run.outcomes}
    main = next((source for source in ("real", "phantom", "template") if source in sources), "real")
    main_cases = sorted({o.case for o in run.outcomes if o.source == main})
    results: dict[str, Any] = {
        "model": run.model,
        "device": run.device,
        "threads": run.threads,
        "cases": len(main_cases),
        "hide_mm": float(hide_mm),
        "methods": summarise_run(run, main),
        "source": main,
        "case_names": main_cases,
        **extra,
    }
    reference_cases = sorted(
        {o.case for o in run.outcomes if o.method == "reference" and o.skipped is None and o.source == main}
    )
    if reference_cases and len(reference_cases) < len(main_cases):  # a paired comparison with the reference
        results["on_reference_cases"] = {
            "cases": len(reference_cases),
            "case_names": reference_cases,
            "methods": summarise_run(run, main, set(reference_cases)),
        }
    for source, key in SECTIONS.items():
        if source != main and source in sources:
            names = sorted({o.case for o in run.outcomes if o.source == source})
            results[key] = {"cases": len(names), "case_names": names, "methods": summarise_run(run, source)}
    results["per_case"] = [
        {
            "case": o.case,
            "source": o.source,
            "method": o.method,
            "draw": o.draw,
            "seed": o.seed,
            **o.metrics,
            "nfe": o.nfe,
            "seconds": o.seconds,
            "unet_seconds": o.unet_seconds,
            "peak_rss_mb": o.peak_rss_mb,
            "levels": o.levels,
            "skipped": o.skipped,
        }
        for o in run.outcomes
    ]
    return _clean(results)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _with_ci(row: dict, key: str, digits: int = 3) -> str:
    low, high = row.get("ci95", {}).get(key) or [None, None]
    text = _fmt(row.get(key), digits)
    if low is not None and high is not None and row.get("cases", 0) >= 3:  # t-intervals of 2 cases say little
        text += f" ({_fmt(low, digits)}–{_fmt(high, digits)})"
    return text


def _level_cells(row: dict) -> list[str]:
    found = row.get("levels") or {}
    return [
        _fmt(found.get("vertebra_count_error"), 1),
        _fmt(found.get("vertebra_count_error_along_own_canal"), 1),
        _fmt(found.get("discs_abs_err"), 1),
        _fmt(found.get("disc_f1"), 2),
        _fmt(found.get("disc_position_f1_detected_in_truth"), 2),
        _fmt(found.get("disc_f1_near_seam"), 2),
        _fmt(found.get("disc_f1_near_seam_detected_in_truth"), 2),
    ]


def _name(name: str) -> str:
    if name == "retrieval-oracle":
        return f"`{name}` (the truth's choice)"
    return f"`{name}` (ceiling)" if is_ceiling(name) else f"`{name}`"


def methods_table(methods: dict[str, dict], levels: bool = False) -> list[str]:
    """A markdown table, one method per line: cost, the overall numbers and what the eye sees."""
    header = [
        "method",
        "cases",
        "NFE",
        "s / volume",
        "SSIM (95% CI)",
        "tissue SSIM",
        "sharpness",
        "edge sharpness",
        "seam brightness",
        "canal continuity",
        "canal reach",
        "slice consistency",
        "range violations",
        "PSNR dB",
        "MAE",
        "seam",
    ]
    if levels:
        header += [
            "vertebra count err",
            "along its own canal",
            "discs err",
            "disc F1",
            "disc F1 of the truth",
            "disc F1, 128 mm",
            "of the truth",
        ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in methods.items():
        cells = [
            _name(name),
            str(row.get("cases", "")),
            _fmt(row["nfe"]) if row.get("nfe") else "0",
            _fmt(row.get("seconds_per_volume"), 2),
            _with_ci(row, "ssim"),
            _fmt(row.get("ssim_tissue")),
            _fmt(row.get("sharpness"), 2),
            _fmt(row.get("edge_sharpness"), 2),
            _fmt(row.get("seam_brightness"), 2),
            _fmt(row.get("canal_continuity"), 2),
            _fmt(row.get("canal_reach"), 2),
            _fmt(row.get("slice_consistency"), 2),
            _fmt(row.get("value_range_violations"), 4),
            _fmt(row.get("psnr"), 2),
            _fmt(row.get("mae"), 4),
            _fmt(row.get("seam"), 2),
        ]
        if levels:
            cells += _level_cells(row)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def details_table(methods: dict[str, dict]) -> list[str]:
    """The rest of each row: SSIM next to, near and far from the seam, UNet time, paste-back error, memory."""
    header = [
        "method",
        "SSIM ≤8 mm",
        "SSIM ≤32 mm",
        "SSIM >32 mm",
        "s / UNet step",
        "known max err",
        "peak RSS MB",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in methods.items():
        cells = [
            _name(name),
            _fmt(row.get("ssim_seam")),
            _fmt(row.get("ssim_near")),
            _fmt(row.get("ssim_far")),
            _fmt(row.get("seconds_per_unet_step"), 3),
            _fmt(row.get("known_max_abs_err"), 4),
            _fmt(row.get("peak_rss_mb"), 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


SPREAD_COLUMNS = (
    ("SSIM", "ssim", 3),
    ("tissue SSIM", "ssim_tissue", 3),
    ("sharpness", "sharpness", 2),
    ("edge sharpness", "edge_sharpness", 2),
    ("seam brightness", "seam_brightness", 2),
    ("canal continuity", "canal_continuity", 2),
    ("canal reach", "canal_reach", 2),
    ("MAE", "mae", 4),
    ("vertebra count err", "vertebra_count_error", 1),
    ("disc F1", "disc_f1", 2),
    ("disc F1, 128 mm", "disc_f1_near_seam", 2),
)


def spread_table(methods: dict[str, dict]) -> list[str]:
    """The sampler's noise of each row drawn more than once (`--repeats`): the standard deviation of its mean
    over the draws, the smallest difference between two rows that says something about the method. Empty when
    no row was drawn twice."""
    drawn = {name: row for name, row in methods.items() if row.get("draw_sd")}
    if not drawn:
        return []
    columns = [c for c in SPREAD_COLUMNS if any(c[1] in row["draw_sd"] for row in drawn.values())]
    header = ["method", "draws", *(title for title, _, _ in columns)]
    lines = [
        "Sampler noise: standard deviation of each row's mean over its draws (each draw a seed of its own per case).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, row in drawn.items():
        cells = [_name(name), str(row["draws"]), *(_fmt(row["draw_sd"].get(k), d) for _, k, d in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _section(methods: dict[str, dict], levels: bool) -> list[str]:
    """A section's rows, then their sampler noise when they were drawn more than once."""
    noise = spread_table(methods)
    return [*methods_table(methods, levels=levels), *(["", *noise] if noise else [])]


NOTES = """
Metrics: both images scaled to [0, 1] by the 0.5/99.5 percentiles of the visible rows (BraTS inpainting protocol);
SSIM (Gaussian window, sigma 1.5), PSNR and MAE over the hidden rows of the central sagittal slices, and over the
first 32 mm past the boundary and beyond, and the first 8 mm (where the anatomy above the seam all but decides the
truth). *seam*: mean absolute step across the boundary divided by the truth's
mean row-to-row step within 8 mm of it (1 = as smooth as anatomy). *known max err*: largest deviation in the
visible rows, in units of the visible range (0 = exact paste-back). *s / UNet step*: time inside the UNet per
call (all slices in one batch). Peak RSS: per method (kernel high-water mark reset before each run). With
`--repeats K` each of our sampler's rows (and the noise baseline) is drawn K times per case, draw k with the seed
of draw 0 plus 1000 k: a case's figures are the mean of its draws, the 95% CI is over cases, and the sampler-noise
table gives the spread of each row's mean over draws.

What the eye sees: *tissue SSIM*: the SSIM map averaged over the hidden pixels where the truth is brighter than
its visible rows' median (whole-region SSIM is dominated by background). *sharpness*: mean in-plane gradient
magnitude of the completion over the hidden rows divided by the truth's (1 = as much detail as the anatomy;
grain and noise raise it too). *edge sharpness*: the same with both images smoothed by a Gaussian of 1.5 mm
first: discs, endplates and canal walls survive it, pixel-scale grain does not.
*seam brightness*: mean of the completion over the truth's (scanner units) in the first 16 mm past the seam,
over the truth's tissue pixels (1 = no dimming). *canal continuity*: fraction of the completed rows within 64 mm
of the seam, on the mid-sagittal slice, where the completion shows a bright canal (a ridge at least 0.1 of the
visible range brighter than the tissue 10 mm anterior and posterior) within 4 mm of the truth's canal column (the
phantoms' and the template's centreline, else tracked on the truth); rows where the truth shows none are not
scored. *canal reach*: how far past the seam the completion's bright canal lasts (tracked in the completion
itself, wherever it runs, over the whole completion; its ridge averaged over 8 mm of rows), over how far the
truth's lasts, each hidden block at most 1.
*slice consistency*: mean SSIM between adjacent completed slices over the truth's, on tissue pixels (below 1:
the slices disagree more than real neighbours). *range violations*: fraction of output voxels outside the input's
own intensity range. Levels (phantoms, template): vertebral bodies and discs found by the profile detector in the
hidden rows of the mid-sagittal slice against the label map (*vertebra count err*: absolute difference, the detector
following the truth's canal centreline, so a spine completed along another path loses levels; *along its own
canal*: the same count with the detector following the canal tracked in the completion, what a reader counting the
completed image finds; *disc F1*: positions matched within 5 mm); *disc F1 of the truth* is the detector's own
score on the true image. *disc F1, 128 mm* (and *of the truth*): the same over the discs of the first 128 mm past
a seam, where the visible spine fixes the next levels (a completion that knew all the cervical spine tells scores
about 0.94 there on the phantoms, 0.68 over the whole hidden spine; a plausible spine that only continues the
visible discs 0.65 and 0.48). The `noise` row (Gaussian noise smoothed at sigma 2 mm, at the visible mean and spread,
no anatomy; drawn like our sampler's rows) is the chance level of the level and canal measures.

Ceilings: `grid` is the truth itself through the model's preprocessing (its orientation, canvas spacing and
intensity normalisation, fitted on the visible rows as the engine fits it) and back to the scan's grid, with no
network; `autoencoder` adds the bundle's autoencoder encode and decode. No completion by this bundle can hold more
than they keep. `denoise-tT` gives the UNet the truth's own latent noised to timestep T (of 1000, its noise sd
sqrt(1 - alpha_T) of a unit latent) and denoises it with the bundle's sampler: which anatomy lies where is given, so
it measures what the UNet keeps of detail, apart from what no model can know below a seam.
"""


def protocol(results: dict[str, Any]) -> str:
    """What was hidden, in words."""
    if results["source"] == "phantom":
        return f"{results['cases']} phantom case(s), only the {results.get('phantom_keep', 'cervical')} region visible"
    if results["source"] == "template":
        return f"{results['cases']} template case(s), C1-C7 visible, completed down to L1"
    direction = results.get("direction", "")
    ends = "each end in turn" if direction == "both" else f"{direction} end"
    return f"{results['cases']} real case(s), {results['hide_mm']:g} mm hidden ({ends})"


def subjects_line(choice: dict[str, Any]) -> str:
    """Which subjects were evaluated and why, in one line."""
    excluded = choice.get("excluded_as_training") or []
    if choice.get("training_fit"):
        return f"- **subjects: {', '.join(choice['evaluated'])} ({choice['reason']})**"
    line = f"- subjects: {', '.join(choice['evaluated'])} ({choice['reason']})"
    if excluded:
        line += f"; {len(excluded)} subject(s) of the root in the model's training list, never evaluated"
    return line


def long_range_table(long_range: dict[str, Any]) -> list[str]:
    """The long completions (`long_range`): per case, every draw's canal reach and the brightness at its window
    joins, and the means."""
    below, last = _fmt(long_range["below_mm"], 0), _fmt(long_range["last_mm"], 0)
    band = _fmt(long_range.get("join_band_mm"), 0)
    lines = [
        f"## Long completions: {below} mm below each cervical scan (mid-slice canal reach in mm; the model's default "
        "setting, no truth)",
        "",
        f"Brightness at a window join: the mean of the first {band} mm a later window makes alone over that of the "
        f"{band} mm above the rows it makes again (1 = no step; each draw's joins from the top, separated by /).",
        "",
        f"| case | seeds | canal reach on the scan's range | mean | on its last {last} mm's range | mean "
        "| brightness at the window joins | mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in long_range["cases"]:
        whole, last_range = row["reach_mm"], row["reach_last_mm"]
        joins = row.get("join_brightness", [])  # a join not measured is None in results.json (NaN in memory)
        each_draw = ", ".join(" / ".join(_fmt(ratio, 2) for ratio in draw) for draw in joins)
        joins_mean = finite_mean(ratio for draw in joins for ratio in draw)
        lines.append(
            f"| {row['case']} | {', '.join(map(str, row['seeds']))} | {', '.join(_fmt(v, 0) for v in whole)} | "
            f"{_fmt(float(np.mean(whole)), 0)} | {', '.join(_fmt(v, 0) for v in last_range)} | "
            f"{_fmt(float(np.mean(last_range)), 0)} | {each_draw} | {_fmt(joins_mean, 2)} |"
        )
    largest, mean = long_range.get("largest_join_step_of_all"), long_range.get("mean_join_brightness")
    lines.append(
        f"| all | | | {_fmt(long_range['mean_reach_mm'], 0)} | | {_fmt(long_range['mean_reach_last_mm'], 0)} | "
        f"largest step {_fmt(largest, 2)} | {_fmt(mean, 2)} |"
    )
    return lines


def write_markdown(results: dict[str, Any], path: Path) -> Path:
    lines = [
        f"# FOV completion benchmark: `{results['model']}`",
        "",
        f"- device: {results['device']}, torch threads: {results['threads']}",
        f"- {protocol(results)}, {results.get('slices', '?')} central sagittal slices",
    ]
    if results.get("subjects"):
        lines.append(subjects_line(results["subjects"]))
    if results.get("command"):
        lines.append(f"- command: `{results['command']}`")
    lines += [
        "",
        *_section(results["methods"], levels=results["source"] != "real"),
        "",
        *details_table(results["methods"]),
    ]
    if "on_reference_cases" in results:
        paired = results["on_reference_cases"]
        lines += [
            "",
            f"## The same {paired['cases']} case(s) as the reference sampler ({', '.join(paired['case_names'])})",
            "",
            *methods_table(paired["methods"]),
        ]
    if "phantoms" in results:
        lines += [
            "",
            f"## Phantoms ({results['phantoms']['cases']} case(s): "
            f"{results.get('phantom_keep', 'cervical')} visible, the rest completed)",
            "",
            *_section(results["phantoms"]["methods"], levels=True),
        ]
    if "templates" in results:
        lines += [
            "",
            f"## Template ({results['templates']['cases']} case(s): {', '.join(results['templates']['case_names'])}; "
            "C1-C7 visible, completed down to L1)",
            "",
            *_section(results["templates"]["methods"], levels=True),
        ]
    if results.get("long_range"):
        lines += ["", *long_range_table(results["long_range"])]
    if results.get("speed"):
        lines += [
            "",
            "## Speed of the UNet alone (random weights are fine for speed)",
            "",
            "| network | device | latent | batch | s / UNet step / slice | s / UNet call, by batch "
            "| s / guide call, by batch |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, speed in results["speed"].items():
            unet_calls, guide_calls = (
                ", ".join(f"{size}: {_fmt(seconds, 3)}" for size, seconds in speed.get(key, {}).items())
                or "–"
                for key in ("seconds_per_unet_call", "guide_seconds_per_unet_call")
            )
            lines.append(
                f"| {name} | {speed['device']} | {speed['latent']} | {speed.get('batch', 1)} | "
                f"{_fmt(speed['seconds_per_unet_step_per_slice'], 3)} | {unet_calls} | {guide_calls} |"
            )
    lines += ["", NOTES.strip(), ""]
    path.write_text("\n".join(lines))
    return path


LINE_COLOURS = {
    "grid": "black",
    "autoencoder": "tab:green",
    "constant": "grey",
    "mirror": "tab:olive",
    "noise": "tab:brown",
    "retrieval": "tab:purple",
    "retrieval-oracle": "indigo",
}


def line_colour(method: Method, methods: list[Method], plt) -> Any:
    """A horizontal line's colour: one per family, and for the `denoise` rows a shade per level (light: noisier)."""
    if method.family != "denoise":
        return LINE_COLOURS.get(method.family, "grey")
    levels = sorted(m.noise_level for m in methods if m.family == "denoise")
    return plt.cm.Blues(0.9 - 0.5 * levels.index(method.noise_level) / max(1, len(levels) - 1))


def setting_of(method: Method) -> tuple:
    """What a row's sampler was set to apart from its steps: rows that share it are one line of the plot."""
    return (method.guidance, method.autoguidance, method.guide_alone_from, method.eta, method.candidates)


def plot_quality_vs_steps(results: dict[str, Any], methods: list[Method], path: Path) -> Path:
    """SSIM, sharpness and seconds per volume against NFE: our sampler as a line, the rest as marks, the ceilings
    and the non-learned baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = results["methods"]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    for axis, key, label in (
        (left, "ssim", "SSIM in the hidden region"),
        (middle, "sharpness", "sharpness (1 = the truth's detail)"),
        (right, "seconds_per_volume", "seconds per volume"),
    ):
        measured = [m for m in methods if m.family == "ours" and rows.get(m.name, {}).get(key) is not None]
        settings = list(dict.fromkeys(setting_of(m) for m in measured))
        # one line per sampler setting: step counts are comparable only within one
        for index, setting in enumerate(settings):
            guidance, autoguidance, alone_from, eta, candidates = setting
            ours = [m for m in measured if setting_of(m) == setting]
            details = (
                ([] if guidance is None else [f"guidance {guidance:g}"])
                + ([] if autoguidance is None else [f"autoguidance {autoguidance:g}"])
                + ([] if alone_from is None else [f"guide alone from t = {alone_from}"])
                + ([f"eta {eta:g}"] if eta is not None else [])
                + ([f"best of {candidates}"] if candidates > 1 else [])
            )
            axis.plot(
                [rows[m.name]["nfe"] for m in ours],
                [rows[m.name][key] for m in ours],
                "o-",
                color="tab:blue" if index == 0 else f"C{index + 4}",
                label=f"ours (DDIM{''.join(', ' + d for d in details)})",
            )
        for m in measured:
            axis.annotate(
                f"{m.steps}",
                (rows[m.name]["nfe"], rows[m.name][key]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
        for m in methods:
            row = rows.get(m.name)
            if row is None or row.get(key) is None:
                continue
            if m.family == "resample":
                axis.plot(row["nfe"], row[key], "s", label=m.name)
            elif m.family == "reference":
                note = "" if row["cases"] == results["cases"] else f", {row['cases']} case(s) only"
                axis.plot(
                    row["nfe"], row[key], "*", markersize=12, color="tab:red", label=f"reference (DDPM{note})"
                )
            elif not m.learned and key != "seconds_per_volume":
                axis.axhline(
                    row[key],
                    linestyle="-" if m.ceiling else "--",
                    linewidth=1,
                    color=line_colour(m, methods, plt),
                    label=f"{m.name} ({'ceiling' if m.ceiling else 'no network'})",
                )
        axis.set_xscale("log")
        nfes = sorted(
            {rows[m.name]["nfe"] for m in methods if m.learned and m.name in rows and rows[m.name]["nfe"]}
        )
        if nfes:
            axis.set_xticks(nfes)
        axis.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        if key == "seconds_per_volume":
            axis.set_yscale("log")
            axis.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            axis.yaxis.set_minor_formatter(ticker.NullFormatter())
        axis.set_xlabel("UNet evaluations per volume (NFE)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7, loc="best")
    fig.suptitle(
        f"{results['model']}: {protocol(results)}, {results['device']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_examples(run: BenchmarkRun, path: Path) -> Path:
    """Mid-sagittal slices: input (hidden rows blank), truth and each method, boundaries dashed red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    examples = run.examples or []
    columns = ["input", "truth", *[m.name for m in run.methods]]
    panel = 1.7
    ratios = [e.truth.shape[0] * e.spacing[0] / (e.truth.shape[1] * e.spacing[1]) for e in examples] or [1.0]
    fig, axes = plt.subplots(
        len(ratios),
        len(columns),
        squeeze=False,
        figsize=(panel * len(columns), panel * sum(ratios) + 0.6),
        gridspec_kw={"height_ratios": ratios},
    )
    for r, example in enumerate(examples):
        low, high = visible_range(example.truth[None], example.known_rows)
        height_mm = example.truth.shape[0] * example.spacing[0]
        width_mm = example.truth.shape[1] * example.spacing[1]
        partial = np.where(example.known_rows[:, None], example.truth, np.nan)
        images = {"input": partial, "truth": example.truth, **example.predictions}
        for c, column in enumerate(columns):
            axis = axes[r, c]
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_xlim(0, width_mm)
            axis.set_ylim(height_mm, 0)
            axis.set_aspect("equal")
            axis.set_facecolor("0.8")
            if r == 0:
                axis.set_title(column.replace("ours-", ""), fontsize=7)
            if c == 0:
                axis.set_ylabel(example.case, fontsize=6)
            image = images.get(column)
            if image is None:
                axis.text(0.5, 0.5, "not run", ha="center", va="center", transform=axis.transAxes, fontsize=7)
                continue
            axis.imshow(
                np.clip((image - low) / (high - low), 0, 1),
                cmap="gray",
                vmin=0,
                vmax=1,
                extent=(0, width_mm, height_mm, 0),
                interpolation="nearest",
            )
            for known, hidden in boundary_pairs(example.known_rows):
                axis.axhline(
                    max(known, hidden) * example.spacing[0], color="tab:red", linewidth=0.6, linestyle="--"
                )
    if not examples:
        for axis in axes.ravel():
            axis.axis("off")
    fig.suptitle(f"{run.model}: mid-sagittal slice; red: visible/hidden boundary", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(run: BenchmarkRun, out: Path, hide_mm: float, extra: dict[str, Any]) -> dict[str, Any]:
    """All four outputs; returns the results document."""
    results = build_results(run, hide_mm, extra)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)

    def write_json(path: Path) -> Path:
        path.write_text(json.dumps(results, indent=2) + "\n")
        return path

    # All four or none: an interrupt while writing leaves an earlier run's reports whole, never a mix.
    try:
        write_all_or_none(
            [
                (out / "results.json", write_json),
                (out / "results.md", partial(write_markdown, results)),
                (out / "quality_vs_steps.png", partial(plot_quality_vs_steps, results, run.methods)),
                (out / "examples.png", partial(plot_examples, run)),
            ]
        )
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    return results
