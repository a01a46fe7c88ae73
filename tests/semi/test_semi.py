import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_moons
from sklearn.exceptions import DataConversionWarning, NotFittedError

from transferkit.errors import DataError
from transferkit.semi import FixMatchLoss, SelfTrainingClassifier, select_pseudo_labels


def test_select_pseudo_labels_threshold_and_balance():
    P = np.array([[0.95, 0.05], [0.99, 0.01], [0.97, 0.03], [0.08, 0.92], [0.6, 0.4]])
    idx, lab = select_pseudo_labels(P, 0.9, class_balance=False)
    assert idx.tolist() == [0, 1, 2, 3] and lab.tolist() == [0, 0, 0, 1]
    idx, lab = select_pseudo_labels(P, 0.9, class_balance=True)
    assert idx.tolist() == [1, 3] and lab.tolist() == [0, 1]  # one per class, the most confident


def test_self_training_uses_unlabeled_structure():
    """Two moons with 3 labels per class: self-training with a kNN base beats the labeled-only fit."""
    from sklearn.neighbors import KNeighborsClassifier

    X, y_true = make_moons(400, noise=0.08, random_state=0)
    rng = np.random.default_rng(0)
    y = np.full(len(y_true), -1)
    for c in (0, 1):
        y[rng.choice(np.flatnonzero(y_true == c), 3, replace=False)] = c
    base = KNeighborsClassifier(3)
    only = clone(base).fit(X[y >= 0], y[y >= 0]).score(X, y_true)
    st = SelfTrainingClassifier(base, threshold=0.99, max_iter=30, growth=0.1).fit(X, y)
    assert st.score(X, y_true) > only + 0.05
    assert st.n_pseudo_labeled_ > 100 and st.history_


def test_self_training_only_pseudo_labels_target_rows():
    X, y_true = make_moons(100, noise=0.05, random_state=1)
    y = np.where(np.arange(100) < 50, y_true, -1)
    dom = np.where(np.arange(100) < 50, 1, -1)
    dom[60:] = 2  # unlabeled rows marked as a source domain are never pseudo-labeled
    st = SelfTrainingClassifier(threshold=0.5).fit(X, y, sample_domain=dom)
    assert (st.pseudo_labels_[60:] == -1).all()


def test_self_training_errors():
    with pytest.raises(DataError, match="labeled rows"):
        SelfTrainingClassifier().fit(np.zeros((4, 2)), np.full(4, -1))
    with pytest.raises(DataError, match="rows"):
        SelfTrainingClassifier().fit(np.zeros((4, 2)), np.zeros(3))


def test_self_training_follows_the_sklearn_classifier_contract():
    X, y_true = make_moons(60, noise=0.1, random_state=0)
    y = np.where(np.arange(60) < 30, y_true, -1)
    st = SelfTrainingClassifier(threshold=0.6)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        st.predict(X)
    with pytest.raises(NotFittedError):
        st.predict_proba(X)
    st.fit(X, y)
    assert st.n_features_in_ == 2 and st.classes_.tolist() == [0, 1]
    assert st.n_iter_ == len(st.history_) >= 1 and st.n_pseudo_labeled_ > 0
    # a continuous target is refused (it was silently truncated to integers before)
    with pytest.raises(DataError, match=r"Unknown label type 'continuous' for y \(e.g. 0.5\); this is a classifier"):
        SelfTrainingClassifier().fit(X, y_true + 0.5)
    # a 2-D y: one column is raveled with scikit-learn's warning, more are refused in one line
    with pytest.raises(DataError, match=r"y should be a 1d array, got an array of shape \(60, 2\)"):
        SelfTrainingClassifier().fit(X, np.c_[y, y])
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed"):
        col = SelfTrainingClassifier(threshold=0.6).fit(X, y[:, None])
    np.testing.assert_array_equal(col.predict(X), st.predict(X))
    with pytest.raises(DataError, match="X has 1 features, but SelfTrainingClassifier is expecting 2 features"):
        st.predict(X[:, :1])
    with pytest.raises(DataError, match="NaN or infinite"):
        SelfTrainingClassifier().fit(np.r_[X[:-1], [[np.nan, 0]]], y)


def test_self_training_keeps_string_labels():
    X, y_true = make_moons(80, noise=0.05, random_state=2)
    names = np.array(["left", "right"], dtype=object)[y_true]
    y = np.where(np.arange(80) < 20, names, -1)  # object labels, -1 for unlabeled (scikit-learn's rule)
    st = SelfTrainingClassifier(threshold=0.6).fit(X, y)
    assert st.classes_.tolist() == ["left", "right"]
    assert set(st.predict(X)) <= {"left", "right"} and st.n_pseudo_labeled_ > 0
    assert set(st.pseudo_labels_[20:]) <= {"left", "right", -1}


def test_fixmatch_loss_masks_unconfident_and_backpropagates():
    weak = torch.tensor([[10.0, 0.0], [0.1, 0.0]])
    strong = torch.zeros(2, 2, requires_grad=True)
    out = FixMatchLoss(threshold=0.95)(weak, strong)
    assert out["mask_rate"].item() == 0.5
    assert out["loss"].item() == pytest.approx(np.log(2) / 2)
    out["loss"].backward()
    assert strong.grad[1].abs().sum() == 0 and strong.grad[0].abs().sum() > 0
    assert FixMatchLoss()(weak, weak.clone())["loss"].item() < 1e-3
