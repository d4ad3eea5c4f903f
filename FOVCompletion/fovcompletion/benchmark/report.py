"""Write what a benchmark found: results.json (the issue's shape), results.md, quality_vs_steps.png, examples.png."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .aggregate import summarise_run
from .metrics import boundary_pairs, visible_range
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


def build_results(run: BenchmarkRun, hide_mm: float, extra: dict[str, Any]) -> dict[str, Any]:
    """The results.json document: headline `methods` over real cases (phantoms when there are none)."""
    sources = {o.source for o in run.outcomes}
    main = "real" if "real" in sources else "phantom"
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
    if main == "real" and "phantom" in sources:
        phantom_cases = sorted({o.case for o in run.outcomes if o.source == "phantom"})
        results["phantoms"] = {
            "cases": len(phantom_cases),
            "case_names": phantom_cases,
            "methods": summarise_run(run, "phantom"),
        }
    results["per_case"] = [
        {
            "case": o.case,
            "source": o.source,
            "method": o.method,
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


def methods_table(methods: dict[str, dict], levels: bool = False) -> list[str]:
    """A markdown table, one method per line."""
    header = [
        "method",
        "cases",
        "NFE",
        "s / volume",
        "s / UNet step",
        "SSIM (95% CI)",
        "SSIM ≤32 mm",
        "SSIM >32 mm",
        "PSNR dB",
        "MAE",
        "seam",
        "known max err",
        "peak RSS MB",
    ]
    if levels:
        header += ["vertebrae err", "discs err", "disc F1"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in methods.items():
        cells = [
            f"`{name}`",
            str(row.get("cases", "")),
            _fmt(row["nfe"]) if row.get("nfe") else "0",
            _fmt(row.get("seconds_per_volume"), 2),
            _fmt(row.get("seconds_per_unet_step"), 3),
            _with_ci(row, "ssim"),
            _fmt(row.get("ssim_near")),
            _fmt(row.get("ssim_far")),
            _fmt(row.get("psnr"), 2),
            _fmt(row.get("mae"), 4),
            _fmt(row.get("seam"), 2),
            _fmt(row.get("known_max_abs_err"), 4),
            _fmt(row.get("peak_rss_mb"), 0),
        ]
        if levels:
            found = row.get("levels") or {}
            cells += [
                _fmt(found.get("vertebrae_abs_err"), 1),
                _fmt(found.get("discs_abs_err"), 1),
                _fmt(found.get("disc_position_f1"), 2),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


NOTES = """
Metrics: both images scaled to [0, 1] by the 0.5/99.5 percentiles of the visible rows (BraTS inpainting protocol);
SSIM (Gaussian window, sigma 1.5), PSNR and MAE over the hidden rows of the central sagittal slices, and over the
first 32 mm past the boundary and beyond. *seam*: mean absolute step across the boundary divided by the truth's
mean row-to-row step within 8 mm of it (1 = as smooth as anatomy). *known max err*: largest deviation in the
visible rows, in units of the visible range (0 = exact paste-back). *s / UNet step*: time inside the UNet per
call (all slices in one batch). Peak RSS: per method (kernel high-water mark reset before each run).
"""


def protocol(results: dict[str, Any]) -> str:
    """What was hidden, in words."""
    if results["source"] == "phantom":
        return f"{results['cases']} phantom case(s), only the {results.get('phantom_keep', 'cervical')} region visible"
    direction = results.get("direction", "")
    ends = "each end in turn" if direction == "both" else f"{direction} end"
    return f"{results['cases']} real held-out case(s), {results['hide_mm']:g} mm hidden ({ends})"


def write_markdown(results: dict[str, Any], path: Path) -> Path:
    lines = [
        f"# FOV completion benchmark: `{results['model']}`",
        "",
        f"- device: {results['device']}, torch threads: {results['threads']}",
        f"- {protocol(results)}, {results.get('slices', '?')} central sagittal slices",
    ]
    if results.get("command"):
        lines.append(f"- command: `{results['command']}`")
    lines += ["", *methods_table(results["methods"], levels=results["source"] == "phantom")]
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
            *methods_table(results["phantoms"]["methods"], levels=True),
        ]
    if results.get("speed"):
        lines += [
            "",
            "## Speed of the UNet alone (random weights are fine for speed)",
            "",
            "| network | device | latent | s / UNet step / slice |",
            "|---|---|---|---|",
        ]
        for name, speed in results["speed"].items():
            lines.append(
                f"| {name} | {speed['device']} | {speed['latent']} | "
                f"{_fmt(speed['seconds_per_unet_step_per_slice'], 3)} |"
            )
    lines += ["", NOTES.strip(), ""]
    path.write_text("\n".join(lines))
    return path


def plot_quality_vs_steps(results: dict[str, Any], methods: list[Method], path: Path) -> Path:
    """SSIM and seconds per volume against NFE: our sampler as a line, the rest as marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = results["methods"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ours = [m for m in methods if m.family == "ours" and m.name in rows and rows[m.name]["ssim"] is not None]
    for axis, key, label in (
        (left, "ssim", "SSIM in the hidden region"),
        (right, "seconds_per_volume", "seconds per volume"),
    ):
        if ours:
            axis.plot(
                [rows[m.name]["nfe"] for m in ours],
                [rows[m.name][key] for m in ours],
                "o-",
                color="tab:blue",
                label="ours (DDIM)",
            )
            for m in ours:
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
            elif not m.learned and key == "ssim":
                axis.axhline(
                    row[key],
                    linestyle="--",
                    linewidth=1,
                    color={"constant": "grey", "mirror": "tab:olive", "retrieval": "tab:purple"}[m.family],
                    label=f"{m.name} (no network)",
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
    out.mkdir(parents=True, exist_ok=True)
    results = build_results(run, hide_mm, extra)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, out / "results.md")
    plot_quality_vs_steps(results, run.methods, out / "quality_vs_steps.png")
    plot_examples(run, out / "examples.png")
    return results
