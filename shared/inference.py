"""Inference settings shared by the SR networks of Ch. 4–6 (CAJNN, HIME, ZSM), each a switch in the module's config:

* channels_last memory (``infer_channels_last``) and reduced precision (``infer_precision``: bf16 on CPUs with native
  bf16 instructions, bf16/fp16 on CUDA);
* memory-bounded tiling (``infer_tile: auto``): :class:`TiledRunner` measures the network's memory per LR pixel on
  two small probe inputs (:func:`peak_during`) and picks the largest tile that keeps the process within
  ``infer_options.max_memory_gb`` (:func:`plan_tile`); the tiles are blended band by band (``shared.tiling``)."""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Callable
from dataclasses import dataclass
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


# ------------------------------------------------------------------------------------------ memory-bounded tiling
def process_memory() -> int:
    """This process's resident memory in bytes (0 where /proc is not available)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _tensor_peak(fn: Callable[[], object]) -> int:
    """Peak bytes of the tensors ``fn()`` creates, alive at once (every op's outputs tracked by storage until the
    last tensor using it is gone) — deterministic, unlike the process's resident memory, which depends on what the
    allocator kept from earlier work."""
    import weakref

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, tuple[int, list]] = {}
            self.now = self.peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for ptr in [p for p, (_, refs) in self.live.items() if all(r() is None for r in refs)]:
                self.now -= self.live.pop(ptr)[0]  # storages whose every tensor is gone: freed
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and not t.is_meta:
                    st = t.untyped_storage()
                    ptr = st.data_ptr()
                    if ptr not in self.live:
                        self.live[ptr] = (st.nbytes(), [])
                        self.now += st.nbytes()
                    self.live[ptr][1].append(weakref.ref(t))
            self.peak = max(self.peak, self.now)
            return out

    with LiveBytes() as mode:
        fn()
    return mode.peak


def peak_during(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes ``fn()`` needed at its peak: CUDA's allocator statistics, or on the CPU the peak of the tensors it
    creates (:func:`_tensor_peak`)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    return _tensor_peak(fn)


def memory_budget(device: torch.device, max_memory_gb: float | None) -> int:
    """Bytes a run may still take: ``max_memory_gb`` for the whole process minus what it holds now (CPU), or on
    CUDA the smaller of that and 90 % of the GPU memory that is free."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        avail = int(0.9 * free)
        if max_memory_gb:
            avail = min(avail, int(max_memory_gb * 2**30) - torch.cuda.memory_allocated(device))
        return avail
    return int((max_memory_gb or 4.0) * 2**30) - process_memory()


@dataclass
class TilePlan:
    """How a frame of h×w LR pixels is run: ``tile`` None = whole, else the LR tile side."""

    tile: int | None
    tiles: int
    bytes_needed: int
    bytes_available: int
    per_pixel: float
    overlap: int = 0

    def describe(self, h: int, w: int) -> str:
        from shared.tiling import balanced_tile

        if self.tile is None:
            how = "whole frames"
        else:
            used = f"{balanced_tile(w, self.tile, self.overlap)}×{balanced_tile(h, self.tile, self.overlap)}"
            how = f"{self.tile}-px tiles ({used} used), {self.tiles} per frame"
        return (f"{w}×{h} LR → {how}; estimated peak {self.bytes_needed / 2**30:.2f} GiB of "
                f"{self.bytes_available / 2**30:.2f} GiB available ({self.per_pixel / 1024:.1f} KiB per LR pixel)")


