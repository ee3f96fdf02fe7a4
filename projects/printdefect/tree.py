"""The cost-sensitive decision tree (Eq. 1.9–1.11) and miss rate / false alarm (Eq. 1.12–1.13).

The tree is scikit-learn's ``DecisionTreeClassifier`` with entropy splits (information gain, Eq. 1.9–1.11). The 2×2
cost matrix C(i, j) — the cost of predicting class j when the true class is i, with C(0,0) = C(1,1) = 0 — enters as
sample weights: every sample of true class i is weighted by its misclassification cost C(i, 1−i). For two classes
this is exact cost-sensitive learning (Elkan 2001): each leaf predicts the class with the larger weighted count,
i.e. class 1 when p₁·C(1,0) > p₀·C(0,1) — the minimum expected cost decision — and the weighted entropy steers the
splits towards the expensive class. The dissertation's "cost" is the miss cost C(1,0) with the false-alarm cost
C(0,1) = 1 (Fig. 1.11; cost = 2 is its chosen operating point).

For checkpoints that load with ``torch.load(weights_only=True)``, a fitted tree is kept as its node arrays
(children, split feature, threshold, weighted class counts) in tensors and evaluated by a vectorised traversal that
reproduces ``DecisionTreeClassifier.predict`` exactly (features are compared as float32, like scikit-learn).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

TREE_BUFFERS = ("left", "right", "feature", "threshold", "value", "fit_x", "fit_y")


def cost_matrix(cost: float, false_alarm_cost: float = 1.0) -> np.ndarray:
    """C(i, j) of Eq. 1.9–1.11's training: rows = true class (0 normal, 1 defect), columns = prediction."""
    return np.array([[0.0, false_alarm_cost], [cost, 0.0]])


def sample_weights(y: np.ndarray, cmat: np.ndarray) -> np.ndarray:
    """Weight of each sample = its misclassification cost C(y, 1−y)."""
    y = np.asarray(y, np.int64)
    return np.where(y == 1, cmat[1, 0], cmat[0, 1]).astype(np.float64)


def fit_tree(x: np.ndarray, y: np.ndarray, cost: float = 2.0, false_alarm_cost: float = 1.0,
             max_depth: int | None = 8, min_samples_leaf: int = 5, random_state: int = 0):
    """An entropy decision tree trained with the 2×2 cost matrix (as sample weights, see the module docstring)."""
    from sklearn.tree import DecisionTreeClassifier

    clf = DecisionTreeClassifier(criterion="entropy", max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                                 random_state=random_state)
    clf.fit(np.asarray(x, np.float64), np.asarray(y, np.int64),
            sample_weight=sample_weights(y, cost_matrix(cost, false_alarm_cost)))
    return clf


def confusion(y: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """TP, FN, FP, TN with class 1 = block with a visible defect."""
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    return {"TP": int((y & pred).sum()), "FN": int((y & ~pred).sum()), "FP": int((~y & pred).sum()),
            "TN": int((~y & ~pred).sum())}


def miss_rate(c: dict[str, int]) -> float:
    """Eq. 1.12: FN / (TP + FN) (NaN without positives)."""
    return c["FN"] / (c["TP"] + c["FN"]) if c["TP"] + c["FN"] else float("nan")


def false_alarm(c: dict[str, int]) -> float:
    """Eq. 1.13: FP / (FP + TN) (NaN without negatives)."""
    return c["FP"] / (c["FP"] + c["TN"]) if c["FP"] + c["TN"] else float("nan")


class TreeState(nn.Module):
    """A fitted binary decision tree held as tensors (buffers), so checkpoints hold only tensors; buffers take the
    checkpoint's shapes on load (the node count depends on the data)."""

    def __init__(self, n_features: int = 7) -> None:
        super().__init__()
        self.register_buffer("left", torch.zeros(0, dtype=torch.long))
        self.register_buffer("right", torch.zeros(0, dtype=torch.long))
        self.register_buffer("feature", torch.zeros(0, dtype=torch.long))
        self.register_buffer("threshold", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("value", torch.zeros(0, 2, dtype=torch.float64))
        # the rows the tree was fitted on (features, labels): lets an evaluation refit it over costs (Fig. 1.11)
        self.register_buffer("fit_x", torch.zeros(0, n_features, dtype=torch.float64))
        self.register_buffer("fit_y", torch.zeros(0, dtype=torch.long))

    @property
    def fitted(self) -> bool:
        return self.left.numel() > 0

    def set_from_sklearn(self, clf) -> None:
        """Copy the node arrays of a fitted ``DecisionTreeClassifier`` (classes 0 and 1)."""
        t = clf.tree_
        value = np.asarray(t.value)[:, 0, :].astype(np.float64)
        if value.shape[1] == 1:  # only one class was seen in training
            full = np.zeros((len(value), 2))
            full[:, int(clf.classes_[0])] = value[:, 0]
            value = full
        arrays = {"left": t.children_left, "right": t.children_right, "feature": t.feature,
                  "threshold": t.threshold, "value": value}
        for name, arr in arrays.items():
            dtype = torch.float64 if name in ("threshold", "value") else torch.long
            setattr(self, name, torch.as_tensor(np.asarray(arr), dtype=dtype).to(self.left.device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in TREE_BUFFERS:  # a fitted tree has its own node count: take the checkpoint's shapes
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device=self.left.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def leaves(self, x: np.ndarray | Tensor) -> np.ndarray:
        """Leaf index of every row of ``x`` (N × n_features), all rows advanced together level by level."""
        if not self.fitted:
            raise RuntimeError("the decision tree has not been fitted")
        xf = torch.as_tensor(np.asarray(x, np.float32)).double()
        left, right = self.left.cpu(), self.right.cpu()
        feat, thr = self.feature.cpu(), self.threshold.cpu()
        node = torch.zeros(len(xf), dtype=torch.long)
        rows = torch.arange(len(xf))
        while True:
            inner = left[node] >= 0
            if not inner.any():
                return node.numpy()
            go_left = xf[rows, feat[node].clamp_min(0)] <= thr[node]
            node = torch.where(inner, torch.where(go_left, left[node], right[node]), node)

    def predict_proba(self, x: np.ndarray | Tensor) -> np.ndarray:
        v = self.value.cpu().numpy()[self.leaves(x)]
        return v / np.maximum(v.sum(1, keepdims=True), 1e-300)

    def predict(self, x: np.ndarray | Tensor) -> np.ndarray:
        return self.value.cpu().numpy()[self.leaves(x)].argmax(1)
