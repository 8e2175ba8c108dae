"""Resolve "auto" | "cpu" | "cuda" | "cuda:N" to a torch.device, or a clear error."""

from __future__ import annotations

import re

import torch

_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceError(ValueError):
    """The requested device is malformed or not present on this machine."""


def available_devices() -> list[str]:
    """What this process can use; honours CUDA_VISIBLE_DEVICES through torch's own count."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu"] + [f"cuda:{i}" for i in range(count)]


def resolve_device(spec: str) -> torch.device:
    """auto = the first CUDA device if there is one, else the CPU."""
    spec = spec.strip().lower()
    if not _SPEC.match(spec):
        raise DeviceError(f"device {spec!r} is not one of auto, cpu, cuda, cuda:N")
    available = available_devices()
    if spec == "auto":
        return torch.device(available[1] if len(available) > 1 else "cpu")
    if spec == "cuda":
        spec = "cuda:0"
    if spec not in available:
        raise DeviceError(f"device {spec!r} is not available (available: {', '.join(available)})")
    return torch.device(spec)
