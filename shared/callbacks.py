"""Lightning callbacks shared by the projects."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

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


def _rng_state() -> dict:
    """Python, NumPy and torch (CPU, every CUDA device) generator states as tensors and plain containers — what a
    ``weights_only=True`` load accepts."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": list(random.getstate()[1]), "numpy": torch.from_numpy(keys.astype(np.int64)),
             "numpy_meta": [int(pos), int(has_gauss), float(gauss)], "torch": torch.random.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    random.setstate((3, tuple(state["python"]), None))
    pos, has_gauss, gauss = state["numpy_meta"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _resumable_samplers(trainer) -> list:
    from shared.datamodule import ResumableSampler

    loader = trainer.fit_loop._combined_loader
    found = []
    for dl in loader.flattened if loader is not None else []:
        for sampler in (getattr(dl, "sampler", None), getattr(getattr(dl, "batch_sampler", None), "sampler", None)):
            if isinstance(sampler, ResumableSampler) and all(sampler is not f for f, _ in found):
                found.append((sampler, dl.batch_size or 1))
    return found


class ExactResume(Callback):
    """Makes ``ckpt_path=…`` resume bit for bit: each checkpoint also stores the random-generator states and how far
    into the epoch training was (and flushes the loggers); on resume the generators are restored when training
    starts and the :class:`~shared.datamodule.ResumableSampler` skips the samples already trained on (data order
    and augmentation are functions of (seed, epoch, index), see :class:`~shared.datamodule.SeededDataset`).
    The driver adds it to every training run."""

    KEY = "exact_resume"

    def __init__(self) -> None:
        self._pending: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        samplers = _resumable_samplers(trainer)
        epoch = samplers[0][0].epoch if samplers else trainer.current_epoch
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        checkpoint[self.KEY] = {"rng": _rng_state(), "epoch": int(epoch), "batches": int(done)}
        for lg in trainer.loggers:  # the rows up to this checkpoint reach the disk: a killed run loses none of them
            lg.save()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._pending = checkpoint.get(self.KEY)

    def on_train_start(self, trainer, pl_module) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        for sampler, batch in _resumable_samplers(trainer):
            sampler.resume(state["epoch"], state["batches"] * batch)
        _set_rng_state(state["rng"])



class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the newest state, written at every checkpoint moment of the best-checkpoint callback (same
    ``every_n_*``) whatever the monitored metric did, and at the end of training. (Lightning ≥ 2.5 updates its own
    ``save_last`` file only when a top-k checkpoint is saved at that step — after a validation that did not improve,
    ``last.ckpt`` would be an older state, and a resume would silently go back in time.)"""

    def __init__(self, dirpath: str, every_n_train_steps: int | None = None, every_n_epochs: int | None = 1,
                 train_time_interval=None) -> None:
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, save_last=False,
                         auto_insert_metric_name=False, enable_version_counter=False,
                         every_n_train_steps=every_n_train_steps, every_n_epochs=every_n_epochs,
                         train_time_interval=train_time_interval)

    def on_train_end(self, trainer, pl_module) -> None:
        """The final state, unless it was just saved (a run whose steps do not advance ``global_step`` — a fit
        without optimiser steps — gets its one last.ckpt here)."""
        saved = getattr(self, "_last_checkpoint_saved", "")
        if trainer.fast_dev_run or (saved and trainer.global_step == self._last_global_step_saved):
            return
        path = str(Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}")
        trainer.save_checkpoint(path)
        self._last_global_step_saved, self._last_checkpoint_saved = trainer.global_step, path
