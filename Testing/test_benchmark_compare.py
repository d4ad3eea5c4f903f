"""`fovcompletion compare`: real benchmark runs (a tiny random bundle on a coarse phantom) paired by case and seed,
the differences checked against the runs' own per-case rows; pairing, the standard error over cases and the
refusals checked on small results documents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fovcompletion.benchmark.paired import compare_runs, comparison_markdown, load_results, run_seed
from fovcompletion.cli import main
from fovcompletion.errors import InputError

FAST = ["--steps", "2", "--no-speed", "--phantoms", "1", "--phantom-spacing", "4"]


@pytest.fixture(scope="module")
def two_draws(tmp_path_factory, bench_bundle) -> Path:
    """One benchmark run: our sampler (two draws of the phantom case, each with its own seed) and the mirror."""
    pytest.importorskip("fovcompletion.phantom")
    out = tmp_path_factory.mktemp("compare") / "run"
    argv = ["benchmark", "--out", str(out), "--model", str(bench_bundle), "--methods", "ours,mirror"]
    assert main([*argv, *FAST, "--repeats", "2"]) == 0
    return out


def comparison_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["compare", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_each_completion_records_its_seed_and_the_differences_are_the_rows(two_draws, capsys):
    results = load_results(two_draws)
    assert results["seed"] == 0
    ours = [r for r in results["per_case"] if r["method"] == "ours-steps2"]
    (mirror,) = [r for r in results["per_case"] if r["method"] == "mirror"]  # drawn once: it has no seed
    assert len({r["seed"] for r in ours}) == 2 and mirror["seed"] is None

    itself = comparison_json(capsys, str(two_draws), str(two_draws), "--method", "ours-steps2")
    section = itself["sources"]["phantom"]
    assert (section["pairs"], section["cases"]) == (2, 1) and itself["unpaired"] == {"base": 0, "new": 0}
    for key in ("ssim", "mae", "canal_continuity", "disc_f1"):
        row = section["measures"][key]
        assert row["difference"] == 0.0 and row["new_better"] == row["new_worse"] == 0

    # the mirror draws no noise: it stands beside each of our sampler's draws of its case
    against = comparison_json(
        capsys, str(two_draws), str(two_draws), "--method", "mirror", "--new-method", "ours-steps2"
    )
    mae = against["sources"]["phantom"]["measures"]["mae"]
    assert mae["pairs"] == 2 and mae["cases"] == 1
    assert mae["difference"] == pytest.approx(np.mean([r["mae"] for r in ours]) - mirror["mae"])
    assert mae["new_better"] == sum(r["mae"] < mirror["mae"] for r in ours)
    assert mae["standard_error"] is None  # one case: no spread over cases (JSON null, not NaN)


def test_the_tables_are_written_where_asked(two_draws, tmp_path, capsys):
    table = tmp_path / "comparison.md"
    argv = [
        "compare",
        str(two_draws),
        str(two_draws / "results.json"),
        "--method",
        "ours-steps2",
        "-o",
        str(table),
    ]
    assert main(argv) == 0
    text = table.read_text()
    assert text == capsys.readouterr().out
    assert "## phantoms (1 case, 2 pairs)" in text and "| SSIM |" in text and "| disc F1 |" in text
    assert [p.name for p in tmp_path.iterdir()] == ["comparison.md"]  # no temporary file left


def test_runs_that_are_not_counterparts_are_refused_in_one_line(two_draws, bench_bundle, tmp_path, capsys):
    other_seed = tmp_path / "seed1"
    argv = ["benchmark", "--out", str(other_seed), "--model", str(bench_bundle), "--methods", "mirror"]
    assert main([*argv, *FAST, "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["compare", str(two_draws), str(other_seed), "--method", "mirror"]) == 1
    error = capsys.readouterr().err
    assert "other seeds (--seed 0 against 1)" in error and error.count("\n") == 1

    assert main(["compare", str(two_draws), str(two_draws)]) == 1  # two methods in common: which one?
    assert "several methods (mirror, ours-steps2)" in capsys.readouterr().err
    assert main(["compare", str(two_draws), str(two_draws), "--method", "resample"]) == 1
    assert (
        "BASE has no completions of method 'resample' (it has mirror, ours-steps2)" in capsys.readouterr().err
    )
    assert main(["compare", str(two_draws), str(tmp_path / "nothing-here")]) == 1
    assert "no benchmark results" in capsys.readouterr().err
    (tmp_path / "not.json").write_text("{")
    assert main(["compare", str(two_draws), str(tmp_path / "not.json")]) == 1
    assert "not readable as benchmark results" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"draw": "x"}, "its draw must be a whole number"),
        ({"seed": [1]}, "its seed must be a whole number"),
        ({"case": ["a"]}, "its case and method must be names"),
        ({"levels": [1, 2]}, "its levels must be a table of measures"),
    ],
)
def test_malformed_rows_are_refused_in_one_line(two_draws, tmp_path, capsys, change, match):
    results = json.loads((two_draws / "results.json").read_text())
    results["per_case"][0].update(change)
    (tmp_path / "edited.json").write_text(json.dumps(results))
    assert main(["compare", str(two_draws), str(tmp_path / "edited.json"), "--method", "mirror"]) == 1
    error = capsys.readouterr().err
    assert "per-case row 0 is malformed: " + match in error and error.count("\n") == 1


def test_the_table_never_replaces_a_results_file(two_draws, tmp_path, capsys):
    """`-o` takes a Markdown file in a folder that exists: `-o results.json` once replaced a run's results."""
    copy = tmp_path / "copy.json"
    copy.write_text((two_draws / "results.json").read_text())
    before = copy.read_bytes()
    for output, match in (
        (copy, "use a file name ending in .md"),
        (tmp_path / "no" / "t.md", "does not exist"),
    ):
        assert main(["compare", str(copy), str(copy), "--method", "mirror", "-o", str(output)]) == 1
        assert match in capsys.readouterr().err
    assert copy.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["copy.json"]


