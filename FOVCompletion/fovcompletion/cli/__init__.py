"""`fovcompletion` command line: one subcommand per module; user errors print one line, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from ..errors import FOVCompletionError

# Each module has register(subparsers) adding its subcommand with set_defaults(handler=run).
COMMAND_MODULES = (
    "complete",
    "demo",
    "phantom",
    "models",
    "import_checkpoint",
    "train",
    "benchmark",
    "compare",
)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="fovcompletion",
        description="Complete a partial field of view of a sagittal T2w spine MRI with latent diffusion.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


# Options whose values may start with "-" without being negative numbers (argparse would take them for options).
DASH_VALUE_OPTIONS = ("--slice-range",)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(attach_dash_values(sys.argv[1:] if argv is None else list(argv)))
    previous = _interrupt_on_termination()
    try:
        return int(args.handler(args) or 0)
    except FOVCompletionError as error:
        print(f"fovcompletion: error: {error_line(error)}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # a full disk, a permission problem: one line, not a traceback
        print(f"fovcompletion: error: {error_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        print(f"fovcompletion: {error_line(error)}", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: installed outside Python, cannot be put back
                signal.signal(signum, handler)


def error_line(error: BaseException) -> str:
    """The one line a command reports for how it ended without a result: a user error's message, an OS error's
    reason and file, or a cancel (Ctrl-C, SIGTERM)."""
    if isinstance(error, KeyboardInterrupt):
        return "cancelled; nothing was written"
    if isinstance(error, OSError):
        return f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
    return str(error)


def attach_dash_values(argv: list[str]) -> list[str]:
    """`--slice-range -1:2` as `--slice-range=-1:2`: argparse reads a value that starts with "-" and is not a
    plain number as the next option, and prints its usage instead of the range's own one-line error."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in DASH_VALUE_OPTIONS and token.startswith("-") and ":" in token:
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _interrupt_on_termination() -> dict:
    """SIGTERM (`kill`, a batch system's time limit) and SIGHUP (a closed terminal) end a command as Ctrl-C
    does, so that its clean-up runs and no partial file is left; returns the handlers they replaced."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None or signal.getsignal(signum) is signal.SIG_IGN:  # SIGHUP on Windows; under nohup
            continue
        try:
            previous[signum] = signal.signal(signum, interrupt)
        except ValueError:  # not the main thread (a caller's worker): its process's handlers stay
            continue
    return previous
