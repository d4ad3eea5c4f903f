"""`fovcompletion benchmark` end to end on tiny cases with a tiny random bundle (shape of the outputs, not quality):
the model's held-out scans, any other BIDS root (made from phantoms), `--subjects`, phantoms and a template."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import predicting_bundle, synthetic_scan, write_nifti
from fovcompletion.bundle import CanvasSpec
from fovcompletion.bundle_factory import create_random_bundle
from fovcompletion.cli import main

REQUIRED = {
    "ssim": float,
    "psnr": float,
    "mae": float,
    "ssim_near": float,
    "ssim_far": float,
    "ssim_seam": float,
    "seam": float,
    "ssim_tissue": float,
    "sharpness": float,
    "edge_sharpness": float,
    "seam_brightness": float,
    "canal_continuity": float,
    "canal_reach": float,
    "slice_consistency": float,
    "value_range_violations": float,
    "known_max_abs_err": float,
    "nfe": int,
    "seconds_per_volume": float,
    "peak_rss_mb": float,
}
FAST = ["--steps", "2", "--resample", "2", "--resample-steps", "2", "--reference-steps", "3", "--no-speed"]


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


def phantom_bids(root: Path, subjects: dict[str, tuple[int, str]]) -> Path:
    """A BIDS root of 4 mm phantom crops: subject -> (seed, region kept)."""
    from fovcompletion.phantom import crop_phantom, generate_phantom, save_phantom

    rows = ["participant_id\tregion"]
    for subject, (seed, region) in subjects.items():
        folder = root / subject / "anat"
        folder.mkdir(parents=True)
        scan = crop_phantom(generate_phantom(seed=seed, spacing_mm=4.0), region)
        save_phantom(scan, folder / f"{subject}_T2w.nii.gz")
        rows.append(f"{subject}\t{region}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return root


def phantom_template(root: Path, seed: int = 5) -> Path:
    """A template root like the PAM50 one, made from a 4 mm phantom: one labelled voxel per disc, on the canal,
    numbered as the PAM50's by the vertebra below it (3 = C2/C3 ... 19 = T11/T12), and the canal labelled with
    the vertebral level beside it (1 = C1 ... 20 = L1)."""
    import nibabel as nib

    from fovcompletion.anatomy import DISC_LABEL_OFFSET
    from fovcompletion.phantom import generate_phantom, save_phantom

    phantom = generate_phantom(seed=seed, spacing_mm=4.0)
    anat = root / "sub-tpl" / "anat"
    labels = root / "derivatives" / "labels" / "sub-tpl" / "anat"
    anat.mkdir(parents=True)
    labels.mkdir(parents=True)
    save_phantom(phantom, anat / "sub-tpl_T2w.nii.gz")
    discs = np.zeros(phantom.image.shape, dtype=np.float32)
    mid = phantom.labels[phantom.mid_slice]
    levels = np.zeros(phantom.image.shape, dtype=np.float32)
    for k in range(2, 19):  # the disc below vertebra k carries k + 1
        rows = np.flatnonzero((mid == DISC_LABEL_OFFSET + k).any(axis=1))
        row = int(round(rows.mean()))
        discs[phantom.mid_slice, row, int(round(phantom.canal_cols[row]))] = k + 1
    for vertebra in range(1, 21):
        for row in np.flatnonzero((mid == vertebra).any(axis=1)):
            levels[phantom.mid_slice, row, int(round(phantom.canal_cols[row]))] = vertebra
    nib.save(nib.Nifti1Image(discs, phantom.affine), str(labels / "sub-tpl_T2w_label-discs_dseg.nii.gz"))
    nib.save(nib.Nifti1Image(levels, phantom.affine), str(labels / "sub-tpl_T2w_label-levels_dseg.nii.gz"))
    (root / "participants.tsv").write_text("participant_id\tregion\nsub-tpl\twhole-spine template\n")
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
        out,
        {
            "grid",
            "autoencoder",
            "denoise-t100",
            "ours-steps2",
            "ours-steps2-resample2",
            "reference",
            "constant",
            "mirror",
            "noise",
            "retrieval",
        },  # not retrieval-oracle: a row that asks the truth runs only when named
    )
    assert list(results["methods"])[:3] == ["grid", "autoencoder", "denoise-t100"]  # the ceilings first
    assert results["case_names"] == ["sub-b/inferior", "sub-b/superior"]  # only the bundle's held-out subject
    assert results["subjects"]["evaluated"] == ["sub-b"]
    assert results["subjects"]["reason"] == "the model's held-out subjects"
    assert results["subjects"]["excluded_as_training"] == ["sub-a"]
    assert results["subjects"]["retrieval_library"] == ["sub-a", "sub-c"]
    assert results["hide_mm"] == 48.0
    for name in (
        "grid",
        "autoencoder",
        "denoise-t100",
        "ours-steps2",
        "ours-steps2-resample2",
        "constant",
        "mirror",
        "retrieval",
    ):
        assert results["methods"][name]["known_max_abs_err"] == 0.0  # pasted back exactly
    for name in ("grid", "autoencoder", "denoise-t100", "ours-steps2", "ours-steps2-resample2", "reference"):
        assert (
            results["methods"][name]["value_range_violations"] == 0.0
        )  # the engine clips to the input range
    assert results["methods"]["ours-steps2"]["nfe"] == 2
    assert results["methods"]["reference"]["nfe"] == 3
    assert results["methods"]["reference"]["cases"] == 1  # and the others again on that one case, paired:
    assert results["on_reference_cases"]["methods"]["mirror"]["cases"] == 1
    markdown = (out / "results.md").read_text()
    assert "| `mirror` |" in markdown and "| `grid` (ceiling) |" in markdown
    assert "| `denoise-t100` (ceiling) |" in markdown
    assert "- subjects: sub-b (the model's held-out subjects)" in markdown


def test_quick_benchmark_on_a_bids_root_the_model_never_saw(tmp_path, bench_bundle):
    pytest.importorskip("fovcompletion.phantom")
    data = phantom_bids(tmp_path / "mine", {"sub-x": (11, "cervical"), "sub-y": (12, "lumbar")})
    out = tmp_path / "r"
    argv = ["benchmark", "--data", str(data), "--out", str(out), "--quick", "--model", str(bench_bundle)]
    assert main([*argv, "--phantoms", "0", *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["subjects"]["evaluated"] == ["sub-x", "sub-y"]
    assert results["subjects"]["reason"] == "every subject not in the model's training list"
    assert {name.split("/")[0] for name in results["case_names"]} == {"sub-x", "sub-y"}
    for name, row in results["methods"].items():
        assert row["cases"] == (1 if name == "reference" else 2)  # quick: the reference sampler on one case
        assert isinstance(row["ssim_tissue"], float)
    chosen = tmp_path / "chosen"
    assert main([*argv[:4], str(chosen), *argv[5:], "--subjects", "y", "--phantoms", "0", *FAST]) == 0
    results = json.loads((chosen / "results.json").read_text())
    assert results["subjects"]["evaluated"] == ["sub-y"] and results["subjects"]["requested"] == ["sub-y"]
    assert all(name.startswith("sub-y/") for name in results["case_names"])
    assert "--subjects y" in results["command"]


def test_subjects_from_the_training_list_are_refused(tmp_path, bench_bundle, capsys):
    pytest.importorskip("fovcompletion.phantom")
    data = phantom_bids(tmp_path / "mixed", {"sub-a": (11, "cervical"), "sub-x": (12, "cervical")})
    out = tmp_path / "r"
    argv = ["benchmark", "--data", str(data), "--out", str(out), "--model", str(bench_bundle), "--quick"]
    assert main([*argv, "--subjects", "sub-a", *FAST]) == 1
    assert "sub-a in the model's training list" in capsys.readouterr().err
    assert not out.exists()
    fit = ["--training-subjects", "--phantoms", "0", "--methods", "autoencoder,mirror", *FAST]
    assert main([*argv, *fit]) == 0  # asked for: a check of fit, and the results say so
    results = json.loads((out / "results.json").read_text())
    assert results["subjects"]["evaluated"] == ["sub-a"] and results["subjects"]["training_fit"]
    assert "**subjects: sub-a (the model's training subjects" in (out / "results.md").read_text()


def test_a_template_case_keeps_the_cervical_spine_and_gets_level_metrics(tmp_path, bench_bundle):
    pytest.importorskip("fovcompletion.phantom")
    templates = phantom_template(tmp_path / "templates")
    out = tmp_path / "out"
    argv = ["benchmark", "--templates", str(templates), "--out", str(out), "--model", str(bench_bundle)]
    assert main([*argv, "--phantoms", "0", "--methods", "grid,autoencoder,ours,mirror,retrieval", *FAST]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["source"] == "template" and results["case_names"] == ["sub-tpl/cervical"]
    for name, row in results["methods"].items():
        levels = row["levels"]
        assert levels["vertebrae_true"] == 13 and levels["discs_true"] == 12, name  # T1-L1, T1/T2-T12/L1
        assert 0.0 <= levels["disc_f1"] <= 1.0 and levels["vertebra_count_error"] >= 0.0
    assert "vertebra count err" in (out / "results.md").read_text()


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
            "ours,reference,constant,mirror,noise,retrieval,retrieval-oracle",
            *FAST,
        ]
    )
    assert code == 0
    expected = {"ours-steps2", "reference", "constant", "mirror", "noise", "retrieval", "retrieval-oracle"}
    results = check_results(out, expected)
    assert results["source"] == "phantom" and results["cases"] == 1
    # the truth's choice among the library, block by block, is never below retrieval's choice among it
    assert results["methods"]["retrieval-oracle"]["ssim"] >= results["methods"]["retrieval"]["ssim"]
    assert results["methods"]["retrieval-oracle"]["known_max_abs_err"] == 0.0
    assert "| `retrieval-oracle` (the truth's choice) |" in (out / "results.md").read_text()
    for chance in ("mirror", "noise"):
        levels = results["methods"][chance]["levels"]
        assert levels["vertebrae_true"] > 0 and levels["discs_true"] > 0
        assert 0.0 <= levels["disc_position_f1"] <= 1.0
    assert "disc F1" in (out / "results.md").read_text()


def test_an_interrupt_while_writing_the_reports_leaves_the_earlier_run_whole(
    tmp_path, bench_bundle, monkeypatch
):
    """The four reports are written together or not at all: a cancel while the last one is drawn leaves an
    earlier run's reports as they were (not a new results.json beside old figures), and a new folder gone."""
    import fovcompletion.benchmark.report as report

    out = tmp_path / "out"
    command = ["benchmark", "--model", str(bench_bundle), "--phantoms", "1", "--phantom-spacing", "4"]
    command += ["--methods", "constant,mirror", *FAST]
    assert main([*command, "--out", str(out), "--seed", "1"]) == 0
    earlier = {path.name: path.read_bytes() for path in out.iterdir()}

    def cancelled(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot_examples", cancelled)
    assert main([*command, "--out", str(out), "--seed", "2"]) == 130
    assert {path.name: path.read_bytes() for path in out.iterdir()} == earlier
    assert main([*command, "--out", str(tmp_path / "new"), "--seed", "2"]) == 130
    assert not (tmp_path / "new").exists()


def guided_phantom_arguments(folder: Path) -> list[str]:
    """Benchmark arguments for a tiny conditioned bundle with guidance 2, our sampler alone, on one phantom."""
    bundle = predicting_bundle(
        folder / "bundle",
        canvas=CanvasSpec(shape=(128, 32), spacing_mm=(8.0, 8.0)),
        name="tiny-guided",
        conditioning="masked_latent",
        guidance=2.0,
    )
    return ["--model", str(bundle), "--phantoms", "1", "--phantom-spacing", "4", "--methods", "ours", *FAST]


def test_each_guidance_asked_for_is_a_row_of_its_own(tmp_path):
    out = tmp_path / "out"
    arguments = guided_phantom_arguments(tmp_path)
    assert main(["benchmark", "--out", str(out), *arguments, "--guidance", "1,3"]) == 0
    results = check_results(out, {"ours-steps2-guidance1", "ours-steps2-guidance3"})
    rows = results["methods"]
    assert rows["ours-steps2-guidance3"]["nfe"] == 2  # steps, each one batch with and without the context
    assert (
        rows["ours-steps2-guidance3"]["mae"] != rows["ours-steps2-guidance1"]["mae"]
    )  # the guidance was used
    assert main(["benchmark", "--out", str(tmp_path / "default"), *arguments]) == 0  # the bundle's, unnamed
    check_results(tmp_path / "default", {"ours-steps2"})


def test_each_eta_asked_for_is_a_row_of_its_own_beside_each_guidance(tmp_path):
    out = tmp_path / "out"
    arguments = guided_phantom_arguments(tmp_path)
    assert main(["benchmark", "--out", str(out), *arguments, "--guidance", "1,2", "--eta", "0,1"]) == 0
    names = {f"ours-steps2-guidance{g}-eta{e}" for g in (1, 2) for e in (0, 1)}
    rows = check_results(out, names)["methods"]
    for guidance in (1, 2):
        deterministic, noisy = (rows[f"ours-steps2-guidance{guidance}-eta{e}"] for e in (0, 1))
        assert deterministic["nfe"] == noisy["nfe"] == 2
        assert deterministic["mae"] != noisy["mae"]  # eta 1 draws fresh noise at each step; eta 0 draws none
    assert "`ours-steps2-guidance2-eta1`" in (out / "results.md").read_text()


def test_each_denoise_level_asked_for_is_a_ceiling_row_of_its_own(tmp_path, capsys):
    """The truth's latent noised to each level and denoised: less noise keeps more of the truth."""
    out = tmp_path / "out"
    arguments = guided_phantom_arguments(tmp_path)
    arguments[arguments.index("--methods") + 1] = "autoencoder,denoise"
    assert main(["benchmark", "--out", str(out), *arguments, "--denoise-levels", "20,900"]) == 0
    rows = check_results(out, {"autoencoder", "denoise-t20", "denoise-t900"})["methods"]
    assert list(rows) == ["autoencoder", "denoise-t20", "denoise-t900"]
    assert rows["denoise-t20"]["ssim"] > rows["denoise-t900"]["ssim"]
    assert abs(rows["denoise-t20"]["ssim"] - rows["autoencoder"]["ssim"]) < 0.1
    assert "| `denoise-t900` (ceiling) |" in (out / "results.md").read_text()
    bad = ["benchmark", "--out", str(tmp_path / "bad"), *arguments, "--denoise-levels"]
    with pytest.raises(SystemExit):
        main([*bad, "0"])
    assert main([*bad, "1000"]) == 1
    assert "not a timestep of the model (0..999)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_each_mask_erosion_asked_for_is_a_row_of_its_own(tmp_path, capsys):
    """The engine's --mask-erosion, measurable as the other sampler settings are: 0 is the unnamed plain row."""
    out = tmp_path / "out"
    arguments = guided_phantom_arguments(tmp_path)
    assert main(["benchmark", "--out", str(out), *arguments, "--mask-erosion", "0,1"]) == 0
    rows = check_results(out, {"ours-steps2", "ours-steps2-erosion1"})["methods"]
    assert rows["ours-steps2"]["nfe"] == rows["ours-steps2-erosion1"]["nfe"] == 2
    assert (
        rows["ours-steps2"]["mae"] != rows["ours-steps2-erosion1"]["mae"]
    )  # the UNet redrew the seam's cells
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(["benchmark", "--out", str(tmp_path / "none"), *arguments, "--mask-erosion", "-1"])
    assert refused.value.code == 2 and "expected integers of at least 0" in capsys.readouterr().err


def test_each_repaint_jump_length_asked_for_is_a_resampling_row_of_its_own(tmp_path, capsys):
    out = tmp_path / "out"
    arguments = [*guided_phantom_arguments(tmp_path), "--methods", "resample", "--resample-steps", "4"]
    assert main(["benchmark", "--out", str(out), *arguments, "--jump-length", "1,2"]) == 0
    rows = check_results(out, {"ours-steps4-resample2", "ours-steps4-resample2-jump2"})["methods"]
    # 4 steps; jump 1 goes back one step after steps 1, 2 and 3 (3 more passes), jump 2 two steps after step 2
    assert rows["ours-steps4-resample2"]["nfe"] == 7
    assert rows["ours-steps4-resample2-jump2"]["nfe"] == 6
    assert rows["ours-steps4-resample2"]["mae"] != rows["ours-steps4-resample2-jump2"]["mae"]
    capsys.readouterr()
    assert main(["benchmark", "--out", str(tmp_path / "none"), *arguments, "--jump-length", "4"]) == 1
    error = (
        capsys.readouterr().err.strip()
    )  # a jump as long as the run resamples nothing: refused, not mislabelled
    assert "jump length 4 resamples nothing in 4 steps" in error and "\n" not in error


def test_repeats_draw_our_sampler_with_new_seeds_and_report_its_noise(tmp_path, capsys):
    arguments = [
        *guided_phantom_arguments(tmp_path),
        "--methods",
        "ours,constant,autoencoder,denoise,noise",
        "--denoise-levels",
        "500",
    ]
    once, thrice = tmp_path / "once", tmp_path / "thrice"
    assert main(["benchmark", "--out", str(once), *arguments]) == 0
    assert main(["benchmark", "--out", str(thrice), *arguments, "--repeats", "3"]) == 0
    results = check_results(thrice, {"ours-steps2", "constant", "autoencoder", "denoise-t500", "noise"})
    draws = [c for c in results["per_case"] if c["method"] == "ours-steps2"]
    assert [c["draw"] for c in draws] == [0, 1, 2]
    for fixed in ("constant", "autoencoder"):  # no noise drawn: once
        assert [c["draw"] for c in results["per_case"] if c["method"] == fixed] == [0]
    denoised = [c for c in results["per_case"] if c["method"] == "denoise-t500"]
    assert [c["draw"] for c in denoised] == [0, 1, 2]  # the ceiling that runs the sampler draws as it does
    assert len({c["ssim"] for c in denoised}) == 3
    assert results["methods"]["denoise-t500"]["draw_sd"]["ssim"] > 0
    chance = [c for c in results["per_case"] if c["method"] == "noise"]  # its levels spread as widely as ours
    assert [c["seed"] for c in chance] == [c["seed"] for c in draws] and len({c["ssim"] for c in chance}) == 3
    single = json.loads((once / "results.json").read_text())["methods"]["denoise-t500"]
    assert single["ssim"] == pytest.approx(denoised[0]["ssim"])  # its draw 0 is the single-draw run's
    ssim = [c["ssim"] for c in draws]
    assert len(set(ssim)) == 3  # each draw its own seed
    row = results["methods"]["ours-steps2"]
    assert row["cases"] == 1 and row["draws"] == 3
    assert row["ssim"] == pytest.approx(np.mean(ssim))  # the case counts once, as the mean of its draws
    assert row["levels"]["disc_f1"] == pytest.approx(np.mean([c["levels"]["disc_f1"] for c in draws]))
    assert row["draw_sd"]["ssim"] == pytest.approx(np.std(ssim, ddof=1))
    assert "draw_sd" not in results["methods"]["constant"]
    first = json.loads((once / "results.json").read_text())["methods"]["ours-steps2"]
    assert first["ssim"] == pytest.approx(
        ssim[0]
    )  # draw 0 is the single-draw run: adding draws changes nothing
    assert "draw_sd" not in first
    assert "Sampler noise" in (thrice / "results.md").read_text()
    assert "Sampler noise" not in (once / "results.md").read_text()
    capsys.readouterr()
    assert main(["benchmark", "--out", str(tmp_path / "none"), *arguments, "--repeats", "0"]) == 1
    error = capsys.readouterr().err.strip()
    assert "--repeats must be at least 1" in error and "\n" not in error


def test_an_axial_thick_slice_scan_is_refused_whichever_methods_are_scored(tmp_path, capsys):
    """The baselines need no model, but a scan the engine refuses is no case of a completion benchmark."""
    root = tiny_bids(tmp_path / "bids")
    axial = root / "sub-c" / "anat" / "sub-c_T2w.nii.gz"
    write_nifti(axial, synthetic_scan((40, 40, 16), seed=3), np.diag([-1.0, 1.0, 5.0, 1.0]))  # 5 mm S-I
    command = ["benchmark", "--data", str(root), "--subjects", "sub-c", "--phantoms", "0", "--no-speed"]
    assert main([*command, "--methods", "constant,mirror", "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(
        "fovcompletion: error: sub-c (sub-c_T2w.nii.gz): input looks like an axial thick-slice"
    )
    assert not (tmp_path / "out").exists()


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


def test_the_template_case_hides_everything_below_the_c7_t1_disc_down_into_l1(tmp_path):
    pytest.importorskip("fovcompletion.phantom")
    from fovcompletion.benchmark.templates import template_cases
    from fovcompletion.phantom import generate_phantom

    case = template_cases(phantom_template(tmp_path / "templates", seed=5))[0]
    phantom = generate_phantom(seed=5, spacing_mm=4.0)
    labels = phantom.labels[phantom.mid_slice]  # the phantom's own label map, same grid and orientation
    c7_t1 = np.flatnonzero((labels == 107).any(axis=1)).mean()
    assert np.flatnonzero(case.known_rows)[-1] == int(round(c7_t1))  # the skull base and C1-C7 kept
    assert case.known_rows[0] and case.truth.shape[1] < phantom.image.shape[1]
    last = case.truth.shape[1] - 1
    assert labels[last][labels[last] > 0].min() == 20  # the last row is still L1
    assert np.array_equal(case.truth, np.rint(phantom.image[:, : last + 1]))  # saved as int16
    hidden = ~case.known_rows  # where the canal is scored: the disc labels' columns follow the canal
    assert np.allclose(case.centerline_cols[hidden], phantom.canal_cols[: last + 1][hidden], atol=1.0)


def test_the_bundle_speed_is_measured_on_the_batch_of_a_default_run(tmp_path):
    """The estimate scales a per-image time by the run's batch, so the time is measured on that batch: the
    bundle's default slices, twice under guidance (one image alone costs more per image)."""
    from fovcompletion.benchmark.speed import bundle_speed
    from fovcompletion.bundle import load_bundle

    plain = load_bundle(create_random_bundle(tmp_path / "plain", default_slices=3))
    guided = create_random_bundle(
        tmp_path / "guided", conditioning="masked_latent", guidance=2.0, default_slices=3
    )
    unguided = bundle_speed(plain, "cpu", steps=1)
    assert unguided["batch"] == 3 and list(unguided["seconds_per_unet_call"]) == ["1", "3"]
    measured = bundle_speed(load_bundle(guided), "cpu", steps=1)
    assert measured["batch"] == 6 and measured["seconds_per_unet_step_per_slice"] > 0
    # the default batch and one slice's (twice under guidance), so the estimate can price any batch
    assert list(measured["seconds_per_unet_call"]) == ["2", "6"]
    assert measured["seconds_per_unet_call"]["6"] == pytest.approx(
        6 * measured["seconds_per_unet_step_per_slice"]
    )
    assert "guide_seconds_per_unet_call" not in measured


def test_a_guide_is_timed_on_the_slices_alone_for_the_estimate(tmp_path):
    """The guide reads each slice once per step (not twice, as the UNet does under guidance): it is timed on a
    default run's slices and on one, the bundle accepts the figures, and results.md shows them."""
    from dataclasses import replace

    from conftest import GUIDE_ARGS, guide_unet
    from fovcompletion.benchmark.report import write_markdown
    from fovcompletion.benchmark.speed import bundle_speed
    from fovcompletion.bundle import load_bundle, save_bundle, speed_problem

    plain = load_bundle(
        create_random_bundle(tmp_path / "p", conditioning="masked_latent", guidance=2.0, default_slices=3)
    )
    spec = {"class": "DiffusionModelUNet", "args": GUIDE_ARGS, "latent_scale_factor": 1.0, "weight": 1.0}
    folder = save_bundle(
        tmp_path / "g", replace(plain.metadata, guide=spec), plain.autoencoder, plain.unet, guide=guide_unet()
    )
    measured = bundle_speed(load_bundle(folder), "cpu", steps=1)
    assert list(measured["guide_seconds_per_unet_call"]) == ["1", "3"]
    assert all(seconds > 0 for seconds in measured["guide_seconds_per_unet_call"].values())
    assert speed_problem({"cpu": measured}) is None
    # results.md's speed table shows the guide's calls beside the UNet's, and a dash for a bundle without a guide
    without_guide = bundle_speed(plain, "cpu", steps=1)
    results = {"model": "m", "device": "cpu", "threads": 1, "source": "phantom", "cases": 1, "methods": {}}
    results["speed"] = {"with-guide": measured, "no-guide": without_guide}
    rows = {
        line.split(" | ")[0].lstrip("| "): line.rstrip(" |").split(" | ")
        for line in write_markdown(results, tmp_path / "results.md").read_text().splitlines()
        if line.startswith(("| with-guide", "| no-guide"))
    }
    guide_seconds = measured["guide_seconds_per_unet_call"]
    assert rows["with-guide"][-1] == f"1: {guide_seconds['1']:.3f}, 3: {guide_seconds['3']:.3f}"
    assert rows["no-guide"][-1] == "–" and rows["no-guide"][-2].startswith("2: ")  # the UNet: guidance 2


def test_each_autoguidance_asked_for_is_a_row_of_its_own(tmp_path):
    from dataclasses import replace

    from conftest import GUIDE_ARGS, guide_unet
    from fovcompletion.bundle import load_bundle, save_bundle

    arguments = guided_phantom_arguments(tmp_path)
    plain = load_bundle(arguments[1])
    spec = {"class": "DiffusionModelUNet", "args": GUIDE_ARGS, "latent_scale_factor": 1.0, "weight": 1.0}
    guided = save_bundle(
        tmp_path / "guided",
        replace(plain.metadata, guide=spec),
        plain.autoencoder,
        plain.unet,
        guide=guide_unet(),
    )
    plain_path, arguments[1] = arguments[1], str(guided)
    out = tmp_path / "out"
    assert main(["benchmark", "--out", str(out), *arguments, "--autoguidance", "0,3"]) == 0
    rows = check_results(out, {"ours-steps2-autoguidance0", "ours-steps2-autoguidance3"})["methods"]
    assert rows["ours-steps2-autoguidance3"]["mae"] != rows["ours-steps2-autoguidance0"]["mae"]
    # the `denoise` ceiling runs the bundle's own sampler, its guide included
    arguments[arguments.index("--methods") + 1] = "denoise"
    denoised = {}
    for name, model in (("plain", plain_path), ("guided", str(guided))):
        arguments[1] = model
        assert main(["benchmark", "--out", str(tmp_path / name), *arguments, "--denoise-levels", "900"]) == 0
        denoised[name] = check_results(tmp_path / name, {"denoise-t900"})["methods"]["denoise-t900"]["mae"]
    assert denoised["guided"] != denoised["plain"]
