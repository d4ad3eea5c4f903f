"""`fovcompletion compare`: two real benchmark runs (a tiny random bundle on a coarse phantom) paired by case and
draw, the mean differences checked against the runs' own per-case rows, and runs that cannot be paired refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fovcompletion.benchmark.paired import compare_runs, load_results, run_seed
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


def test_the_differences_are_the_mean_of_the_paired_rows(two_draws, capsys):
    results = load_results(two_draws)
    ours = {(r["case"], r["draw"]): r for r in results["per_case"] if r["method"] == "ours-steps2"}
    mirror = {(r["case"], r["draw"]): r["mae"] for r in results["per_case"] if r["method"] == "mirror"}
    assert len(ours) == 2 and len(mirror) == 1  # the mirror is drawn once: it has no seed
    comparison = comparison_json(capsys, str(two_draws), str(two_draws), "--method", "ours-steps2")
    section = comparison["sources"]["phantom"]
    assert section["pairs"] == 2 and section["cases"] == 1
    for key in ("ssim", "mae", "canal_continuity", "disc_f1"):
        row = section["measures"][key]
        assert row["difference"] == 0.0 and row["new_better"] == row["new_worse"] == 0  # a run against itself

    # our sampler's first draw against the mirror (draw 0 of both): the difference of the rows themselves
    against_mirror = comparison_json(
        capsys, str(two_draws), str(two_draws), "--method", "mirror", "--new-method", "ours-steps2"
    )
    mae = against_mirror["sources"]["phantom"]["measures"]["mae"]
    (case,) = {case for case, _ in mirror}
    assert mae["pairs"] == 1
    assert mae["difference"] == pytest.approx(ours[(case, 0)]["mae"] - mirror[(case, 0)])
    assert (mae["new_better"], mae["new_worse"]) == ((1, 0) if mae["difference"] < 0 else (0, 1))
    assert mae["standard_error"] is None  # one pair has no spread (JSON null, not NaN)


def test_the_tables_are_written_where_asked(two_draws, tmp_path, capsys):
    table = tmp_path / "comparison.md"
    assert (
        main(
            [
                "compare",
                str(two_draws),
                str(two_draws / "results.json"),
                "--method",
                "ours-steps2",
                "-o",
                str(table),
            ]
        )
        == 0
    )
    text = table.read_text()
    assert text == capsys.readouterr().out
    assert "## phantoms (1 case, 2 pairs)" in text and "| SSIM |" in text and "| disc F1 |" in text
    assert not list(tmp_path.glob("*.partial"))


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
    assert main(["compare", str(two_draws), str(tmp_path / "nothing-here")]) == 1
    assert "no benchmark results" in capsys.readouterr().err
    (tmp_path / "not.json").write_text("{")
    assert main(["compare", str(two_draws), str(tmp_path / "not.json")]) == 1
    assert "not readable as benchmark results" in capsys.readouterr().err


def rows(method: str, values: dict[str, list[float]]) -> dict:
    """A results document of one real case drawn len(values) times (what `compare_runs` reads)."""
    count = len(next(iter(values.values())))
    per_case = [
        {"case": "sub-x/inferior", "source": "real", "method": method, "draw": draw}
        | {key: column[draw] for key, column in values.items()}
        for draw in range(count)
    ]
    return {"hide_mm": 64.0, "slices": 5, "direction": "both", "seed": 0, "per_case": per_case}


def test_seam_brightness_is_better_nearer_one_and_missing_values_leave_their_pair_out():
    base = rows("ours", {"seam_brightness": [0.8, 1.3, 0.9], "canal_reach": [0.5, float("nan"), 0.5]})
    new = rows("ours", {"seam_brightness": [0.9, 1.1, 1.2], "canal_reach": [0.7, 1.0, None]})
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


def test_other_hidden_rows_are_not_paired():
    base = rows("ours", {"ssim": [0.5]})
    new = rows("ours", {"ssim": [0.6]}) | {"hide_mm": 32.0}
    with pytest.raises(InputError, match="hidden millimetres"):
        compare_runs(base, new, "ours")


def test_runs_from_before_the_seed_was_recorded_name_it_in_their_command():
    assert run_seed({"seed": 3, "command": "fovcompletion benchmark --seed 7"}) == 3
    assert run_seed({"command": "fovcompletion benchmark --out x --seed 7 --repeats 3"}) == 7
    assert run_seed({"command": "fovcompletion benchmark --out x"}) == 0  # the default
