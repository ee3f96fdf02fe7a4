"""Aggregation training at scale (chapter 2, Sec. 2.3.1): the multi-column network trained with the A-Softmax on the
L2-normalised, scaled set descriptor (model=multicolumn, head.normalize) against the unscaled formulation (‖V_d‖ ≤ 1,
logits in [−1, 1]) and the plain mean of the same features — on synthetic face features of many identities (the
generator of tests/projects/faceset/test_aggregation.py: a shared "bad quality" direction pulls every set mean
towards it). Prints the final training loss (against ln C), TAR@FAR 1e-3 / 1e-2 on unseen identities, and time.

    python bench/faceset_aggregation.py [--ids 10000] [--dim 128] [--steps 1000] [--test-ids 3000] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from projects.faceset.metrics import tar_at_far
from projects.faceset.model import MarginHead, MeanPool, MultiColumn
from shared.run import compose_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ids", type=int, default=10000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--test-ids", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    D, C, K = args.dim, args.ids, 3
    cfg = compose_config("faceset", "train", ["model=multicolumn"]).model
    g = torch.Generator().manual_seed(0)
    b = F.normalize(torch.randn(D, generator=g), dim=0)
    train_mu = F.normalize(torch.randn(C, D, generator=g), dim=1)
    test_mu = F.normalize(torch.randn(args.test_ids, D, generator=g), dim=1)

    def sets(mu, gen):
        q = torch.rand(len(mu), K, 1, generator=gen)
        return q * mu[:, None] + (1 - q) * b + 0.3 * torch.randn(len(mu), K, D, generator=gen) / math.sqrt(D)

    def tar(aggregate):
        gen = torch.Generator().manual_seed(7)
        x, y = sets(test_mu, gen), sets(test_mu, gen)
        with torch.no_grad():
            s = (F.normalize(aggregate(x), dim=1) @ F.normalize(aggregate(y), dim=1).T).numpy()
        r = tar_at_far(s.ravel(), np.eye(len(test_mu), dtype=bool).ravel(), (1e-3, 1e-2))
        return r[1e-3], r[1e-2]

    print(f"{C} training identities, {args.test_ids} test identities, D = {D}, {args.steps} steps of {args.batch} "
          f"sets, {args.threads} thread(s); ln C = {math.log(C):.3f}\n")
    print("| descriptor | final loss | TAR@FAR 1e-3 | TAR@FAR 1e-2 | train s |\n|---|---|---|---|---|")
    t3, t2 = tar(MeanPool(D))
    print(f"| mean of the features | – | {t3:.3f} | {t2:.3f} | – |")
    for normalize in (True, False):
        torch.manual_seed(0)
        agg = MultiColumn(D, tuple(cfg.net.aggregator.hidden), cfg.net.aggregator.content_context)
        head = MarginHead(D, C, **{**cfg.head, "normalize": normalize})
        o = cfg.optimizer
        opt = torch.optim.SGD([*agg.parameters(), *head.parameters()], lr=o.lr, momentum=o.momentum,
                              weight_decay=o.weight_decay)
        gen = torch.Generator().manual_seed(2)
        losses, t0 = [], time.perf_counter()
        for step in range(args.steps):
            label = torch.randint(0, C, (args.batch,), generator=gen)
            loss = F.cross_entropy(head(agg(sets(train_mu[label], gen)), label, step), label)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        secs = time.perf_counter() - t0
        t3, t2 = tar(agg)
        name = "multi-column, A-Softmax on V_d/‖V_d‖ × s" if normalize else "multi-column, A-Softmax on V_d"
        print(f"| {name} | {np.mean(losses[-50:]):.3f} | {t3:.3f} | {t2:.3f} | {secs:.0f} |")


if __name__ == "__main__":
    main()
