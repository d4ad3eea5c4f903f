"""The engine command the module runs, checked against the engine's real argument parser."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "FOVCompletion"))
from fovcompletion.cli import build_parser
from FOVCompletionLib.engine_command import (
    MAXIMUM_SEED,
    MODULE_DIR,
    CompletionOptions,
    buildCompletionCommand,
    engineEnvironment,
)


def parse(command: list[str]):
    assert command[1:4] == ["-m", "fovcompletion", "complete"]
    return build_parser().parse_args(command[3:])


def test_every_option_reaches_the_engine():
    options = CompletionOptions(
        slices=3,
        steps=20,
        extendSuperiorMm=12.5,
        extendInferiorMm=300.0,
        seed=42,
        samples=4,
        candidates=3,
        device="cpu",
        model="my-model",
    )
    command = buildCompletionCommand(
        "/opt/Slicer/bin/PythonSlicer", "in.nii", "out.nii.gz", options, "m.nii.gz", "s.nii.gz"
    )
    assert command[0] == "/opt/Slicer/bin/PythonSlicer"
    args = parse(command)
    assert (args.input, args.output) == (Path("in.nii"), Path("out.nii.gz"))
    assert (args.mask_output, args.spread_output) == (Path("m.nii.gz"), Path("s.nii.gz"))
    assert (args.slices, args.slice_range, args.steps) == (3, None, 20)
    assert (args.extend_superior, args.extend_inferior) == (12.5, 300.0)
    assert (args.seed, args.samples, args.device, args.model, args.progress) == (
        42,
        4,
        "cpu",
        "my-model",
        "json",
    )
    assert args.candidates == 3
    assert args.watch_stdin is True  # the engine stops when Slicer cancels, quits or dies (stdin closes)


def test_range_default_model_and_single_sample():
    options = CompletionOptions(sliceRange=(2, 7), extendInferiorMm=64)
    args = parse(buildCompletionCommand("python", "a.nii", "b.nii.gz", options, "m.nii.gz", "s.nii.gz"))
    assert args.slice_range == (2, 7) and args.slices is None
    assert args.model is None  # the engine's default bundle
    assert args.spread_output is None  # a spread map needs more than one sample
    assert args.device == "auto"
    assert args.steps is None and args.candidates is None  # not given: the engine uses the model's settings


def test_a_numbered_gpu_reaches_the_engine():
    options = CompletionOptions(extendInferiorMm=64, device="cuda:1")
    assert parse(buildCompletionCommand("python", "a.nii", "b.nii.gz", options)).device == "cuda:1"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (CompletionOptions(extendInferiorMm=0), "nothing to complete"),
        (CompletionOptions(slices=2, sliceRange=(0, 2), extendInferiorMm=1), "either"),
        (CompletionOptions(slices=0, extendInferiorMm=1), "at least 1"),
        (
            CompletionOptions(sliceRange=(5, 4), extendInferiorMm=1),
            "^slices 5 to 3 .* is empty",
        ),  # the panel's 5..3
        (
            CompletionOptions(extendSuperiorMm=800, extendInferiorMm=800),
            "at most 1500 mm above and below together",
        ),
        (CompletionOptions(steps=0, extendInferiorMm=1), "between 1 and 1000"),
        (CompletionOptions(steps=1001, extendInferiorMm=1), "between 1 and 1000"),
        (CompletionOptions(samples=0, extendInferiorMm=1), "samples"),
        (CompletionOptions(candidates=0, extendInferiorMm=1), "candidates"),
        (CompletionOptions(extendSuperiorMm=-1, extendInferiorMm=1), "positive"),
        (CompletionOptions(device="tpu", extendInferiorMm=1), "device"),
    ],
)
def test_bad_options_get_one_clear_message(options, message):
    with pytest.raises(ValueError, match=message):
        buildCompletionCommand("python", "a", "b", options)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"slices": 2.5}, r"number of slices must be a whole number \(got 2.5\)"),
        ({"slices": "3"}, "number of slices must be a whole number"),
        ({"steps": 2.5}, r"number of steps must be a whole number \(got 2.5\)"),  # was rounded to 2
        ({"steps": "20"}, "number of steps must be a whole number"),
        ({"samples": 2.5}, "number of samples must be a whole number"),  # was rounded to 2
        ({"candidates": 1.5}, "number of candidates must be a whole number"),
        ({"previewEvery": None}, "preview interval must be a whole number"),
        ({"seed": 1.5}, r"seed must be a whole number \(got 1.5\)"),  # was rounded to 1
        ({"seed": "abc"}, "seed must be a whole number"),
        ({"seed": -1}, "seed must be a whole number from 0 to 2..64 - 1"),  # refused after the export
        ({"seed": 2**64}, "seed must be a whole number from 0 to 2..64 - 1"),
        ({"sliceRange": (0.5, 3)}, "slice range must be two whole numbers"),  # was rounded to 0:3
        ({"sliceRange": (1,)}, "slice range must be two whole numbers"),
        ({"sliceRange": "1:3"}, "slice range must be two whole numbers"),
        ({"extendSuperiorMm": float("nan")}, "superior extension must be finite"),  # was passed on
        ({"extendInferiorMm": "10"}, "inferior extension must be finite millimetres"),
        ({"device": None}, "unknown device None"),
        ({"device": "cuda:x"}, "unknown device 'cuda:x'"),  # was passed on
        ({"model": 5}, "model must be a bundle name or folder"),
    ],
)
def test_values_of_the_wrong_type_get_one_clear_message(values, message):
    """The console API's values: one line, never a TypeError or AttributeError, and nothing rounded silently."""
    options = CompletionOptions(**{"extendInferiorMm": 20.0, **values})
    with pytest.raises(ValueError, match=message) as raised:
        buildCompletionCommand("python", "a", "b", options)
    assert "\n" not in str(raised.value)


