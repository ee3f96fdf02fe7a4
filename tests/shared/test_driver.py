"""The shared driver end to end, through a real project entry point (CAJNN's tiny smoke experiment)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli, run_dir_of

pytestmark = pytest.mark.slow


def run(args: list[str], data: Path, logs: Path, cwd: Path, module: str = "projects.cajnn.train"):
    return run_cli(module, args, data, logs, cwd)


SMOKE = ["+experiment=smoke", "callbacks.rich_progress_bar=null"]


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    """One smoke training run, started from an unrelated working directory."""
    logs, cwd = tmp_path_factory.mktemp("logs"), tmp_path_factory.mktemp("elsewhere")
    res = run(SMOKE, demo_data, logs, cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = run_dir_of(logs, "cajnn", "smoke")
    return run_dir, logs, cwd, res


def test_train_writes_checkpoints_metrics_and_table(trained):
    run_dir, _, cwd, _ = trained
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(cwd.iterdir()) == []  # nothing written into the working directory
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert any(r.get("val/psnr") for r in rows) and any(r.get("train/loss") for r in rows)
    tables = json.loads((run_dir / "results.json").read_text())
    row = next(r for r in tables[0]["rows"] if r["Method"] == "CAJNN" and r["QF"] == 10)
    assert 10 < row["demo PSNR"] < 40
    assert "| 40 | Bicubic |" in (run_dir / "results.md").read_text()
    hp = (run_dir / "csv" / "hparams.yaml").read_text()
    assert "model/params" in hp and "n_blocks: 2" in hp
    # checkpoints load with weights_only=True and carry the network weights
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and "net.conv_first.weight" in ckpt["state_dict"]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files
    assert (run_dir / "results.md").stat().st_mode & 0o044  # readable by others like any normal file


def test_resume_from_last(trained, demo_data):
    run_dir, logs, cwd, _ = trained
    res = run([*SMOKE, "ckpt_path=last", "trainer.max_steps=6"], demo_data, logs, cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    newest = max((logs / "cajnn" / "smoke" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    assert newest != run_dir
    ckpt = torch.load(newest / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6  # continued from step 4, not restarted
    rows = list(csv.DictReader((newest / "csv" / "metrics.csv").open()))
    steps = sorted({int(r["step"]) for r in rows if r.get("train/loss")})
    assert steps and min(steps) >= 4


def test_eval_and_infer_on_checkpoint(trained, demo_data, tmp_path):
    run_dir, logs, cwd, _ = trained
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    res = run(["model=tiny", "data=demo", "trainer=cpu", f"ckpt_path={ckpt}"], demo_data, logs, cwd,
              "projects.cajnn.eval")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| 10 | CAJNN |" in res.stdout
    out = tmp_path / "sr"
    res = run(["model=tiny", f"ckpt_path={ckpt}", f"input={demo_data / 'demo' / 'val'}", f"output={out}"],
              demo_data, logs, cwd, "projects.cajnn.infer")
    assert res.returncode == 0, res.stderr[-3000:]
    from shared.io import read_image

    assert read_image(out / "camera.png").shape == (1024, 1024, 3)


def test_ddp_cpu_two_processes_and_exact_eval(trained, demo_data):
    """Real 2-process DDP over gloo; distributed eval sees every test image exactly once."""
    run_dir, logs, cwd, _ = trained
    res = run([*SMOKE, "trainer=ddp_cpu", "name=ddp", "data.batch_size=2", "data.val_holdout=2"], demo_data, logs,
              cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in res.stderr + res.stdout
    ddp_dir = run_dir_of(logs, "cajnn", "ddp")
    assert (ddp_dir / "checkpoints" / "last.ckpt").is_file()
    hp = (ddp_dir / "csv" / "hparams.yaml").read_text()  # the global batch 2 = 1 per process × 2 processes
    assert "data/batch_size_global: 2" in hp and "data/batch_size_per_device: 1" in hp and "run/world_size: 2" in hp
    # only rank 0 writes: one best + one last checkpoint, one results table, no per-rank copies
    assert sorted(p.suffix for p in (ddp_dir / "checkpoints").iterdir()) == [".ckpt", ".ckpt"]
    assert [p.name for p in ddp_dir.rglob("results.*")] in (["results.md", "results.json"],
                                                            ["results.json", "results.md"])
    assert [p.name for p in ddp_dir.rglob("final_metrics.json")] == ["final_metrics.json"]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    results = {}
    for trainer in ("cpu", "ddp_cpu"):
        res = run(["model=tiny", "data=demo", f"trainer={trainer}", f"ckpt_path={ckpt}", f"name=eval_{trainer}"],
                  demo_data, logs, cwd, "projects.cajnn.eval")
        assert res.returncode == 0, res.stderr[-3000:]
        d = run_dir_of(logs, "cajnn", f"eval_{trainer}")
        results[trainer] = json.loads((d / "results.json").read_text())[0]["rows"]
    for single, ddp in zip(results["cpu"], results["ddp_cpu"], strict=True):
        assert single["demo PSNR"] == pytest.approx(ddp["demo PSNR"], abs=1e-4)


def test_multirun_sweep_two_jobs(demo_data, tmp_path):
    logs = tmp_path / "logs"
    res = run(["-m", *SMOKE, "model.optimizer.lr=1e-4,5e-4", "trainer.max_steps=2"], demo_data, logs, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (sweep,) = (logs / "cajnn" / "smoke" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    lrs = []
    for j in jobs:
        assert (j / "results.json").is_file() and (j / "checkpoints" / "last.ckpt").is_file()
        lrs.append((j / ".hydra" / "overrides.yaml").read_text())
    assert "lr=0.0001" in lrs[0] and "lr=0.0005" in lrs[1]


@pytest.mark.parametrize(
    "module,args,message",
    [
        ("projects.cajnn.train", ["+experiment=nope"], "Could not find 'experiment/nope'"),
        ("projects.cajnn.train", ["+experiment=smoke", "model.net.context=bogus"], "unknown context module"),
        ("projects.cajnn.train", ["+experiment=smoke", "ckpt_path=/no/such.ckpt"], "checkpoint not found"),
        ("projects.cajnn.train", ["+experiment=smoke", "ckpt_path=last", "name=never"], "no earlier checkpoint"),
        ("projects.cajnn.train", ["+experiment=smoke", "data.train_dirs=[/no/dir]"], "image folder not found"),
        ("projects.cajnn.train", ["+experiment=smoke", "data.batch_size=64"], "fewer than batch_size=64"),
        ("projects.cajnn.eval", ["model=tiny"], "eval needs ckpt_path"),
        ("projects.cajnn.infer", ["model=tiny", "allow_untrained=true", "input=/no/img.png", "output=/tmp/x"],
         "input not found"),
    ],
)
def test_user_errors_one_line_exit_2(module, args, message, demo_data, tmp_path):
    res = run(args, demo_data, tmp_path / "logs", tmp_path, module)
    assert res.returncode == 2, res.stderr[-2000:]
    err_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1 and message in err_lines[0], res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def test_corrupt_checkpoint_is_one_line(demo_data, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    res = run(["model=tiny", "data=demo", f"ckpt_path={bad}"], demo_data, tmp_path / "logs", tmp_path,
              "projects.cajnn.eval")
    assert res.returncode == 2 and "not a PyTorch checkpoint" in res.stderr and "Traceback" not in res.stderr
    wrong = tmp_path / "wrong.ckpt"
    torch.save({"state_dict": {"net.x": torch.zeros(1)}}, wrong)
    res = run(["model=tiny", "data=demo", f"ckpt_path={wrong}"], demo_data, tmp_path / "logs", tmp_path,
              "projects.cajnn.eval")
    assert res.returncode == 2 and "does not fit CAJNN" in res.stderr


@pytest.mark.parametrize("experiment", ["smoke", "div2k"])
def test_cfg_job_prints_composed_config(experiment, demo_data, tmp_path):
    res = run([f"+experiment={experiment}", "--cfg", "job"], demo_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "_target_: projects.cajnn.model.CAJNN" in res.stdout


@pytest.mark.parametrize("logger,expect", [("wandb", "wandb/offline-run-*"), ("tensorboard", "tensorboard/events.*")])
def test_optional_loggers_work_offline(logger, expect, demo_data, tmp_path):
    env_key = os.environ.pop("WANDB_API_KEY", None)
    try:
        res = run([*SMOKE, f"logger={logger}", "trainer.max_steps=2", "test_after_fit=false"], demo_data,
                  tmp_path / "logs", tmp_path)
    finally:
        if env_key:
            os.environ["WANDB_API_KEY"] = env_key
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = run_dir_of(tmp_path / "logs", "cajnn", "smoke")
    assert list(run_dir.glob(expect)), sorted(p.name for p in run_dir.rglob("*"))[:30]
    assert (run_dir / "csv" / "metrics.csv").is_file()  # CSV stays on


@pytest.mark.parametrize("args", [["model.nosuchkey=1"], ["ckpt_path=/no/such.ckpt"]])
def test_config_mistakes_fail_before_the_training_stack_is_imported(args, tmp_path):
    """A mistyped override or a missing checkpoint ends with its one error line without importing torch or
    Lightning (which alone take seconds)."""
    import subprocess
    import sys

    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('loaded:', sorted(m for m in ('torch', 'lightning') if m in sys.modules),"
            " file=sys.stderr))\n"
            f"sys.argv = ['train', *{args!r}]\n"
            "from shared.run import main\n"
            "main('cajnn', 'train')\n")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["LOG_DIR"] = str(tmp_path)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and lines[-1] == "loaded: []", res.stderr[-2000:]
    assert lines[-2].startswith("error: ") and ("nosuchkey" in lines[-2] or "checkpoint not found" in lines[-2])