def document(rows: list[dict], **settings) -> dict:
    """A results document as `compare_runs` reads it: real cases, one method `ours`."""
    per_case = [{"source": "real", "method": "ours", "draw": 0, **row} for row in rows]
    return {"hide_mm": 64.0, "slices": 5, "direction": "both", "seed": 0, **settings, "per_case": per_case}


def test_the_standard_error_is_over_cases_and_each_case_counts_once():
    base = document(
        [
            {"case": "a", "seed": 1, "ssim": 0.5},
            {"case": "a", "seed": 2, "ssim": 0.5},
            {"case": "b", "seed": 3, "ssim": 0.5},
        ]
    )
    new = document(
        [
            {"case": "a", "seed": 1, "ssim": 0.6},
            {"case": "a", "seed": 2, "ssim": 0.8},
            {"case": "b", "seed": 3, "ssim": 0.5},
        ]
    )
    ssim = compare_runs(base, new, "ours")["sources"]["real"]["measures"]["ssim"]
    # case a differs by 0.2 on average over its two draws, case b by 0: the mean of the cases, not of the draws
    assert ssim["difference"] == pytest.approx(0.1) and ssim["standard_error"] == pytest.approx(0.1)
    assert (ssim["pairs"], ssim["cases"], ssim["new_better"], ssim["new_worse"]) == (3, 2, 2, 0)


def test_completions_pair_by_seed_and_the_rest_is_reported_as_left_out():
    base = document([{"case": "a", "seed": 1, "ssim": 0.5}, {"case": "b", "seed": 2, "ssim": 0.5}])
    new = document(
        [{"case": "a", "seed": 1, "ssim": 0.7}, {"case": "b", "seed": 9, "ssim": 0.1}]
    )  # another seed
    comparison = compare_runs(base, new, "ours")
    assert comparison["unpaired"] == {"base": 1, "new": 1}
    assert comparison["sources"]["real"]["measures"]["ssim"]["difference"] == pytest.approx(0.2)
    text = comparison_markdown(comparison, "v1", "v2")
    assert "1 completion of the base run, 1 of the new one" in text