def test_numpy_integers_a_list_range_and_a_path_model_are_taken():
    options = CompletionOptions(
        sliceRange=[1, 3], seed=np.int64(7), extendInferiorMm=np.float32(20), model=Path("/models/tiny")
    )
    args = parse(buildCompletionCommand("python", "a.nii", "b.nii.gz", options))
    assert (args.slice_range, args.seed, args.extend_inferior) == ((1, 3), 7, 20.0)
    assert args.model == str(Path("/models/tiny"))


def test_the_seed_limit_is_the_engines():
    from fovcompletion.pipeline import MAX_SEED

    assert MAXIMUM_SEED == MAX_SEED


def test_range_past_the_volume_is_refused_before_running():
    options = CompletionOptions(sliceRange=(10, 20), extendInferiorMm=10)
    options.validate()  # fine without knowing the volume
    with pytest.raises(ValueError, match="12 sagittal slices"):
        options.validate(sagittalSliceCount=12)
    count = CompletionOptions(slices=13, extendInferiorMm=10)  # was refused by the engine, after the export
    count.validate()
    count.validate(sagittalSliceCount=13)
    with pytest.raises(ValueError, match="^13 slices requested but the input has only 12 sagittal slices$"):
        count.validate(sagittalSliceCount=12)


def test_environment_puts_the_module_folder_first():
    environment = engineEnvironment({"PYTHONPATH": "/elsewhere", "HOME": "/home/x"})
    assert environment["PYTHONPATH"].split(os.pathsep) == [str(MODULE_DIR), "/elsewhere"]
    assert environment["HOME"] == "/home/x" and environment["PYTHONUNBUFFERED"] == "1"
    assert (MODULE_DIR / "fovcompletion" / "__main__.py").is_file()  # `-m fovcompletion` resolves there
    assert engineEnvironment({})["PYTHONPATH"] == str(MODULE_DIR)


def test_live_preview_reaches_the_engine_only_when_asked():
    options = CompletionOptions(extendInferiorMm=50.0, previewEvery=10)
    args = parse(
        buildCompletionCommand("python", "in.nii", "out.nii.gz", options, previewPath="work/preview.nii")
    )
    assert (args.preview_every, args.preview_volume) == (10, Path("work/preview.nii"))
    off = parse(
        buildCompletionCommand("python", "in.nii", "out.nii.gz", CompletionOptions(extendInferiorMm=50.0))
    )
    assert off.preview_every == 0 and off.preview_volume is None  # the engine's default: no preview
    with pytest.raises(ValueError, match="preview interval"):
        CompletionOptions(extendInferiorMm=50.0, previewEvery=-1).validate()
