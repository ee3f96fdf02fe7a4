"""HIME training under manual optimisation (both optimisers step, losses fall), Eq. 5.9 loss sets, correlation
loss k = 1, the Table 5.1 report against independently computed metrics, inference with references."""

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, Dataset

from projects.hime.model import HIME, ResidualDiscriminator
from projects.hime.module import HIMEModule, reference_files
from shared.errors import TrainingDiverged, UserError
from shared.imresize import imresize
from shared.io import read_image, write_image
from shared.losses import CorrelationLoss


class Faces(Dataset):
    """Smooth random 'faces': HR 32×32, LR its 4× average pool, 2 references = shifted copies of the HR."""

    def __init__(self, n: int = 4, n_refs: int = 2, seed: int = 0, nan: bool = False) -> None:
        gen = torch.Generator().manual_seed(seed)
        base = F.interpolate(torch.rand(n, 3, 8, 8, generator=gen), size=(40, 40), mode="bicubic",
                             align_corners=False).clamp(0, 1)
        self.hr = base[..., 4:36, 4:36]
        self.refs = torch.stack([base[..., 4 + d : 36 + d, 4 - d : 36 - d] for d in range(1, n_refs + 1)], 1)
        self.lr = F.avg_pool2d(self.hr, 4)
        if nan:
            self.hr = self.hr * float("nan")

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, i: int) -> dict:
        return {"lr": self.lr[i], "hr": self.hr[i], "refs": self.refs[i]}


def tiny_net() -> HIME:
    return HIME(scale=4, nf=8, lr_blocks=1, hr_blocks=1, rec_blocks=1, deformable_groups=2, offset_blocks=0)


@pytest.fixture(scope="module")
def vgg_path(tmp_path_factory):
    torch.manual_seed(0)
    feats = torchvision.models.vgg19(weights=None).features[:8]
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    return path


def trainer(steps: int) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def hime_p(vgg_path, **kw) -> HIMEModule:
    torch.manual_seed(0)
    return HIMEModule(tiny_net(), ResidualDiscriminator(32, nf=8, max_nf=16), loss_weights={
        "rec": 1.0, "adv": 0.1, "per": 0.01, "cor": 0.1}, vgg_weights=str(vgg_path), vgg_layer="conv2_2",
        optimizer={"lr": 1e-3}, **kw)


def test_generator_and_discriminator_both_update(vgg_path):
    module = hime_p(vgg_path)
    g0 = {k: v.clone() for k, v in module.net.state_dict().items()}
    d0 = {k: v.clone() for k, v in module.discriminator.state_dict().items()}
    trainer(1).fit(module, DataLoader(Faces(), batch_size=2))
    changed_g = [k for k, v in module.net.state_dict().items() if not torch.equal(v, g0[k])]
    changed_d = [k for k, v in module.discriminator.state_dict().items() if not torch.equal(v, d0[k])]
    assert "rec_body.0.conv1.weight" in changed_g and "hr_extractor.conv_first.weight" in changed_g
    assert "from_rgb.0.weight" in changed_d and "head.2.weight" in changed_d
    assert module.trainer.global_step == 1  # one iteration = one step, although two optimisers stepped
    assert "train/loss_d" in module.trainer.logged_metrics
    # only what is trained is checkpointed: the frozen VGG is not in the state dict
    assert not any("vgg" in k or "features" in k for k in module.state_dict())


