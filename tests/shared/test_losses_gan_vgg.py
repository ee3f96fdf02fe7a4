import pytest
import torch
import torchvision

from shared.errors import UserError
from shared.losses import VGGPerceptualLoss, ragan_losses


def test_ragan_matches_the_formulas():
    torch.manual_seed(0)
    c_hr, c_sr = torch.randn(6), torch.randn(6)
    d_ra_hr = torch.sigmoid(c_hr - c_sr.mean())  # D_Ra(HR, SR)
    d_ra_sr = torch.sigmoid(c_sr - c_hr.mean())  # D_Ra(SR, HR)
    expect_d = -torch.log(d_ra_hr).mean() - torch.log(1 - d_ra_sr).mean()  # Eq. 5.13
    expect_g = -torch.log(1 - d_ra_hr).mean() - torch.log(d_ra_sr).mean()  # Eq. 5.11
    loss_d, loss_g = ragan_losses(c_hr, c_sr)
    assert loss_d.item() == pytest.approx(expect_d.item(), rel=1e-5)
    assert loss_g.item() == pytest.approx(expect_g.item(), rel=1e-5)
    # stable where the naive formula overflows
    assert torch.isfinite(torch.stack(ragan_losses(torch.full((2,), 200.0), torch.full((2,), -200.0)))).all()


def test_vgg_perceptual_loss_from_a_made_state_dict(tmp_path):
    torch.manual_seed(0)
    full = torchvision.models.vgg19(weights=None).features[:8]  # up to conv2_2, all the test needs
    torch.save({f"features.{k}": v for k, v in full.state_dict().items()}, tmp_path / "vgg.pth")
    loss = VGGPerceptualLoss(str(tmp_path / "vgg.pth"), layer="conv2_2")
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref = (full((x - mean) / std) - full((y - mean) / std)).abs().mean()  # features before the ReLU of conv2_2
    assert loss(x, y).item() == pytest.approx(ref.item(), rel=1e-5)
    assert loss(x, x).item() == 0.0
    assert not any(p.requires_grad for p in loss.parameters())
    with pytest.raises(UserError, match="not found"):
        VGGPerceptualLoss(str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="lack 'features.10.weight'"):
        VGGPerceptualLoss(str(tmp_path / "vgg.pth"), layer="conv3_1")
