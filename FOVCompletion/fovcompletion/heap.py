"""Hand freed heap memory back to the operating system (glibc), for loops that keep small results of big work.

Encoding thousands of training slices interleaves large short-lived feature maps with small long-lived
latents. glibc's heap can then only grow: measured, 9 MB of resident memory per 0.1 MB latent kept, which
took the default model's UNet stage (4515 latent maps) to a 14.9 GB peak. `malloc_trim` also returns the free
pages between live blocks: called after each slice, the same stage peaks at 1.4 GB, with identical latents.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter runs on
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)  # glibc has it; musl does not


def release_freed_heap() -> bool:
    """Return free heap pages to the OS; False where the C library cannot (macOS, Windows, musl)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