def test_one_backward_gives_each_network_its_own_gradient(vgg_path):
    """The combined objective's gradients equal ∂L_G/∂G (Eq. 5.9, D fixed) and ∂L_D/∂D (Eq. 5.13, G fixed),
    computed here separately with plain autograd."""
    module = hime_p(vgg_path)
    batch = next(iter(DataLoader(Faces(), batch_size=2)))
    g_params, d_params = list(module.net.parameters()), list(module.discriminator.parameters())
    torch.manual_seed(1)
    total, _ = module.training_losses(batch)
    got = torch.autograd.grad(total, g_params + d_params, allow_unused=True)
    # independent: generator loss through the full graph, gradient w.r.t. G only
    sr = module.net(batch["lr"], batch["refs"])
    real, fake = module.discriminator(batch["hr"]), module.discriminator(sr)
    rec = torch.sqrt((sr - batch["hr"]) ** 2 + 1e-6).mean()
    l_adv = F.softplus(real - fake.mean()).mean() + F.softplus(-(fake - real.mean())).mean()
    l_g = rec + 0.1 * l_adv + 0.01 * module.frozen("vgg")(sr, batch["hr"]) + 0.1 * CorrelationLoss(3)(sr, batch["hr"])
    want_g = torch.autograd.grad(l_g, g_params, retain_graph=True)
    fake_d = module.discriminator(sr.detach())
    l_d = F.softplus(-(real - fake_d.mean())).mean() + F.softplus(fake_d - real.mean()).mean()
    want_d = torch.autograd.grad(l_d, d_params)
    for a, b in zip(got, [*want_g, *want_d], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("gan,lr,factor", [(False, 3e-3, 0.85), (True, 1e-3, 0.97)])
def test_reconstruction_loss_falls_on_a_fixed_batch(vgg_path, gan, lr, factor):
    torch.manual_seed(0)
    module = hime_p(vgg_path) if gan else HIMEModule(tiny_net())
    module.hparams.optimizer = {"lr": lr}
    batch = next(iter(DataLoader(Faces(), batch_size=4)))

    def rec() -> float:
        with torch.no_grad():
            return module.generator_losses(module.net(batch["lr"], batch["refs"]), batch["hr"])["rec"].item()

    before = rec()
    trainer(20).fit(module, DataLoader(Faces(), batch_size=4))
    assert rec() < factor * before


def test_rec_only_has_one_optimizer_and_no_discriminator():
    module = HIMEModule(tiny_net(), ResidualDiscriminator(32, nf=8, max_nf=16), loss_weights={"rec": 1.0})
    assert module.discriminator is None
    assert len(module.configure_optimizers()) == 1
    with pytest.raises(ValueError, match="needs a discriminator"):
        HIMEModule(tiny_net(), None, loss_weights={"adv": 0.1})
    with pytest.raises(ValueError, match="unknown loss terms"):
        HIMEModule(tiny_net(), loss_weights={"style": 1.0})
    no_vgg = HIMEModule(tiny_net(), loss_weights={"per": 0.01}, vgg_weights="/no/vgg.pth")  # eval/infer need none
    with pytest.raises(UserError, match="VGG-19 weights not found"):
        no_vgg.setup("fit")


def test_eq_5_9_weights_the_terms(vgg_path):
    module = hime_p(vgg_path)
    sr, hr = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    t = module.generator_losses(sr, hr)
    assert set(t) == {"rec", "adv", "per", "cor", "loss"}
    expected = 1.0 * t["rec"] + 0.1 * t["adv"] + 0.01 * t["per"] + 0.1 * t["cor"]
    torch.testing.assert_close(t["loss"], expected)
    torch.testing.assert_close(t["rec"], torch.sqrt((sr - hr) ** 2 + 1e-6).mean())


def test_nan_loss_raises_training_diverged():
    module = HIMEModule(tiny_net(), loss_weights={"rec": 1.0})
    with pytest.raises(TrainingDiverged, match="generator loss became nan"):
        trainer(2).fit(module, DataLoader(Faces(nan=True), batch_size=2))


def test_correlation_loss_k1_is_l1_of_channel_energy():
    """k = 1: the map is (1/1²)·Σ_c (x_c − mean_c)², so L_cor = mean |Σ_c x̃_c² − Σ_c ỹ_c²| (Sec. 5.5.5)."""
    gen = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 3, 9, 7, generator=gen), torch.rand(2, 3, 9, 7, generator=gen)
    xn, yn = x.numpy().astype(np.float64), y.numpy().astype(np.float64)
    ex = ((xn - xn.mean(axis=(2, 3), keepdims=True)) ** 2).sum(axis=1)
    ey = ((yn - yn.mean(axis=(2, 3), keepdims=True)) ** 2).sum(axis=1)
    assert CorrelationLoss(k=1)(x, y).item() == pytest.approx(np.abs(ex - ey).mean(), rel=1e-5)


class Named(pl.LightningDataModule):
    test_names = ["faces"]

    def test_dataloader(self):
        return [DataLoader(Faces(3, seed=5), batch_size=1)]


def test_report_table_matches_independent_metrics(tmp_path):
    torch.manual_seed(0)
    module = HIMEModule(tiny_net(), baselines=["bicubic"], save_test_images=2)
    results = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path).test(module, datamodule=Named(), verbose=False)
    strips = sorted((tmp_path / "images").iterdir())
    assert [p.name for p in strips] == ["faces_000.png", "faces_001.png"]
    assert read_image(strips[0]).shape == (32, 5 * 32, 3)  # 2 references | bicubic | HIME | HR
    (table,) = module.report_tables(results)
    rows = {r["Methods"]: r for r in table.rows}
    ds = Faces(3, seed=5)
    psnrs = []
    for i in range(3):
        up = imresize(ds.lr[i : i + 1], 4.0)  # MATLAB bicubic (tests/shared/test_imresize.py), the data's kernel
        a = (up.clamp(0, 1)[0] * 255).round().double()
        b = (ds.hr[i] * 255).round().double()
        psnrs.append(10 * math.log10(255**2 / ((a - b) ** 2).mean().item()))
    assert rows["Bicubic"]["PSNR"] == pytest.approx(np.mean(psnrs), abs=1e-4)
    ours = rows["HIME"]
    assert ours["(LR, s)"] == "(8, 4)" and ours["refs"] == 2 and ours["Params (M)"] == 0.02
    assert ours["GMACs"] is not None and ours["LPIPS"] is None and rows["Bicubic"]["GMACs"] is None
    assert results[0]["test/faces/psnr"] == pytest.approx(ours["PSNR"], abs=1e-4)


