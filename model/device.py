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


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _cpu_has(check: str) -> bool:
    """torch.cpu's private ISA probes (torch 2.x); absent -> assume no."""
    probe = getattr(torch.cpu, check, None)
    return bool(probe()) if probe is not None else False


def native_dtype(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether `device` has arithmetic for `dtype`. Without it the CPU emulates bfloat16 and
    float16 in float32 and is slower than float32 itself (bench/forward_variants.py: bf16
    1.6x slower on an AVX-512 CPU without AVX512-BF16, 1.6x faster on one with it)."""
    if dtype == torch.float32:
        return True
    if device.type == "cuda":
        return dtype == torch.float16 or torch.cuda.is_bf16_supported()
    if dtype == torch.bfloat16:
        return _cpu_has("_is_avx512_bf16_supported") or _cpu_has("_is_amx_tile_supported")
    return _cpu_has("_is_amx_fp16_supported")
