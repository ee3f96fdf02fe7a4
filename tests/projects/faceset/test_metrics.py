"""TAR@FAR, LFW accuracy, TPIR@FPIR, Rank-k and CMC against hand-computed values and naive loops."""

from __future__ import annotations

import numpy as np
import pytest

from projects.faceset.metrics import (
    auc,
    closed_set_ranks,
    cmc,
    combine_galleries,
    lfw_accuracy,
    open_set_search,
    pair_scores,
    plot_curves,
    roc,
    similarity_matrix,
    tar_at_far,
)
from shared.errors import UserError

SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
LABELS = np.array([1, 0, 1, 1, 0, 1, 0, 0])


def test_roc_and_tar_at_far_by_hand():
    far, tar, thr = roc(SCORES, LABELS)
    np.testing.assert_allclose(far, [0, 0, .25, .25, .25, .5, .5, .75, 1])
    np.testing.assert_allclose(tar, [0, .25, .25, .5, .75, .75, 1, 1, 1])
    assert thr[0] == np.inf and thr[-1] == 0.2
    assert auc(far, tar) == pytest.approx(12 / 16)  # P(genuine > impostor), counted by hand
    assert tar_at_far(SCORES, LABELS, (0.1, 0.3, 0.5)) == {0.1: 0.25, 0.3: 0.75, 0.5: 1.0}
    assert tar_at_far(SCORES, LABELS, (0.45,), mode="nearest") == {0.45: 0.75}
    with pytest.raises(UserError, match="genuine and impostor"):
        roc(SCORES, np.ones(8))


def test_tar_at_far_against_brute_force_thresholds():
    rng = np.random.default_rng(0)
    labels = rng.random(400) < 0.3
    scores = np.round(rng.normal(labels * 1.0, 1.0), 2)  # rounding makes ties
    pos, neg = scores[labels], scores[~labels]
    for f in (1e-2, 0.05, 0.1, 0.3):
        best = 0.0
        for t in np.unique(scores):
            if (neg >= t).mean() <= f:
                best = max(best, (pos >= t).mean())
        assert tar_at_far(scores, labels, (f,))[f] == pytest.approx(best)
    far, tar, _ = roc(scores, labels)
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert auc(far, tar) == pytest.approx(pairs)


def test_lfw_accuracy_against_a_loop():
    rng = np.random.default_rng(1)
    labels = np.tile(np.r_[np.ones(30), np.zeros(30)], 10).astype(bool)
    scores = np.clip(rng.normal(np.where(labels, 0.5, 0.1), 0.2), -1, 1)
    acc, std, ths = lfw_accuracy(scores, labels)
    grid = np.arange(-1.0, 1.0, 0.005)
    accs = []
    for i in range(10):
        test = np.arange(600)[i * 60:(i + 1) * 60]
        train = np.setdiff1d(np.arange(600), test)
        best_t, best_a = None, -1.0
        for t in grid:
            a = np.mean((scores[train] > t) == labels[train])
            if a > best_a:
                best_t, best_a = t, a
        assert ths[i] == pytest.approx(best_t)
        accs.append(np.mean((scores[test] > best_t) == labels[test]))
    assert acc == pytest.approx(np.mean(accs)) and std == pytest.approx(np.std(accs))
    perfect = np.where(labels, 0.9, -0.9)
    assert lfw_accuracy(perfect, labels)[0] == 1.0


def test_pair_scores_chunked_equals_direct():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(20, 8))
    a, b = rng.integers(0, 20, 1000), rng.integers(0, 20, 1000)
    out = pair_scores(feats, a, None, b, chunk=37)
    n = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    np.testing.assert_allclose(out, [n[i] @ n[j] for i, j in zip(a, b)], atol=1e-5)
    np.testing.assert_allclose(similarity_matrix(feats[:5], feats, chunk=2), n[:5] @ n.T, atol=1e-5)


