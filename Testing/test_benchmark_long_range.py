"""`benchmark --long-inferior`: the canal reach of whole cervical scans completed far below, on hand-made slabs whose
reach is known and end to end with a tiny random bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from test_benchmark_command import phantom_bids

from conftest import oblique_affine, synthetic_scan
from fovcompletion.benchmark.brightness_steps import farthest_from_one
from fovcompletion.benchmark.cases import hide_rows
from fovcompletion.benchmark.long_range import (
    LAST_MM,
    join_brightness,
    last_rows,
    long_reach_mm,
    window_joins,
)
from fovcompletion.benchmark.report import long_range_table
from fovcompletion.bundle import read_metadata
from fovcompletion.cli import main
from fovcompletion.image_io import Volume
from fovcompletion.pipeline import complete

ROWS, HIDDEN = 200, 80  # 1 mm rows: 120 mm of scan, 80 mm completed below it
SPACING = (1.0, 1.0)


def canal_slab(canal_gain: np.ndarray, seed: int = 0) -> np.ndarray:
    """Air, a textured body (level 300) over columns 6-65 and a bright 9 mm canal over columns 41-49 (level 300 +
    600 x `canal_gain` per row)."""
    rng = np.random.default_rng(seed)
    shape = (5, ROWS, 90)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), (0.8, 1.5, 1.5))
    slab = np.zeros(shape)
    slab[:, :, 6:66] = 300 + 200 * texture[:, :, 6:66]
    slab[:, :, 41:50] += 600 * np.asarray(canal_gain, dtype=float)[None, :, None]
    return np.clip(slab, 0, None)


def test_the_reach_is_how_far_the_completed_canal_lasts_below_the_scan():
    known = hide_rows(ROWS, HIDDEN, "inferior")
    seam = ROWS - HIDDEN
    whole = canal_slab(np.ones(ROWS))
    assert long_reach_mm(whole, known, SPACING) == (HIDDEN, HIDDEN)  # to the end, on both scales
    stops = canal_slab(np.r_[np.ones(seam + 30), np.zeros(HIDDEN - 30)])
    reach, reach_last = long_reach_mm(stops, known, SPACING)
    assert 30 <= reach <= 36 and reach_last == reach  # the 8 mm average carries it a few mm past its end
    ends_at_seam = long_reach_mm(canal_slab(np.r_[np.ones(seam), np.zeros(HIDDEN)]), known, SPACING)
    assert max(ends_at_seam) <= 4  # only the average's carry


@pytest.mark.parametrize("spacing_si", [1.0, 2.0])
def test_the_second_scale_is_read_on_exactly_the_scans_last_64_mm(spacing_si):
    known = hide_rows(100, 30, "inferior")  # 70 scan rows, then 30 completed
    rows = np.flatnonzero(last_rows(known, spacing_si))
    assert rows[-1] == 69 and len(rows) == min(70, round(LAST_MM / spacing_si))
    assert np.array_equal(rows, np.arange(rows[0], 70))


def test_a_canal_as_bright_as_the_faded_rows_it_continues_counts_on_their_range():
    """A regional scan's coil fades towards its edge: a completion that keeps the faded canal's brightness is dark on
    the whole scan's range and bright on the range of the scan's last rows."""
    known = hide_rows(ROWS, HIDDEN, "inferior")
    seam = ROWS - HIDDEN
    gain = np.ones(ROWS)
    gain[seam - int(LAST_MM) :] = 0.1  # the canal's last 64 mm of scan and the completion: a tenth as bright
    slab = canal_slab(gain)
    fade = np.ones(ROWS)
    fade[seam - int(LAST_MM) :] = 0.5  # and all the tissue there at half
    slab *= fade[None, :, None]
    reach, reach_last = long_reach_mm(slab, known, SPACING)
    assert reach == 0 and reach_last == HIDDEN


def test_the_window_joins_are_where_each_later_window_begins_its_own_rows(windowed_bundle):
    """Read off the engine itself: in its preview during a window, the rows no window has made yet still hold the
    canvas's padding (one value across each row), from the join on; and a later window changes the earlier one's
    rows only over the rows it makes again, just above its join."""
    scan = Volume(synthetic_scan((5, 60, 30)), oblique_affine(angle_deg=0.0))  # 1 mm, the model's axis order
    joins = window_joins(scan, read_metadata(windowed_bundle), 100.0, 5, 32.0)
    previews, events = [], []
    result = complete(
        scan,
        model=windowed_bundle,
        slices=5,
        steps=2,
        extend_inferior_mm=100.0,
        window_overlap_mm=32.0,
        match_window_brightness=False,  # the windows as drawn: the preview shows them before any gain
        preview=lambda volume: previews.append(volume.array) or "p.nii",
        preview_every=1,
        progress=events.append,
    )
    windows = next(e for e in events if e.stage == "start").details["windows"]
    assert (
        len(joins) == windows - 1 >= 2 and len(previews) == windows
    )  # one preview per window (after step 1)
    # 32 mm asked, capped at half of the 32 mm context: 8 rows of 2 mm, 16 output rows of 1 mm
    assert all(own - again == 16 for again, own in joins)
    for window, (again, own) in enumerate(joins):
        during = previews[window]
        flat = during.max(axis=(0, 2)) == during.min(axis=(0, 2))
        # row `own` itself is three quarters the later window's (0.25 of a canvas row past the edge)
        assert flat[own + 1 :].all() and not flat[own - 2]
        later, final = previews[window + 1], result.image
        assert np.array_equal(later[:, : again - 1], final[:, : again - 1])  # the earlier window's own rows
        assert not np.array_equal(later[:, again + 2 : own], final[:, again + 2 : own])  # made again


def test_the_brightness_at_a_join_compares_the_later_windows_own_rows_with_the_earlier_windows_own():
    slab = np.full((3, 120, 20), 100.0)
    slab[:, 50:70] = np.linspace(100, 400, 20)[None, :, None]  # the rows made again: a ramp, not compared
    slab[:, 70:] = 150.0  # the later window's own rows, from the join at row 70
    assert join_brightness(slab, [(50, 70)], 16) == pytest.approx([1.5])
    assert join_brightness(np.full((3, 120, 20), 7.0), [(32, 40), (82, 90)], 16) == pytest.approx([1.0, 1.0])
    ends_early = join_brightness(
        slab, [(12, 20), (102, 110)], 16
    )  # a band above the image's top or past its end
    assert np.isnan(ends_early).all()
    assert farthest_from_one([1.25, 0.7, float("nan"), None]) == 0.7 and farthest_from_one([1.3, 0.8]) == 1.3
    assert farthest_from_one([1.9, 0.0]) == 0.0  # a band gone black is the largest step
    assert np.isnan(farthest_from_one([]))


def test_benchmark_long_inferior_completes_each_cervical_scan_and_reports_its_reach(
    tmp_path, bench_bundle, capsys
):
    pytest.importorskip("fovcompletion.phantom")
    data = phantom_bids(tmp_path / "bids", {"sub-x": (11, "cervical"), "sub-y": (12, "lumbar")})
    out = tmp_path / "r"
    argv = [
        "benchmark",
        "--data",
        str(data),
        "--out",
        str(out),
        "--model",
        str(bench_bundle),
        "--phantoms",
        "0",
    ]
    long = ["--long-inferior", "40", "--long-draws", "2", "--seed", "3"]
    # the long completions take the model's default setting, whichever rows are scored: none of ours here
    assert main([*argv, "--methods", "mirror", *long]) == 0
    results = json.loads((out / "results.json").read_text())
    found = results["long_range"]
    assert [row["case"] for row in found["cases"]] == ["sub-x"]  # the cervical scan only, once for both ends
    row = found["cases"][0]
    assert row["seeds"] == [3, 4] and len(row["reach_mm"]) == len(row["reach_last_mm"]) == 2
    assert row["join_rows"] == [] and row["join_brightness"] == [[], []]  # 40 mm: one window of 1024 mm
    assert found["below_mm"] == 40 and found["draws"] == 2
    assert "--long-inferior 40" in results["command"]
    table = "\n".join(long_range_table(found))
    assert table in (out / "results.md").read_text()
    capsys.readouterr()
    lumbar = phantom_bids(tmp_path / "lumbar", {"sub-y": (12, "lumbar")})
    assert main([*argv[:2], str(lumbar), *argv[3:], "--methods", "mirror", *long]) == 1
    assert "needs a real cervical scan" in capsys.readouterr().err
    for bad, message in [
        (["--long-inferior", "-5"], "--long-inferior: extensions must be zero or positive"),
        (["--long-inferior", "nan"], "--long-inferior: extensions must be finite"),
        (["--long-inferior", "0"], "--long-inferior: nothing to complete"),
        (["--long-inferior", "2000"], "--long-inferior: extending by 2000 mm is more than any body needs"),
        (["--long-inferior", "40", "--long-draws", "0"], "--long-draws must be at least 1"),
        (["--long-draws", "2"], "--long-draws needs --long-inferior MM"),
    ]:
        assert main([*argv, "--methods", "mirror", *bad]) == 1
        assert message in capsys.readouterr().err


def test_the_long_range_table_gives_every_draw_and_the_means():
    long_range = {
        "below_mm": 300.0,
        "last_mm": 64.0,
        "draws": 2,
        "cases": [
            {
                "case": "sub-a",
                "seeds": [0, 1],
                "reach_mm": [0.0, 300.0],
                "reach_last_mm": [300.0, 300.0],
                "join_brightness": [[1.5, 1.1], [0.9, 1.0]],
            },
            {
                "case": "sub-b",
                "seeds": [0, 1],
                "reach_mm": [20.0, 100.0],
                "reach_last_mm": [60.0, 100.0],
                "join_brightness": [[1.2, None], [1.0, 1.0]],  # None: results.json's NaN
            },
        ],
        "mean_reach_mm": 105.0,
        "mean_reach_last_mm": 190.0,
        "join_band_mm": 16.0,
        "mean_join_brightness": 1.1,
        "largest_join_step_of_all": 1.5,
    }
    lines = long_range_table(long_range)
    assert lines[0].startswith("## Long completions: 300 mm below each cervical scan")
    assert "the first 16 mm a later window makes alone" in lines[2]
    assert "| sub-a | 0, 1 | 0, 300 | 150 | 300, 300 | 300 | 1.50 / 1.10, 0.90 / 1.00 | 1.12 |" in lines
    assert "| sub-b | 0, 1 | 20, 100 | 60 | 60, 100 | 80 | 1.20 / –, 1.00 / 1.00 | 1.07 |" in lines
    assert lines[-1] == "| all | | | 105 | | 190 | largest step 1.50 | 1.10 |"