def test_runs_from_before_each_row_had_its_seed_pair_by_the_runners_rule():
    """Old results name no seed per row: it is the run's --seed plus the case's place plus 1000 per draw, so the
    same case in another place of another run's list is another completion, not a counterpart."""
    base = document([{"case": "a", "ssim": 0.5}, {"case": "b", "ssim": 0.5}])
    reordered = document([{"case": "b", "ssim": 0.6}, {"case": "a", "ssim": 0.6}])
    with pytest.raises(InputError, match="share no completion of the same case and seed"):
        compare_runs(base, reordered, "ours")
    same_order = document([{"case": "a", "ssim": 0.6}, {"case": "b", "ssim": 0.6}])
    assert compare_runs(base, same_order, "ours")["sources"]["real"]["pairs"] == 2


def test_seam_brightness_is_better_nearer_one_and_missing_values_leave_their_pair_out():
    base = document(
        [
            {"case": c, "seed": i, "seam_brightness": b, "canal_reach": r}
            for i, (c, b, r) in enumerate([("a", 0.8, 0.5), ("b", 1.3, float("nan")), ("c", 0.9, 0.5)])
        ]
    )
    new = document(
        [
            {"case": c, "seed": i, "seam_brightness": b, "canal_reach": r}
            for i, (c, b, r) in enumerate([("a", 0.9, 0.7), ("b", 1.1, 1.0), ("c", 1.2, None)])
        ]
    )
    measures = compare_runs(base, new, "ours")["sources"]["real"]["measures"]
    brightness = measures["seam_brightness"]
    assert (brightness["new_better"], brightness["new_worse"]) == (
        2,
        1,
    )  # 0.8->0.9, 1.3->1.1 nearer; 0.9->1.2 not
    assert brightness["difference"] == pytest.approx(np.mean([0.1, -0.2, 0.3]))
    assert measures["canal_reach"]["pairs"] == 1 and measures["canal_reach"]["difference"] == pytest.approx(
        0.2
    )
    assert "mae" not in measures  # measured in neither run


def test_sharpness_is_better_nearer_one():
    """1 is as much detail as the anatomy; noise drives it past 1 and must not count as a gain."""
    base = document([{"case": "a", "seed": 0, "sharpness": 0.9, "edge_sharpness": 0.9}])
    noisy = document([{"case": "a", "seed": 0, "sharpness": 3.0, "edge_sharpness": 1.5}])
    for key in ("sharpness", "edge_sharpness"):
        measure = compare_runs(base, noisy, "ours")["sources"]["real"]["measures"][key]
        assert (measure["new_better"], measure["new_worse"]) == (0, 1)


def test_in_runs_without_row_seeds_a_method_without_noise_stands_beside_every_draw():
    """The published results name no seed per row: the mirror, drawn once, must still pair with each of our
    sampler's three draws of its case, not with the first alone."""
    rows = [{"case": "a", "method": "ours-steps25", "draw": d, "ssim": 0.5 + d / 10} for d in range(3)]
    rows.append({"case": "a", "method": "mirror", "draw": 0, "ssim": 0.4})
    old = {
        "hide_mm": 64.0,
        "slices": 5,
        "direction": "both",
        "per_case": [{"source": "real", **r} for r in rows],
    }
    comparison = compare_runs(old, old, "mirror", "ours-steps25")
    assert comparison["sources"]["real"]["pairs"] == 3 and comparison["unpaired"] == {"base": 0, "new": 0}
    assert comparison["sources"]["real"]["measures"]["ssim"]["difference"] == pytest.approx(0.2)


def test_other_hidden_rows_are_not_paired():
    base = document([{"case": "a", "seed": 1, "ssim": 0.5}])
    with pytest.raises(InputError, match="hidden millimetres"):
        compare_runs(base, document([{"case": "a", "seed": 1, "ssim": 0.6}], hide_mm=32.0), "ours")


def test_runs_from_before_the_seed_was_recorded_name_it_in_their_command():
    assert run_seed({"seed": 3, "command": "fovcompletion benchmark --seed 7"}) == 3
    assert run_seed({"seed": None, "command": "fovcompletion benchmark --out x --seed 7 --repeats 3"}) == 7
    assert run_seed({"command": "fovcompletion benchmark --out x"}) == 0  # the default


