"""Inference settings shared by the SR networks of Ch. 4–6 (CAJNN, HIME, ZSM): channels_last memory and reduced
precision (``infer_precision``: bf16 on CPUs with native bf16 instructions, bf16/fp16 on CUDA), each a switch in the
module's config."""

from __future__ import annotations

import contextlib
import logging
import platform
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from shared.errors import UserError

log = logging.getLogger(__name__)
_PRECISIONS = {None: None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_warned: set[str] = set()


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 natively (x86 AVX512-BF16 or AMX, Arm BF16) — elsewhere oneDNN emulates bf16, which
    is slower than fp32."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() == "arm64"  # Apple silicon (M2+) has BF16; no cpuinfo there
    flags = {f for line in info.splitlines() if line.startswith(("flags", "Features")) for f in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def precision_context(device: torch.device, precision: str | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``precision`` on ``device`` (None/'fp32': full precision). bf16 on a CPU without native
    bf16 warns once and runs fp32; fp16 on a CPU is a user mistake."""
    if precision not in _PRECISIONS:
        raise UserError(f"infer_precision must be fp32, bf16 or fp16 (or null), got {precision!r}")
    dtype = _PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    if device.type == "cpu":
        if dtype is torch.float16:
            raise UserError("infer_precision=fp16 needs a CUDA GPU; on a CPU use bf16 (or fp32)")
        if not cpu_has_bf16():
            warn_once("bf16", "infer_precision=bf16: this CPU has no native bf16 instructions; running fp32")
            return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def use_channels_last(net: nn.Module, on: bool) -> nn.Module:
    """Put ``net``'s 4-D parameters in channels_last (``on``) or back in contiguous memory; the inputs follow from the
    first convolution (a conv with channels_last weights writes channels_last output)."""
    return net.to(memory_format=torch.channels_last if on else torch.contiguous_format)
