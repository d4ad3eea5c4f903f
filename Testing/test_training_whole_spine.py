"""Whole-spine composites: parts joined at the requested disc rows, unknown regions never a training target."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from training_helpers import LIA_AFFINE, spine_like, tiny_config

from fovcompletion.cli import build_parser
from fovcompletion.cli.train import apply_whole_spine_options
from fovcompletion.errors import InputError
from fovcompletion.networks import build_network
from fovcompletion.training.autoencoder import build_discriminator, judged_where_known, masked_l1
from fovcompletion.training.composites import PlacedPart, join_parts, shift_rows
from fovcompletion.training.config import check_counts
from fovcompletion.training.data import ScanRecord, Slab, WindowSampler, find_scans, split_scans
from fovcompletion.training.diffusion import latent_cache_key
from fovcompletion.training.latents import encode_maps
from fovcompletion.training.whole_spine import (
    CERVICAL_JOIN_LEVELS,
    FEATHER_MM,
    MATCH_BAND_MM,
    black_level,
    canal_brightness,
    canal_match,
    cervical_part,
    csf_level,
    lumbar_part,
    template_part,
    upper_joins,
    whole_spine_slabs,
)


def part(value: float, rows: int, cols: int, top: int = 0, left: int = 0) -> PlacedPart:
    image = np.full((2, rows, cols), value, np.float32)
    return PlacedPart(image, np.ones(image.shape, bool), top, left)


def test_join_parts_gives_each_part_its_rows_and_feathers_the_joins():
    upper, middle, lower = part(1.0, 40, 20), part(2.0, 50, 10, top=30, left=5), part(3.0, 50, 30, top=70)
    image, valid, top, left = join_parts([upper, middle, lower], [36, 76], feather_rows=4, fill=-1.0)
    assert (top, left) == (0, 0) and image.shape == (2, 120, 30)
    assert np.all(image[:, :34][valid[:, :34]] == 1.0) and valid[:, :34, :20].all()
    assert np.all(image[:, 38:74][valid[:, 38:74]] == 2.0)
    assert valid[:, 38:74, 5:15].all() and not valid[:, 38:74, :5].any()  # the narrow part's field only
    assert np.all(image[:, 78:][valid[:, 78:]] == 3.0) and valid[:, 78:, :30].all()
    blend = image[0, 34:38, 10]
    assert np.all(np.diff(blend) > 0) and 1.0 < blend.mean() < 2.0  # a ramp across the first join
    assert np.all(image[~valid] == -1.0)


def test_shift_rows_moves_rows_and_marks_what_comes_in_as_unknown():
    image = np.zeros((1, 3, 10), np.float32)
    image[:, :, 4] = 1.0
    shifted, valid = shift_rows(image, np.ones(image.shape, bool), np.array([0.0, 2.0, -3.0]), fill=-1.0)
    assert [int(np.argmax(shifted[0, r])) for r in range(3)] == [4, 6, 1]
    assert not valid[0, 1, :2].any() and not valid[0, 2, -3:].any() and valid[0, 0].all()


def test_a_part_is_matched_by_its_black_and_its_canal_not_by_how_much_of_each_its_band_holds():
    """Two parts of one anatomy at different receive gains, whose bands around the join hold it in different
    proportions (a wide canal in one, a narrow one in bone in the other, as a template's narrow field and a
    lumbar scan differ): the map takes black onto black and CSF onto CSF, so the same tissue comes out the same."""
    rows, cols, canal = 30, 40, 20

    def signal(canal_half_width: int) -> np.ndarray:  # 0 black (air), 0.3 tissue, 1 CSF
        image = np.full((3, rows, cols), 0.3)
        image[:, :, :6] = 0.0
        image[:, :, canal - canal_half_width : canal + canal_half_width + 1] = 1.0
        return image

    fixed_signal, moving_signal = signal(4), signal(0)  # CSF 22% and 2.5% of the band
    fixed, moving = -1.0 + 6.0 * fixed_signal, -0.5 + 2.0 * moving_signal  # black -1 / -0.5, CSF 5 / 1.5
    valid, band = np.ones(fixed.shape, bool), np.ones(rows, bool)
    gain, offset = canal_match(
        black_level(moving, valid),
        csf_level(moving, valid, band, canal, half_width=3),
        black_level(fixed, valid),
        csf_level(fixed, valid, band, canal, half_width=3),
    )
    np.testing.assert_allclose(gain * moving + offset, -1.0 + 6.0 * moving_signal, atol=1e-6)
    assert np.isnan(csf_level(fixed, valid, np.zeros(rows, bool), canal, 3))  # no pixels at the join
    assert canal_match(-1.0, float("nan"), -1.0, 5.0) == (1.0, 0.0)  # then the part is left as it is


def write_labelled_bids(root, template_root, cervical_fade_from_mm: int | None = None):
    """A cervical scan with a cord mask, a lumbar scan with disc labels, and a template with both (1 mm); with
    `cervical_fade_from_mm`, the cervical scan darkens from there to a tenth at its inferior edge, as a
    receive coil's sensitivity does."""

    def save(path, array):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, LIA_AFFINE), str(path))

    def cord(shape, col):
        mask = np.zeros(shape, np.float32)
        mask[:, :, col - 2 : col + 3] = 1
        return mask

    shape = (7, 200, 48)
    cervical = spine_like(shape, 0)
    if cervical_fade_from_mm is not None:
        rows = np.arange(shape[1], dtype=np.float32)
        cervical -= 2.0 * rows[None, :, None]  # no brightening with depth to hide the fade
        fade = 1 - 0.9 * np.clip((rows - cervical_fade_from_mm) / (shape[1] - cervical_fade_from_mm), 0, 1)
        cervical *= fade[None, :, None]
    save(root / "sub-c01/anat/sub-c01_T2w.nii.gz", cervical)
    save(root / "derivatives/labels/sub-c01/anat/sub-c01_T2w_label-SC_seg.nii.gz", cord(shape, 30))
    save(root / "sub-l01/anat/sub-l01_T2w.nii.gz", spine_like(shape, 1))
    discs = np.zeros(shape, np.float32)
    for label, row in ((5, 40), (4, 70), (3, 100)):  # L1/L2 at the top, as the IVD data labels them
        discs[:, row - 2 : row + 3, 20:30] = label
    save(root / "derivatives/labels/sub-l01/anat/sub-l01_T2w_label-IVD_dseg.nii.gz", discs)
    (root / "participants.tsv").write_text(
        "participant_id\tregion\tsource\tlicense\nsub-c01\tcervical\ttest\tCC0\nsub-l01\tlumbar\ttest\tCC0\n"
    )
    tshape = (7, 480, 40)
    save(template_root / "sub-tpl/anat/sub-tpl_T2w.nii.gz", spine_like(tshape, 2))
    discs = np.zeros(tshape, np.float32)
    levels = np.zeros(tshape, np.float32)
    for vertebra in range(2, 19):  # C2/C3 at 80 mm, then a disc every 20 mm, down to T11/T12 at 400 mm
        discs[:, 80 + 20 * (vertebra - 2), 20] = vertebra + 1  # as the PAM50's: the vertebra below the disc
    for vertebra in range(
        2, 21
    ):  # the cord labelled by vertebral level (2 = C2 ... 20 = L1), T12/L1 at 420 mm
        top = 60 + 20 * (vertebra - 2)
        levels[:, top : top + 20, 18:23] = vertebra
    save(template_root / "derivatives/labels/sub-tpl/anat/sub-tpl_T2w_label-discs_dseg.nii.gz", discs)
    save(template_root / "derivatives/labels/sub-tpl/anat/sub-tpl_T2w_label-levels_dseg.nii.gz", levels)
    save(template_root / "derivatives/labels/sub-tpl/anat/sub-tpl_T2w_label-SC_seg.nii.gz", cord(tshape, 20))
    (template_root / "participants.tsv").write_text(
        "participant_id\tregion\tsource\tlicense\nsub-tpl\ttemplate\ttest template\tMIT\n"
    )


