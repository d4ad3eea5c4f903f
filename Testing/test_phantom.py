"""The synthetic whole-spine phantom, its level detector and its command: real generation, no mocks."""

from __future__ import annotations

import argparse

import nibabel as nib
import numpy as np
import pytest

from fovcompletion.anatomy import (
    COUNTED_DISC_LABELS,
    COUNTED_VERTEBRA_LABELS,
    count_levels,
    count_levels_in_labels,
    disc_label,
    vertebra_label,
)
from fovcompletion.cli import phantom as phantom_cli
from fovcompletion.errors import InputError
from fovcompletion.phantom import (
    LABEL_CORD,
    LABEL_CSF,
    SACRUM_LABEL,
    crop_phantom,
    generate_phantom,
    save_phantom,
)


@pytest.fixture(scope="module")
def ph2():
    """Seed 0 at 2 mm: the whole default field of view, cheap (< 1 s)."""
    return generate_phantom(seed=0, spacing_mm=2.0)


@pytest.fixture(scope="module")
def clean1():
    """Seeds 0..2 at 1 mm, three slices, without noise or bias: the level detector's ground."""
    return [generate_phantom(seed=s, spacing_mm=1.0, n_slices=3, noise=False, bias=False) for s in range(3)]


def _rows(phantom, region):
    a, b = phantom.regions[region]
    sp = phantom.spacing_mm
    return slice(int(np.ceil(a / sp - 1e-6)), int(np.floor(b / sp + 1e-6)) + 1)


def test_orientation_geometry_and_field_of_view(ph2):
    assert nib.aff2axcodes(ph2.affine) == ("L", "I", "A")
    assert np.allclose(np.abs(ph2.affine[:3, :3]).sum(axis=0), 2.0)  # 2 mm voxels on every axis
    n_lr, n_si, n_ap = ph2.image.shape
    assert ph2.labels.shape == ph2.image.shape
    assert ph2.image.dtype == np.float32 and ph2.labels.dtype == np.uint8
    assert n_lr == 32 and n_ap == 128  # 64 mm x 256 mm
    assert 640 <= n_si * 2.0 <= 730
    # the mid-sagittal slice is at world x = 0; row 0 is the most superior
    assert ph2.mid_slice == 16
    assert np.isclose((ph2.affine @ [16, 0, 0, 1])[0], 0.0)
    top = ph2.affine @ [16, 0, 0, 1]
    below = ph2.affine @ [16, 1, 0, 1]
    assert below[2] < top[2]
    assert set(ph2.regions) == {"cervical", "thoracic", "lumbar"}
    c, t, lu = (ph2.regions[k] for k in ("cervical", "thoracic", "lumbar"))
    assert c[0] == 0.0 and c[1] == t[0] and t[1] == lu[0] and lu[1] == (n_si - 1) * 2.0
    assert 100 < c[1] < 200 and 200 < t[1] - t[0] < 320


def test_deterministic_per_seed_and_varies_across_seeds(ph2):
    again = generate_phantom(seed=0, spacing_mm=2.0)
    assert np.array_equal(again.image, ph2.image)
    assert np.array_equal(again.labels, ph2.labels)
    assert np.array_equal(again.affine, ph2.affine)
    other = generate_phantom(seed=1, spacing_mm=2.0)
    n = min(other.image.shape[1], ph2.image.shape[1])
    assert not np.array_equal(other.labels[:, :n], ph2.labels[:, :n])
    # different people: level positions and the canal course differ by millimetres, not by noise only
    shift = np.abs(other.canal_cols[:n] - ph2.canal_cols[:n]).max() * 2.0
    assert shift > 3.0
    assert other.info["level_center_mm"][24] != pytest.approx(ph2.info["level_center_mm"][24], abs=2.0)


def test_all_levels_present_in_order_superior_to_inferior(ph2):
    mid = ph2.labels[ph2.mid_slice]
    order = []
    for k in range(2, 25):
        order += [k, disc_label(k)]
    order += [vertebra_label("S1"), SACRUM_LABEL]
    centres = []
    for value in order:
        rows = np.flatnonzero((mid == value).any(axis=1))
        assert rows.size, f"label {value} ({ph2.label_names[value]}) missing at the mid slice"
        centres.append(rows.mean())
    assert np.all(np.diff(centres) > 0), "levels are not ordered superior -> inferior"
    assert {1, LABEL_CSF, LABEL_CORD} <= set(np.unique(mid).tolist())
    assert set(ph2.label_names) >= set(COUNTED_VERTEBRA_LABELS) | set(COUNTED_DISC_LABELS)
    assert ph2.label_names[vertebra_label("C2")] == "C2" and ph2.label_names[disc_label("L5")] == "L5-S1"


