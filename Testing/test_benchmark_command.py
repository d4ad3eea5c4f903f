"""`fovcompletion benchmark` end to end on tiny cases with a tiny random bundle (shape of the outputs, not quality)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import synthetic_scan, write_nifti
from fovcompletion.bundle import CanvasSpec
from fovcompletion.bundle_factory import create_random_bundle
from fovcompletion.cli import main

REQUIRED = {
    "ssim": float,
    "psnr": float,
    "mae": float,
    "ssim_near": float,
    "ssim_far": float,
    "seam": float,
    "known_max_abs_err": float,
    "nfe": int,
    "seconds_per_volume": float,
    "peak_rss_mb": float,
}
FAST = ["--steps", "2", "--resample", "2", "--resample-steps", "2", "--reference-steps", "3", "--no-speed"]


@pytest.fixture(scope="module")
def bench_bundle(tmp_path_factory) -> Path:
    """Tiny networks on a tall, coarse canvas (1024 x 256 mm at 8 mm) so the reference sampler fits a whole spine."""
    canvas = CanvasSpec(shape=(128, 32), spacing_mm=(8.0, 8.0))
    folder = tmp_path_factory.mktemp("bench") / "bundle"
    return create_random_bundle(folder, canvas=canvas, name="tiny-bench", training={"held_out": ["sub-b"]})


def tiny_bids(root: Path) -> Path:
    """Three 2 mm subjects, 160 mm tall; participants.tsv gives their regions."""
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # axis 0 R->L, axis 1 P->A, axis 2 I->S
    for number, name in enumerate(("a", "b", "c")):
        folder = root / f"sub-{name}" / "anat"
        folder.mkdir(parents=True)
        scan = synthetic_scan((7, 40, 80), seed=number)  # (L-R, A-P, S-I)
        write_nifti(folder / f"sub-{name}_T2w.nii.gz", scan, affine)
    (root / "participants.tsv").write_text(
        "participant_id\tregion\nsub-a\tlumbar\nsub-b\tlumbar\nsub-c\tcervical\n"
    )
    return root


def check_results(out: Path, methods: set[str]) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert {"model", "device", "threads", "cases", "hide_mm", "methods"} <= set(results)
    assert isinstance(results["threads"], int) and isinstance(results["cases"], int)
    assert set(results["methods"]) == methods
    for name, row in results["methods"].items():
        for key, kind in REQUIRED.items():
            assert isinstance(row[key], kind), (name, key, row[key])
    for name in ("results.md", "quality_vs_steps.png", "examples.png"):
        assert (out / name).stat().st_size > 1000
    assert (out / "examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return results


def test_benchmark_on_held_out_real_scans(tmp_path, bench_bundle):
    data = tiny_bids(tmp_path / "bids")
    out = tmp_path / "out"
    code = main(
        [
            "benchmark",
            "--data",
            str(data),
            "--out",
            str(out),
            "--model",
            str(bench_bundle),
            "--hide-mm",
            "48",
            "--phantoms",
            "0",
            "--reference-cases",
            "1",
            *FAST,
        ]
    )
    assert code == 0
    results = check_results(
        out, {"ours-steps2", "ours-steps2-resample2", "reference", "constant", "mirror", "retrieval"}
    )
    assert results["case_names"] == ["sub-b/inferior", "sub-b/superior"]  # only the bundle's held-out subject
    assert results["hide_mm"] == 48.0
    for name in ("ours-steps2", "ours-steps2-resample2", "constant", "mirror", "retrieval"):
        assert results["methods"][name]["known_max_abs_err"] == 0.0  # pasted back exactly
    assert results["methods"]["ours-steps2"]["nfe"] == 2
    assert results["methods"]["reference"]["nfe"] == 3
    assert results["methods"]["reference"]["cases"] == 1  # and the others again on that one case, paired:
    assert results["on_reference_cases"]["methods"]["mirror"]["cases"] == 1
    assert "| `mirror` |" in (out / "results.md").read_text()


def test_benchmark_on_one_coarse_phantom(tmp_path, bench_bundle):
    pytest.importorskip("fovcompletion.phantom")
    out = tmp_path / "out"
    code = main(
        [
            "benchmark",
            "--out",
            str(out),
            "--model",
            str(bench_bundle),
            "--phantoms",
            "1",
            "--phantom-spacing",
            "4",
            "--methods",
            "ours,reference,constant,mirror,retrieval",
            *FAST,
        ]
    )
    assert code == 0
    results = check_results(out, {"ours-steps2", "reference", "constant", "mirror", "retrieval"})
    assert results["source"] == "phantom" and results["cases"] == 1
    levels = results["methods"]["mirror"]["levels"]
    assert levels["vertebrae_true"] > 0 and levels["discs_true"] > 0
    assert 0.0 <= levels["disc_position_f1"] <= 1.0
    assert "disc F1" in (out / "results.md").read_text()


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["benchmark", "--out", str(tmp_path / "o"), "--phantoms", "0"]) == 1
    assert "nothing to benchmark" in capsys.readouterr().err
    assert (
        main(
            [
                "benchmark",
                "--out",
                str(tmp_path / "o"),
                "--data",
                str(tmp_path / "none"),
                "--phantoms",
                "0",
                "--methods",
                "constant",
            ]
        )
        == 1
    )
    assert "data root not found" in capsys.readouterr().err


@pytest.mark.parametrize("first_seed", [1000, 1007, 998])
def test_training_phantom_seeds_are_refused_as_benchmark_cases(first_seed):
    """Any seed from 1000 on may be a training phantom (a run adds as many as it asked for)."""
    from fovcompletion.benchmark.cases import phantom_cases
    from fovcompletion.errors import InputError

    with pytest.raises(InputError, match="training phantoms"):
        phantom_cases(3, 4.0, first_seed=first_seed)
