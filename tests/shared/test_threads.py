"""Intra-op threads per process from the cores it may use (hand counts as the reference)."""

from __future__ import annotations

import pytest
import torch

from shared import run


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.setattr(run.os, "sched_getaffinity", lambda pid: set(range(8)))
    for k in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("processes,workers,on_cpu,expected", [
    (1, 0, True, 8),   # one process: every core
    (2, 0, True, 4),   # two DDP processes on the node share them
    (2, 2, True, 2),   # …and on CPU each one's two loader workers are busy processes too
    (8, 4, True, 1),   # never below one
    (4, 3, False, 2),  # on a GPU the workers do not count against the main process
])
def test_threads_share_the_cores(eight_cores, processes, workers, on_cpu, expected):
    assert run.set_threads(processes, workers, on_cpu) == expected == torch.get_num_threads()


def test_slurm_cpus_per_task_is_per_process(eight_cores, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert run.available_cores() == 3
    assert run.set_threads(processes=4, workers=1) == 2  # 3 cores of this task, not divided again, minus 1 worker


def test_omp_num_threads_wins(eight_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert run.set_threads(processes=2, workers=2) == 5


def test_cgroup_quota_caps_the_cores(eight_cores, monkeypatch, tmp_path):
    real = run.Path

    def fake_path(p, *a):
        return real(tmp_path / "cpu.max") if str(p) == "/sys/fs/cgroup/cpu.max" else real(p, *a)

    (tmp_path / "cpu.max").write_text("250000 100000\n")  # 2.5 CPUs of quota
    monkeypatch.setattr(run, "Path", fake_path)
    assert run.available_cores() == 2
