"""The one driver behind every ``python -m projects.<p>.{train,eval,infer}`` entry point.

* ``main(project, stage)`` composes ``conf/<project>/<stage>.yaml`` with the shared groups of ``conf/`` on the
  search path (registered programmatically, so it works from any working directory), then runs the stage.
* ``train``: seed → instantiate datamodule, module (``model`` with ``model.net``), callbacks, loggers, trainer →
  log hyper-parameters → fit (``ckpt_path=…`` or ``last`` resumes; a run directory that already holds a
  checkpoint — a requeued cluster job — resumes from it) → test with the best checkpoint → return the
  ``optimized_metric`` for sweepers.
* ``eval``: load a checkpoint (``weights_only=True``) → ``trainer.test`` → the module's report tables (or the
  logged test metrics) printed and written as markdown + json under the run directory.
* ``infer``: load a checkpoint → ``module.infer(input, output, …)`` on the user's files.

User mistakes (:class:`shared.errors.UserError`, Hydra/OmegaConf composition errors) end as one line on stderr
and exit code 2.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from shared.errors import TrainingDiverged, UserError, one_line

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from shared.report import Table

# torch / Lightning / the shared I/O are imported where they are used: a mistyped override or a missing input then
# fails in about a second, before the ~4 s those imports take.

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
log = logging.getLogger("shared.run")


class WorkspaceSearchPath(SearchPathPlugin):
    """Puts ``conf/`` (the shared groups: trainer, logger, callbacks, paths, hydra) on every project's path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="workspace", path=f"file://{CONF_DIR}")


def register_search_path() -> None:
    """The conf/ search path, plus the ``max`` resolver the launcher configs use (``${max:1,${.gpus_per_node}}``)."""
    Plugins.instance().register(WorkspaceSearchPath)
    if not OmegaConf.has_resolver("max"):
        OmegaConf.register_new_resolver("max", lambda *xs: max(xs))


def compose_config(project: str, stage: str = "train", overrides: list[str] | None = None,
                   return_hydra_config: bool = False) -> DictConfig:
    """Compose a project's config outside the CLI (tests, notebooks): same search path as the entry points
    (``return_hydra_config=True`` keeps the ``hydra`` node: launcher, sweeper, run/sweep dirs)."""
    from hydra import compose, initialize_config_dir

    register_search_path()
    with initialize_config_dir(str(CONF_DIR / project), version_base="1.3"):
        return compose(stage, overrides=overrides or [], return_hydra_config=return_hydra_config)


def fail(message: str, code: int = 2) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


_HANDLED = (UserError, TrainingDiverged, hydra.errors.HydraException, OmegaConfBaseException)


def _exit_for(exc: BaseException) -> None:
    """One ``error:`` line and the exit code for a handled exception (2: user/config mistake, 3: divergence)."""
    if isinstance(exc, UserError | TrainingDiverged):
        fail(one_line(exc), code=3 if isinstance(exc, TrainingDiverged) else 2)
    fail(f"config: {one_line(exc).split(' Config search path:')[0]}")


def main(project: str, stage: str) -> None:
    """Entry point used by ``projects/<project>/<stage>.py``."""
    tasks = {"train": train, "eval": evaluate, "infer": infer}
    register_search_path()
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us instead of Hydra's multi-line report
    task = tasks[stage]

    @functools.wraps(task)
    def guarded(cfg: DictConfig):
        try:
            return task(cfg)
        except TrainingDiverged as exc:
            if full_error:
                raise
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                # one diverged sweep point must not end the sweep: report it, return NaN (Optuna: a failed trial)
                sys.stderr.write(f"error: {one_line(exc)}\n")
                return float("nan")
            _exit_for(exc)
        except _HANDLED as exc:  # handled here, not by Hydra's job runner, so nothing else gets printed
            if full_error:
                raise
            _exit_for(exc)

    try:
        hydra.main(version_base="1.3", config_path=str(CONF_DIR / project), config_name=stage)(guarded)()
    except _HANDLED as exc:  # composition errors, before the task runs
        if full_error:
            raise
        _exit_for(exc)