def plan_tile(probe: Callable[[int], None], device: torch.device, h: int, w: int, overlap: int,
              budget: int, band_bytes: Callable[[int], int], fixed: int = 0, multiple: int = 16) -> TilePlan:
    """The largest LR tile (a multiple of ``multiple``) whose network peak, measured by running ``probe(side)`` on
    two small squares (48², 96², after a warm-up call) and extrapolated linearly in the pixel count (with a margin),
    plus the blending band ``band_bytes(tile)`` and ``fixed`` bytes (outputs held by the caller), fits ``budget``;
    whole frames when they fit."""
    from shared.tiling import tile_count

    small, big = 48, 96
    probe(32)  # first calls allocate one-off workspaces (oneDNN, caches): not part of the per-pixel cost
    a = peak_during(lambda: probe(small), device)
    b = peak_during(lambda: probe(big), device)
    # margin: on the CPU the probe counts tensors, the process also holds oneDNN's reorder buffers and allocator
    # slack (measured: resident memory ≈ 1.5 × tensor bytes); CUDA's allocator statistics are the real thing
    margin = 1.1 if device.type == "cuda" else 1.5
    per_px = margin * max((b - a) / (big * big - small * small), 1.0)
    base = max(a - per_px / margin * small * small, 0.0)

    def need(side_h: int, side_w: int) -> int:
        return int(base + per_px * side_h * side_w + fixed)

    if need(h, w) <= budget:
        return TilePlan(None, 1, need(h, w), budget, per_px, overlap)
    floor = max(2 * overlap + multiple, 32)
    t = floor
    while t + multiple < max(h, w) and need(min(t + multiple, h), min(t + multiple, w)) + \
            band_bytes(t + multiple) <= budget:
        t += multiple
    if need(min(t, h), min(t, w)) + band_bytes(t) > budget:
        warn_once("budget", f"infer_options.max_memory_gb is below what even {t}-px tiles need "
                            f"(~{(need(t, t) + band_bytes(t)) / 2**30:.2f} GiB); running them anyway")
    return TilePlan(t, tile_count(h, w, t, overlap), need(min(t, h), min(t, w)) + band_bytes(t), budget, per_px,
                    overlap)


class TiledRunner:
    """``fn`` (…×h×w LR → …×s·h×s·w) over inputs of any size within a memory budget: ``tile`` is a side in LR pixels,
    None (whole frames) or ``"auto"`` — then the largest tile that fits ``max_memory_gb`` (:func:`plan_tile`, with
    ``probe(side)`` running the network on a side×side input as it will run) is chosen once per input size."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], tile: int | str | None, overlap: int, scale: int,
                 device: torch.device, probe: Callable[[int], object], out_planes: int,
                 max_memory_gb: float | None = None, batch: int = 1) -> None:
        if tile not in (None, "auto") and not (isinstance(tile, int) and tile > 0):
            raise UserError(f"infer_tile must be a positive number of pixels, auto or null, got {tile!r}")
        self.fn, self.tile, self.overlap, self.scale, self.device = fn, tile, overlap, scale, device
        self.probe, self.out_planes, self.max_memory_gb, self.batch = probe, out_planes, max_memory_gb, batch
        self._plans: dict[tuple[int, int, int], TilePlan] = {}

    def plan(self, h: int, w: int, fixed: int = 0) -> TilePlan:
        """The tile for an h×w input; ``fixed``: bytes of outputs the caller holds besides the blending band."""
        from shared.tiling import tile_count

        if self.tile != "auto":
            t = self.tile if self.tile and max(h, w) > self.tile else None
            return TilePlan(t, 1 if t is None else tile_count(h, w, t, self.overlap), 0, 0, 0.0, self.overlap)
        key = (h, w, fixed)
        if key not in self._plans:
            s, planes = self.scale, self.out_planes

            def band(t: int) -> int:  # float accumulator + weights, and one float temporary of a finished block
                return 2 * (planes + 1) * s * t * s * w * 4

            with torch.inference_mode():
                self._plans[key] = plan_tile(self.probe, self.device, h, w, self.overlap,
                                             memory_budget(self.device, self.max_memory_gb), band, fixed)
        return self._plans[key]

    def run(self, x: torch.Tensor, sink: Callable[[int, torch.Tensor], None], fixed: int = 0) -> TilePlan:
        from shared.tiling import tiled_apply

        plan = self.plan(*x.shape[-2:], fixed=fixed)
        tiled_apply(self.fn, x, plan.tile, self.overlap, self.scale, sink, self.batch)
        return plan

    def to_image(self, x: torch.Tensor, dest: Path, label: str, dry_run: bool = False) -> None:
        """``x`` (1×C×h×w: the input, or inputs packed along C) → a 3-channel uint8 image of s·h×s·w written to
        ``dest``, band by band into one uint8 buffer; ``dry_run``: print ``<label>; <the plan>`` instead."""
        from shared.io import write_image
        from shared.tiling import into

        h, w = x.shape[-2:]
        out = torch.empty(1, 3, self.scale * h, self.scale * w, dtype=torch.uint8)
        fixed = out.numel() + x.numel() * 4  # the uint8 result and the float input stay alive throughout
        plan = self.plan(h, w, fixed=fixed)
        if dry_run:
            print(f"{label}; {plan.describe(h, w)}")
            return
        log.info("%s; %s", label, plan.describe(h, w))
        self.run(x, into(out, quantize=True), fixed=fixed)
        write_image(dest, out[0].permute(1, 2, 0).contiguous().numpy())
