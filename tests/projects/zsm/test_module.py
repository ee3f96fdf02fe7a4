import numpy as np
import pytest
import torch

from projects.zsm.model import ZSM, BicubicBlend
from projects.zsm.module import STVSRMetric, ZSMModule
from shared.errors import TrainingDiverged
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
    m = STVSRMetric()
    m.update(sr, hr, clip, score)
    p = psnr(sr.flatten(0, 1), hr.flatten(0, 1), 0, True)  # frames in order: (0,0) (0,1) (1,0) (1,1) (2,0) (2,1)
    clip0 = p[[0, 1, 3]].mean()  # clip 0: 3 scored frames
    clip1 = p[[4, 5]].mean()
    assert m.compute()["psnr"].item() == pytest.approx(((clip0 + clip1) / 2).item(), abs=1e-4)
    res = m.compute()
    assert res["frames"].item() == 5
    # input positions are even output indices: clip 0 has (0,0), clip 1 has (2,0); interpolated: (0,1), (1,1), (2,1)
    assert res["psnr_input"].item() == pytest.approx(((p[0] + p[4]) / 2).item(), abs=1e-4)
    assert res["psnr_interp"].item() == pytest.approx(((p[[1, 3]].mean() + p[5]) / 2).item(), abs=1e-4)
    p_rgb = psnr(sr.flatten(0, 1), hr.flatten(0, 1), 0, False)
    assert res["psnr_rgb"].item() == pytest.approx(((p_rgb[[0, 1, 3]].mean() + p_rgb[[4, 5]].mean()) / 2).item(),
                                                   abs=1e-4)


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
    opt = opt if isinstance(opt, torch.optim.Optimizer) else opt["optimizer"]
    lrs = sorted(g["lr"] for g in (opt if isinstance(opt, torch.optim.Optimizer) else opt["optimizer"]).param_groups)
    assert lrs == [pytest.approx(1e-4), pytest.approx(4e-4)]
    n_dcn = sum(p.numel() for g in opt.param_groups if g["lr"] == pytest.approx(1e-4) for p in g["params"])
    assert n_dcn == sum(p.numel() for n, p in mod.net.named_parameters() if "conv_offset_mask" in n)


def test_infer_on_frame_folder(tmp_path, zsm_data):
    mod = ZSMModule(tiny()).eval()
    with torch.no_grad():
        mod.infer(zsm_data / "zsm_demo" / "clips" / "drift", tmp_path / "out", max_frames=7)
    outs = sorted((tmp_path / "out").iterdir())
    assert len(outs) == 13  # 7 inputs → 13 frames (windows of 4 sharing one frame)


def test_dcn_warmup_scales_only_offset_convs():
    mod = ZSMModule(tiny(), dcn_warmup_steps=10, optimizer={"name": "adam", "lr": 1e-3}, scheduler={"name": None})
    cfg = mod.configure_optimizers()
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(1e-3), pytest.approx(1e-4)]  # step 0: 1/10
    for _ in range(4):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(1e-3), pytest.approx(5e-4)]


def test_one_training_step_lowers_the_loss():
    torch.manual_seed(0)
    mod = ZSMModule(tiny(), loss_reduction="mean", optimizer={"name": "adam", "lr": 1e-3}, scheduler={"name": None})
    mod.log = mod.log_dict = lambda *a, **k: None
    batch = {"lr": torch.rand(2, 4, 3, 8, 8), "hr": torch.rand(2, 7, 3, 32, 32)}
    opt = mod.configure_optimizers()
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = mod.training_step(batch, 0)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_nan_loss_stops_with_a_clear_message():
    mod = ZSMModule(tiny())
    mod.log = mod.log_dict = lambda *a, **k: None
    batch = {"lr": torch.full((1, 2, 3, 8, 8), float("nan")), "hr": torch.rand(1, 3, 3, 32, 32)}
    with pytest.raises(TrainingDiverged, match="loss became nan at step 0; largest mean"):
        mod.training_step(batch, 0)


def test_tiled_inference_matches_whole_frame():
    x = torch.rand(1, 3, 3, 40, 52)
    mod = ZSMModule(BicubicBlend(), infer_tile=20, infer_tile_overlap=8).eval()
    whole = BicubicBlend()(x)
    tiled = mod._forward_tiled(x)
    assert tiled.shape == whole.shape
    # bicubic reads 2 LR px around a pixel; with 8 px of overlap the blend ignores the outer 8/3 px of each tile
    assert (tiled - whole).abs().max() < 1e-5


def test_windowed_stream_equals_one_pass_and_has_no_seams():
    rng = np.random.default_rng(0)
    frames = (rng.random((9, 12, 16, 3)) * 255).astype(np.uint8)
    mod = ZSMModule(BicubicBlend(), infer_window=4).eval()
    out = np.stack(list(mod.stream(frames)))
    assert out.shape == (17, 48, 64, 3)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255)[None]
    ref = (BicubicBlend()(x)[0].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(out.astype(int) - ref).max() <= 1


def test_bf16_autocast_training_step():
    """trainer.precision=bf16-mixed: the deformable convs sample in fp32 under autocast and gradients flow."""
    torch.manual_seed(0)
    mod = ZSMModule(tiny(), loss_reduction="mean")
    mod.log = mod.log_dict = lambda *a, **k: None
    batch = {"lr": torch.rand(1, 2, 3, 8, 8), "hr": torch.rand(1, 3, 3, 32, 32)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = mod.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for n, p in mod.net.named_parameters() if "conv_offset_mask" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
