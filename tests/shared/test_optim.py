import pytest
import torch

from shared.errors import UserError
from shared.optim import check_optim_config, make_optimizer, make_scheduler


def test_cosine_restarts_matches_torch_reference():
    p = torch.nn.Parameter(torch.zeros(1))
    ours, ref = torch.optim.Adam([p], lr=4e-4), torch.optim.Adam([p], lr=4e-4)
    s1 = make_scheduler(ours, "cosine_restarts", period=10, eta_min=1e-7)["scheduler"]
    s2 = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(ref, T_0=10, eta_min=1e-7)
    for _ in range(25):
        assert ours.param_groups[0]["lr"] == pytest.approx(ref.param_groups[0]["lr"], abs=1e-12)
        ours.step()
        ref.step()
        s1.step()
        s2.step()


def test_warmup_per_group_and_errors():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer([{"params": [a]}, {"params": [b]}], "adam", lr=1.0)
    sched = make_scheduler(opt, None, warmup_steps=[0, 4])["scheduler"]
    seen = []
    for _ in range(5):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert seen == [[1.0, 0.25], [1.0, 0.5], [1.0, 0.75], [1.0, 1.0], [1.0, 1.0]]
    assert make_scheduler(opt, None) is None
    with pytest.raises(UserError, match="unknown scheduler"):
        make_scheduler(opt, "linear")
    with pytest.raises(UserError, match="unknown optimizer"):
        make_optimizer([a], "rmsprop")


@pytest.mark.parametrize("kind,section,message", [
    ("optimizer", {"name": "adamx"}, "model.optimizer.name: unknown optimizer 'adamx'"),
    ("optimizer", {"lr": "fast"}, "model.optimizer.lr must be a number, got 'fast'"),
    ("optimizer", {"lrr": 1e-4}, "unknown key(s) lrr"),
    ("optimizer", {"betas": 0.9}, "model.optimizer.betas must be a list"),
    ("scheduler", {"name": "linear"}, "unknown scheduler 'linear'"),
    ("scheduler", {"period": "long"}, "model.scheduler.period must be a number"),
])
def test_optim_config_mistakes_are_user_errors(kind, section, message):
    with pytest.raises(UserError) as err:
        check_optim_config(f"model.{kind}", section, kind)
    assert message in str(err.value)


def test_optim_config_accepts_the_shipped_sections():
    check_optim_config("o", {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}, "optimizer")
    check_optim_config("s", {"name": "step", "milestones": [10, 20], "gamma": 0.1}, "scheduler")
    check_optim_config("s", {"name": None, "warmup_steps": [0, 4]}, "scheduler")
    check_optim_config("s", {"name": "cosine_restarts", "period": 150000, "eta_min": 1e-7}, "scheduler")