def test_composites_join_cervical_template_and_lumbar_at_the_level_rows(tmp_path):
    root, template_root = tmp_path / "bids", tmp_path / "templates"
    write_labelled_bids(root, template_root)
    config = tiny_config(root, held_out=())
    config.data.templates = [str(template_root)]
    config.data.composites, config.data.template_copies = 3, 1
    scans, _ = split_scans(find_scans([str(root)], []), [])
    templates = find_scans([str(template_root)], [])
    slabs = whole_spine_slabs(config, scans, templates)
    assert [s.record.region for s in slabs] == ["template (bent)"] + ["whole-spine composite"] * 3
    assert slabs[1].record.licence == "CC0; MIT; CC0"

    template = template_part(templates[0], config)
    # 2 mm rows, pixel centres; the PAM50's label 3 is C2/C3, and T12/L1, which it does not label, lies where
    # its level labels pass from T12 to L1 (between 1 mm rows 419 and 420)
    assert template.discs[2][0] == 39.75 and template.discs[18][0] == 199.75
    assert template.discs[19][0] == pytest.approx(209.5) and template.discs[20][0] == pytest.approx(219.25)
    cervical = cervical_part(scans[0], config, template)
    # the cervical scan starts 40 mm above its C2/C3: C7/T1 (60 rows below C2/C3) at row 20 + 60
    assert abs(cervical.discs[8][0] - (-0.5 + 20 + 60)) < 1e-6
    join_rows = {int(round(cervical.discs[level][0])) for level in CERVICAL_JOIN_LEVELS}
    half = FEATHER_MM / 2 / config.data.spacing_mm[0]
    for slab in slabs[1:]:
        # Above the first join the composite is as wide as the cervical scan; below it, the template's
        # 40 mm field: the first row that narrows lies within half a feather of one of the level rows.
        width = slab.valid[0].sum(axis=1)
        narrow = int(np.flatnonzero(width[: width.size // 2] < width[0])[0])
        assert min(abs(narrow - (row + half)) for row in join_rows) <= 1
        assert np.all(slab.image[~slab.valid] == config.data.padding_value)


def test_alternate_composites_are_in_their_lumbar_scans_own_units(tmp_path):
    """A lumbar scan completed upwards is normalised on its own percentiles; a composite in the cervical scan's
    units shows its lumbar part a few times brighter than that. With "alternate", every second composite is
    mapped back so that its lumbar part is the lumbar scan's own values; the others, and every geometry, stay."""
    root, template_root = tmp_path / "bids", tmp_path / "templates"
    write_labelled_bids(root, template_root)
    scans, _ = split_scans(find_scans([str(root)], []), [])
    templates = find_scans([str(template_root)], [])
    config = tiny_config(root, held_out=())
    config.data.templates = [str(template_root)]
    config.data.composites, config.data.template_copies = 2, 0
    cervical_units = whole_spine_slabs(config, scans, templates)
    config.data.composite_units = "alternate"
    alternate = whole_spine_slabs(config, scans, templates)

    np.testing.assert_array_equal(alternate[0].image, cervical_units[0].image)
    valid = alternate[1].valid
    assert np.array_equal(valid, cervical_units[1].valid)
    # the whole composite moves with its lumbar part, by one map: the parts above it keep their match to it
    gain, offset = np.polyfit(cervical_units[1].image[valid], alternate[1].image[valid], 1)
    np.testing.assert_allclose(
        gain * cervical_units[1].image[valid] + offset, alternate[1].image[valid], atol=1e-4
    )
    lumbar = lumbar_part(scans[1], config)
    below = alternate[1].valid[:, -20:]  # the composite's last 20 rows are the lumbar scan's last, whole
    own = np.sort(lumbar.image[:, -20:].ravel())
    assert below.sum() == own.size and np.ptp(own) > 0.5
    np.testing.assert_allclose(np.sort(alternate[1].image[:, -20:][below]), own, atol=1e-4)
    mapped = np.sort(cervical_units[1].image[:, -20:][below])
    assert np.abs(mapped - own).max() > 0.5  # in the cervical scan's units they differ
    assert np.all(alternate[1].image[~alternate[1].valid] == config.data.padding_value)

    config.data.composite_units = "lumbar"
    with pytest.raises(InputError, match="composite_units"):
        check_counts(config, config.diffusion)


def test_the_composite_units_option_reaches_the_config_and_re_encodes_the_latents(tmp_path):
    config = tiny_config(tmp_path, held_out=())
    config.data.templates = [str(tmp_path)]
    default_key = latent_cache_key(config)
    assert len(default_key["whole_spine"]) == 3  # as before the option: older runs keep their cache
    args = build_parser().parse_args(
        ["train-diffusion", "--run", str(tmp_path), "--composite-units", "alternate"]
    )
    apply_whole_spine_options(config, args)
    assert config.data.composite_units == "alternate" and latent_cache_key(config) != default_key
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train-diffusion", "--run", str(tmp_path), "--composite-units", "lumbar"])


def test_a_templates_planes_without_signal_are_unknown(tmp_path):
    """The PAM50's last plane is empty and its first ones have zero corners: edges it has no data for, which a
    bent copy must not teach as black tissue."""
    root, template_root = tmp_path / "bids", tmp_path / "templates"
    write_labelled_bids(root, template_root)
    path = template_root / "sub-tpl/anat/sub-tpl_T2w.nii.gz"
    image = nib.load(str(path))
    voxels = np.asanyarray(image.dataobj).astype(np.float32)
    voxels = np.maximum(voxels, 1.0)  # signal everywhere in the field, as an average of scans has
    voxels[:, -10:] = 0.0  # the last 10 mm: no data
    nib.save(nib.Nifti1Image(voxels, image.affine), str(path))
    config = tiny_config(root, held_out=())
    template = template_part(find_scans([str(template_root)], [])[0], config)
    known_rows = template.valid.all(axis=(0, 2))
    assert known_rows[:-5].all() and not known_rows[-4:].any()  # 2 mm rows; the one at the edge is half data


def test_composites_join_above_the_cervical_scans_coil_fade(tmp_path):
    """Matched at a faded join, the template and the lumbar scan below it would take on the fade: composites
    whose thoracic and lumbar spine are a few times too dark. Joins are made only above the fade."""
    root, template_root = tmp_path / "bids", tmp_path / "templates"
    write_labelled_bids(root, template_root, cervical_fade_from_mm=110)
    config = tiny_config(root, held_out=())
    config.data.templates = [str(template_root)]
    config.data.composites, config.data.template_copies = 4, 0
    scans, _ = split_scans(find_scans([str(root)], []), [])
    templates = find_scans([str(template_root)], [])
    template = template_part(templates[0], config)
    cervical = cervical_part(scans[0], config, template)
    spacing = config.data.spacing_mm[0]
    # 2 mm rows: C2/C3 at row 20, a level every 10 rows, so C5/C6 at row 50 and C6/C7 at row 60, just above
    # the fade (row 55 on); C7/T1 and below lie in it, though inside the scan
    assert set(CERVICAL_JOIN_LEVELS) >= {5, 6, 7, 8}
    assert upper_joins(cervical, template, FEATHER_MM / spacing, MATCH_BAND_MM / spacing) == [5, 6]
    brightness = canal_brightness(cervical)
    assert brightness[95] < 0.5 * np.median(brightness[:50])  # the profile sees the fade

    join_rows = [int(round(cervical.discs[level][0])) for level in (5, 6)]
    for slab in whole_spine_slabs(config, scans, templates):
        width = slab.valid[0].sum(axis=1)
        narrow = int(np.flatnonzero(width[: width.size // 2] < width[0])[0])
        assert min(abs(narrow - (row + FEATHER_MM / 2 / spacing)) for row in join_rows) <= 1


def test_the_discriminator_never_reaches_the_unknown_regions(tmp_path):
    """The adversarial loss sees the reconstruction only where there is data: the decoder gets no gradient for
    padding or a composite's unknown parts (without this, it painted a checkerboard into them), and a fake that
    differs from the truth only there is judged exactly like the truth."""
    config = tiny_config(tmp_path, held_out=())
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    inside = torch.ones_like(images, dtype=torch.bool)
    inside[:, :, :12] = False  # padding past the scan's end
    recon = (images + 0.2 * torch.randn_like(images)).requires_grad_(True)
    discriminator = build_discriminator(config.autoencoder)
    logits = discriminator(judged_where_known(recon, images, inside))[-1]
    logits.pow(2).mean().backward()
    assert recon.grad[~inside].abs().max() == 0
    assert recon.grad[inside].abs().max() > 0

    only_outside_differs = torch.where(inside, images, torch.full_like(images, 5.0))
    with torch.no_grad():
        assert torch.equal(
            discriminator(judged_where_known(only_outside_differs, images, inside))[-1],
            discriminator(images)[-1],
        )


def test_unknown_regions_are_never_a_training_target(tmp_path):
    config = tiny_config(tmp_path, held_out=())
    image = np.linspace(-1, 1, 5 * 40 * 32, dtype=np.float32).reshape(5, 40, 32)
    valid = np.ones(image.shape, bool)
    valid[:, 20:, 16:] = False  # a composite's unknown corner
    slab = Slab(np.where(valid, image, 7.0).astype(np.float32), ScanRecord("x", "sub-x"), valid)

    window, inside = WindowSampler([slab], config, augment=False).draw(np.random.default_rng(0))
    assert not inside.all() and np.all(window[~inside] == config.data.padding_value)  # never 7

    x = torch.from_numpy(window)[None, None]
    m = torch.from_numpy(inside)[None, None]
    recon = x.clone() + 0.1
    changed = torch.where(m, recon, torch.full_like(recon, 100.0))
    assert torch.isclose(masked_l1(recon, x, m), masked_l1(changed, x, m))

    autoencoder = build_network("VQVAE", config.autoencoder.args)
    (latent_map,) = encode_maps(
        autoencoder, [Slab(slab.image[:1], slab.record, valid[:1])], config, 0, "cpu", 0
    )
    cells = latent_map.inside.numpy()
    assert cells.any() and not cells.all()
    known_cells = int(cells.sum())
    full = Slab(slab.image[:1], slab.record, np.ones_like(valid[:1]))
    (full_map,) = encode_maps(autoencoder, [full], config, 0, "cpu", 0)
    assert int(full_map.inside.sum()) > known_cells  # the unknown corner's cells are masked out of the loss
