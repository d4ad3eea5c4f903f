"""Two benchmark runs compared draw by draw: each completion of one run against the completion of the same case
with the same sampler seed in the other (`fovcompletion compare`).

Why: the seed alone moves a case's SSIM by up to 0.08 and its canal continuity from 0.7 to 1.0, so two runs'
means with their intervals over cases cannot tell models a few hundredths apart; paired by case and draw, the
seed's share of the difference cancels and the standard error of the mean difference is the honest yardstick.
Runs are only paired when they hid the same rows of the same cases with the same seeds.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

# (measure, which way is better: +1 higher, -1 lower, 0 nearer to 1), as the benchmark's tables name them.
MEASURES = (
    ("ssim", "SSIM", 1),
    ("ssim_tissue", "tissue SSIM", 1),
    ("mae", "MAE", -1),
    ("sharpness", "sharpness", 1),
    ("edge_sharpness", "edge sharpness", 1),
    ("seam_brightness", "seam brightness", 0),
    ("canal_continuity", "canal continuity", 1),
    ("canal_reach", "canal reach", 1),
    ("ssim_seam", "SSIM <=8 mm", 1),
)
LEVEL_MEASURES = (
    ("vertebra_count_error", "vertebra count error", -1),
    ("vertebra_count_error_along_own_canal", "along its own canal", -1),
    ("disc_f1", "disc F1", 1),
)
SOURCES = (("real", "real scans"), ("phantom", "phantoms"), ("template", "templates"))
# What two runs must share for their draws to be the same completions' counterparts.
SETTINGS = (("hide_mm", "hidden millimetres"), ("slices", "slices"), ("direction", "hidden end"))


def load_results(path: str | Path) -> dict[str, Any]:
    """A benchmark's results.json, given the file or its output folder; one-line InputError otherwise."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    try:
        results = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no benchmark results (results.json) there") from None
    except (OSError, ValueError) as error:
        raise InputError(f"{file}: not readable as benchmark results: {error}") from None
    if not isinstance(results, dict) or not isinstance(results.get("per_case"), list):
        raise InputError(f"{file}: not a benchmark's results.json (it has no per-case rows)")
    return results


def run_seed(results: dict[str, Any]) -> int:
    """The run's `--seed` (recorded since 2026-12-05; earlier runs name it in their command, else 0)."""
    if "seed" in results:
        return int(results["seed"])
    found = re.search(r"--seed[ =](\d+)", str(results.get("command", "")))
    return int(found.group(1)) if found else 0


