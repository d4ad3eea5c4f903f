"""FOVCompletion: complete a partial field of view of a sagittal T2w spine MRI with latent diffusion.

The engine is Slicer-free; the command line, the Python API and the 3D Slicer module all call it.

    >>> import fovcompletion
    >>> result = fovcompletion.complete_file("cervical.nii.gz", "completed.nii.gz", extend_inferior_mm=128)
"""

from __future__ import annotations

from .errors import BundleError, CancelledError, FOVCompletionError, InputError, OutOfMemoryError

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "CancelledError",
    "CompletionResult",
    "FOVCompletionError",
    "InputError",
    "OutOfMemoryError",
    "complete",
    "complete_file",
    "load_bundle",
]


def __getattr__(name: str):
    """Import the torch-heavy parts lazily so `fovcompletion --help` and the Slicer GUI start fast."""
    if name in ("complete", "complete_file", "CompletionResult"):
        from . import pipeline

        return getattr(pipeline, name)
    if name == "load_bundle":
        from .bundle import load_bundle

        return load_bundle
    raise AttributeError(name)
