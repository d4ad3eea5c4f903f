"""The command line: completions on disk, JSON progress for Slicer, and every bad input refused cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import file_digest, oblique_affine, synthetic_scan, write_nifti
from fovcompletion.cli import main
from fovcompletion.errors import InputError, OutOfMemoryError
from fovcompletion.pipeline import complete as fovcompletion_complete
from fovcompletion.pipeline import complete_file, get_bundle
from fovcompletion.preview import montage
from fovcompletion.schedule import SamplerOptions

AFFINE = oblique_affine((1.0, 1.0, 1.0), 5.0)


@pytest.fixture()
def scan_file(tmp_path) -> Path:
    return write_nifti(tmp_path / "scan.nii.gz", synthetic_scan((6, 40, 30)), AFFINE)


def refuse(args: list[str], capsys, input_path: Path, output: Path, match: str) -> str:
    """Run the command expecting a clean refusal: non-zero, one line, input untouched, nothing written."""
    before = file_digest(input_path) if input_path.exists() else None
    files_before = set(output.parent.iterdir())
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("fovcompletion: error:"), err
    assert match in err, err
    assert not output.exists()
    assert set(output.parent.iterdir()) == files_before  # no temporary leftovers either
    if before is not None:
        assert file_digest(input_path) == before
    return err


def test_complete_writes_volume_mask_spread_and_preview(tiny_bundle, scan_file, tmp_path, capsys):
    out = tmp_path / "out.nii.gz"
    code = main(
        [
            "complete",
            str(scan_file),
            "-o",
            str(out),
            "--model",
            str(tiny_bundle),
            "--steps",
            "3",
            "--extend-inferior",
            "30",
            "--slices",
            "3",
            "--samples",
            "2",
            "--mask-output",
            str(tmp_path / "mask.nii.gz"),
            "--spread-output",
            str(tmp_path / "spread.nii.gz"),
            "--preview",
            str(tmp_path / "preview.png"),
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "sampling 6/6 (100%)" in err  # progress on stderr (plain lines: not a terminal)
    volume = nib.load(str(out))
    assert volume.shape == (3, 70, 30)
    assert nib.load(str(tmp_path / "spread.nii.gz")).shape == volume.shape
    preview = Image.open(tmp_path / "preview.png")
    assert preview.size[0] > preview.size[1] > 100
    assert np.asarray(preview).std() > 10  # not a blank picture


def test_preview_keep_fade_shows_one_window_over_the_whole_scan(tiny_bundle, scan_file, tmp_path):
    out, mask, preview = tmp_path / "out.nii.gz", tmp_path / "mask.nii.gz", tmp_path / "preview.png"
    args = ["complete", str(scan_file), "-o", str(out), "--model", str(tiny_bundle), "--steps", "2"]
    args += [
        "--extend-inferior",
        "30",
        "--slices",
        "3",
        "--mask-output",
        str(mask),
        "--preview",
        str(preview),
    ]
    assert main(args + ["--preview-keep-fade", "--progress", "none"]) == 0
    written = nib.load(str(out))
    known = np.asarray(nib.load(str(mask)).dataobj) > 0
    kept = montage(np.asarray(written.dataobj, dtype=np.float32), known, written.affine, even_fade=False)
    np.testing.assert_array_equal(np.asarray(Image.open(preview)), np.asarray(kept))


def test_json_progress_lines_for_the_slicer_module(tiny_bundle, scan_file, tmp_path, capsys):
    out = tmp_path / "out.nii.gz"
    code = main(
        [
            "complete",
            str(scan_file),
            "-o",
            str(out),
            "--model",
            str(tiny_bundle),
            "--steps",
            "4",
            "--extend-superior",
            "20",
            "--progress",
            "json",
        ]
    )
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["event"] == "start" and events[0]["total_steps"] == 4 and events[0]["slices"] == 5
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["step"] for e in progress] == [1, 2, 3, 4]
    assert {"elapsed_s", "eta_s", "total", "stage"} <= set(progress[0])
    assert events[-1] == {
        "event": "done",
        "output": str(out),
        "mask": None,
        "spread": None,
        "seconds": events[-1]["seconds"],
    }


def test_an_output_that_cannot_be_written_ends_with_an_error_event_naming_it(
    tiny_bundle, scan_file, tmp_path, capsys, monkeypatch
):
    """A write that fails after the run (a full disk) is one line that names the file asked for, not its
    temporary name, and the JSON progress ends with an error event, as for a user error."""
    import errno

    import fovcompletion.pipeline as pipeline

    def full_disk(volume, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pipeline, "write_volume", full_disk)
    out = tmp_path / "out.nii.gz"
    command = ["complete", str(scan_file), "-o", str(out), "--model", str(tiny_bundle), "--steps", "2"]
    assert main([*command, "--extend-inferior", "20", "--progress", "json"]) == 1
    captured = capsys.readouterr()
    last = json.loads(captured.out.strip().splitlines()[-1])
    assert last == {"event": "error", "message": f"No space left on device: {out}"}
    assert captured.err.strip().splitlines()[-1] == f"fovcompletion: error: {last['message']}"
    assert not out.exists()


@pytest.mark.parametrize("how", ["cancel line", "closed stdin"])
def test_cancel_from_the_parent_process_leaves_nothing(how, tiny_bundle, scan_file, tmp_path):
    out = tmp_path / "out.nii.gz"
    command = [
        sys.executable,
        "-m",
        "fovcompletion",
        "complete",
        str(scan_file),
        "-o",
        str(out),
        "--model",
        str(tiny_bundle),
        "--steps",
        "1000",
        "--extend-inferior",
        "30",
        "--progress",
        "json",
        "--watch-stdin",
    ]
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in process.stdout:
        if json.loads(line)["event"] == "progress":
            if how == "cancel line":
                process.stdin.write("cancel\n")
                process.stdin.flush()
            else:
                process.stdin.close()
            break
    remaining = process.stdout.read()
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 130
    assert json.loads(remaining.strip().splitlines()[-1])["event"] == "error"
    assert stderr.strip().splitlines()[-1].startswith("fovcompletion: error: cancelled")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


@pytest.mark.skipif(os.name == "nt", reason="SIGTERM cannot be caught on Windows")
def test_sigterm_ends_a_run_like_ctrl_c_and_leaves_nothing(tiny_bundle, scan_file, tmp_path):
    """`kill` or a batch system's time limit: the clean-up runs (no live preview, no partial file), exit 130."""
    import signal

    out = tmp_path / "out.nii.gz"
    command = [sys.executable, "-m", "fovcompletion", "complete", str(scan_file), "-o", str(out)]
    command += ["--model", str(tiny_bundle), "--steps", "1000", "--extend-inferior", "30"]
    command += ["--progress", "json", "--preview-every", "1", "--mask-output", str(tmp_path / "mask.nii.gz")]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in process.stdout:
        if "preview" in json.loads(line):  # a live preview file exists now
            process.send_signal(signal.SIGTERM)
            break
    remaining = process.stdout.read()
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 130
    assert stderr.strip().splitlines()[-1] == "fovcompletion: cancelled; nothing was written"
    last = json.loads(remaining.strip().splitlines()[-1])  # the Slicer module reads how the run ended from it
    assert last == {"event": "error", "message": "cancelled; nothing was written"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGHUP"), reason="no SIGHUP on Windows")
def test_a_hang_up_that_nohup_ignores_stays_ignored():
    """`nohup fovcompletion train-diffusion ...` must outlive its terminal: the command turns SIGTERM and SIGHUP
    into a clean cancel, but leaves a signal its caller chose to ignore ignored."""
    import signal

    from fovcompletion.cli import _interrupt_on_termination

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGHUP, signal.SIGTERM)}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        replaced = _interrupt_on_termination()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN and signal.SIGHUP not in replaced
        assert signal.SIGTERM in replaced and signal.getsignal(signal.SIGTERM) is not replaced[signal.SIGTERM]
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _nifti(tmp_path: Path, name: str, array: np.ndarray, affine=AFFINE) -> Path:
    return write_nifti(tmp_path / name, array, affine)


