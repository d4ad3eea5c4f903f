"""`fovcompletion compare`: two benchmark runs paired by case and sampler seed (see `benchmark.paired`).

Why: deciding whether a retrained model or a sampler setting is better needs the difference of each completion
from its counterpart with the same seed, not two means whose intervals overlap by the seed's spread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare two benchmark runs completion by completion (same case, same seed)",
        description="Pair every completion of NEW's method with BASE's completion of the same case and sampler "
        "seed (a method that draws no noise, such as the mirror, with each draw of its case) and report the mean difference of each measure, its standard error over cases and how "
        "many pairs went each way, for the real scans, the phantoms and the templates, and for the long "
        "completions of the cervical scans (--long-inferior) when both runs made them. The runs must have "
        "hidden the same rows with the same --seed. Compare a model at two sets of seeds (the benchmark's "
        "--seed) before trusting a difference of a few hundredths.",
    )
    parser.add_argument(
        "base", type=Path, help="the reference run: a benchmark --out folder or its results.json"
    )
    parser.add_argument("new", type=Path, help="the run to judge against it, likewise")
    parser.add_argument(
        "--method",
        default=None,
        help="BASE's row to compare, e.g. ours-steps25-best3 (default: the one method both runs have, or with "
        "--new-method BASE's only method)",
    )
    parser.add_argument("--new-method", default=None, help="NEW's row to compare (default: --method)")
    parser.add_argument(
        "-o", "--output", type=Path, default=None, help="also write the tables to this .md file"
    )
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON instead of tables")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..benchmark.paired import compare_runs, comparison_markdown, default_base_method, load_results
    from ..image_io import atomic_write, check_output_path

    if args.output is not None:  # a Markdown file in a writable folder (never a run's results.json)
        check_output_path(args.output, (".md",))
    base, new = load_results(args.base), load_results(args.new)
    method = args.method or default_base_method(base, new, args.new_method)
    comparison = compare_runs(base, new, method, args.new_method)
    text = comparison_markdown(comparison, _label(args.base, base), _label(args.new, new))
    if args.output is not None:
        atomic_write(args.output, lambda path: path.write_text(text, encoding="utf-8"))
    print(json.dumps(comparison, indent=2) if args.json else text, end="\n" if args.json else "")
    return 0


def _label(path: Path, results: dict) -> str:
    """The run as a reader knows it: its model's name and where its results are."""
    return f"{Path(str(results.get('model', '?'))).name} ({path})"
