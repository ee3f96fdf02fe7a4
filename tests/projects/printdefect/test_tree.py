"""Miss rate / false alarm (Eq. 1.12–1.13) by hand, the cost matrix as sample weights, and the tree stored as
tensors: a weights_only round trip gives scikit-learn's exact predictions."""

import numpy as np
import pytest
import torch

from projects.printdefect.model import BlockwiseDetector
from projects.printdefect.tree import (
    TreeState,
    confusion,
    cost_matrix,
    false_alarm,
    fit_tree,
    miss_rate,
    sample_weights,
)


def test_rates_by_hand():
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    p = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    c = confusion(y, p)
    assert c == {"TP": 3, "FN": 1, "FP": 2, "TN": 4}
    assert miss_rate(c) == pytest.approx(1 / 4) and false_alarm(c) == pytest.approx(2 / 6)
    assert np.isnan(miss_rate(confusion([0, 0], [1, 0])))


def test_cost_matrix_and_weights():
    c = cost_matrix(3.0, 0.5)
    assert c.tolist() == [[0.0, 0.5], [3.0, 0.0]]       # C(i, j): true i, predicted j
    assert sample_weights(np.array([0, 1, 1]), c).tolist() == [0.5, 3.0, 3.0]


def test_cost_moves_the_decision_like_expected_cost():
    """One feature, one leaf-able split: a leaf with 3 positives and 4 negatives predicts 'defect' iff
    3·cost > 4·1 (minimum expected cost), as the weighted tree does."""
    x = np.array([[0.0]] * 7 + [[1.0]] * 10)
    y = np.array([1, 1, 1, 0, 0, 0, 0] + [0] * 10)
    for cost, expected in ((1.0, 0), (1.2, 0), (1.4, 1), (2.0, 1)):
        clf = fit_tree(x, y, cost=cost, max_depth=1, min_samples_leaf=1)
        assert clf.predict([[0.0]])[0] == expected, cost
    assert fit_tree(x, y, cost=2.0).criterion == "entropy"


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 7)) * [1, 2, 0.5, 30, 5, 3, 1]
    y = ((x[:, 0] + 0.3 * x[:, 3] / 30 + rng.normal(0, 0.5, n)) > 0.8).astype(int)
    return x, y


def test_tensor_tree_round_trip_matches_sklearn(tmp_path):
    x, y = _data()
    clf = fit_tree(x, y, cost=2.0, max_depth=6, min_samples_leaf=3)
    det = BlockwiseDetector()
    det.tree.set_from_sklearn(clf)
    torch.save(det.state_dict(), tmp_path / "det.pt")
    fresh = BlockwiseDetector()
    assert not fresh.tree.fitted
    fresh.load_state_dict(torch.load(tmp_path / "det.pt", weights_only=True), strict=True)
    xt, _ = _data(1000, seed=1)
    xt[:5] = x[:5]                                   # exact training values hit the thresholds' neighbourhoods
    assert np.array_equal(fresh.tree.predict(xt), clf.predict(xt))
    assert np.allclose(fresh.tree.predict_proba(xt), clf.predict_proba(xt))
    assert fresh.tree.left.shape[0] == clf.tree_.node_count


def test_single_class_tree():
    t = TreeState()
    t.set_from_sklearn(fit_tree(np.zeros((4, 7)), np.zeros(4, int)))
    assert t.predict(np.ones((3, 7))).tolist() == [0, 0, 0]
