"""Aggregation training learns at scale (Sec. 2.3.1, Eq. 2.1): on synthetic face features of 1,000 training
identities the multi-column network, trained as configured (model=multicolumn: A-Softmax on the normalised, scaled
descriptor, SGD), gives a set descriptor whose verification TAR@FAR=1e-3 on 1,000 unseen identities beats the plain
mean of the same features — and the old formulation (A-Softmax on the unnormalised descriptor, ‖V_d‖ ≤ 1) cannot
leave the ln(C) loss floor."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from projects.faceset.metrics import tar_at_far
from projects.faceset.model import FaceSetNet, MeanPool, MultiColumn
from projects.faceset.module import FaceSetModule
from shared.run import compose_config
from tests.helpers import torch_threads

D, C, K, BATCH, STEPS = 128, 1000, 3, 256, 500


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield


class Features(nn.Module):
    """The frozen backbone replaced by its output: "images" are already D-d face features."""

    embedding_dim, input_size = D, (112, 96)

    def forward(self, x):
        return x


class SyntheticFaces:
    """Identity c has a unit centre μ_c; a face of quality q ~ U(0, 1) is q·μ_c + (1 − q)·b + noise, with b one
    direction shared by every identity (what blur, occlusion and bad light have in common): the mean of a set is
    pulled towards b for everyone, a quality-weighted mean is not."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.b = F.normalize(torch.randn(D, generator=g), dim=0)
        self.train_mu = F.normalize(torch.randn(C, D, generator=g), dim=1)
        self.test_mu = F.normalize(torch.randn(C, D, generator=g), dim=1)

    def sets(self, mu: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        q = torch.rand(len(mu), K, 1, generator=g)
        return q * mu[:, None] + (1 - q) * self.b + 0.3 * torch.randn(len(mu), K, D, generator=g) / math.sqrt(D)


class Batches(Dataset):
    """Each item one training batch of sets of 3 (labels uniform over the C identities), fixed per index."""

    def __init__(self, faces: SyntheticFaces) -> None:
        self.faces = faces

    def __len__(self) -> int:
        return STEPS

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(1000 + i)
        label = torch.randint(0, C, (BATCH,), generator=g)
        return {"images": self.faces.sets(self.faces.train_mu[label], g), "label": label}


def verification_tar(aggregate, faces: SyntheticFaces) -> float:
    """TAR@FAR=1e-3 of set-vs-set cosine over the 1,000 unseen identities (1,000 genuine, 999,000 impostor pairs)."""
    g = torch.Generator().manual_seed(7)
    a, b = faces.sets(faces.test_mu, g), faces.sets(faces.test_mu, g)
    with torch.no_grad():
        s = (F.normalize(aggregate(a), dim=1) @ F.normalize(aggregate(b), dim=1).T).numpy()
    return tar_at_far(s.ravel(), np.eye(C, dtype=bool).ravel(), (1e-3,))[1e-3]


def train(normalize: bool, faces: SyntheticFaces, tmp_path) -> tuple[FaceSetModule, float]:
    cfg = compose_config("faceset", "train", ["model=multicolumn"]).model
    agg = cfg.net.aggregator
    torch.manual_seed(0)
    net = FaceSetNet(Features(), MultiColumn(D, tuple(agg.hidden), agg.content_context, agg.normalize))
    module = FaceSetModule(net, stage="aggregation", head={**cfg.head, "normalize": normalize}, num_classes=C,
                           optimizer=dict(cfg.optimizer), scheduler=dict(cfg.scheduler), plots=False,
                           save_features=False)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                         default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=DataLoader(Batches(faces), batch_size=None))
    return module, float(np.mean(losses[-50:]))


@pytest.mark.slow
def test_aggregation_learns_at_scale_and_beats_the_mean(tmp_path):
    cfg = compose_config("faceset", "train", ["model=multicolumn"]).model
    assert cfg.head.kind == "asoftmax" and cfg.head.normalize and cfg.optimizer.name == "sgd"
    faces = SyntheticFaces()
    mean_tar = verification_tar(MeanPool(D), faces)
    module, loss = train(True, faces, tmp_path)
    ours = verification_tar(module.net.aggregate, faces)
    old, old_loss = train(False, faces, tmp_path)
    old_tar = verification_tar(old.net.aggregate, faces)
    assert loss < 0.25 * math.log(C)  # the scaled descriptor learns the 1,000 identities
    assert old_loss > 0.75 * math.log(C)  # logits in [−1, 1]: stuck near the ln(C) floor
    assert ours > mean_tar + 0.05 and old_tar < ours, (ours, mean_tar, old_tar)
    # and the quality column learned what it is for: α follows the faces' quality
    g = torch.Generator().manual_seed(3)
    q = torch.rand(512, K, 1, generator=g)
    mu = faces.test_mu[torch.randint(0, C, (512,), generator=g)]
    v = q * mu[:, None] + (1 - q) * faces.b + 0.3 * torch.randn(512, K, D, generator=g) / math.sqrt(D)
    with torch.no_grad():
        alpha, _, _ = module.net.aggregator.weights(v)
    assert np.corrcoef(alpha.numpy().ravel(), q.numpy().ravel())[0, 1] > 0.8
