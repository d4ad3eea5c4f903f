"""Live preview: every N steps the engine hands out (and the CLI writes) the current estimate of the completed volume,
the decoded clean prediction for the unknown part over the known part, and the progress events name the file."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import synthetic_scan, write_nifti
from fovcompletion.cli import main
from fovcompletion.cli.complete import default_preview_volume
from fovcompletion.errors import InputError
from fovcompletion.pipeline import complete
from fovcompletion.sampling import SamplerOptions

AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])
SCAN = synthetic_scan((4, 40, 30))


def run(bundle, **options):
    defaults = {"model": bundle, "slices": 2, "steps": 4, "extend_inferior_mm": 16, "seed": 5}
    return complete(SCAN, AFFINE, **{**defaults, **options})


def collect(events: list):
    return lambda event: events.append(event)


def test_previews_come_every_n_steps_in_the_output_geometry(tiny_bundle):
    previews, events = [], []

    def preview(volume):
        previews.append(volume)
        return f"estimate-{len(previews)}.nii"

    result = run(tiny_bundle, steps=7, preview=preview, preview_every=3, progress=collect(events))
    windows = next(e for e in events if e.stage == "start").details["windows"]
    assert len(previews) == 2 * windows  # after steps 3 and 6 of each window; never after the last step
    reported = [(e.step, e.details.get("preview")) for e in events if e.stage == "sampling"]
    assert reported[2] == (3, "estimate-1.nii") and reported[5] == (6, "estimate-2.nii")
    assert [name for _, name in reported if name] == [f"estimate-{i + 1}.nii" for i in range(len(previews))]
    known = result.mask == 1
    for volume in previews:
        assert volume.array.shape == result.image.shape and volume.array.dtype == np.float32
        np.testing.assert_array_equal(volume.affine, result.affine)
        np.testing.assert_array_equal(volume.array[known], result.image[known])  # the input, exactly
        assert np.isfinite(volume.array).all()
    assert not np.array_equal(
        previews[0].array[~known], previews[1].array[~known]
    )  # it changes as it samples


def test_a_preview_is_the_result_the_run_would_give_if_it_stopped_there(tiny_bundle):
    """With the same seed, the DDIM estimate after the first of two steps is exactly the result of a one-step run:
    the prediction of x0 from the same starting noise, decoded, seamed and placed like the final result."""
    previews, events = [], []
    one_step = run(tiny_bundle, steps=1)
    run(
        tiny_bundle,
        steps=2,
        preview=lambda volume: previews.append(volume) or "p.nii",
        preview_every=1,
        progress=collect(events),
    )
    assert next(e for e in events if e.stage == "start").details["windows"] == 1
    [first] = previews
    np.testing.assert_array_equal(first.array, one_step.image)
    np.testing.assert_array_equal(first.affine, one_step.affine)


def test_the_reference_sampler_has_previews_too(tiny_bundle):
    previews = []
    result = run(
        tiny_bundle,
        steps=3,
        sampler=SamplerOptions(method="reference", steps=3),
        preview=lambda volume: previews.append(volume),
        preview_every=1,
    )
    assert len(previews) == 2 and all(v.array.shape == result.image.shape for v in previews)
    assert all(np.isfinite(v.array).all() for v in previews)


def test_no_preview_unless_asked(tiny_bundle):
    events = []
    run(tiny_bundle, progress=collect(events))
    assert not any("preview" in e.details for e in events)
    previews = []
    run(tiny_bundle, preview=lambda volume: previews.append(volume), preview_every=0)
    assert previews == []
    with pytest.raises(InputError, match="preview interval"):
        run(tiny_bundle, preview=lambda volume: None, preview_every=-1)


def test_the_preview_does_not_change_the_result(tiny_bundle):
    plain = run(tiny_bundle, steps=4)
    watched = run(tiny_bundle, steps=4, preview=lambda volume: None, preview_every=1)
    np.testing.assert_array_equal(plain.image, watched.image)


def json_events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_cli_writes_the_preview_names_it_and_removes_it(tiny_bundle, tmp_path, capsys, monkeypatch):
    scan = write_nifti(tmp_path / "scan.nii.gz", SCAN, AFFINE)
    out = tmp_path / "out.nii.gz"
    preview = tmp_path / "live.nii"
    seen = []
    import fovcompletion.pipeline as pipeline

    real_write = pipeline.write_volume

    def write_volume(volume, path):  # what a reader (the Slicer module) finds at each step
        written = real_write(volume, path)
        if Path(path) == preview:
            seen.append(nib.load(str(written)).get_fdata().shape)
        return written

    monkeypatch.setattr(pipeline, "write_volume", write_volume)
    arguments = ["complete", str(scan), "-o", str(out), "--model", str(tiny_bundle), "--slices", "2"]
    arguments += ["--steps", "4", "--extend-inferior", "16", "--progress", "json"]
    assert main([*arguments, "--preview-every", "2", "--preview-volume", str(preview)]) == 0
    events = json_events(capsys.readouterr().out)
    named = [e["preview"] for e in events if e["event"] == "progress" and "preview" in e]
    assert named and set(named) == {str(preview)} and len(seen) == len(named)
    assert all(shape == nib.load(str(out)).shape for shape in seen)
    assert not preview.exists() and out.exists()  # only the results remain
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz", "scan.nii.gz"]

    out.unlink()
    assert main(arguments) == 0  # off unless asked
    assert not any("preview" in e for e in json_events(capsys.readouterr().out))


def test_a_preview_that_cannot_be_replaced_is_skipped_and_the_run_goes_on(
    tiny_bundle, tmp_path, capsys, monkeypatch
):
    """On Windows a viewer that holds the preview file open (Slicer reading the last one) makes its replacement fail:
    that preview is skipped, no event names it, and the run ends with its result as without previews."""
    scan = write_nifti(tmp_path / "scan.nii.gz", SCAN, AFFINE)
    preview = tmp_path / "live.nii"
    import fovcompletion.pipeline as pipeline

    real_write = pipeline.write_volume
    attempts = []

    def write_volume(volume, path):  # every other preview meets a reader that holds the file open
        if Path(path) == preview:
            attempts.append(path)
            if len(attempts) % 2 == 1:
                raise PermissionError(13, "The process cannot access the file", str(path))
        return real_write(volume, path)

    monkeypatch.setattr(pipeline, "write_volume", write_volume)
    arguments = ["complete", str(scan), "--model", str(tiny_bundle), "--slices", "2", "--seed", "3"]
    arguments += ["--steps", "4", "--extend-inferior", "16", "--progress", "json"]
    watched = tmp_path / "watched.nii.gz"
    assert (
        main([*arguments, "-o", str(watched), "--preview-every", "1", "--preview-volume", str(preview)]) == 0
    )
    events = json_events(capsys.readouterr().out)
    named = [e for e in events if e["event"] == "progress" and "preview" in e]
    refused = (len(attempts) + 1) // 2  # the first, the third...
    assert len(attempts) >= 2 and len(named) == len(attempts) - refused  # those that could be written
    plain = tmp_path / "plain.nii.gz"
    assert main([*arguments, "-o", str(plain)]) == 0
    np.testing.assert_array_equal(nib.load(str(watched)).get_fdata(), nib.load(str(plain)).get_fdata())
    assert not preview.exists()


def test_cli_default_preview_volume_is_beside_the_output(tiny_bundle, tmp_path, capsys):
    assert default_preview_volume(Path("/x/out.nii.gz")) == Path("/x/out.preview.nii")
    assert default_preview_volume(Path("/x/scan.NRRD")) == Path("/x/scan.preview.nii")
    scan = write_nifti(tmp_path / "scan.nii.gz", SCAN, AFFINE)
    out = tmp_path / "done.nii.gz"
    code = main(
        ["complete", str(scan), "-o", str(out), "--model", str(tiny_bundle), "--slices", "1", "--steps", "2"]
        + ["--extend-inferior", "16", "--preview-every", "1", "--progress", "none"]
    )
    assert (
        code == 0
        and f"live preview every 1 steps: {tmp_path / 'done.preview.nii'}" in capsys.readouterr().err
    )
    assert not (tmp_path / "done.preview.nii").exists() and out.exists()


def test_cli_refuses_a_preview_volume_that_is_the_input(tiny_bundle, tmp_path, capsys):
    scan = write_nifti(tmp_path / "scan.nii.gz", SCAN, AFFINE)
    before = scan.read_bytes()
    code = main(
        ["complete", str(scan), "-o", str(tmp_path / "o.nii.gz"), "--model", str(tiny_bundle), "--steps", "2"]
        + ["--extend-inferior", "16", "--preview-every", "1", "--preview-volume", str(scan)]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "is the input file" in err
    assert scan.read_bytes() == before and not (tmp_path / "o.nii.gz").exists()
