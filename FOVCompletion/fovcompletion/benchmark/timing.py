"""Time spent inside the diffusion UNet, so 'seconds per UNet step' excludes encoding, decoding and resampling."""

from __future__ import annotations

import time

import torch


class UNetTimer:
    """Forward hooks on a module that add up the wall time of its calls (synchronising CUDA around them)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.seconds = 0.0
        self.calls = 0
        self._start = 0.0
        self._handles: list = []

    def _sync(self) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def _before(self, module, args) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _after(self, module, args, output) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start
        self.calls += 1

    def __enter__(self) -> UNetTimer:
        self.seconds, self.calls = 0.0, 0
        self._handles = [
            self.module.register_forward_pre_hook(self._before),
            self.module.register_forward_hook(self._after),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
