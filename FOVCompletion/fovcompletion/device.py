"""Device choice (CUDA, then MPS, then CPU) and the mixed precision each one supports.

torch is imported inside the functions so that `fovcompletion --help` and argument parsing stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a user's choice; asking for an absent accelerator is a clear error."""
    import torch

    if name is not None and not isinstance(name, str):
        raise InputError(f"the device must be a name: auto, cpu, cuda, cuda:N or mps (got {name!r})")
    name = (name or "auto").lower()
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise InputError(f"unknown device {name!r} (choose from {', '.join(DEVICE_CHOICES)})")
    mps = getattr(torch.backends, "mps", None)
    mps_available = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("CUDA was requested but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not mps_available:
        raise InputError("MPS was requested but is not available on this machine; use --device cpu or auto")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"{name} was requested but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision for the UNet on GPUs: bfloat16 where supported, else float16; none on the CPU."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, MemoryError):
        return True
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
