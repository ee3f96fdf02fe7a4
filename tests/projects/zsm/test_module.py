import pytest
import torch

from projects.zsm.model import ZSM
from projects.zsm.module import ClipMeanMetric, ZSMModule
from shared.losses import CharbonnierLoss
from shared.metrics import psnr


def tiny(**kw):
    return ZSM(nf=8, groups=2, front_blocks=1, back_blocks=1, **kw)


def test_clip_mean_is_mean_of_clip_means():
    torch.manual_seed(0)
    hr = torch.rand(3, 2, 3, 16, 16)
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    clip = torch.tensor([0, 0, 1])
    score = torch.tensor([[True, True], [False, True], [True, True]])
    m = ClipMeanMetric()
    m.update(sr, hr, clip, score)
    p = psnr(sr.flatten(0, 1), hr.flatten(0, 1), 0, True)  # frames in order: (0,0) (0,1) (1,0) (1,1) (2,0) (2,1)
    clip0 = p[[0, 1, 3]].mean()  # clip 0: 3 scored frames
    clip1 = p[[4, 5]].mean()
    assert m.compute()["psnr"].item() == pytest.approx(((clip0 + clip1) / 2).item(), abs=1e-4)
    assert m.compute()["frames"].item() == 5


def test_gfi_loss_is_weighted_sum():
    torch.manual_seed(0)
    net = tiny(gfi=True)
    mod = ZSMModule(net, loss_reduction="mean", gfi_weights=(1.0, 0.5, 0.25))
    mod.log = mod.log_dict = lambda *a, **k: None
    batch = {"lr": torch.rand(2, 4, 3, 8, 8), "hr": torch.rand(2, 7, 3, 32, 32), "lr_gt": torch.rand(2, 7, 3, 8, 8)}
    loss = mod.training_step(batch, 0)
    aux = net(batch["lr"], return_aux=True)
    c = CharbonnierLoss(1e-3, "mean")
    expect = (c(aux["out"], batch["hr"]) + 0.5 * c(aux["lr_interp1"], batch["lr_gt"][:, [1, 3, 5]])
              + 0.25 * c(aux["lr_interp2"], batch["lr_gt"][:, [2, 4]]))
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    with pytest.raises(ValueError, match="LR synthesis head"):
        ZSMModule(tiny(), gfi_weights=(1.0, 1.0, 0.0))


def test_flip_test_averages_four_flips():
    torch.manual_seed(0)
    net = tiny().eval()
    mod = ZSMModule(net, flip_test=True)
    x = torch.rand(1, 2, 3, 8, 8)
    with torch.no_grad():
        ref = (net(x) + net(x.flip(-1)).flip(-1) + net(x.flip(-2)).flip(-2) + net(x.flip(-1, -2)).flip(-1, -2)) / 4
        assert torch.allclose(mod._predict(x), ref, atol=1e-6)


def test_dcn_lr_multiplier_groups():
    mod = ZSMModule(tiny(), dcn_lr_mul=0.25, optimizer={"name": "adam", "lr": 4e-4}, scheduler={"name": None})
    opt = mod.configure_optimizers()
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == [pytest.approx(1e-4), pytest.approx(4e-4)]
    n_dcn = sum(p.numel() for g in opt.param_groups if g["lr"] == pytest.approx(1e-4) for p in g["params"])
    assert n_dcn == sum(p.numel() for n, p in mod.net.named_parameters() if "conv_offset_mask" in n)


def test_infer_on_frame_folder(tmp_path, zsm_data):
    mod = ZSMModule(tiny()).eval()
    with torch.no_grad():
        mod.infer(zsm_data / "zsm_demo" / "clips" / "drift", tmp_path / "out", max_frames=7)
    outs = sorted((tmp_path / "out").iterdir())
    assert len(outs) == 13  # 7 inputs → 13 frames (windows of 4 sharing one frame)