def test_open_set_search_by_hand():
    sim = np.array([[0.9, 0.5, 0.1],    # subject 10: rank 1, genuine 0.9
                    [0.7, 0.6, 0.2],    # subject 20: rank 2
                    [0.1, 0.2, 0.4],    # subject 30: rank 1, genuine 0.4
                    [0.5, 0.3, 0.2],    # non-mated, top-1 0.5
                    [0.1, 0.35, 0.3]])  # non-mated, top-1 0.35
    res = open_set_search(sim, np.array([10, 20, 30, 99, 98]), np.array([10, 20, 30]), fpirs=(0.1, 0.5, 1.0),
                          max_rank=3)
    assert (res.n_mated, res.n_nonmated) == (3, 2)
    # FPIR 0.1: ⌊0.2⌋ = 0 false alarms allowed → threshold 0.5 (only 0.9 passes); 0.5: one → 0.35; 1.0: all
    assert res.tpir == {0.1: pytest.approx(1 / 3), 0.5: pytest.approx(2 / 3), 1.0: pytest.approx(2 / 3)}
    np.testing.assert_array_equal(res.rank_hits, [2, 3, 3])


def test_two_galleries_are_scored_separately_then_averaged():
    # G1 enrols subjects 1, 2; G2 enrols 3, 4; probes: subjects 1, 2, 3, 4
    sim_g1 = np.array([[0.8, 0.1], [0.3, 0.2], [0.4, 0.1], [0.2, 0.6]])
    sim_g2 = np.array([[0.5, 0.1], [0.1, 0.2], [0.9, 0.3], [0.2, 0.7]])
    probes = np.array([1, 2, 3, 4])
    r1 = open_set_search(sim_g1, probes, np.array([1, 2]), fpirs=(0.5,), max_rank=2)
    r2 = open_set_search(sim_g2, probes, np.array([3, 4]), fpirs=(0.5,), max_rank=2)
    # G1: mated genuine 0.8 (rank 1), 0.2 (rank 2); non-mated top-1 0.4, 0.6 → ⌊1⌋: threshold 0.4 → TPIR 1/2
    # G2: mated 0.9 (rank 1), 0.7 (rank 1); non-mated top-1 0.5, 0.2 → threshold 0.2 → TPIR 2/2
    assert r1.tpir[0.5] == 0.5 and r2.tpir[0.5] == 1.0
    row = combine_galleries([r1, r2], n_probes=4)
    assert row["TPIR@FPIR 0.5"] == 0.75 and row["Rank1"] == 3 / 4
    np.testing.assert_allclose(cmc([r1, r2], 4), [3 / 4, 1.0])


def test_open_set_against_a_naive_loop_with_several_templates_per_subject():
    rng = np.random.default_rng(3)
    gal = rng.integers(0, 8, 20)                # 20 templates of ≤8 subjects
    probes = rng.integers(0, 12, 50)            # some not enrolled
    sim = rng.random((50, 20))
    res = open_set_search(sim, probes, gal, fpirs=(0.1, 0.3), max_rank=5)
    enrolled = set(gal.tolist())
    ranks, genuine, nm_top = [], [], []
    for p in range(50):
        best = {s: max(sim[p, j] for j in range(20) if gal[j] == s) for s in enrolled}
        if probes[p] in enrolled:
            g = best[probes[p]]
            ranks.append(1 + sum(v > g for s, v in best.items() if s != probes[p]))
            genuine.append(g)
        else:
            nm_top.append(max(best.values()))
    for f in (0.1, 0.3):
        allowed = int(np.floor(f * len(nm_top)))
        thr = sorted(nm_top, reverse=True)[allowed]
        assert sum(v > thr for v in nm_top) <= allowed
        expect = np.mean([r == 1 and g > thr for r, g in zip(ranks, genuine)])
        assert res.tpir[f] == pytest.approx(expect)
    np.testing.assert_array_equal(res.rank_hits, [sum(r <= k for r in ranks) for k in range(1, 6)])
    closed = np.array([[0.9, 0.1, 0.2], [0.5, 0.4, 0.1], [0.1, 0.2, 0.3]])  # probe 1's mate is rank 2
    np.testing.assert_allclose(closed_set_ranks(closed, np.arange(3), np.arange(3), 2), [2 / 3, 1.0])


def test_plot_writes_png(tmp_path):
    far, tar, _ = roc(SCORES, LABELS)
    path = plot_curves(tmp_path / "roc.png", {"ours": (far, tar)}, "FAR", "TAR", "ROC", logx=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