def test_infer_with_and_without_references(tmp_path):
    torch.manual_seed(0)
    module = HIMEModule(tiny_net()).eval()
    rng = np.random.default_rng(0)
    write_image(tmp_path / "face.png", rng.integers(0, 255, (10, 12, 3), dtype=np.uint8))
    (tmp_path / "refs").mkdir()
    for i in range(3):
        write_image(tmp_path / "refs" / f"r{i}.jpg", rng.integers(0, 255, (50 + i, 61, 3), dtype=np.uint8))
    with torch.inference_mode():  # noise images hold no face: no MTCNN crop (it would drop every reference)
        module.infer(tmp_path / "face.png", tmp_path / "a.png", refs=str(tmp_path / "refs"), face_crop="never")
        module.infer(tmp_path / "face.png", tmp_path / "b.png", refs=None, face_crop="never")
        module.infer(tmp_path / "face.png", tmp_path / "c.png", face_crop="never",
                     refs=[str(tmp_path / "refs" / "r0.jpg"), str(tmp_path / "refs" / "r1.jpg")])
    a, b = read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png")
    assert a.shape == b.shape == (40, 48, 3) and not np.array_equal(a, b)
    assert len(reference_files(f"{tmp_path / 'refs' / 'r0.jpg'},{tmp_path / 'refs' / 'r2.jpg'}")) == 2
    with pytest.raises(UserError, match="reference path not found"):
        reference_files(str(tmp_path / "nope"))


def test_lpips_column_with_a_configured_backbone(tmp_path):
    torch.manual_seed(0)
    feats = torchvision.models.alexnet(weights=None).features
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, tmp_path / "alexnet.pth")
    module = HIMEModule(tiny_net(), baselines=["bicubic"], lpips_backbone=str(tmp_path / "alexnet.pth"))
    assert not any("lpips" in k for k in module.state_dict())
    results = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False).test(module, datamodule=Named(), verbose=False)
    rows = {r["Methods"]: r for r in module.report_tables(results)[0].rows}
    ds = Faces(3, seed=5)
    up = imresize(ds.lr, 4.0).clamp(0, 1)  # MATLAB bicubic, the data's kernel
    up, hr = (up * 255).round() / 255, (ds.hr * 255).round() / 255
    import lpips

    from shared.metrics import load_lpips

    ref = load_lpips("alex", tmp_path / "alexnet.pth")
    assert isinstance(ref, lpips.LPIPS)
    expected = ref(up * 2 - 1, hr * 2 - 1).flatten().mean().item()
    assert rows["Bicubic"]["LPIPS"] == pytest.approx(expected, rel=1e-4) and rows["HIME"]["LPIPS"] >= 0


class MeanColour(torch.nn.Module):
    """A stand-in face embedder: per-channel means of the two image halves (6-D)."""

    def forward(self, x):
        w = x.shape[-1] // 2
        return torch.cat([x[..., :w].mean((2, 3)), x[..., w:].mean((2, 3))], 1)


def test_identity_distance_column_with_a_configured_embedder():
    torch.manual_seed(0)
    module = HIMEModule(tiny_net(), baselines=["bicubic"], face_embedder=MeanColour())
    assert not any("embedder" in k for k in module.state_dict())
    results = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False).test(module, datamodule=Named(), verbose=False)
    (table,) = module.report_tables(results)
    assert "ID dist." in table.columns
    rows = {r["Methods"]: r for r in table.rows}
    ds = Faces(3, seed=5)
    dists = []
    for i in range(3):
        up = imresize(ds.lr[i : i + 1], 4.0).clamp(0, 1)  # MATLAB bicubic, the data's kernel
        a = ((up[0] * 255).round() / 255).double().numpy()
        b = ((ds.hr[i] * 255).round() / 255).double().numpy()
        ea = np.concatenate([a[:, :, :16].mean((1, 2)), a[:, :, 16:].mean((1, 2))])
        eb = np.concatenate([b[:, :, :16].mean((1, 2)), b[:, :, 16:].mean((1, 2))])
        dists.append(1 - ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb))
    assert rows["Bicubic"]["ID dist."] == pytest.approx(np.mean(dists), abs=1e-6)
    assert 0 <= rows["HIME"]["ID dist."] < 1


def test_init_weights_starts_from_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    trained = tiny_net()
    torch.save(trained.state_dict(), tmp_path / "net.pth")
    torch.save({"state_dict": {f"net.{k}": v for k, v in trained.state_dict().items()}}, tmp_path / "module.ckpt")
    for path in ("net.pth", "module.ckpt"):
        torch.manual_seed(2)
        module = HIMEModule(tiny_net(), init_weights=str(tmp_path / path))
        for k, v in trained.state_dict().items():
            assert torch.equal(module.net.state_dict()[k], v)
    with pytest.raises(UserError, match="checkpoint not found"):
        HIMEModule(tiny_net(), init_weights=str(tmp_path / "missing.pth"))