def pairing_problem(base: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why the two runs' draws are not counterparts of each other, or None."""
    for key, label in SETTINGS:
        if base.get(key) != new.get(key):
            return f"the runs differ in {label} ({base.get(key)} against {new.get(key)})"
    if run_seed(base) != run_seed(new):
        return (
            f"the runs drew with other seeds (--seed {run_seed(base)} against {run_seed(new)}): "
            "their phantoms and draws are not the same"
        )
    return None


def _rows(results: dict[str, Any], method: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {
        (row["case"], int(row.get("draw") or 0)): row
        for row in results["per_case"]
        if row.get("method") == method and not row.get("skipped")
    }


def common_method(base: dict[str, Any], new: dict[str, Any]) -> str:
    """The one method both runs measured, when there is exactly one."""
    methods = sorted(_methods(base) & _methods(new))
    if len(methods) == 1:
        return methods[0]
    if not methods:
        raise InputError(
            f"the runs share no method ({', '.join(sorted(_methods(base)))} against "
            f"{', '.join(sorted(_methods(new)))}): name them with --method and --new-method"
        )
    raise InputError(f"the runs share several methods ({', '.join(methods)}): name one with --method")


def _methods(results: dict[str, Any]) -> set[str]:
    return {row["method"] for row in results["per_case"] if "method" in row}


def _value(row: dict[str, Any], key: str, levels: bool) -> float:
    source = (row.get("levels") or {}) if levels else row
    value = source.get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _better(difference: float, base: float, new: float, direction: int) -> int:
    """+1 when the new value is better, -1 when worse, 0 when alike (within a millionth)."""
    gain = abs(base - 1.0) - abs(new - 1.0) if direction == 0 else direction * difference
    return 0 if abs(gain) < 1e-6 else (1 if gain > 0 else -1)


def _measure(pairs: list[tuple[dict, dict]], key: str, direction: int, levels: bool) -> dict[str, Any] | None:
    values = np.array([(_value(b, key, levels), _value(n, key, levels)) for b, n in pairs], dtype=float)
    values = values[np.isfinite(values).all(axis=1)]
    if not len(values):
        return None
    differences = values[:, 1] - values[:, 0]
    verdicts = [_better(d, b, n, direction) for d, (b, n) in zip(differences, values)]
    # None (JSON's null) for one pair, which has no spread to estimate
    error = float(differences.std(ddof=1) / math.sqrt(len(differences))) if len(differences) > 1 else None
    return {
        "pairs": len(differences),
        "base": float(values[:, 0].mean()),
        "new": float(values[:, 1].mean()),
        "difference": float(differences.mean()),
        "standard_error": error,
        "new_better": verdicts.count(1),
        "new_worse": verdicts.count(-1),
    }


def compare_runs(
    base: dict[str, Any], new: dict[str, Any], base_method: str, new_method: str | None = None
) -> dict[str, Any]:
    """Mean paired differences (new - base) by source, with their standard errors and how many pairs each way.

    Raises InputError when the runs cannot be paired or share no case and draw for these methods."""
    problem = pairing_problem(base, new)
    if problem:
        raise InputError(f"cannot pair these runs: {problem}")
    new_method = new_method or base_method
    base_rows, new_rows = _rows(base, base_method), _rows(new, new_method)
    if not base_rows or not new_rows:
        missing = base_method if not base_rows else new_method
        raise InputError(
            f"no completions of method {missing!r} in that run (see its results.md for its rows)"
        )
    keys = sorted(set(base_rows) & set(new_rows))
    if not keys:
        raise InputError("the runs share no case and draw: were they run on the same subjects and phantoms?")
    comparison: dict[str, Any] = {"base_method": base_method, "new_method": new_method, "sources": {}}
    for source, _ in SOURCES:
        pairs = [(base_rows[k], new_rows[k]) for k in keys if base_rows[k].get("source") == source]
        if not pairs:
            continue
        measures = {}
        for key, _, direction in MEASURES:
            measures[key] = _measure(pairs, key, direction, levels=False)
        for key, _, direction in LEVEL_MEASURES:
            measures[key] = _measure(pairs, key, direction, levels=True)
        comparison["sources"][source] = {
            "pairs": len(pairs),
            "cases": len({base_rows[k]["case"] for k in keys if base_rows[k].get("source") == source}),
            "measures": {key: value for key, value in measures.items() if value is not None},
        }
    return comparison


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def comparison_markdown(comparison: dict[str, Any], base_label: str, new_label: str) -> str:
    """The comparison as tables: one per source, one row per measure."""
    names = {key: label for key, label, _ in (*MEASURES, *LEVEL_MEASURES)}
    lines = [
        f"# Paired comparison: {new_label} against {base_label}",
        "",
        f"`{comparison['new_method']}` of {new_label} against `{comparison['base_method']}` of {base_label}, "
        "each completion paired with the other run's completion of the same case with the same sampler seed. "
        "Difference: the mean of new - base over the pairs, +- its standard error; better / worse: the pairs in "
        "which the new completion is better or worse on that measure (seam brightness: nearer to 1); a measure "
        "that is not a number in some pairs names the count of pairs it has.",
    ]
    sources = dict(SOURCES)
    for source, section in comparison["sources"].items():
        lines += [
            "",
            f"## {sources[source]} ({_count(section['cases'], 'case')}, {_count(section['pairs'], 'pair')})",
            "",
            "| measure | base | new | difference | better / worse |",
            "|---|---|---|---|---|",
        ]
        for key, row in section["measures"].items():
            digits = 1 if "count_error" in key else 3
            difference = f"{row['difference']:+.{digits}f} +- {_number(row['standard_error'], digits)}"
            name = (
                names[key]
                if row["pairs"] == section["pairs"]
                else f"{names[key]} ({_count(row['pairs'], 'pair')})"
            )
            lines.append(
                f"| {name} | {_number(row['base'], digits)} | {_number(row['new'], digits)} | "
                f"{difference} | {row['new_better']} / {row['new_worse']} |"
            )
    return "\n".join(lines) + "\n"