def test_t2_contrast_and_background(clean1):
    for ph in clean1:
        img, lab = ph.image[ph.mid_slice], ph.labels[ph.mid_slice]
        discs = img[np.isin(lab, COUNTED_DISC_LABELS)].mean()
        bodies = img[np.isin(lab, COUNTED_VERTEBRA_LABELS)].mean()
        assert discs > 1.2 * bodies
        assert img[lab == LABEL_CSF].mean() > 1.8 * img[lab == LABEL_CORD].mean()
        assert img[lab == 0].mean() < 0.02 * img[lab == LABEL_CSF].mean()
    noisy = generate_phantom(seed=0, spacing_mm=4.0)
    air = noisy.image[noisy.labels == 0]
    assert 0.0 < air.mean() < 0.05 * noisy.image[noisy.labels == LABEL_CSF].mean()  # Rician floor
    assert 200 < np.percentile(noisy.image, 99) < 2000


def test_anatomy_narrows_laterally(ph2):
    mid = ph2.mid_slice  # 2 mm slices: mid + k is 2k mm to the left
    spine_rows = np.flatnonzero((ph2.labels[mid] == vertebra_label("C2")).any(axis=1))[0]
    lab = ph2.labels[:, spine_rows:]
    canal = np.isin(lab, (LABEL_CSF, LABEL_CORD)).sum(axis=(1, 2))
    cord = (lab == LABEL_CORD).sum(axis=(1, 2))
    bodies = np.isin(lab, COUNTED_VERTEBRA_LABELS).sum(axis=(1, 2))
    # canal and cord narrow away from the midline, the cord is gone by 8 mm, the canal by 20 mm;
    # vertebral bodies (about 20-45 mm wide) remain at 10 mm and are gone at 24 mm
    assert canal[mid] > canal[mid + 2] > canal[mid + 4] > canal[mid + 5]
    assert cord[mid + 2] < 0.8 * cord[mid] and cord[mid + 4] == 0
    assert canal[mid + 10] == 0
    assert bodies[mid + 5] > 0.7 * bodies[mid] and bodies[mid + 12] == 0
    # symmetric, and smooth: neighbouring slices differ little
    assert abs(int(canal[mid - 3]) - int(canal[mid + 3])) < 0.1 * canal[mid]
    assert max(np.mean(lab[i] != lab[i + 1]) for i in range(mid - 6, mid + 6)) < 0.15


def test_centerline_runs_in_the_canal(ph2):
    line = ph2.centerline()
    assert line.shape == (ph2.image.shape[1], 3)
    assert np.all(line[:, 0] == ph2.mid_slice)
    assert np.array_equal(line[:, 1], np.arange(ph2.image.shape[1]))
    mid = ph2.labels[ph2.mid_slice]
    c2 = np.flatnonzero((mid == vertebra_label("C2")).any(axis=1))[0]
    l5 = np.flatnonzero((mid == vertebra_label("L5")).any(axis=1))[-1]
    rows = np.arange(c2, l5)
    hit = mid[rows, np.round(line[rows, 2]).astype(int)]
    assert np.mean(np.isin(hit, (LABEL_CSF, LABEL_CORD))) > 0.95


def test_crop_keeps_world_coordinates(ph2):
    for region in ("cervical", "thoracic", "lumbar", (300.0, 420.0)):
        part = crop_phantom(ph2, region)
        top_mm = ph2.regions[region][0] if isinstance(region, str) else region[0]
        r0 = int(np.ceil(top_mm / 2.0 - 1e-6))
        assert np.array_equal(part.image, ph2.image[:, r0 : r0 + part.image.shape[1]])
        assert np.array_equal(part.labels, ph2.labels[:, r0 : r0 + part.image.shape[1]])
        for voxel in ([0, 0, 0], [5, part.image.shape[1] - 1, 100], [16, 7, 33]):
            i, j, k = voxel
            assert np.allclose(part.affine @ [i, j, k, 1], ph2.affine @ [i, j + r0, k, 1])
        assert np.array_equal(part.canal_cols, ph2.canal_cols[r0 : r0 + part.image.shape[1]])
        assert nib.aff2axcodes(part.affine) == ("L", "I", "A")
    lumbar = crop_phantom(ph2, "lumbar")
    assert set(lumbar.regions) == {"lumbar"} and lumbar.regions["lumbar"][0] < 2.0
    with pytest.raises(InputError):
        crop_phantom(ph2, "sacral")
    with pytest.raises(InputError):
        crop_phantom(ph2, (5000.0, 6000.0))
    with pytest.raises(InputError):
        crop_phantom(ph2, (400.0, 300.0))


