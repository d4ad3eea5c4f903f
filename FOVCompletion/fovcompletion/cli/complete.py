"""`fovcompletion complete INPUT -o OUTPUT`: complete one scan, with a progress bar or JSON progress lines."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from pathlib import Path

from ..errors import FOVCompletionError
from ..progress import JsonLines, ProgressCallback, ProgressEvent, TextProgressBar
from . import error_line
from .options import add_completion_options, completion_kwargs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "complete",
        help="complete a partial-FOV sagittal scan",
        description="Complete a partial field of view of a sagittal T2w spine scan.",
    )
    parser.add_argument("input", type=Path, help="NIfTI or NRRD scan")
    parser.add_argument("-o", "--output", type=Path, required=True, help="completed volume (.nii.gz/.nrrd)")
    parser.add_argument("--mask-output", type=Path, default=None, help="also write the known-region mask")
    parser.add_argument(
        "--spread-output",
        type=Path,
        default=None,
        help="also write the per-voxel standard deviation of the samples (needs --samples 2 or more)",
    )
    parser.add_argument("--preview", type=Path, default=None, help="PNG montage: input, completion, overlay")
    parser.add_argument(
        "--preview-keep-fade",
        action="store_true",
        help="show the PNG montage on one window over the whole scan; by default the slow superior-inferior "
        "coil fade is divided out of the picture, the input's and, within the edge's, the completion's (the "
        "written volumes never change)",
    )
    parser.add_argument(
        "--preview-every",
        type=int,
        default=0,
        metavar="N",
        help="live preview: every N steps write the current estimate of the completed volume to --preview-volume "
        "(and name it in the JSON progress); default 0: off",
    )
    parser.add_argument(
        "--preview-volume",
        type=Path,
        default=None,
        help="where the live preview goes (needs --preview-every; default: beside OUTPUT, its name with "
        "the extension replaced by .preview.nii); removed when the run ends",
    )
    parser.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default="bar",
        help="bar on stderr (default), one JSON line per step on stdout, or none",
    )
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="cancel when stdin receives a 'cancel' line or is closed (for a parent process)",
    )
    add_completion_options(parser)
    parser.set_defaults(handler=run)


def watch_stdin_for_cancel() -> threading.Event:
    """Set when the parent writes a `cancel` line or closes our stdin (it cancelled, or it died)."""
    cancelled = threading.Event()

    def watch() -> None:
        try:
            for line in sys.stdin:
                if line.strip() == "cancel":
                    break
        except (OSError, ValueError):  # stdin unreadable: treat like a closed pipe
            pass
        cancelled.set()

    threading.Thread(target=watch, daemon=True).start()
    return cancelled


def default_preview_volume(output: Path) -> Path:
    """`out.nii.gz` -> `out.preview.nii` beside it (uncompressed: it is rewritten every few steps)."""
    name = output.name
    for suffix in (".nii.gz", ".nii", ".nrrd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(name + ".preview.nii")


def announce_at_start(progress: ProgressCallback | None, line: str) -> ProgressCallback:
    """Print `line` on stderr when the run starts (after the input was accepted), then pass events on."""

    def forward(event: ProgressEvent) -> None:
        if event.stage == "start":
            print(line, file=sys.stderr)
        if progress is not None:
            progress(event)

    return forward


def run(args: argparse.Namespace) -> int:
    from ..pipeline import complete_file

    json_lines = JsonLines() if args.progress == "json" else None
    progress = {"bar": TextProgressBar(), "json": json_lines, "none": None}[args.progress]
    cancelled = watch_stdin_for_cancel() if args.watch_stdin else threading.Event()
    preview_volume = args.preview_volume  # without --preview-every: refused by complete_file, in one line
    if args.preview_every > 0:
        preview_volume = preview_volume or default_preview_volume(args.output)
        if json_lines is None:  # JSON progress names the file in its events
            progress = announce_at_start(
                progress, f"live preview every {args.preview_every} steps: {preview_volume}"
            )
    try:
        result = complete_file(
            args.input,
            args.output,
            mask_path=args.mask_output,
            spread_path=args.spread_output,
            preview_path=args.preview,
            preview_even_fade=not args.preview_keep_fade,
            preview_volume_path=preview_volume,
            preview_every=args.preview_every,
            steps=args.steps,
            progress=progress,
            cancel=cancelled.is_set,
            **completion_kwargs(args),
        )
    except (FOVCompletionError, OSError, KeyboardInterrupt) as error:
        # The Slicer module reads the last event: every way a run ends without a result ends with an error event;
        # a closed stdout must not replace how the run ended.
        if json_lines is not None:
            with contextlib.suppress(OSError, ValueError):
                json_lines.send("error", message=error_line(error))
        raise
    spread = str(args.spread_output) if args.spread_output and result.spread is not None else None
    if json_lines is not None:
        json_lines.send(
            "done",
            output=str(args.output),
            mask=str(args.mask_output) if args.mask_output else None,
            spread=spread,
            seconds=round(result.seconds, 3),
        )
    else:
        print(
            f"wrote {args.output} ({len(result.slice_indices)} slices, {result.nfe} UNet evaluations, "
            f"{result.seconds:.1f} s on {result.device})",
            file=sys.stderr,
        )
        for label, path in (("mask", args.mask_output), ("spread map", spread), ("preview", args.preview)):
            if path:
                print(f"wrote {label} {path}", file=sys.stderr)
    return 0
