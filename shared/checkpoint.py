"""Checkpoints: atomic writes, ``weights_only=True`` reads, and loading weights into a module for eval/infer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from shared.errors import UserError, one_line
from shared.io import atomic_torch_save, load_checkpoint_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes to a temp file beside the target, fsyncs and renames, and always
    reads with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location=map_location or "cpu")


def extract_state_dict(ckpt: dict) -> dict[str, torch.Tensor]:
    """The state dict inside a Lightning checkpoint (``state_dict``), a ``{'params': …}`` file or a bare one."""
    for key in ("state_dict", "params_ema", "params", "model"):
        if isinstance(ckpt, dict) and key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise UserError("checkpoint holds no state_dict of tensors")
    return ckpt


def load_weights(module: nn.Module, ckpt: dict | str | Path, path: str | Path | None = None,
                 net_attr: str = "net") -> None:
    """Load the network weights of ``module.<net_attr>`` (strict) from a Lightning checkpoint of the module
    (keys ``net.…``) or a bare state dict of the network; ``ckpt`` is a loaded checkpoint or a file path."""
    if not isinstance(ckpt, dict):
        path, ckpt = ckpt, load_checkpoint_file(ckpt)
    sd = extract_state_dict(ckpt)
    prefix = f"{net_attr}."
    if any(k.startswith(prefix) for k in sd):
        sd = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
    net = getattr(module, net_attr)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        msg = one_line(exc)
        raise UserError(f"checkpoint {path or ''} does not fit {type(net).__name__}: {msg[:300]}") from exc


def load_backbone_features(path: str | Path | None, what: str, hint: str) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors (prefix removed) of a torchvision backbone state dict the user points to — the
    whole model or ``features`` only — for ImageNet weights that cannot be downloaded here (LPIPS, VGG loss).
    A missing or unreadable file is a :class:`UserError` naming ``what`` and ``hint`` (the setting to fix)."""
    if path is None or not Path(path).is_file():
        raise UserError(f"{what} weights not found: {path} ({hint})")
    sd = load_checkpoint_file(path)
    sd = sd.get("state_dict", sd)
    return {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")} or dict(sd)
