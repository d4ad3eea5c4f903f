"""Best of several candidates: the completion whose bright canal lasts furthest past the seam is kept."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import predicting_bundle, synthetic_scan
from fovcompletion.benchmark.runner import build_methods
from fovcompletion.bundle import read_metadata
from fovcompletion.candidates import CanalScore, best_candidate, canal_score
from fovcompletion.errors import InputError
from fovcompletion.pipeline import complete
from fovcompletion.schedule import SamplerOptions

SPACING = (1.0, 1.0)
SHAPE = (3, 120, 90)  # slices, S-I rows (1 mm), A-P cols (1 mm)
KNOWN = np.arange(SHAPE[1]) < 60  # the scan's rows; the 60 below were made
AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """Tiny random networks whose UNet predicts something, so that candidates differ."""
    return predicting_bundle(tmp_path_factory.mktemp("bundles") / "predicting")


def window_with_canal(canal_rows: int | None, seed: int = 0) -> np.ndarray:
    """Air, a textured body over columns 6-65, a bright 8 mm canal at column 45 from the top down to row
    `canal_rows` (None: through every row)."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, SHAPE), (0.8, 1.5, 1.5))
    window = np.zeros(SHAPE)
    window[:, :, 6:66] = 300 + 400 * texture[:, :, 6:66]
    rows = np.arange(SHAPE[1])[None, :, None] < (SHAPE[1] if canal_rows is None else canal_rows)
    canal = (np.abs(np.arange(SHAPE[2]) - 45) <= 4)[None, None, :]
    return np.where(rows & canal, 900.0, window)


def test_the_canal_that_lasts_scores_higher_than_one_that_stops_or_is_missing():
    whole = canal_score(window_with_canal(None), KNOWN, SPACING)
    stops = canal_score(window_with_canal(80), KNOWN, SPACING)  # 20 mm past the seam
    missing = canal_score(window_with_canal(60), KNOWN, SPACING)
    assert whole.reach_mm >= 55
    assert 10 <= stops.reach_mm <= 25
    assert missing.reach_mm <= 8  # the smoothing and the 8 mm run carry an ending canal a few mm
    assert whole > stops > missing
    scores = [stops, missing, whole, stops]
    assert best_candidate(scores) == 2


def test_equal_candidates_keep_the_first_and_a_window_without_a_seam_scores_nothing():
    equal = [CanalScore(40.0, 0.3), CanalScore(40.0, 0.3), CanalScore(40.0, 0.2)]
    assert best_candidate(equal) == 0
    assert best_candidate([CanalScore(40.0, 0.2), CanalScore(40.0, 0.3)]) == 1  # as far: the brighter canal
    assert canal_score(window_with_canal(None), np.zeros(SHAPE[1], bool), SPACING) == (0.0, 0.0)
    assert canal_score(window_with_canal(None), np.ones(SHAPE[1], bool), SPACING) == (0.0, 0.0)


def test_the_score_reads_the_canal_on_the_scale_of_the_known_rows():
    """The same window at another gain, or the canal drawn at another column, scores the same."""
    window = window_with_canal(90)
    assert canal_score(3.0 * window + 50.0, KNOWN, SPACING) == pytest.approx(
        canal_score(window, KNOWN, SPACING)
    )
    shifted = np.roll(window, -8, axis=2)
    assert canal_score(shifted, KNOWN, SPACING).reach_mm == pytest.approx(
        canal_score(window, KNOWN, SPACING).reach_mm, abs=2
    )


def test_the_engine_keeps_its_best_candidate_and_reports_the_choice(bundle):
    """K candidates cost K times the UNet passes; the first candidate is the plain draw of the same seed, so a
    run that keeps it gives the single-draw output exactly, and one that keeps another does not."""
    kwargs = {"model": bundle, "slices": 2, "steps": 3, "extend_inferior_mm": 30, "seed": 0}
    scan = synthetic_scan((6, 40, 30))
    single = complete(scan, AFFINE, **kwargs)
    events = []
    best = complete(scan, AFFINE, **kwargs, sampler=SamplerOptions(candidates=3), progress=events.append)
    assert best.nfe == 3 * single.nfe
    assert events[0].details["candidates"] == 3 and "x 3 candidates" in events[0].message
    sampling = [e for e in events if e.stage == "sampling"]
    assert sampling[-1].step == sampling[-1].total == best.nfe
    choices = [e for e in events if e.stage == "candidates"]
    assert len(choices) == 1  # one window
    kept, reach = choices[0].details["kept"], choices[0].details["canal_mm"]
    assert len(reach) == 3 and reach[kept - 1] == max(reach)
    assert f"kept candidate {kept} of 3" in choices[0].message
    made = best.mask == 0
    if kept == 1:
        assert np.array_equal(best.image, single.image)
    else:
        assert not np.array_equal(best.image[made], single.image[made])
    assert np.array_equal(best.image[~made], single.image[~made])  # the scan's voxels, untouched


def test_a_run_uses_the_bundles_steps_and_candidates_unless_told_otherwise(tmp_path):
    """A bundle names the settings its model was measured best with; the caller's own settings win."""
    tuned = predicting_bundle(tmp_path / "tuned", steps=3, candidates=2)
    scan = synthetic_scan((6, 40, 30))
    kwargs = {"model": tuned, "slices": 2, "extend_inferior_mm": 30, "seed": 0}
    events = []
    default = complete(scan, AFFINE, **kwargs, progress=events.append)
    assert default.nfe == 3 * 2 and events[0].details["candidates"] == 2
    explicit = complete(scan, AFFINE, **kwargs, steps=3, sampler=SamplerOptions(candidates=2))
    np.testing.assert_array_equal(default.image, explicit.image)
    assert complete(scan, AFFINE, **kwargs, steps=2, sampler=SamplerOptions(candidates=1)).nfe == 2
    # The reference algorithm runs as the original, one draw over every training timestep: the bundle's counts
    # are its DDIM sampler's.
    started = []
    reference = complete(
        scan, AFFINE, **kwargs, sampler=SamplerOptions(method="reference"), progress=started.append
    )
    timesteps = read_metadata(tuned).scheduler.num_train_timesteps
    assert reference.nfe == timesteps != 3 and started[0].details["candidates"] == 1