BAD_INPUTS = {
    "not an image": (
        lambda p: (p / "bad.nii.gz").write_text("hello") and p / "bad.nii.gz",
        [],
        "not a readable",
    ),
    "2D": (lambda p: _nifti(p, "flat.nii.gz", np.ones((40, 30), np.float32) * np.arange(30)), [], "2D image"),
    "2D saved one voxel thick": (  # as Slicer writes a 2D image; was completed as a one-row scan
        lambda p: _nifti(p, "slice.nii.gz", synthetic_scan((40, 1, 30))),
        [],
        "a single axial image",
    ),
    "4D": (
        lambda p: _nifti(p, "series.nii.gz", np.random.rand(6, 40, 30, 3).astype(np.float32)),
        [],
        "4D series",
    ),
    "NaN": (
        lambda p: _nifti(p, "nan.nii.gz", np.where(synthetic_scan() > 400, np.nan, synthetic_scan())),
        [],
        "NaN",
    ),
    "constant": (lambda p: _nifti(p, "constant.nii.gz", np.full((6, 40, 30), 7, np.float32)), [], "constant"),
    "axial thick": (
        lambda p: _nifti(p, "axial.nii.gz", synthetic_scan((64, 64, 20)), np.diag([0.8, 0.8, 6, 1])),
        [],
        "axial thick-slice",
    ),
    "too many slices": (
        lambda p: _nifti(p, "few.nii.gz", synthetic_scan((4, 40, 30))),
        ["--slices", "9"],
        "only 4 sagittal slices",
    ),
    "no extension": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--extend-inferior", "0"],
        "nothing to complete",
    ),
    "absurd extension": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--extend-inferior", "100000"],
        "at most 1500 mm in total",
    ),
    "extensions adding up past the limit": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--extend-superior", "800", "--extend-inferior", "800"],
        "extending by 1600 mm",
    ),
    "extension not a number": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--extend-inferior", "nan"],
        "finite millimetres",
    ),
    "zero slices": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--slices", "0"],
        "number of slices must be between 1 and 9 (got 0)",
    ),
    "reversed slice range": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--slice-range", "5:2"],
        "slice range 5:2 is empty: the start must be below the end",
    ),
    "empty slice range": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--slice-range", "3:3"],
        "the start must be below the end",
    ),
    "slice range past the scan": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--slice-range", "2:12"],
        "outside the scan's 9 sagittal slices",
    ),
    "slice range before the scan": (  # "-1:2" is the range's value, not an option argparse would complain of
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--slice-range", "-1:2"],
        "outside the scan's 9 sagittal slices",
    ),
    "guidance for an unconditional model": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--guidance", "2"],
        "guidance 2 cannot be used: the UNet of tiny-test does not see the known region",
    ),
    "negative guidance": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--guidance", "-1"],
        "guidance must be a number >= 0",
    ),
    "no candidates": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--candidates", "0"],
        "candidates must be at least 1 (got 0)",
    ),
    "negative seed": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--seed", "-1", "--candidates", "3"],  # it failed after the first candidate, with a traceback
        "the seed must be a whole number from 0 to 2**64 - 1 (got -1)",
    ),
    "seed past 64 bits": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--seed", str(2**64)],
        "the seed must be a whole number from 0 to 2**64 - 1",
    ),
    "a spread map of one sample": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--spread-output", "{tmp}/spread.nii.gz"],
        "(--spread-output) is the spread of several samples: add --samples 2 or more",
    ),
    "a live preview that is never written": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--preview-volume", "{tmp}/out.preview.nii"],
        "(--preview-volume) is written every N steps: add --preview-every N",
    ),
    "DDIM's settings for the reference sampler": (
        lambda p: _nifti(p, "s.nii.gz", synthetic_scan()),
        ["--sampler", "reference", "--resample", "2"],
        "resample 2 cannot be used: the reference sampler runs the original algorithm",
    ),
}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"affine": None}, "an array needs its voxel-to-RAS affine"),
        ({"slices": 3, "slice_range": (0, 2)}, "a number of slices or a slice range, not both"),
        ({"slices": 2.7}, "the number of slices must be a whole number (got 2.7)"),
        ({"slice_range": (0, 2.5)}, "the slice range must be two whole numbers"),
        ({"samples": 2.5}, "the number of samples must be a whole number of at least 1 (got 2.5)"),
        ({"samples": "2"}, "the number of samples must be a whole number of at least 1 (got '2')"),
        ({"preview_every": 2.5}, "the preview interval must be 0 (off) or a whole number of steps (got 2.5)"),
        ({"steps": 2.5}, "steps must be a whole number (got 2.5)"),  # was rounded down without a word
        ({"steps": None, "sampler": SamplerOptions(steps=2.5)}, "steps must be a whole number (got 2.5)"),
        ({"sampler": SamplerOptions(candidates=1.5)}, "candidates must be a whole number (got 1.5)"),
        ({"sampler": SamplerOptions(resample=1.5)}, "resample must be a whole number (got 1.5)"),  # was run
        ({"sampler": SamplerOptions(guidance="2")}, "guidance must be a number (got '2')"),
        ({"sampler": SamplerOptions(resample=None)}, "resample must be a whole number (got None)"),
        ({"extend_inferior_mm": "20"}, "extensions must be finite millimetres (got 0.0, '20')"),
        ({"window_overlap_mm": "x"}, "the window overlap must be a number of millimetres >= 0 (got 'x')"),
        ({"device": 3}, "the device must be a name: auto, cpu, cuda, cuda:N or mps (got 3)"),
    ],
)
def test_the_python_api_refuses_what_the_command_line_cannot_say(kwargs, message, tiny_bundle):
    """The API takes what the command line's parser would have refused: each is a one-line user error before the
    model loads, never a TypeError or a silently dropped choice."""
    arguments = {"affine": np.diag([-1.0, -1.0, 1.0, 1.0]), "steps": 2, "extend_inferior_mm": 20, **kwargs}
    with pytest.raises(InputError) as raised:
        fovcompletion_complete(synthetic_scan(), model=tiny_bundle, **arguments)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_numpy_numbers_are_taken_and_give_plain_python_numbers_back(tiny_bundle):
    """numpy ints and floats are what a script computes its settings with: accepted, and turned into Python numbers
    before they reach the result (a numpy count of UNet passes is something `json` cannot write)."""
    result = fovcompletion_complete(
        synthetic_scan(),
        np.diag([-1.0, -1.0, 1.0, 1.0]),
        model=tiny_bundle,
        steps=np.int64(2),
        samples=np.int64(1),
        seed=np.uint64(3),
        extend_inferior_mm=np.float32(20),
        sampler=SamplerOptions(guidance=np.float64(1.0), candidates=np.int32(1)),
    )
    assert type(result.nfe) is int and result.nfe == 2
    json.dumps({"nfe": result.nfe, "samples": result.samples})


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_cleanly(case, tiny_bundle, tmp_path, capsys):
    make, extra, match = BAD_INPUTS[case]
    source = make(tmp_path)
    out = tmp_path / "out.nii.gz"
    args = [
        "complete",
        str(source),
        "-o",
        str(out),
        "--model",
        str(tiny_bundle),
        "--steps",
        "2",
        "--extend-inferior",
        "20",
        *(option.replace("{tmp}", str(tmp_path)) for option in extra),
    ]
    refuse(args, capsys, source, out, match)  # outputs named `{tmp}/...` lie beside `out`: checked with it


