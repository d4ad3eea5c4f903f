"""Two benchmark runs compared completion by completion: each completion of one run against the completion of
the same case with the same sampler seed in the other (`fovcompletion compare`).

Why: the seed alone moves a case's SSIM by up to 0.08 and its canal continuity from 0.7 to 1.0, so two runs'
means with their intervals over cases cannot tell models a few hundredths apart; paired by case and seed, the
seed's share of the difference cancels. Each case's mean difference over its draws is one observation, as the
benchmark's intervals are over cases: the draws of one case are not independent of each other. Runs are only
paired when they hid the same rows of the same cases, each completion with the other's of the same seed.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .brightness_steps import join_step
from .seeds import draw_seed, draws_noise

# (measure, which way is better: +1 higher, -1 lower, 0 nearer to 1, LOG_NEARER_ONE nearer to 1 on a log scale),
# as the benchmark's tables name them.
LOG_NEARER_ONE = 2  # a brightness ratio: 1.25 and 0.8 are the same step (`brightness_steps.join_step`)
MEASURES = (
    ("ssim", "SSIM", 1),
    ("ssim_tissue", "tissue SSIM", 1),
    ("mae", "MAE", -1),
    ("sharpness", "sharpness", 0),  # 1 = as much detail as the anatomy; noise raises it past 1
    ("edge_sharpness", "edge sharpness", 0),
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
# The long completions (`benchmark --long-inferior`): per draw, as `long_range.long_completions` records them.
LONG_MEASURES = (
    ("reach_mm", "canal reach (mm)", 1),
    ("reach_last_mm", "canal reach on the scan's last 64 mm's range (mm)", 1),
    ("largest_join_step", "brightness at the window joins (the largest step)", LOG_NEARER_ONE),
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
    rows = results.get("per_case") if isinstance(results, dict) else None
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and "case" in r and "method" in r for r in rows
    ):
        raise InputError(f"{file}: not a benchmark's results.json (it has no per-case rows)")
    for number, row in enumerate(rows):
        problem = _row_problem(row)
        if problem:
            raise InputError(f"{file}: per-case row {number} is malformed: {problem}")
    return results


def _row_problem(row: dict[str, Any]) -> str | None:
    """What in a per-case row the pairing cannot use (a hand-edited or foreign file), or None."""
    if not isinstance(row["case"], str) or not isinstance(row["method"], str):
        return "its case and method must be names"
    for key in ("draw", "seed"):
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"its {key} must be a whole number"
    if not isinstance(row.get("levels") or {}, dict):
        return "its levels must be a table of measures"
    return None


def run_seed(results: dict[str, Any]) -> int:
    """The run's `--seed` (recorded since 2026-12-05; earlier runs name it in their command, else 0)."""
    if isinstance(results.get("seed"), int):
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


def _rows(results: dict[str, Any], method: str) -> dict[tuple[str, Any], dict[str, Any]]:
    """The method's completions keyed by (case, sampler seed); seed None for a method that draws no noise.

    Runs made before each row recorded its seed get it back from the runner's rule (the run's --seed, plus the
    case's place in the run, plus 1000 per draw), the cases numbered in the order the rows list them, for the
    rows that draw noise (`seeds.draws_noise`)."""
    numbers: dict[str, int] = {}
    for row in results["per_case"]:
        numbers.setdefault(row["case"], len(numbers))
    first = run_seed(results)
    keyed: dict[tuple[str, Any], dict[str, Any]] = {}
    for row in results["per_case"]:
        if row.get("method") != method or row.get("skipped"):
            continue
        implied = None
        if draws_noise(method.split("-")[0]):  # rows are named by their family first
            implied = draw_seed(first, numbers[row["case"]], int(row.get("draw") or 0))
        keyed[(row["case"], row.get("seed", implied))] = row
    return keyed


def _pairs(base_rows: dict, new_rows: dict) -> list[tuple[dict, dict]]:
    """Counterparts: the same case and seed; a completion that draws no noise (seed None) stands beside each of
    the other run's completions of its case."""
    pairs = []
    for (case, seed), row in base_rows.items():
        if seed is None:
            pairs += [(row, other) for (other_case, _), other in new_rows.items() if other_case == case]
        elif (case, seed) in new_rows:
            pairs.append((row, new_rows[(case, seed)]))
        elif (case, None) in new_rows:
            pairs.append((row, new_rows[(case, None)]))
    return pairs