def long_range(cases: list[tuple[str, list[int], list[float], list[float]]], below_mm: float = 300.0) -> dict:
    """A `long_range` section as the benchmark records it: (case, seeds, reach per draw, largest join step per
    draw); the reach on the last 64 mm's range is the reach plus 10."""
    return {
        "below_mm": below_mm,
        "cases": [
            {
                "case": case,
                "seeds": seeds,
                "reach_mm": reach,
                "reach_last_mm": [value + 10 for value in reach],
                "largest_join_step": steps,
            }
            for case, seeds, reach, steps in cases
        ],
    }


def test_long_completions_pair_by_case_and_seed():
    rows = [{"case": "a", "seed": 1, "ssim": 0.5}]
    base = document(
        rows, long_range=long_range([("a", [0, 1], [100.0, 300.0], [1.3, 1.1]), ("b", [0], [0.0], [1.5])])
    )
    new = document(
        rows,
        long_range=long_range(
            [("a", [0, 1, 2], [200.0, 300.0, 5.0], [1.1, 0.8]), ("b", [0], [100.0], [float("nan")])]
        ),
    )
    comparison = compare_runs(base, new, "ours")
    long = comparison["long_range"]
    assert (long["below_mm"], long["pairs"], long["cases"]) == (300.0, 3, 2)  # seed 2 of a has no counterpart
    reach = long["measures"]["reach_mm"]
    # case a: +100 and 0 over its two draws, case b: +100; the mean of the cases
    assert reach["difference"] == pytest.approx(75.0) and (reach["new_better"], reach["new_worse"]) == (2, 0)
    assert long["measures"]["reach_last_mm"]["difference"] == pytest.approx(75.0)
    step = long["measures"]["largest_join_step"]
    # nearer to 1 is better: 1.3 -> 1.1 better, 1.1 -> 0.8 worse; b's NaN leaves its pair out
    assert step["pairs"] == 2 and (step["new_better"], step["new_worse"]) == (1, 1)
    text = comparison_markdown(comparison, "v1", "v2")
    assert (
        "## long completions, 300 mm below each cervical scan, at each model's default setting (2 cases, 3 pairs)"
        in text
    )
    assert "| canal reach (mm) | 100 | 175 | +75 +- 25 | 2 / 0 |" in text
    assert (
        "| brightness at the window joins (the largest step) (2 pairs) | 1.20 | 0.95 | -0.25 +- – | 1 / 1 |"
        in text
    )


def test_long_completions_of_other_lengths_or_of_one_run_are_not_paired():
    rows = [{"case": "a", "seed": 1, "ssim": 0.5}]
    base = document(rows, long_range=long_range([("a", [0], [100.0], [1.3])]))
    longer = document(rows, long_range=long_range([("a", [0], [100.0], [1.3])], below_mm=400.0))
    text = comparison_markdown(compare_runs(base, longer, "ours"), "v1", "v2")
    assert "The long completions are not compared: the runs completed 300 and 400 mm below." in text
    only_base = compare_runs(base, document(rows), "ours")
    assert only_base["long_range"] == {
        "unpaired": "only one run completed the cervical scans far below (--long-inferior)"
    }
    assert "long_range" not in compare_runs(document(rows), document(rows), "ours")


def test_a_join_step_is_judged_either_way_alike():
    """1.25 and 0.8 are the same step; 1.3 -> 0.8 is a smaller one, a join gone black the largest."""
    rows = [{"case": "a", "seed": 1, "ssim": 0.5}]

    def verdict(base_step: float, new_step: float) -> tuple[int, int]:
        base = document(rows, long_range=long_range([("a", [0], [0.0], [base_step])]))
        new = document(rows, long_range=long_range([("a", [0], [0.0], [new_step])]))
        step = compare_runs(base, new, "ours")["long_range"]["measures"]["largest_join_step"]
        return step["new_better"], step["new_worse"]

    assert verdict(1.25, 0.8) == (0, 0) and verdict(1.3, 0.8) == (1, 0) and verdict(0.9, 0.0) == (0, 1)