def test_absurd_extension_is_refused_before_the_model_loads(scan_file, tmp_path, capsys):
    # No model exists at that path: the extension is refused first, so a typo costs no model load and no run.
    refuse(
        [
            "complete",
            str(scan_file),
            "-o",
            str(tmp_path / "out.nii.gz"),
            "--model",
            str(tmp_path / "no-such-model"),
            "--extend-inferior",
            "100000",
        ],
        capsys,
        scan_file,
        tmp_path / "out.nii.gz",
        "extending by 100000 mm is more than any body needs",
    )


def test_preflight_line_gives_the_time_from_the_measured_speed(tmp_path, capsys):
    from fovcompletion.bundle_factory import create_random_bundle

    # 120 s per UNet step and slice, measured on this bundle's own 32 x 32 canvas, which the scan fills
    # (64 columns at 1 mm = 32 at 2 mm; 20 rows + 15 below need one 32-row window).
    slow = create_random_bundle(
        tmp_path / "slow",
        name="slow",
        speed={"cpu": {"seconds_per_unet_step_per_slice": 120.0, "canvas": [32, 32]}},
    )
    scan = write_nifti(tmp_path / "scan.nii.gz", synthetic_scan((6, 40, 64)), AFFINE)
    out = tmp_path / "out.nii.gz"
    args = ["complete", str(scan), "-o", str(out), "--model", str(slow), "--device", "cpu"]
    code = main([*args, "--steps", "20", "--slices", "2", "--extend-inferior", "30"])
    assert code == 0
    lines = capsys.readouterr().err.splitlines()
    # 1 window x 20 steps x (2 slices x 120 s) = 4800 s, shown before the first step
    assert lines[0].endswith("20 UNet steps on cpu, estimated 1:20:00 (240 s per UNet step, measured)"), (
        lines[0]
    )
    assert lines[1].startswith("sampling ")