# ----------------------------------------------------------------------------------------------- helpers


def _rank() -> int:
    """This process's global rank: Lightning's once it is loaded (it updates it when the strategy starts), else read
    from the environment the way Lightning does (0 outside distributed runs) — without importing it."""
    if "lightning.pytorch" in sys.modules:
        from lightning.pytorch.utilities import rank_zero_only

        return rank_zero_only.rank
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def print_config(cfg: DictConfig) -> None:
    """The composed config as a tree (rich), one branch per top-level group (rank 0 only)."""
    if _rank() != 0:
        return
    from rich import print as rprint
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        branch = tree.add(str(key))
        if isinstance(value, DictConfig):
            try:
                text = OmegaConf.to_yaml(value, resolve=True)
            except OmegaConfBaseException:
                text = OmegaConf.to_yaml(value, resolve=False)
        else:
            text = str(value)
        branch.add(Syntax(text, "yaml", theme="ansi_dark", word_wrap=True))
    rprint(tree)


def output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def checkpoint_files(run_dir: Path) -> list[Path]:
    """Every complete checkpoint a run directory holds: ``checkpoints/*.ckpt`` (last, best, step-named) and
    Lightning's SLURM ``hpc_ckpt_N.ckpt`` (temp files of an interrupted write start with a dot and are not
    checkpoints)."""
    found = [*run_dir.glob("checkpoints/*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
    return [p for p in found if p.is_file() and not p.name.startswith(".")]


def newest(paths: list[Path]) -> Path | None:
    """The most recently written checkpoint (a kill during ``last.ckpt``'s write leaves the step checkpoint of the
    same moment as the newest complete one)."""
    return max(paths, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt")) if paths else None


def resolve_ckpt(cfg: DictConfig) -> str | None:
    """``ckpt_path``: None/'' → None; 'last' → the newest checkpoint of this experiment's earlier runs; else a
    file."""
    path = cfg.get("ckpt_path")
    if path in (None, ""):
        return None
    if str(path) == "last":
        runs = Path(cfg.paths.log_dir) / cfg.project / cfg.name
        here = output_dir().resolve()
        dirs = {p.parent.parent for p in [*runs.glob("*/*/checkpoints/*.ckpt"), *runs.glob("*/*/*/checkpoints/*.ckpt")]}
        dirs |= {p.parent for p in [*runs.glob("*/*/hpc_ckpt_*.ckpt"), *runs.glob("*/*/*/hpc_ckpt_*.ckpt")]}
        found = [c for d in dirs if here != d.resolve() for c in checkpoint_files(d)]
        if not found:
            raise UserError(f"ckpt_path=last: no earlier checkpoint under {runs}")
        chosen = newest(found)
        log.info("ckpt_path=last → %s", chosen)
        return str(chosen)
    if not Path(path).is_file():
        raise UserError(f"checkpoint not found: {path}")
    return str(path)


def resume_in_place(run_dir: Path) -> str | None:
    """The newest checkpoint this run directory already holds: a requeued job (time-out, preemption) or a rerun
    in the same ``hydra.run.dir`` continues instead of starting over. Temp files of a write that was killed are
    removed (rank 0; they are this project's own, see :func:`shared.io.atomic_path`)."""
    from shared.io import remove_stale_temp_files

    if _rank() == 0:
        remove_stale_temp_files(run_dir / "checkpoints", ".ckpt")
    chosen = newest(checkpoint_files(run_dir))
    return str(chosen) if chosen else None


def _instantiate_dict(section: DictConfig | None) -> list[Any]:
    if not section:
        return []
    return [instantiate(v) for v in section.values() if v is not None and "_target_" in v]


def build_trainer(cfg: DictConfig, callbacks: list | None = None, loggers: list | None = None) -> pl.Trainer:
    """The Lightning Trainer of ``cfg.trainer``: its ``plugins`` (a dict of ``_target_`` nodes, e.g. the SLURM
    cluster environment of ``trainer=ddp_multinode``) plus the atomic checkpoint I/O every run uses."""
    from shared.checkpoint import AtomicCheckpointIO

    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    plugins = [instantiate(p) for p in (tcfg.pop("plugins", None) or {}).values() if p is not None]
    return instantiate(tcfg, callbacks=callbacks or [], logger=loggers or False,
                       plugins=[*plugins, AtomicCheckpointIO()])


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota (containers) and by SLURM's
    ``--cpus-per-task`` when set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and os.environ.get("SLURM_PROCID") is not None:
        cores = min(cores, int(slurm))
    return max(1, cores)


def set_threads(processes: int = 1, workers: int = 0, on_cpu: bool = True) -> int:
    """Intra-op threads of this process: the cores available (:func:`available_cores`) shared by the training
    processes of this node, minus the data-loader workers when the work itself runs on the CPU (every worker is a
    busy process of its own; on a GPU the main process mostly waits). ``OMP_NUM_THREADS`` set by the user wins.
    Returns the number set."""
    import torch

    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        n = int(os.environ["OMP_NUM_THREADS"])
    else:
        share = available_cores()
        if not (os.environ.get("SLURM_PROCID") is not None and os.environ.get("SLURM_CPUS_PER_TASK")):
            share = max(1, share // max(1, processes))
        n = max(1, share - workers) if on_cpu else share
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def build(cfg: DictConfig, with_loggers: bool = True):
    """Instantiate (datamodule, module, trainer, loggers) from the composed config.

    ``seed_everything(seed, workers=True)``: the same seed on every rank (identical initial weights, which DDP
    also broadcasts); the training loader's order and augmentations are functions of (seed, epoch, sample)
    (:func:`shared.datamodule.train_loader`), so a resumed run continues exactly (:class:`ExactResume`). The
    global batch ``data.batch_size`` must divide by the world size; intra-op threads are set per process."""
    import lightning.pytorch as pl
    import torch

    from shared.callbacks import ExactResume
    from shared.datamodule import per_device_batch

    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    callbacks = [*_instantiate_dict(cfg.get("callbacks")), ExactResume()]
    loggers = _instantiate_dict(cfg.get("logger")) if with_loggers else []
    trainer = build_trainer(cfg, callbacks, loggers)
    data = cfg.get("data") or {}
    if data.get("batch_size") is not None:
        per_device_batch(data.batch_size, trainer.world_size)  # a bad global batch fails before anything is built
    from lightning.pytorch.accelerators import CPUAccelerator

    set_threads(trainer.num_devices if trainer.world_size > 1 else 1, int(data.get("num_workers") or 0),
                on_cpu=isinstance(trainer.accelerator, CPUAccelerator))
    datamodule = instantiate(cfg.data, _convert_="all") if cfg.get("data") else None
    module = instantiate(cfg.model, _convert_="all")
    return datamodule, module, trainer, loggers


def _log_hparams(cfg: DictConfig, loggers: list, module: pl.LightningModule, trainer: pl.Trainer) -> None:
    import torch

    params = OmegaConf.to_container(cfg, resolve=True)
    net = getattr(module, "net", module)
    params["model/params"] = sum(p.numel() for p in net.parameters())
    params["run/world_size"] = trainer.world_size
    params["run/threads_per_process"] = torch.get_num_threads()
    if (cfg.get("data") or {}).get("batch_size") is not None:
        params["data/batch_size_global"] = cfg.data.batch_size
        params["data/batch_size_per_device"] = cfg.data.batch_size // trainer.world_size
    for lg in loggers:
        lg.log_hyperparams(params)


def _metric(trainer: pl.Trainer, name: str | None) -> float | None:
    """The optimised metric: its best value when the checkpoint callback monitors it, else its last value."""
    if not name:
        return None
    cb = trainer.checkpoint_callback
    if cb is not None and getattr(cb, "monitor", None) == name and cb.best_model_score is not None:
        return float(cb.best_model_score)
    value = trainer.callback_metrics.get(name)
    if value is None:
        log.warning("optimized_metric %s was not logged; available: %s", name, sorted(trainer.callback_metrics))
        return None
    return float(value)


def _scalars(metrics: dict) -> dict[str, float]:
    import torch

    return {k: float(v) for k, v in metrics.items() if torch.as_tensor(v).numel() == 1}


def write_final_metrics(trainer: pl.Trainer, cfg: DictConfig, out: Path, fit_metrics: dict[str, float],
                        value: float | None) -> None:
    """``final_metrics.json`` in the run directory (rank 0): the value a sweeper optimises and every scalar metric
    logged last (validation, and test when it ran) — what ``shared.sweep_table`` lists per sweep job."""
    from shared.io import atomic_write_text

    if _rank() != 0:
        return
    metrics = {**fit_metrics, **_scalars(trainer.callback_metrics)}
    name = cfg.get("optimized_metric")
    mode = cfg.monitor.mode if cfg.get("monitor") and cfg.monitor.get("metric") == name else None
    record = {"optimized_metric": name, "mode": mode, "value": value,
              "global_step": trainer.global_step, "metrics": metrics}
    atomic_write_text(out / "final_metrics.json", json.dumps(record, indent=1, allow_nan=True))


def _write_tables(module, results: list[dict], out: Path, title: str) -> list[Table]:
    from shared.report import Table, write_report

    tables = module.report_tables(results) if hasattr(module, "report_tables") else None
    if not tables:
        rows = [{"dataloader": i, **{k: float(v) for k, v in r.items()}} for i, r in enumerate(results)]
        cols = ["dataloader"] + sorted({k for r in results for k in r})
        tables = [Table(title, cols, rows)]
    if _rank() == 0:
        md, js = write_report(tables, out)
        print("\n".join(t.to_markdown() for t in tables))
        print(f"results written to {md} and {js}")
    return tables


_INT_KEYS = {"batch_size", "eval_batch_size", "num_workers", "max_steps", "max_epochs", "min_steps", "min_epochs",
             "log_every_n_steps", "num_sanity_val_steps", "check_val_every_n_epoch", "accumulate_grad_batches",
             "every_n_train_steps", "every_n_epochs", "save_top_k", "patch", "num_nodes"}
_NUMBER_KEYS = {"val_check_interval", "gradient_clip_val", "limit_train_batches", "limit_val_batches",
                "limit_test_batches", "limit_predict_batches", "overfit_batches"}


def check_config(cfg: DictConfig) -> None:
    """Values a user types that would otherwise fail deep inside Lightning or torch with a traceback: integers and
    numbers in ``trainer``/``data``/``callbacks``, the optimiser and scheduler sections of ``model`` — each mistake is
    one :class:`UserError` naming the key."""
    from shared.optim import check_optim_config

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}")
            return
        key = path.rsplit(".", 1)[-1]
        if node is None or key not in _INT_KEYS | _NUMBER_KEYS:
            return
        if isinstance(node, bool) or not isinstance(node, int | float):
            kind = "an integer" if key in _INT_KEYS else "a number"
            raise UserError(f"{path.lstrip('.')} must be {kind}, got {node!r}")
        if key in _INT_KEYS and isinstance(node, float) and not node.is_integer():
            raise UserError(f"{path.lstrip('.')} must be an integer, got {node!r}")

    for section in ("trainer", "data", "callbacks"):
        if cfg.get(section):
            walk(OmegaConf.to_container(cfg[section], resolve=True), section)
    model = cfg.get("model") or {}
    for key, kind in (("optimizer", "optimizer"), ("optimizer_d", "optimizer"), ("scheduler", "scheduler")):
        if model.get(key):
            check_optim_config(f"model.{key}", OmegaConf.to_container(model[key], resolve=True), kind)


# ------------------------------------------------------------------------------------------------- stages


def train(cfg: DictConfig) -> float | None:
    """Fit, then test with the best checkpoint; returns ``cfg.optimized_metric`` for sweepers."""
    check_config(cfg)
    print_config(cfg)
    ckpt = resolve_ckpt(cfg)
    if ckpt is None and cfg.get("resume_in_place", True):
        ckpt = resume_in_place(output_dir())
        if ckpt:
            log.info("resuming this run directory's checkpoint %s (requeued or re-run job)", ckpt)
    datamodule, module, trainer, loggers = build(cfg)
    _log_hparams(cfg, loggers, module, trainer)
    # the training loaders resume mid-epoch through ExactResume + ResumableSampler, not Lightning's loader state
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    log.info("fit finished in %.1fs", time.perf_counter() - t0)
    value = _metric(trainer, cfg.get("optimized_metric"))
    fit_metrics = _scalars(trainer.callback_metrics)
    if cfg.get("test_after_fit", True) and not trainer.interrupted:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True,
                               verbose=False)
        _write_tables(module, results, output_dir(), f"{cfg.project} test ({cfg.name})")
    write_final_metrics(trainer, cfg, output_dir(), fit_metrics, value)
    return value


def evaluate(cfg: DictConfig) -> float | None:
    """The paper's protocol on a trained checkpoint: prints and writes the results table."""
    check_config(cfg)
    ckpt = resolve_ckpt(cfg)
    if ckpt is None and not cfg.get("allow_untrained", False):
        raise UserError("eval needs ckpt_path=<checkpoint> (or allow_untrained=true for baselines)")
    from shared.checkpoint import load_weights
    from shared.io import load_checkpoint_file

    state = load_checkpoint_file(ckpt) if ckpt else None
    datamodule, module, trainer, _ = build(cfg, with_loggers=False)
    if state is not None:
        load_weights(module, state, ckpt)
    results = trainer.test(module, datamodule=datamodule, verbose=False)
    _write_tables(module, results, output_dir(), f"{cfg.project} evaluation")
    return _metric(trainer, cfg.get("optimized_metric"))


def _infer_inputs(cfg: DictConfig) -> list[str]:
    """Every path infer reads: ``input`` plus the reference / probe photos some projects take as options."""
    paths = [str(cfg.input)]
    for key in ("refs", "probe"):
        value = (cfg.get("infer_options") or {}).get(key)
        if value:
            paths += [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    return paths


def _check_infer_options(cfg: DictConfig) -> dict:
    """``infer_options`` against the parameters of the module's ``infer`` (no import of the training stack beyond
    the module's own): an unknown option is a user mistake, named with the known ones."""
    import inspect

    from hydra.utils import get_class

    options = OmegaConf.to_container(cfg.get("infer_options") or OmegaConf.create({}), resolve=True)
    params = inspect.signature(get_class(cfg.model._target_).infer).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        known = [n for n in params if n not in ("self", "input", "output")]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise UserError(f"unknown infer option(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return options


def _device(name: str | None):
    """``device=`` → torch.device (default: cuda when available); a device this machine does not have is a user
    mistake."""
    import torch

    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError as exc:
        raise UserError(f"device={name}: not a device (cpu, cuda, cuda:1, …)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name}, but no CUDA GPU is available here; use device=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device={name}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device={name}: only cpu and cuda are supported")
    return device


def infer(cfg: DictConfig) -> None:
    """Run the trained network on the user's own files: ``input=… output=…``. Before anything is loaded: the input
    exists, the output is neither an input nor inside one and can be written, the options and device are valid."""
    from shared.outputs import check_output

    if not cfg.get("input"):
        raise UserError("infer needs input=<file or folder>")
    if not cfg.get("output"):
        raise UserError("infer needs output=<file or folder>")
    if not Path(cfg.input).exists():
        raise UserError(f"input not found: {cfg.input}")
    check_output(cfg.output, _infer_inputs(cfg))
    check_config(cfg)
    options = _check_infer_options(cfg)
    ckpt = resolve_ckpt(cfg)
    if ckpt is None and not cfg.get("allow_untrained", False):
        raise UserError("infer needs ckpt_path=<checkpoint>")
    import lightning.pytorch as pl
    import torch

    from shared.checkpoint import load_weights
    from shared.io import load_checkpoint_file

    device = _device(cfg.get("device"))
    set_threads(1, 0, on_cpu=device.type == "cpu")
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed)
    state = load_checkpoint_file(ckpt) if ckpt else None
    module = instantiate(cfg.model, _convert_="all")
    if state is not None:
        load_weights(module, state, ckpt)
    module = module.to(device).eval()
    with torch.inference_mode():
        module.infer(Path(cfg.input), Path(cfg.output), **options)
