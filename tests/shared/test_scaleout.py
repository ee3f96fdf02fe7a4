"""Scale-out: launchers (submitit local/SLURM, joblib), multi-node DDP under SLURM, Optuna search with a resumable
study, requeue-resume in the same run directory, and the sweep table over real sweeps."""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf

from shared.run import build_trainer, compose_config, resume_in_place
from shared.sweep_table import main as sweep_table
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["+experiment=smoke", "callbacks.rich_progress_bar=null"]


def readme_cluster_commands() -> list[list[str]]:
    """The `python -m projects.…` lines of the README's "Running on a cluster" block, as argument lists."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Running on a cluster", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [shlex.split(line) for line in block.splitlines() if line.startswith("python -m projects.")]


def compose_command(argv: list[str]):
    """Compose a CLI command's config (with the hydra node) the way the entry point would."""
    assert argv[:2] == ["python", "-m"]
    project, stage = re.fullmatch(r"projects\.(\w+)\.(\w+)", argv[2]).groups()
    overrides = [a for a in argv[3:] if a not in ("-m", "--multirun")]
    # a sweep's comma lists are expanded by the sweeper; compose its first point
    first = [re.sub(r"=([^=(,]+),.*$", r"=\1", o) if "," in o and "choice(" not in o else o for o in overrides]
    return compose_config(project, stage, first, return_hydra_config=True)


def test_readme_cluster_commands_compose():
    commands = readme_cluster_commands()
    assert len(commands) == 6
    launchers = {}
    for argv in commands:
        cfg = compose_command(argv)
        launchers[" ".join(argv)] = cfg.hydra.launcher._target_
        if "trainer=ddp_multinode" in argv:
            assert cfg.trainer.plugins.slurm._target_ == "lightning.pytorch.plugins.environments.SLURMEnvironment"
            assert cfg.trainer.strategy.process_group_backend == "nccl"
    targets = set(launchers.values())
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in targets
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher" in targets
    assert "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher" in targets


