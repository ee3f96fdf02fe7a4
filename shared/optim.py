"""Optimisers and per-step learning-rate schedules shared by the projects (Adam + cosine annealing with restarts
down to 1e-7 in Ch. 4 and 6), with an optional per-parameter-group linear warm-up."""

from __future__ import annotations

import inspect
import math
from numbers import Real

from shared.errors import UserError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = (None, "cosine_restarts", "cosine", "step")


def make_optimizer(params, name: str = "adam", lr: float = 2e-4, betas=(0.9, 0.99), weight_decay: float = 0.0,
                   momentum: float = 0.9):
    import torch  # here, not at import: the driver checks optimiser configs before the training stack is loaded

    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise UserError(f"unknown optimizer {name!r} ({' | '.join(OPTIMIZERS)})")


def lr_factor(step: int, name: str | None, period: int, eta_ratio: float, warmup: int = 0) -> float:
    """Multiplicative learning-rate factor at ``step``: cosine annealing (restarting every ``period`` steps for
    ``cosine_restarts``) from 1 down to ``eta_ratio`` = eta_min / base lr, times a linear warm-up over ``warmup``."""
    if name in ("cosine_restarts", "cosine"):
        t = step % period if name == "cosine_restarts" else min(step, period)
        f = eta_ratio + (1 - eta_ratio) * (1 + math.cos(math.pi * t / period)) / 2
    else:
        f = 1.0
    if warmup > 0:
        f *= min(1.0, (step + 1) / warmup)
    return f


def make_scheduler(optimizer, name: str | None = "cosine_restarts", period: int = 250_000, eta_min: float = 1e-7,
                   milestones=(), gamma: float = 0.5, warmup_steps: list[int] | int = 0):
    """Per-step schedules: ``cosine_restarts`` (restart every ``period`` iterations, Ch. 4/6), ``cosine``, ``step``
    or None; ``warmup_steps`` (one value, or one per parameter group) adds a linear warm-up."""
    import torch

    warm_list = warmup_steps if isinstance(warmup_steps, list | tuple) else [warmup_steps]
    if not name and not any(warm_list):
        return None
    if name not in SCHEDULERS:
        raise UserError(f"unknown scheduler {name!r} (cosine_restarts | cosine | step | null)")
    if name == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
        return {"scheduler": sched, "interval": "step"}
    groups = optimizer.param_groups
    warm = warmup_steps if isinstance(warmup_steps, list | tuple) else [warmup_steps] * len(groups)
    lambdas = [
        (lambda step, r=eta_min / g["lr"], w=w: lr_factor(step, name, period, r, w)) for g, w in zip(groups, warm)
    ]
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    return {"scheduler": sched, "interval": "step"}


def check_optim_config(where: str, section: dict | None, kind: str) -> None:
    """An ``optimizer`` / ``scheduler`` config section before anything is built: known name, known keys, numbers
    where numbers belong — a mistake is a :class:`UserError` naming ``where`` (e.g. ``model.optimizer``)."""
    if not section:
        return
    fn, names = (make_optimizer, OPTIMIZERS) if kind == "optimizer" else (make_scheduler, SCHEDULERS)
    sig = {n: p for n, p in inspect.signature(fn).parameters.items() if n not in ("params", "optimizer")}
    unknown = sorted(set(section) - set(sig))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sig)})")
    if "name" in section and section["name"] not in names:
        shown = " | ".join("null" if n is None else n for n in names)
        raise UserError(f"{where}.name: unknown {kind} {section['name']!r} ({shown})")
    for key, value in section.items():
        default, lists_ok = sig[key].default, "list" in str(sig[key].annotation)
        if isinstance(value, tuple | list) and lists_ok:
            continue
        if isinstance(default, Real) and not isinstance(default, bool) and (
                not isinstance(value, Real) or isinstance(value, bool)):
            raise UserError(f"{where}.{key} must be a number, got {value!r}")
        if isinstance(default, tuple | list) and not isinstance(value, tuple | list):
            raise UserError(f"{where}.{key} must be a list, got {value!r}")
