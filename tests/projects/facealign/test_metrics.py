"""NME (Eq. 3.1), STD (Eq. 3.2), SDD (Eq. 3.3), CED/AUC/failure rate and the Fig. 3.3/3.4/3.10 plots."""

import math

import numpy as np
import pytest

from projects.facealign import metrics as M
from projects.facealign.demo_data import template
from shared.errors import UserError


def face(scale=40.0, offset=100.0):
    return template() * scale + offset


def test_nme_by_hand():
    gt = face()
    d = np.hypot(*(gt[36] - gt[45]))
    pred = gt.copy()
    pred[0] += [3.0, 4.0]  # error 5 on one point
    pred[10] += [0.0, -2.0]  # error 2 on another
    assert M.nme(pred, gt) == pytest.approx((5 + 2) / 68 / d)
    pupil = np.hypot(*(gt[36:42].mean(0) - gt[42:48].mean(0)))
    assert M.nme(pred, gt, "pupil") == pytest.approx(7 / 68 / pupil)
    # naive loop over a batch
    rng = np.random.default_rng(0)
    batch_gt = np.stack([face(30 + 5 * i) for i in range(3)])
    batch_pred = batch_gt + rng.normal(size=batch_gt.shape)
    for b in range(3):
        errs = [math.dist(batch_pred[b, i], batch_gt[b, i]) for i in range(68)]
        assert M.nme(batch_pred, batch_gt)[b] == pytest.approx(sum(errs) / 68 / math.dist(batch_gt[b, 36],
                                                                                             batch_gt[b, 45]))
    with pytest.raises(UserError):
        M.nme(pred, gt, "eyes")


def test_std_zero_for_constant_track_and_hand_value():
    gt = face()
    assert np.allclose(M.std_metric(np.repeat(gt[None], 5, 0)), 0, atol=1e-12)
    track = np.repeat(gt[None], 3, 0)
    track[:, 7, 0] += [1.0, 2.0, 6.0]  # mean 3, sample var ((4 + 1 + 9) / 2) = 7
    d = np.hypot(*(gt[36] - gt[45]))
    s = M.std_metric(track)
    assert s[7, 0] == pytest.approx(math.sqrt(7) / d)
    assert s[7, 1] == 0 and s.sum() == pytest.approx(math.sqrt(7) / d)
    assert M.std_metric(track, d=2.0)[7, 0] == pytest.approx(math.sqrt(7) / 2)


def test_std_and_sdd_recover_known_sigma():
    rng = np.random.default_rng(0)
    gt = face()
    d = np.hypot(*(gt[36] - gt[45]))
    sigma = 0.02
    track = gt + rng.normal(0, sigma * d, size=(3000, 68, 2))
    assert M.std_metric(track).mean() == pytest.approx(sigma, rel=0.02)
    # SDD ignores a moving ground truth and a constant bias
    moving = gt + np.linspace(0, 30, 3000)[:, None, None]
    pred = moving + 2.0 + (track - gt)
    s = M.sdd(pred, moving)
    assert s.mean() == pytest.approx(sigma, rel=0.02) and s.std() < 0.1 * sigma
    assert np.allclose(M.sdd(moving + 3.0, moving), 0, atol=1e-12)


def test_sdd_by_hand_with_scale_change():
    gt = np.stack([face(40), face(80)])  # the face doubles in size
    pred = gt.copy()
    pred[0, 3, 1] += 4.0
    pred[1, 3, 1] += 8.0  # the same normalised offset → zero SDD per frame normalisation
    assert M.sdd(pred, gt)[3, 1] == pytest.approx(0.0, abs=1e-12)
    d = np.hypot(*(gt[:, 36] - gt[:, 45]).T)
    dm = d.mean()
    expected = abs(8.0 / dm - 4.0 / dm) / math.sqrt(2)  # sample std of two values a, b = |a − b| / √2
    assert M.sdd(pred, gt, per_frame=False)[3, 1] == pytest.approx(expected)


def test_ced_auc_failure():
    e = np.array([0.01, 0.02, 0.05, 0.09, 0.2])
    assert M.failure_rate(e, 0.08) == pytest.approx(0.4)
    np.testing.assert_allclose(M.ced(e, np.array([0.0, 0.02, 0.1])), [0.0, 0.4, 0.8])
    t = np.linspace(0, 0.08, 200001)
    numeric = np.trapezoid(M.ced(e, t), t) / 0.08
    assert M.auc(e, 0.08) == pytest.approx(numeric, abs=1e-4)
    assert M.auc(np.zeros(3)) == 1.0 and M.auc(np.full(3, 0.5)) == 0.0


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 0.01, size=(30, 68, 2))
    for p in [M.plot_landmark_bars(z, tmp_path / "bars.png"), M.plot_noise_histograms(z, tmp_path / "h.png"),
              M.plot_sdd_bars({"a": z.std(0), "b": 2 * z.std(0)}, tmp_path / "sdd.png"),
              M.plot_ced({"common": rng.random(20) * 0.1}, tmp_path / "ced.png")]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bars.png", "ced.png", "h.png", "sdd.png"]