def test_slurm_launcher_parameters():
    cfg = compose_config("zsm", "train", ["+experiment=vimeo", "hydra/launcher=slurm", "trainer=ddp_multinode",
                                          "hydra.launcher.partition=gpu", "hydra.launcher.account=myproj",
                                          "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4",
                                          "hydra.launcher.constraint=h100", "hydra.launcher.mem_gb=256",
                                          "hydra.launcher.timeout_min=600", "hydra.launcher.array_parallelism=3"],
                         return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert {k: launcher[k] for k in ("partition", "account", "nodes", "gpus_per_node", "constraint", "mem_gb",
                                     "timeout_min", "array_parallelism")} == {
        "partition": "gpu", "account": "myproj", "nodes": 2, "gpus_per_node": 4, "constraint": "h100",
        "mem_gb": 256, "timeout_min": 600, "array_parallelism": 3}
    assert cfg.hydra.launcher.tasks_per_node == 4  # one srun task per GPU
    assert cfg.hydra.launcher.cpus_per_task == 8 and cfg.hydra.launcher.max_num_timeout > 0
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"


def test_multinode_trainer_reads_rank_and_world_size_from_slurm(monkeypatch, tmp_path):
    """Task 5 of 8 (node 1, local rank 1) of a 2-node × 4-task allocation — no process is launched."""
    env = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2", "SLURM_PROCID": "5",
           "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train",
           "SLURM_NODELIST": "gpu[017-018]"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = compose_config("zsm", "train", ["+experiment=vimeo", "trainer=ddp_multinode", "trainer.accelerator=cpu",
                                          "trainer.strategy.process_group_backend=gloo",
                                          f"trainer.default_root_dir={tmp_path}"])
    assert cfg.trainer.devices == 4 and cfg.trainer.num_nodes == 2
    trainer = build_trainer(cfg)
    envr = trainer.strategy.cluster_environment
    assert isinstance(envr, SLURMEnvironment) and envr.auto_requeue
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (8, 5, 1, 1)
    assert (trainer.num_nodes, trainer.num_devices) == (2, 4)
    assert envr.main_address == "gpu017" and envr.job_id() == 4242
    assert not trainer.is_global_zero  # so this task writes nothing


def test_multinode_trainer_outside_slurm_defaults_to_one_node(monkeypatch):
    for k in ("SLURM_NTASKS_PER_NODE", "SLURM_NNODES"):
        monkeypatch.delenv(k, raising=False)
    cfg = compose_config("cajnn", "train", ["trainer=ddp_multinode"])
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (1, 1)


def test_resume_in_place_picks_newest(tmp_path):
    assert resume_in_place(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    assert resume_in_place(tmp_path) == str(last)
    hpc = tmp_path / "hpc_ckpt_2.ckpt"
    hpc.write_bytes(b"x")
    import os

    os.utime(last, (1, 1))
    assert resume_in_place(tmp_path) == str(hpc)


@pytest.mark.slow
def test_requeued_run_resumes_in_its_directory(demo_data, tmp_path):
    """A job restarted in the same run directory (what a SLURM requeue does) continues from its last.ckpt."""
    run_dir = tmp_path / "run"
    args = [*SMOKE, f"hydra.run.dir={run_dir}", "test_after_fit=false"]
    res = run_cli("projects.cajnn.train", [*args, "trainer.max_steps=2"], demo_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli("projects.cajnn.train", [*args, "trainer.max_steps=4"], demo_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming this run directory's checkpoint" in res.stdout + res.stderr
    import torch

    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["optimized_metric"] == "val/psnr" and final["mode"] == "max" and final["global_step"] == 4
    assert final["value"] == pytest.approx(max(final["value"], final["metrics"]["val/psnr"]))


@pytest.mark.slow
def test_submitit_local_sweep_two_processes_and_sweep_table(demo_data, tmp_path, capsys):
    logs = tmp_path / "logs"
    res = run_cli("projects.cajnn.train", ["-m", "hydra/launcher=local", *SMOKE, "model.optimizer.lr=1e-4,3e-4"],
                  demo_data, logs, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (sweep,) = (logs / "cajnn" / "smoke" / "multiruns").iterdir()
    job_ids = [p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    assert len(job_ids) == 2  # two submitit jobs, i.e. two processes
    finals = {}
    for job in ("0", "1"):
        assert (sweep / job / "results.json").is_file() and (sweep / job / "checkpoints" / "last.ckpt").is_file()
        finals[job] = json.loads((sweep / job / "final_metrics.json").read_text())["value"]
    capsys.readouterr()
    assert sweep_table([str(sweep), "--metric", "demo PSNR", "--label", "model.optimizer.lr",
                        "--where", "Method=CAJNN"]) == 0
    out = capsys.readouterr().out
    jobs = (sweep / "sweep_table_jobs.csv").read_text().splitlines()
    assert jobs[0] == "job,model.optimizer.lr,val/psnr,val/ssim"  # only the differing override is a column
    best_first = sorted(finals, key=finals.get, reverse=True)
    assert [line.split(",")[0] for line in jobs[1:]] == best_first
    assert "| 0.0001 | 10 |" in out and "| 0.0003 | 10 |" in out


@pytest.mark.slow
def test_optuna_search_records_best_and_resumes_from_storage(demo_data, tmp_path):
    logs, db = tmp_path / "logs", tmp_path / "study.db"
    args = ["+hparams_search=cajnn_optuna", *SMOKE, "test_after_fit=false", "data.batch_size=choice(2,4)",
            f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.sampler.seed=1"]
    res = run_cli("projects.cajnn.train", [*args, "hydra.sweeper.n_trials=3"], demo_data, logs, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (first,) = (logs / "cajnn" / "smoke" / "multiruns").iterdir()
    best = yaml.safe_load((first / "optimization_results.yaml").read_text())
    values = [json.loads((first / j / "final_metrics.json").read_text())["value"] for j in ("0", "1", "2")]
    assert best["best_value"] == pytest.approx(max(values))
    assert set(best["best_params"]) == {"model.optimizer.lr", "data.batch_size", "model.lr_weight"}
    # the same storage again: the study continues (3 + 2 trials), it does not restart
    res = run_cli("projects.cajnn.train", [*args, "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=2"],
                  demo_data, logs, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    with sqlite3.connect(db) as con:
        studies = con.execute("select study_name from studies").fetchall()
        states = [s for (s,) in con.execute("select state from trials")]
    assert studies == [("cajnn_smoke",)]
    assert states == ["COMPLETE"] * 5
    second = max((logs / "cajnn" / "smoke" / "multiruns").iterdir(), key=lambda p: p.stat().st_mtime)
    assert yaml.safe_load((second / "optimization_results.yaml").read_text())["best_value"] >= best["best_value"]


@pytest.mark.slow
def test_diverged_sweep_point_does_not_end_the_sweep(demo_data, tmp_path):
    logs = tmp_path / "logs"
    res = run_cli("projects.cajnn.train", ["-m", *SMOKE, "model.optimizer.lr=1e30,1e-4", "test_after_fit=false"],
                  demo_data, logs, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("error: loss became")]
    (sweep,) = (logs / "cajnn" / "smoke" / "multiruns").iterdir()
    assert (sweep / "1" / "final_metrics.json").is_file()


FAKE_SBATCH = r'''#!{python}
"""A stand-in for SLURM's sbatch: records the script, then starts each array task of it in the background (with
the SLURM_* variables a task sees), so submitit finds its results and Lightning sees a SLURM job."""
import os, re, shlex, shutil, subprocess, sys
from pathlib import Path

script = Path(sys.argv[-1]).read_text()
log = Path(os.environ["FAKE_SLURM_LOG"])
log.mkdir(parents=True, exist_ok=True)
job_id = str(100 + len(list(log.glob("*.sh"))))
shutil.copy(sys.argv[-1], log / f"{{job_id}}.sh")
flags = dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", script, flags=re.M))
array = flags.get("array")
tasks = range(int(array.split("%")[0].split("-")[1]) + 1) if array else [None]
(line,) = [ln for ln in script.splitlines() if ln.startswith("srun ")]
argv = shlex.split(line)[1:]
while argv[0].startswith("--"):
    argv = argv[2:] if argv[0] in ("--output", "--error") else argv[1:]
print(f"Submitted batch job {{job_id}}", flush=True)
for task in tasks:
    env = dict(os.environ, SLURM_JOB_ID=job_id, SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1", SLURM_NNODES="1",
               SLURM_JOB_NUM_NODES="1", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0",
               SLURM_JOB_NODELIST="localhost", SLURM_NODELIST="localhost", SLURM_JOB_NAME="train",
               SUBMITIT_EXECUTOR="slurm")
    if task is not None:
        env.update(SLURM_ARRAY_JOB_ID=job_id, SLURM_ARRAY_TASK_ID=str(task))
    out = open(log / f"{{job_id}}_{{task}}.out", "w")
    # like SLURM, start the tasks after sbatch has returned (submitit pickles the job once it knows its id)
    subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
'''


@pytest.mark.slow
def test_slurm_launcher_submits_one_job_per_sweep_point(demo_data, tmp_path):
    """The real submitit SLURM code path against stand-in sbatch/srun/sacct: one array task per sweep point, the
    sbatch options from the launcher config, and each task's run sees a SLURM environment."""
    import os
    import sys

    bin_dir, slurm_log = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(python=sys.executable))
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks that it exists
    # every job has finished by the time sbatch returns: a job without results fails the sweep instead of hanging
    (bin_dir / "sacct").write_text("#!/bin/sh\necho 'JobID|State|NodeList'\nfor a in \"$@\"; do case $a in "
                                   "[0-9]*) echo \"$a|COMPLETED|localhost\";; esac; done\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    logs = tmp_path / "logs"
    env_patch = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_LOG": str(slurm_log)}
    old = {k: os.environ.get(k) for k in env_patch}
    os.environ.update(env_patch)
    try:
        res = run_cli("projects.cajnn.train", ["-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug",
                                               "hydra.launcher.account=myproj", "hydra.launcher.gpus_per_node=0",
                                               "hydra.launcher.timeout_min=30", *SMOKE, "test_after_fit=false",
                                               "model.optimizer.lr=1e-4,3e-4"], demo_data, logs, tmp_path,
                      timeout=300)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-2000:]
    (script,) = slurm_log.glob("*.sh")  # one sbatch call: a job array
    text = script.read_text()
    for flag in ("--array=0-1%2", "--partition=debug", "--account=myproj", "--time=30", "--nodes=1",
                 "--ntasks-per-node=1", "--job-name=cajnn-smoke", "--cpus-per-task=8", "--mem=64GB",
                 "--signal=USR2@120"):
        assert f"#SBATCH {flag}\n" in text, (flag, text)
    (sweep,) = (logs / "cajnn" / "smoke" / "multiruns").iterdir()
    lrs = []
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        lrs.append(yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())[-1])
    assert lrs == ["model.optimizer.lr=0.0001", "model.optimizer.lr=0.0003"]
    for task in ("0", "1"):  # each task's Lightning run took its rank from SLURM and armed the requeue handler
        assert "SLURM auto-requeueing enabled" in (slurm_log / f"100_{task}.out").read_text()
