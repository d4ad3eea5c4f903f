"""User-facing errors: each carries one clear line that the command line prints instead of a traceback."""

from __future__ import annotations


class FOVCompletionError(Exception):
    """Base class: a problem the user can act on (bad input, bad model, no memory, cancelled)."""

    exit_code = 1


class InputError(FOVCompletionError):
    """The input image or the requested options cannot be completed."""


class BundleError(FOVCompletionError):
    """A model bundle is missing, corrupted, tampered with or does not match its architecture."""


class OutOfMemoryError(FOVCompletionError):
    """The device ran out of memory; the message suggests what to reduce."""


class CancelledError(FOVCompletionError):
    """The user cancelled a run; nothing was written."""

    exit_code = 130


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, else its type's name: a user-facing error stays one line
    even for an exception without a message (an empty file's EOFError)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