def test_level_detector_agrees_with_labels(clean1):
    noisy = generate_phantom(seed=3, spacing_mm=1.0, n_slices=3)
    for ph in [*clean1, noisy]:
        img, lab = ph.image[ph.mid_slice], ph.labels[ph.mid_slice]
        cols = ph.centerline()[:, 2]
        whole = count_levels_in_labels(lab)
        assert (whole["vertebrae"], whole["discs"]) == (24, 23)
        truth_by_region = {}
        for region in ("cervical", "thoracic", "lumbar"):
            rows = _rows(ph, region)
            found = count_levels(img, (1.0, 1.0), cols, rows)
            truth = count_levels_in_labels(lab, rows)
            truth_by_region[region] = (truth["vertebrae"], truth["discs"])
            assert abs(found["vertebrae"] - truth["vertebrae"]) <= 1, (ph.seed, region, found, truth)
            assert abs(found["discs"] - truth["discs"]) <= 1, (ph.seed, region, found, truth)
            assert np.all((found["disc_rows"] >= rows.start) & (found["disc_rows"] < rows.stop))
        # regions end below the junction discs: C2-C7 + 6 discs, T1-T12 + 12 discs, L1-S1 + 5 discs
        assert truth_by_region == {"cervical": (6, 6), "thoracic": (12, 12), "lumbar": (6, 5)}


def test_count_levels_in_labels_half_rule():
    lab = np.zeros((60, 20), np.uint8)
    lab[10:20, 5:15] = 110  # a disc over rows 10..19
    lab[20:40, 5:15] = 11  # a vertebra over rows 20..39
    assert count_levels_in_labels(lab, slice(15, 60))["discs"] == 1  # 5 of 10 rows: half counts
    assert count_levels_in_labels(lab, slice(16, 60))["discs"] == 0
    out = count_levels_in_labels(lab, slice(0, 29))
    assert out["vertebrae"] == 0 and out["disc_labels"] == [110]
    assert count_levels_in_labels(lab, slice(0, 30))["vertebra_labels"] == [11]


def test_count_levels_finds_a_synthetic_disc_ladder():
    # bright 6 mm discs every 24 mm over darker bodies, canal centre at column 10
    img = np.full((200, 60), 300.0)
    for top in range(20, 190, 24):
        img[top : top + 6, 15:45] = 800.0
    img[:, 5:15] = 1000.0  # the canal
    found = count_levels(img, (1.0, 1.0), np.full(200, 10.0))
    assert found["discs"] == 8
    assert found["vertebrae"] == 8  # 7 between discs + the 20 mm one above the first (under 12 mm below)
    assert np.allclose(found["disc_rows"], 22.5 + 24 * np.arange(8), atol=1.5)
    with pytest.raises(ValueError):
        count_levels(img, (1.0, 1.0), np.full(199, 10.0))


def test_count_levels_refuses_intensities_centred_on_zero(clean1):
    # The model's [-1, 1] scale (background -1) turns the ratio to the bodies' level into peaks of noise: on the
    # phantom it found extra discs; refused, while the same image with its background at 0 is read.
    ph = clean1[0]
    img, cols = ph.image[ph.mid_slice].astype(np.float64), ph.centerline()[:, 2]
    centred = 2.0 * img / np.percentile(img, 95) - 1.0
    with pytest.raises(ValueError, match="background at 0"):
        count_levels(centred, (1.0, 1.0), cols)
    discs = count_levels(img, (1.0, 1.0), cols)["discs"]
    assert abs(discs - 23) <= 1  # C2-C3 .. L5-S1, within the detector's +-1
    assert count_levels(centred + 1.0, (1.0, 1.0), cols)["discs"] == discs