def test_progress_bar_writes_plain_lines_to_a_log_file(tiny_bundle, scan_file, tmp_path):
    out = tmp_path / "out.nii.gz"
    log = tmp_path / "run.log"
    command = [sys.executable, "-m", "fovcompletion", "complete", str(scan_file), "-o", str(out)]
    command += ["--model", str(tiny_bundle), "--steps", "25", "--extend-inferior", "20", "--progress", "bar"]
    with open(log, "w") as stderr:
        subprocess.run(command, stdin=subprocess.DEVNULL, stderr=stderr, check=True, timeout=300)
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert "estimated" in lines[0] and lines[-1].startswith(f"wrote {out}")
    progress = lines[1:-1]
    # one line per tenth of the run, each with step, total, elapsed time and time left
    assert [line.split()[1] for line in progress] == [
        f"{step}/25" for step in (3, 5, 8, 10, 13, 15, 18, 20, 23, 25)
    ]
    assert [line.split()[2] for line in progress] == [
        f"({p}%)," for p in (12, 20, 32, 40, 52, 60, 72, 80, 92, 100)
    ]
    assert all(
        line.startswith("sampling ") and " elapsed, " in line and line.endswith(" left") for line in progress
    )


def test_progress_bar_redraws_in_place_on_a_terminal():
    import io

    from fovcompletion.progress import ProgressTracker, TextProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    tracker = ProgressTracker(25, TextProgressBar(screen))
    tracker.emit("start", "starting")
    for _ in range(25):
        tracker.advance("sampling")
    lines = screen.getvalue().split("\n")
    assert lines[0] == "starting" and lines[2] == ""  # one bar line, ended once the run is done
    redraws = lines[1].split("\r")[1:]
    assert len(redraws) == 25 and redraws[0].startswith("[#.") and " 1/25 sampling " in redraws[0]
    assert redraws[-1].startswith("[" + "#" * 30 + "] 25/25 sampling ")


