import random

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from projects.cajnn.model import CAJNN
from shared.imresize import imresize, modcrop
from shared.io import write_image
from shared.ops import ASPP
from shared.sr import SRModule
from shared.srdata import HRCropDataset, HRTestDataset


def tiny(**kw):
    return CAJNN(nf=8, gc=4, n_blocks=1, **kw)


def test_aspp_receptive_field_covers_a_jpeg_block():
    aspp = ASPP(4, (1, 3, 4))
    x = torch.randn(1, 4, 21, 21, requires_grad=True)
    aspp(x)[0, :, 10, 10].sum().backward()
    rows, cols = (x.grad[0].abs().sum(0) > 0).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 >= 9 and cols.max() - cols.min() + 1 >= 9  # ≥ 8×8 block + centre


@pytest.fixture
def photo(tmp_path):
    from skimage import data

    hr = data.astronaut()[100:196, 150:246].copy()  # 96×96: a 96-px training patch has one position
    write_image(tmp_path / "a.png", hr)
    return tmp_path / "a.png", hr


def test_degradation_is_seeded_and_matches_bicubic_plus_jpeg(photo):
    path, hr = photo
    ds = HRCropDataset([path], scale=4, patch=64, jpeg_quality=(10, 100))
    random.seed(3)
    a = ds[0]
    random.seed(3)
    b = ds[0]
    assert all(torch.equal(a[k], b[k]) for k in ("lr", "hr", "lr_clean")) and a["quality"] == b["quality"]
    # no crop freedom, no augmentation, one quality: LR = JPEG_q(MATLAB bicubic ×1/4 of HR), made here by hand
    item = HRCropDataset([path], scale=4, patch=96, jpeg_quality=(30, 30), augment=False)[0]
    assert np.array_equal((item["hr"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), hr)
    lr_clean = imresize(hr, 0.25)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(lr_clean, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 30])
    lr_jpeg = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    got = (item["lr"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(got, lr_jpeg)
    assert np.array_equal((item["lr_clean"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), lr_clean)


def matlab_bicubic_up_loop(img: np.ndarray, s: int) -> np.ndarray:
    """MATLAB imresize(img, s, 'bicubic') for an integer upscale, one output pixel at a time: Keys cubic (a = -0.5)
    at u = x/s + (1 - 1/s)/2 (1-based), taps floor(u - 2) + 0…5, symmetric mirroring at the borders."""

    def cubic(t):
        t = abs(t)
        return 1.5 * t**3 - 2.5 * t**2 + 1 if t <= 1 else (-0.5 * t**3 + 2.5 * t**2 - 4 * t + 2 if t <= 2 else 0.0)

    def mirror(i, n):  # 1-based index → 1-based index inside 1..n (MATLAB's symmetric padding)
        while i < 1 or i > n:
            i = 1 - i if i < 1 else 2 * n + 1 - i
        return i

    def axis(n):
        rows = []
        for x in range(1, n * s + 1):
            u = x / s + 0.5 * (1 - 1 / s)
            taps = [int(np.floor(u - 2)) + k for k in range(6)]
            w = np.array([cubic(u - t) for t in taps])
            rows.append([(mirror(t, n) - 1, wt / w.sum()) for t, wt in zip(taps, w)])
        return rows

    h, w = img.shape[:2]
    tmp = np.zeros((h * s, w, img.shape[2]))
    for y, taps in enumerate(axis(h)):  # MATLAB resizes rows (H) first, then columns
        tmp[y] = sum(wt * img[i] for i, wt in taps)
    out = np.zeros((h * s, w * s, img.shape[2]))
    for x, taps in enumerate(axis(w)):
        out[:, x] = sum(wt * tmp[:, i] for i, wt in taps)
    return out


def test_bicubic_baseline_psnr_matches_independent_computation(photo, tmp_path):
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    path, hr = photo
    ds = HRTestDataset([path], 4, quality=20, name="photo")

    class DM(pl.LightningDataModule):
        test_names = ["photo_q20"]

        def test_dataloader(self):
            return DataLoader(ds, batch_size=1)

    mod = SRModule(tiny(), scale=4, method="tiny", baselines=["bicubic"])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         default_root_dir=tmp_path)
    trainer.test(mod, datamodule=DM(), verbose=False)
    table = mod.report_tables([])[0]
    bic = next(r for r in table.rows if r["Method"] == "Bicubic")
    # independent: JPEG LR → MATLAB bicubic ×4 by a per-pixel loop → uint8 → Y (BT.601) → crop 4 → skimage PSNR
    item = ds[0]
    up = matlab_bicubic_up_loop(item["lr"].permute(1, 2, 0).double().numpy(), 4)
    up8 = (np.clip(up, 0, 1) * 255).round().astype(np.float64)
    gt = modcrop(hr, 4).astype(np.float64)

    def y(img):
        return 16 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255

    ref = peak_signal_noise_ratio(y(gt)[4:-4, 4:-4], y(up8)[4:-4, 4:-4], data_range=255)
    assert bic["photo PSNR"] == pytest.approx(ref, abs=1e-3)
    assert [r["Method"] for r in table.rows] == ["Bicubic", "tiny"] and table.rows[1]["Runtime (s)"] > 0


def test_training_step_lowers_loss_and_lr_branch_weight():
    torch.manual_seed(0)
    mod = SRModule(tiny(lr_branch=True), lr_weight=16.0, optimizer={"name": "adam", "lr": 1e-3})
    mod.log = mod.log_dict = lambda *a, **k: None
    batch = {"lr": torch.rand(2, 3, 8, 8), "hr": torch.rand(2, 3, 32, 32), "lr_clean": torch.rand(2, 3, 8, 8)}
    aux = mod.net(batch["lr"], return_aux=True)
    expect = (torch.nn.functional.l1_loss(aux["out"], batch["hr"])
              + 16 * torch.nn.functional.l1_loss(aux["lr"], batch["lr_clean"]))
    opt = mod.configure_optimizers()
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = mod.training_step(batch, 0)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    assert losses[0] == pytest.approx(expect.item(), rel=1e-5)
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="lr_branch"):
        SRModule(tiny(), lr_weight=1.0)


@pytest.mark.parametrize("preset", ["table4_4_base", "table4_4_1", "table4_4_2", "table4_4_3", "table4_4_4",
                                    "table4_5_a", "table4_5_b", "table4_5_c"])
def test_ablation_presets_build_and_run(preset):
    from hydra.utils import instantiate

    from shared.run import compose_config

    cfg = compose_config("cajnn", "train", ["+experiment=div2k", f"model={preset}", "model.net.nf=8",
                                            "model.net.gc=4", "model.net.n_blocks=1"])
    mod = instantiate(cfg.model, _convert_="all")
    mod.log = mod.log_dict = lambda *a, **k: None
    batch = {"lr": torch.rand(1, 3, 8, 8), "hr": torch.rand(1, 3, 32, 32), "lr_clean": torch.rand(1, 3, 8, 8)}
    loss = mod.training_step(batch, 0)
    loss.backward()
    assert all(p.grad is not None for p in mod.net.parameters())