def default_base_method(base: dict[str, Any], new: dict[str, Any], new_method: str | None = None) -> str:
    """BASE's row when none is named: the one method both runs have, or, when NEW's is named, BASE's only one."""
    if new_method is not None and len(_methods(base)) == 1:
        return next(iter(_methods(base)))
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
    return {row["method"] for row in results["per_case"]}  # `load_results` made sure each row names one


def _value(row: dict[str, Any], key: str, levels: bool) -> float:
    source = (row.get("levels") or {}) if levels else row
    value = source.get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _better(base: float, new: float, direction: int) -> int:
    """+1 when the new value is better, -1 when worse, 0 when alike (within a millionth)."""
    if direction == LOG_NEARER_ONE:
        gain = join_step(base) - join_step(new)
    else:
        gain = abs(base - 1.0) - abs(new - 1.0) if direction == 0 else direction * (new - base)
    return 0 if math.isnan(gain) or abs(gain) < 1e-6 else (1 if gain > 0 else -1)


def _measure(pairs: list[tuple[dict, dict]], key: str, direction: int, levels: bool) -> dict[str, Any] | None:
    """Means of base, new and their difference over cases (each case the mean over its pairs), the standard
    error over cases (None for one case), and the pairs each way."""
    by_case: dict[str, list[tuple[float, float]]] = {}
    verdicts = []
    for b, n in pairs:
        values = (_value(b, key, levels), _value(n, key, levels))
        if not all(math.isfinite(v) for v in values):
            continue
        by_case.setdefault(b["case"], []).append(values)
        verdicts.append(_better(*values, direction))
    if not by_case:
        return None
    means = np.array([np.mean(case_values, axis=0) for case_values in by_case.values()])
    differences = means[:, 1] - means[:, 0]
    error = float(differences.std(ddof=1) / math.sqrt(len(differences))) if len(differences) > 1 else None
    return {
        "pairs": len(verdicts),
        "cases": len(by_case),
        "base": float(means[:, 0].mean()),
        "new": float(means[:, 1].mean()),
        "difference": float(differences.mean()),
        "standard_error": error,
        "new_better": verdicts.count(1),
        "new_worse": verdicts.count(-1),
    }


def _long_rows(results: dict[str, Any]) -> dict[tuple[str, Any], dict[str, Any]]:
    """The long completions' draws keyed by (case, seed), one row of `LONG_MEASURES` each; none without them."""
    long_range = results.get("long_range")
    rows: dict[tuple[str, Any], dict[str, Any]] = {}
    if not isinstance(long_range, dict):
        return rows
    for case in long_range.get("cases") or []:
        for index, seed in enumerate(case.get("seeds") or []):
            row: dict[str, Any] = {"case": case.get("case")}
            for key, _, _ in LONG_MEASURES:
                values = case.get(key)
                row[key] = values[index] if isinstance(values, list) and index < len(values) else None
            rows[(str(case.get("case")), seed)] = row
    return rows