def test_a_note_between_steps_gets_a_line_of_its_own_in_a_log_and_on_a_terminal():
    import io

    from fovcompletion.progress import ProgressTracker, TextProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream in (io.StringIO(), Terminal()):
        tracker = ProgressTracker(4, TextProgressBar(stream))
        tracker.emit("start", "starting")
        tracker.advance("sampling")
        tracker.advance("sampling")
        tracker.emit("candidates", "kept candidate 2 of 2: its canal lasts 120 mm past the seam", kept=2)
        tracker.advance("sampling")
        tracker.advance("sampling")
        lines = stream.getvalue().split("\n")
        note = [line for line in lines if "kept candidate" in line]
        assert note == ["kept candidate 2 of 2: its canal lasts 120 mm past the seam"]  # whole, not in a bar
        assert "4/4" in stream.getvalue().split(note[0])[1]  # the progress goes on after it
        tracker.emit("candidates", "kept candidate 1 of 2: its canal lasts 80 mm past the seam", kept=1)
        assert "\n\n" not in stream.getvalue()  # a note after the bar's last line adds no blank line


def test_output_equal_to_input_is_refused(tiny_bundle, scan_file, capsys):
    refuse(
        [
            "complete",
            str(scan_file),
            "-o",
            str(scan_file),
            "--model",
            str(tiny_bundle),
            "--extend-inferior",
            "20",
        ],
        capsys,
        scan_file,
        scan_file.parent / "never.nii.gz",
        "is the input file",
    )


def test_bundle_with_a_wrong_hash_is_refused(tiny_bundle, scan_file, tmp_path, capsys):
    import shutil

    broken = Path(shutil.copytree(tiny_bundle, tmp_path / "models" / "broken"))
    metadata = json.loads((broken / "bundle.json").read_text())
    metadata["weights"]["diffusion"]["sha256"] = "0" * 64
    (broken / "bundle.json").write_text(json.dumps(metadata))
    refuse(
        [
            "complete",
            str(scan_file),
            "-o",
            str(tmp_path / "out.nii.gz"),
            "--model",
            str(broken),
            "--extend-inferior",
            "20",
        ],
        capsys,
        scan_file,
        tmp_path / "out.nii.gz",
        "sha256",
    )


def test_out_of_memory_gets_advice_and_no_output(tiny_bundle, scan_file, tmp_path):
    bundle = get_bundle(tiny_bundle, torch.device("cpu"))

    def exhausted(*_):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")

    handle = bundle.unet.register_forward_pre_hook(exhausted)
    try:
        with pytest.raises(OutOfMemoryError, match="use fewer slices"):
            complete_file(
                scan_file, tmp_path / "out.nii.gz", model=tiny_bundle, extend_inferior_mm=20, steps=2
            )
    finally:
        handle.remove()
    assert not (tmp_path / "out.nii.gz").exists()


def test_a_failure_while_writing_keeps_the_earlier_results_and_leaves_no_new_file(
    tiny_bundle, scan_file, tmp_path, monkeypatch
):
    """The results are written together: a run that fails at its last file (a full disk, say) leaves the
    files of an earlier run as they were, and nothing of its own."""
    import fovcompletion.preview as preview

    out, mask = tmp_path / "out.nii.gz", tmp_path / "mask.nii.gz"
    out.write_bytes(b"an earlier completion")
    mask.write_bytes(b"an earlier mask")

    def disk_full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(preview, "write_preview", disk_full)
    with pytest.raises(OSError, match="No space left"):
        complete_file(
            scan_file, out, mask_path=mask, preview_path=tmp_path / "p.png", model=tiny_bundle,
            extend_inferior_mm=20, steps=2, slices=1,
        )  # fmt: skip
    assert (out.read_bytes(), mask.read_bytes()) == (b"an earlier completion", b"an earlier mask")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz", "out.nii.gz", scan_file.name]