def test_a_cancel_while_the_labels_are_written_leaves_no_image_without_them(tmp_path, ph2, monkeypatch):
    """The image and its label map are a pair: a cancel part-way leaves neither new file, and an earlier pair as
    it was."""
    import nibabel

    part = crop_phantom(ph2, "thoracic")
    image_path, labels_path = tmp_path / "p.nii.gz", tmp_path / "p_labels.nii.gz"
    save_phantom(crop_phantom(ph2, "cervical"), image_path, labels_path)
    earlier = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    save = nibabel.save

    def cancel_on_the_labels(img, filename):
        if img.get_data_dtype() == np.uint8:
            raise KeyboardInterrupt
        save(img, filename)

    monkeypatch.setattr(nibabel, "save", cancel_on_the_labels)
    with pytest.raises(KeyboardInterrupt):
        save_phantom(part, image_path, labels_path)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == earlier
    with pytest.raises(KeyboardInterrupt):
        save_phantom(part, tmp_path / "q.nii.gz", tmp_path / "q_labels.nii.gz")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(earlier)


def test_save_phantom_round_trip(tmp_path, ph2):
    part = crop_phantom(ph2, "thoracic")
    image_path, labels_path = tmp_path / "t.nii.gz", tmp_path / "t_labels.nii.gz"
    save_phantom(part, image_path, labels_path)
    img, lab = nib.load(image_path), nib.load(labels_path)
    assert np.allclose(img.affine, part.affine) and np.allclose(lab.affine, part.affine)
    assert img.get_data_dtype() == np.int16
    assert np.abs(np.asarray(img.dataobj, dtype=np.float32) - part.image).max() <= 0.5 + 1e-3
    assert np.array_equal(np.asarray(lab.dataobj), part.labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.nii.gz", "t_labels.nii.gz"]  # no temp files
    save_phantom(part, tmp_path / "f.nii", image_dtype="float32")
    assert np.array_equal(np.asarray(nib.load(tmp_path / "f.nii").dataobj), part.image)
    with pytest.raises(InputError):
        save_phantom(part, tmp_path / "x.nrrd")
    with pytest.raises(InputError, match=r"^\S*/y_labels\.txt must end in \.nii or \.nii\.gz$"):
        save_phantom(
            part, tmp_path / "y.nii.gz", tmp_path / "y_labels.txt"
        )  # named as asked, nothing written
    assert not (tmp_path / "y.nii.gz").exists()
    with pytest.raises(InputError):
        save_phantom(part, tmp_path / "missing" / "x.nii.gz")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fovcompletion")
    phantom_cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_writes_readable_nifti(tmp_path, capsys):
    out = tmp_path / "whole.nii.gz"
    args = _parser().parse_args(
        ["phantom", "-o", str(out), "--seed", "2", "--spacing", "4", "--crop", "lumbar"]
    )
    assert args.handler(args) == 0
    labels_path = tmp_path / "whole_labels.nii.gz"
    img, lab = nib.load(out), nib.load(labels_path)
    assert nib.aff2axcodes(img.affine) == ("L", "I", "A")
    assert img.shape == lab.shape and img.shape[0] == 16 and img.shape[2] == 64
    assert vertebra_label("L3") in np.unique(np.asarray(lab.dataobj))
    assert vertebra_label("C5") not in np.unique(np.asarray(lab.dataobj))
    printed = capsys.readouterr().out
    assert str(out) in printed and str(labels_path) in printed

    own = tmp_path / "labels.nii"
    args = _parser().parse_args(
        ["phantom", "-o", str(tmp_path / "w.nii"), "--labels", str(own), "--spacing", "8"]
    )
    assert phantom_cli.run(args) == 0
    assert own.exists() and (tmp_path / "w.nii").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["-o", "{tmp}/x.png"],
        ["-o", "{tmp}/nofolder/x.nii.gz"],
        ["-o", "{tmp}/x.nii.gz", "--spacing", "0"],
        ["-o", "{tmp}/x.nii.gz", "--seed", "-1"],
        ["-o", "{tmp}/x.nii.gz", "--labels", "{tmp}/x.nii.gz"],
    ],
)
def test_cli_bad_arguments_are_one_line_errors(tmp_path, argv):
    args = _parser().parse_args(["phantom", *[a.format(tmp=tmp_path) for a in argv]])
    with pytest.raises(InputError) as info:
        phantom_cli.run(args)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
