import pytest
import torch

from shared.optim import make_optimizer, make_scheduler


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
    with pytest.raises(ValueError):
        make_scheduler(opt, "linear")
    with pytest.raises(ValueError):
        make_optimizer([a], "rmsprop")