def scripted_scores(monkeypatch, winner: int) -> list[tuple]:
    """Replace the engine's canal score by one that makes candidate `winner` (0-based) the best of each window;
    returns the list that records what the engine asked it to score."""
    import fovcompletion.pipeline as pipeline

    calls = []

    def score(window, known_rows, spacing, scale):
        calls.append((window, np.asarray(known_rows).copy(), spacing, scale))
        index = (len(calls) - 1) % 2
        return CanalScore(10.0 if index == winner else 5.0, 0.1)

    monkeypatch.setattr(pipeline, "canal_score", score)
    return calls


LONG = {"slices": 2, "steps": 2, "extend_inferior_mm": 120, "seed": 4}  # 4 windows of the tiny 64 mm canvas


def test_keeping_the_first_candidate_of_every_window_gives_the_single_draw_run(bundle, monkeypatch):
    """Candidates 2..K draw noise of their own, so the windows after them draw what a run without them draws."""
    scan = synthetic_scan((6, 40, 30))
    events = []
    single = complete(scan, AFFINE, model=bundle, **LONG, progress=events.append)
    windows = events[0].details["windows"]
    calls = scripted_scores(monkeypatch, winner=0)
    first = complete(scan, AFFINE, model=bundle, **LONG, sampler=SamplerOptions(candidates=2))
    assert windows >= 3 and len(calls) == 2 * windows  # two candidates in each window
    assert np.array_equal(first.image, single.image)


def test_every_window_is_scored_on_the_scans_scale_and_keeps_the_winner(bundle, monkeypatch):
    scan = synthetic_scan((6, 40, 30))
    single = complete(scan, AFFINE, model=bundle, **LONG)
    calls = scripted_scores(monkeypatch, winner=1)
    events = []
    second = complete(
        scan, AFFINE, model=bundle, **LONG, sampler=SamplerOptions(candidates=2), progress=events.append
    )
    choices = [e for e in events if e.stage == "candidates"]
    assert len(choices) >= 3 and all(e.details["kept"] == 2 for e in choices)
    assert not np.array_equal(second.image[second.mask == 0], single.image[single.mask == 0])
    scales = {call[3] for call in calls}
    assert len(scales) == 1  # the scan's, for every window: not each window's own context
    for window, known_rows, spacing, _ in calls:
        assert spacing == (2.0, 2.0)
        assert known_rows.shape == (window.shape[1],)
        assert known_rows[0] and not known_rows[-1]  # context on top, new rows below
        assert np.all(np.diff(known_rows.astype(int)) <= 0)  # one seam


def test_only_the_rows_the_output_keeps_decide_the_choice(bundle, monkeypatch):
    """A canvas taller than the extension makes rows past it that are cut off: a canal drawn there must not win,
    nor be reported as lasting further than the completion reaches."""
    calls = scripted_scores(monkeypatch, winner=1)
    events = []
    kwargs = {"model": bundle, "slices": 2, "steps": 2, "seed": 0, "progress": events.append}
    complete(
        synthetic_scan((6, 40, 30)),
        AFFINE,
        **kwargs,
        extend_inferior_mm=10,
        sampler=SamplerOptions(candidates=2),
    )
    assert events[0].details["windows"] == 1 and len(calls) == 2
    for window, known_rows, *_ in calls:
        assert known_rows.shape == (window.shape[1],)
        assert np.count_nonzero(~known_rows) == 5  # 10 mm on the 2 mm canvas, not the rest of the window
        assert known_rows[0] and not known_rows[-1]


def test_no_candidates_is_refused_by_the_engine_and_the_benchmark(bundle):
    with pytest.raises(InputError, match="candidates must be at least 1"):
        complete(
            synthetic_scan((6, 40, 30)),
            AFFINE,
            model=bundle,
            steps=2,
            extend_inferior_mm=20,
            sampler=SamplerOptions(candidates=0),
        )
    with pytest.raises(InputError, match="candidates must be at least 1"):
        build_methods({"ours"}, [10], [2], 10, 1000, candidate_counts=(0,))


def test_each_candidate_count_asked_for_is_a_benchmark_row_of_its_own():
    methods = build_methods({"ours", "resample"}, [10, 25], [2], 10, 1000, candidate_counts=(1, 3))
    names = [m.name for m in methods]
    assert names == [
        "ours-steps10",
        "ours-steps25",
        "ours-steps10-resample2",
        "ours-steps10-best3",
        "ours-steps25-best3",
        "ours-steps10-resample2-best3",
    ]
    assert [m.sampler().candidates for m in methods] == [1, 1, 1, 3, 3, 3]
    eroded = build_methods({"ours"}, [25], [2], 10, 1000, candidate_counts=(3,), mask_erosions=(0, 1))
    assert [m.name for m in eroded] == ["ours-steps25-best3", "ours-steps25-best3-erosion1"]
    assert [m.sampler().mask_erosion for m in eroded] == [0, 1]
    with pytest.raises(InputError, match="mask erosion must be at least 0"):
        build_methods({"ours"}, [10], [2], 10, 1000, mask_erosions=(-1,))