def _long_comparison(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """The long completions paired by case and seed, when both runs made them the same length below; why not, when
    only one run or other lengths; None when neither made them."""
    base_long, new_long = base.get("long_range"), new.get("long_range")
    if not isinstance(base_long, dict) and not isinstance(new_long, dict):
        return None
    if not (isinstance(base_long, dict) and isinstance(new_long, dict)):
        return {"unpaired": "only one run completed the cervical scans far below (--long-inferior)"}
    if base_long.get("below_mm") != new_long.get("below_mm"):
        lengths = [_number(run.get("below_mm"), 0) for run in (base_long, new_long)]
        return {"unpaired": f"the runs completed {lengths[0]} and {lengths[1]} mm below"}
    base_rows, new_rows = _long_rows(base), _long_rows(new)
    pairs = [(row, new_rows[key]) for key, row in base_rows.items() if key in new_rows]
    if not pairs:
        return {"unpaired": "the runs share no long completion of the same case and seed"}
    measures = {key: _measure(pairs, key, direction, levels=False) for key, _, direction in LONG_MEASURES}
    return {
        "below_mm": base_long.get("below_mm"),
        "pairs": len(pairs),
        "cases": len({b["case"] for b, _ in pairs}),
        "measures": {key: value for key, value in measures.items() if value is not None},
    }


def compare_runs(
    base: dict[str, Any], new: dict[str, Any], base_method: str, new_method: str | None = None
) -> dict[str, Any]:
    """Mean paired differences (new - base) by source, with their standard errors and how many pairs each way.

    Raises InputError when the runs cannot be paired or share no case and seed for these methods."""
    problem = pairing_problem(base, new)
    if problem:
        raise InputError(f"cannot pair these runs: {problem}")
    new_method = new_method or base_method
    base_rows, new_rows = _rows(base, base_method), _rows(new, new_method)
    for label, rows, method, results in (
        ("BASE", base_rows, base_method, base),
        ("NEW", new_rows, new_method, new),
    ):
        if not rows:
            raise InputError(
                f"{label} has no completions of method {method!r} (it has {', '.join(sorted(_methods(results)))})"
            )
    pairs = _pairs(base_rows, new_rows)
    if not pairs:
        raise InputError(
            "the runs share no completion of the same case and seed: were they run on the same subjects, "
            "phantoms and templates?"
        )
    comparison: dict[str, Any] = {
        "base_method": base_method,
        "new_method": new_method,
        "unpaired": {
            "base": len(base_rows) - len({id(b) for b, _ in pairs}),
            "new": len(new_rows) - len({id(n) for _, n in pairs}),
        },
        "sources": {},
    }
    known = [source for source, _ in SOURCES]
    present = {str(b.get("source")) for b, _ in pairs}
    for source in known + sorted(present - set(known)):
        of_source = [(b, n) for b, n in pairs if str(b.get("source")) == source]
        if not of_source:
            continue
        measures = {}
        for key, _, direction in MEASURES:
            measures[key] = _measure(of_source, key, direction, levels=False)
        for key, _, direction in LEVEL_MEASURES:
            measures[key] = _measure(of_source, key, direction, levels=True)
        comparison["sources"][source] = {
            "pairs": len(of_source),
            "cases": len({b["case"] for b, _ in of_source}),
            "measures": {key: value for key, value in measures.items() if value is not None},
        }
    long_range = _long_comparison(base, new)
    if long_range is not None:
        comparison["long_range"] = long_range
    return comparison


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _measure_table(heading: str, section: dict[str, Any], names: dict[str, str]) -> list[str]:
    """One section's measures as a table under `heading`."""
    lines = [
        "",
        f"## {heading}",
        "",
        "| measure | base | new | difference | better / worse |",
        "|---|---|---|---|---|",
    ]
    for key, row in section["measures"].items():
        digits = 1 if "count_error" in key else 0 if key.endswith("_mm") else 2 if "join" in key else 3
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
    return lines


def comparison_markdown(comparison: dict[str, Any], base_label: str, new_label: str) -> str:
    """The comparison as tables: one per source, one row per measure."""
    names = {key: label for key, label, _ in (*MEASURES, *LEVEL_MEASURES, *LONG_MEASURES)}
    lines = [
        f"# Paired comparison: {new_label} against {base_label}",
        "",
        f"`{comparison['new_method']}` of {new_label} against `{comparison['base_method']}` of {base_label}, "
        "each completion paired with the other run's completion of the same case with the same sampler seed. "
        "Base, new, difference: means over cases of each case's mean over its draws; +- the difference's "
        "standard error over cases (the benchmark's intervals are over cases too: one case's draws are not "
        "independent); better / worse: the pairs in which the new completion is better or worse on that "
        "measure (sharpness, edge sharpness, seam brightness and the brightness at window joins: nearer to 1); "
        "a measure that is not a number "
        "in some pairs names the count "
        "of pairs it has.",
    ]
    unpaired = comparison["unpaired"]
    if unpaired["base"] or unpaired["new"]:
        lines += [
            "",
            "Left out, without a counterpart of the same case and seed: "
            f"{_count(unpaired['base'], 'completion')} of the base run, {unpaired['new']} of the new one.",
        ]
    sources = dict(SOURCES)
    for source, section in comparison["sources"].items():
        counts = f"{_count(section['cases'], 'case')}, {_count(section['pairs'], 'pair')}"
        heading = f"{sources.get(source, source)} ({counts})"
        lines += _measure_table(heading, section, names)
    long_range = comparison.get("long_range")
    if long_range is not None and "unpaired" in long_range:
        lines += ["", f"The long completions are not compared: {long_range['unpaired']}."]
    elif long_range is not None:
        heading = (
            f"long completions, {_number(long_range['below_mm'], 0)} mm below each cervical scan, at each model's "
            f"default setting ({_count(long_range['cases'], 'case')}, {_count(long_range['pairs'], 'pair')})"
        )
        lines += _measure_table(heading, long_range, names)
    return "\n".join(lines) + "\n"
