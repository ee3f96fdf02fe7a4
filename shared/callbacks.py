"""Lightning callbacks shared by the projects."""

from __future__ import annotations

import logging

import torch
from lightning.pytorch import Callback

from shared.ops.deform import ModulatedDeformConv2d

log = logging.getLogger(__name__)


class OffsetMonitor(Callback):
    """Every ``every_n_steps`` training steps, log the mean |offset| of all deformable convs and warn when it
    exceeds ``warn_above`` — the one device→host sync happens here, never inside the forward pass
    (the "offset mean is larger than 100" instability of DCN training, Ch. 6)."""

    def __init__(self, every_n_steps: int = 100, warn_above: float = 100.0) -> None:
        self.every_n_steps, self.warn_above = every_n_steps, warn_above

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        means = [m.offset_abs_mean for m in pl_module.modules() if isinstance(m, ModulatedDeformConv2d)]
        if not means:
            return
        vals = torch.stack([m.float() for m in means])
        mx, avg = vals.max().item(), vals.mean().item()
        pl_module.log_dict({"dcn/offset_abs_mean": avg, "dcn/offset_abs_max": mx}, on_step=True, sync_dist=False)
        if mx > self.warn_above:
            log.warning("deformable offsets exploding: mean |offset| %.1f > %.1f at step %d (lower dcn_lr_mul, "
                        "set max_offset, or resume from an earlier checkpoint)", mx, self.warn_above,
                        trainer.global_step)