@pytest.mark.parametrize(
    ("failure", "when"),
    [
        (OSError(13, "Permission denied"), "placing"),
        (KeyboardInterrupt(), "placing"),
        (KeyboardInterrupt(), "setting aside"),  # the earlier mask just moved aside, the new one not yet in
    ],
)
def test_a_failure_while_renaming_the_results_puts_the_earlier_ones_back(
    failure, when, tiny_bundle, scan_file, tmp_path, monkeypatch
):
    """The renames that publish the results are all or none too: a failure or an interrupt at the second
    file takes back the first, restores the earlier files and leaves no temporary file."""
    import fovcompletion.pipeline as pipeline

    out, mask = tmp_path / "out.nii.gz", tmp_path / "mask.nii.gz"
    out.write_bytes(b"an earlier completion")
    mask.write_bytes(b"an earlier mask")
    real_replace = os.replace

    def replace(source, target):
        if when == "placing" and Path(source).name.startswith(".partial-") and Path(target) == mask:
            raise failure
        real_replace(source, target)
        if when == "setting aside" and Path(source) == mask:
            raise failure

    monkeypatch.setattr(pipeline.os, "replace", replace)
    with pytest.raises(type(failure)):
        complete_file(
            scan_file, out, mask_path=mask, model=tiny_bundle, extend_inferior_mm=20, steps=2, slices=1
        )
    assert (out.read_bytes(), mask.read_bytes()) == (b"an earlier completion", b"an earlier mask")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz", "out.nii.gz", scan_file.name]


def test_a_live_preview_file_the_run_never_wrote_is_left_alone(tiny_bundle, scan_file, tmp_path):
    watched = tmp_path / "watched.nii"
    watched.write_bytes(b"not this run's")
    complete_file(
        scan_file, tmp_path / "out.nii.gz", preview_volume_path=watched, preview_every=1000, model=tiny_bundle,
        extend_inferior_mm=20, steps=2, slices=1,
    )  # fmt: skip
    assert watched.read_bytes() == b"not this run's"


def test_a_volume_output_named_like_a_picture_is_refused_before_the_run(scan_file, tmp_path):
    for option in ("output_path", "mask_path", "spread_path"):
        paths = {"output_path": tmp_path / "out.nii.gz", option: tmp_path / f"{option}.png"}
        with pytest.raises(InputError, match="use a file name ending in"):
            complete_file(scan_file, samples=2, model=str(tmp_path / "no-model-here"), **paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == [scan_file.name]


def test_nrrd_input_and_output_keep_the_geometry(tiny_bundle, scan_file, tmp_path):
    from fovcompletion.image_io import read_volume, write_volume

    nrrd_in = write_volume(read_volume(scan_file), tmp_path / "scan.nrrd")
    np.testing.assert_allclose(read_volume(nrrd_in).affine, AFFINE, atol=1e-6)
    result = complete_file(nrrd_in, tmp_path / "out.nrrd", model=tiny_bundle, extend_inferior_mm=20, steps=2)
    back = read_volume(tmp_path / "out.nrrd")
    np.testing.assert_allclose(back.affine, result.affine, atol=1e-5)
    np.testing.assert_allclose(back.array, result.image, rtol=1e-6)


@pytest.mark.parametrize("name", ["Scan.Nii", "Scan.Nii.gz", "SCAN.NII.GZ", "scan.nii.Gz"])
def test_extensions_in_any_case_are_written_and_read(tiny_bundle, scan_file, tmp_path, name):
    """nibabel knows its extensions in lower case only: `Out.Nii.gz` was written as an empty file beside a
    stray hidden one, reported as done, and a `.Nii` input was looked for under another name."""
    from fovcompletion.image_io import read_volume, write_volume

    folder = tmp_path / "case"
    folder.mkdir()
    written = write_volume(read_volume(scan_file), folder / name)
    assert [p.name for p in folder.iterdir()] == [name]
    again = read_volume(written)
    np.testing.assert_array_equal(again.array, read_volume(scan_file).array)
    np.testing.assert_allclose(again.affine, AFFINE, atol=1e-6)
    complete_file(written, folder / ("out-" + name), model=tiny_bundle, extend_inferior_mm=20, steps=2)
    assert sorted(p.name for p in folder.iterdir()) == sorted([name, "out-" + name])
    assert read_volume(folder / ("out-" + name)).array.shape[1] > again.array.shape[1]


def test_trailing_axes_of_length_one_are_not_dimensions(scan_file, tmp_path):
    from fovcompletion.image_io import read_volume

    scan = read_volume(scan_file)
    padded = write_nifti(tmp_path / "5d.nii.gz", scan.array[..., None, None], scan.affine)
    np.testing.assert_array_equal(read_volume(padded).array, scan.array)


def test_nrrd_axes_without_a_direction(tmp_path):
    """A list axis of one value (`space directions ... none`) is not a fourth spatial axis, and a header with
    spacings but no directions is refused for what it lacks."""
    import nrrd

    from fovcompletion.image_io import read_volume

    voxels = synthetic_scan()[..., None]
    directions = np.vstack([np.diag([1.0, 1.0, 1.0]), np.full(3, np.nan)])
    nrrd.write(str(tmp_path / "list.nrrd"), voxels, {"space": "LPS", "space directions": directions})
    volume = read_volume(tmp_path / "list.nrrd")
    assert volume.array.shape == voxels.shape[:3]
    np.testing.assert_allclose(volume.affine[:3, :3], np.diag([-1.0, -1.0, 1.0]))
    nrrd.write(str(tmp_path / "spacings.nrrd"), voxels[..., 0], {"spacings": [1.0, 1.0, 1.0]})
    with pytest.raises(InputError, match="no space directions, so its orientation is unknown"):
        read_volume(tmp_path / "spacings.nrrd")


def test_a_weight_file_changed_after_a_run_is_verified_again(tiny_bundle, scan_file, tmp_path):
    """Loaded bundles are cached by the API; a weight file replaced since (corrupted, or a new training) must be
    checked against its sha256 again, not run from the cache."""
    import shutil

    from fovcompletion.errors import BundleError
    from fovcompletion.image_io import read_volume

    folder = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, folder)
    volume = read_volume(scan_file)
    complete_kwargs = {"model": str(folder), "steps": 2, "extend_inferior_mm": 20}
    fovcompletion_complete(volume, **complete_kwargs)
    weights = folder / "diffusion.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="diffusion.safetensors has sha256"):
        fovcompletion_complete(volume, **complete_kwargs)


