"""HIME through the shared driver: smoke train → Table 5.1-layout results, eval of the checkpoint with 0
references, inference with a reference folder, one-line errors."""

import json

import numpy as np
import pytest
import torch

from shared.io import read_image, write_image
from tests.helpers import run_cli, run_dir_of, train_once

pytestmark = pytest.mark.slow  # spawns processes (~25 s); still part of the default run
SMOKE = ["+experiment=smoke", "callbacks.rich_progress_bar=null"]


def write_people(root, people: int, images: int, seed: int) -> None:
    """Folder-per-identity 32×32 'headshots': one smooth random face per person, shifted and re-lit per photo."""
    import cv2

    rng = np.random.default_rng(seed)
    for p in range(people):
        base = cv2.resize(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), (48, 48), interpolation=cv2.INTER_CUBIC)
        for i in range(images):
            dy, dx = rng.integers(0, 16, 2)
            img = np.clip(base[dy : dy + 32, dx : dx + 32] * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
            write_image(root / f"person{seed}_{p}" / f"{i}.png", img)


@pytest.fixture(scope="module")
def hime_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("himedata")
    write_people(root / "hime_demo" / "train", 3, 4, seed=0)
    write_people(root / "hime_demo" / "eval", 2, 4, seed=1)
    write_people(root / "hime_demo" / "val", 1, 4, seed=2)
    return root


@pytest.fixture(scope="module")
def trained(hime_data, tmp_path_factory):
    return train_once("hime", SMOKE, hime_data, tmp_path_factory.mktemp("himelogs"))


def test_smoke_training_writes_table_5_1_layout(trained):
    run_dir, _ = trained
    (table,) = json.loads((run_dir / "results.json").read_text())
    rows = {r["Methods"]: r for r in table["rows"]}
    assert set(rows) == {"Bicubic", "HIME_rec"}
    ours = rows["HIME_rec"]
    assert ours["test set"] == "demo" and ours["(LR, s)"] == "(8, 4)" and ours["refs"] == 3
    assert 5 < ours["PSNR"] < 60 and 0 < ours["SSIM"] <= 1 and ours["GMACs"] is not None
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4


def test_eval_with_zero_references(trained, hime_data, tmp_path):
    run_dir, _ = trained
    res = run_cli("projects.hime.eval", ["+experiment=smoke", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
                                         "data.eval_refs=0"], hime_data, tmp_path / "logs", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| demo | (8, 4) | HIME_rec |" in res.stdout and "(Table 5.1 layout)" in res.stdout


def test_infer_with_references_and_missing_refs_dir(trained, hime_data, tmp_path):
    run_dir, logs = trained
    ckpt = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    face = sorted((hime_data / "hime_demo" / "eval").glob("*/0.png"))[0]
    small = read_image(face)[::4, ::4]
    write_image(tmp_path / "face.png", small)
    refs = face.parent
    out = tmp_path / "out.png"
    res = run_cli("projects.hime.infer", ["+experiment=smoke", ckpt, f"input={tmp_path / 'face.png'}",
                                          f"refs={refs}", f"output={out}"], hime_data, logs, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert read_image(out).shape == (32, 32, 3)
    res = run_cli("projects.hime.infer", ["+experiment=smoke", ckpt, f"input={tmp_path / 'face.png'}",
                                          f"refs={tmp_path / 'no_refs'}", f"output={tmp_path / 'x.png'}"],
                  hime_data, logs, tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"error: reference path not found: {tmp_path / 'no_refs'}"
    assert not (tmp_path / "x.png").exists()


def test_gan_training_under_two_process_ddp(hime_data, tmp_path):
    """HIME_P (generator + discriminator, manual optimisation) in real 2-process DDP over gloo: both networks
    train, the ranks stay in step, rank 0 alone writes the checkpoint."""
    import torchvision

    feats = torchvision.models.vgg19(weights=None).features[:8]
    vgg = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, vgg)
    logs = tmp_path / "logs"
    res = run_cli("projects.hime.train", [
        *SMOKE, "trainer=ddp_cpu", "name=gan_ddp", "test_after_fit=false", "data.batch_size=2",
        "model.method=HIME_P", "model.loss_weights={rec: 1.0, adv: 0.1, per: 0.01, cor: 0.1}",
        f"model.vgg_weights={vgg}", "model.vgg_layer=conv2_2",
        "+model.discriminator={_target_: projects.hime.model.ResidualDiscriminator, image_size: 32, nf: 8, "
        "max_nf: 16}"], hime_data, logs, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in res.stderr + res.stdout
    run_dir = run_dir_of(logs, "hime", "gan_ddp")
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert any(k.startswith("discriminator.") for k in ckpt["state_dict"])
    assert len(ckpt["optimizer_states"]) == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.suffix == ".ckpt").count("last.ckpt") == 1
