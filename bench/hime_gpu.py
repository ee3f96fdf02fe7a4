"""One-shot CUDA check of HIME (not part of the tests): ``python bench/hime_gpu.py``.

Full-size HIME_P at (16, ×8): a few Lightning training steps with both optimisers on random data (a random VGG-19
state dict stands in for the ImageNet weights), that every parameter group moved, the deformable conv's CUDA
backend (torchvision) against the native one inside RFA, and forward times per setting with 3 references.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

from projects.hime.model import HIME, ResidualDiscriminator
from projects.hime.module import HIMEModule


class Dicts(TensorDataset):
    def __getitem__(self, i):
        lr, hr, refs = super().__getitem__(i)
        return {"lr": lr, "hr": hr, "refs": refs}


def main() -> None:
    dev = torch.device("cuda")
    print("device:", torch.cuda.get_device_name(dev))
    with tempfile.TemporaryDirectory() as tmp:
        vgg = Path(tmp) / "vgg19.pth"
        feats = torchvision.models.vgg19(weights=None).features.state_dict()
        torch.save({f"features.{k}": v for k, v in feats.items()}, vgg)
        torch.manual_seed(0)
        module = HIMEModule(HIME(scale=8, offset_blocks=10), ResidualDiscriminator(128),
                            loss_weights={"rec": 1.0, "adv": 0.1, "per": 0.01, "cor": 0.1}, vgg_weights=str(vgg))
        n = 64
        ds = Dicts(torch.rand(n, 3, 16, 16), torch.rand(n, 3, 128, 128), torch.rand(n, 3, 3, 128, 128))
        g0 = {k: v.clone() for k, v in module.net.state_dict().items()}
        d0 = {k: v.clone() for k, v in module.discriminator.state_dict().items()}
        trainer = pl.Trainer(accelerator="gpu", devices=1, max_steps=8, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        t0 = time.perf_counter()
        trainer.fit(module, DataLoader(ds, batch_size=32))
        torch.cuda.synchronize()
        print(f"HIME_P (16, x8) batch 32: 4 G+D steps in {time.perf_counter() - t0:.2f}s (incl. warm-up); "
              f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
        moved_g = sum(not torch.equal(v.cpu(), g0[k]) for k, v in module.net.state_dict().items())
        moved_d = sum(not torch.equal(v.cpu(), d0[k]) for k, v in module.discriminator.state_dict().items())
        print(f"tensors updated: generator {moved_g}/{len(g0)}, discriminator {moved_d}/{len(d0)}")
    net = module.net.to(dev).eval()
    with torch.no_grad():
        for p in net.rfa.dcn.conv_offset_mask.parameters():
            p.normal_(0, 0.05)
        f = torch.randn(6, 32, 16, 16, device=dev)
        g = net.rfa.offset_net(torch.cat([f, f.flip(0)], 1))
        net.rfa.dcn.backend = "torchvision"
        a = net.rfa.dcn(f, g)
        net.rfa.dcn.backend = "native"
        b = net.rfa.dcn(f, g)
        print(f"DCN torchvision vs native max |diff| {(a - b).abs().max().item():.2e}")
        net.rfa.dcn.backend = None
        for lr_size, scale in ((32, 4), (64, 4), (16, 8)):
            m = HIME(scale=scale, offset_blocks=10).to(dev).eval()
            lr = torch.rand(1, 3, lr_size, lr_size, device=dev)
            refs = torch.rand(1, 3, 3, lr_size * scale, lr_size * scale, device=dev)
            for _ in range(5):
                m(lr, refs)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                m(lr, refs)
            torch.cuda.synchronize()
            print(f"forward ({lr_size}, x{scale}) 3 refs: {(time.perf_counter() - t0) / 20 * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