def test_a_model_that_computes_nan_writes_nothing(tiny_bundle, scan_file, tmp_path, capsys):
    """Weights with a NaN in them (their sha256 recorded, so the bundle verifies): refused in one line, not a
    volume of NaN."""
    import shutil

    from safetensors.torch import load_file, save_file

    from fovcompletion.bundle import sha256_of

    folder = tmp_path / "nan-bundle"
    shutil.copytree(tiny_bundle, folder)
    weights = load_file(str(folder / "diffusion.safetensors"))
    name = next(k for k, v in weights.items() if v.is_floating_point() and k.endswith("bias"))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(folder / "diffusion.safetensors"))
    metadata = json.loads((folder / "bundle.json").read_text())
    metadata["weights"]["diffusion"]["sha256"] = sha256_of(folder / "diffusion.safetensors")
    (folder / "bundle.json").write_text(json.dumps(metadata))
    out = tmp_path / "out.nii.gz"
    argv = ["complete", str(scan_file), "-o", str(out), "--model", str(folder), "--steps", "2"]
    argv += ["--extend-inferior", "20", "--progress", "none"]  # the error is the one line on stderr
    refuse(argv, capsys, scan_file, out, "produced values that are not numbers")


def test_a_device_name_torch_does_not_know_is_refused_in_one_line(monkeypatch):
    """`cuda:x` passes the name check and reaches torch only where CUDA is there (simulated here)."""
    from fovcompletion.device import resolve_device

    with pytest.raises(InputError, match="unknown device 'tpu0'"):
        resolve_device("tpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(InputError, match="unknown device 'cuda:x': use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("cuda:x")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match="cuda:3 was requested but this machine has 1 CUDA GPU"):
        resolve_device("cuda:3")


def test_too_little_memory_is_refused_before_starting(tiny_bundle, scan_file, tmp_path, capsys, monkeypatch):
    import fovcompletion.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1024)
    err = refuse(
        [
            "complete",
            str(scan_file),
            "-o",
            str(tmp_path / "out.nii.gz"),
            "--model",
            str(tiny_bundle),
            "--extend-inferior",
            "20",
            "--slices",
            "5",
        ],
        capsys,
        scan_file,
        tmp_path / "out.nii.gz",
        "GiB is free on cpu",
    )
    assert "use fewer slices" in err


def test_demo_runs_the_whole_job_offline(tiny_bundle, tmp_path, capsys):
    code = main(
        [
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "--model",
            str(tiny_bundle),
            "--steps",
            "1",
            "--slices",
            "1",
            "--extend-inferior",
            "40",
            "--samples",
            "2",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    completed = tmp_path / "demo" / "phantom_cervical_completed.nii.gz"
    assert str(completed) in printed and "preview PNG" in printed
    spread = tmp_path / "demo" / "phantom_cervical_spread.nii.gz"  # two samples: their spread map too
    assert str(spread) in printed and nib.load(str(spread)).shape == nib.load(str(completed)).shape
    partial = nib.load(str(tmp_path / "demo" / "phantom_cervical.nii.gz"))
    result = nib.load(str(completed))
    assert result.shape[1] == partial.shape[1] + 40  # 1 mm phantom, 40 mm more inferiorly
    np.testing.assert_allclose(result.affine[:3, :3], partial.affine[:3, :3])


@pytest.mark.parametrize("existing", [False, True])
def test_a_cancelled_demo_leaves_its_folder_as_it_found_it(
    existing, tiny_bundle, tmp_path, monkeypatch, capsys
):
    """The demo's "cancelled; nothing was written" holds: no phantom files, no folder it made itself, and an
    earlier file in a folder that was there stays."""
    import fovcompletion.pipeline as pipeline

    out = tmp_path / "demo" if existing else tmp_path / "new" / "folders" / "demo"
    if existing:
        out.mkdir()
        (out / "notes.txt").write_text("mine")

    def cancelled(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "complete", cancelled)
    code = main(["demo", "--out", str(out), "--model", str(tiny_bundle), "--steps", "1", "--slices", "1"])
    assert code == 130
    assert capsys.readouterr().err.strip().endswith("cancelled; nothing was written")
    if existing:
        assert [p.name for p in out.iterdir()] == ["notes.txt"]
    else:
        assert not (tmp_path / "new").exists()  # every folder it made


def test_time_estimate_grows_with_slices_steps_extent_samples_and_candidates(tiny_bundle):
    from fovcompletion.estimate import estimate_seconds

    base = estimate_seconds(
        tiny_bundle, slices=1, steps=10, extend_superior_mm=0, extend_inferior_mm=40, input_height_mm=60
    )
    assert base > 0
    assert estimate_seconds(tiny_bundle, 5, 10, 0, 40, 60) == pytest.approx(5 * base)
    assert estimate_seconds(tiny_bundle, 1, 20, 0, 40, 60) == pytest.approx(2 * base, rel=0.1)
    assert estimate_seconds(tiny_bundle, 1, 10, 0, 400, 60) > 3 * base  # more windows
    assert estimate_seconds(tiny_bundle, 1, 10, 0, 40, 60, samples=2) == pytest.approx(2 * base)
    assert estimate_seconds(tiny_bundle, 1, 10, 0, 40, 60, candidates=3) == pytest.approx(3 * base)


def test_time_estimate_prices_each_batch_on_the_line_through_two_measured_calls(tiny_bundle):
    """A UNet call costs a fixed part plus a part per image: with calls timed at two batches, a one-slice run
    is priced at its own batch's cost, not at the per-image cost of the default run's larger batch."""
    import dataclasses

    from fovcompletion.bundle import read_metadata
    from fovcompletion.estimate import estimate_run
    from fovcompletion.layout import plan_layout

    metadata = read_metadata(tiny_bundle)
    layout = plan_layout(metadata, 30, metadata.canvas.shape[1], 0, 40)
    measured = {"seconds_per_unet_step_per_slice": 0.01, "batch": 10, "canvas": list(metadata.canvas.shape)}
    two_point = {**measured, "seconds_per_unet_call": {"2": 0.04, "10": 0.1}}

    def per_call(speed: dict, batch: int) -> float:
        estimate = estimate_run(dataclasses.replace(metadata, speed={"cpu": speed}), layout, batch, 1)
        return (
            estimate.seconds
            * metadata.canvas.shape[0]
            * metadata.canvas.shape[1]
            / (layout.window_height * layout.width)
        )

    assert per_call(two_point, 2) == pytest.approx(0.04)  # one slice under guidance
    assert per_call(two_point, 10) == pytest.approx(0.1)  # the default run
    assert per_call(two_point, 6) == pytest.approx(0.07)  # in between, on the line
    assert per_call(two_point, 20) == pytest.approx(0.175)  # beyond, the same line
    assert per_call(measured, 2) == pytest.approx(0.02)  # a bundle measured at one batch: per image
    assert per_call(measured, 10) == pytest.approx(0.1)
