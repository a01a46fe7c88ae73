r"""Zero-shot transfer through a semantic space of class embeddings (issue 17, started).

ESZSL (Romera-Paredes & Torr, ICML 2015, "An embarrassingly simple approach to zero-shot
learning"): a bilinear compatibility :math:`f(x, s) = x^\top V s` between a feature :math:`x \in
\mathbb R^d` and a class embedding :math:`s \in \mathbb R^a` (attributes, or the sentence or word
vectors of the class names), fitted on the seen classes by

.. math::

    \min_V \lVert X V S - Y \rVert_F^2 + \gamma \lVert V S \rVert_F^2 + \lambda \lVert X V \rVert_F^2
    + \gamma\lambda \lVert V \rVert_F^2

with :math:`X \in \mathbb R^{m \times d}` the training features (rows), :math:`S \in \mathbb
R^{a \times z}` the seen classes' embeddings (columns) and :math:`Y \in \{-1, 1\}^{m \times z}`
(1 for the sample's class). Its minimiser has the closed form

.. math:: V = (X^\top X + \gamma I)^{-1} X^\top Y S^\top (S S^\top + \lambda I)^{-1},

and an unseen class set with embeddings :math:`S'` is classified by :math:`\arg\max_k x^\top V s'_k`.
"""

from __future__ import annotations

import numpy as np

from .._validation import check_number
from ..errors import DataError

__all__ = ["ESZSL"]


def _matrix(name: str, a, ndim: int = 2) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != ndim or 0 in a.shape or not np.isfinite(a).all():
        raise DataError(f"{name} must be a finite, non-empty {ndim}-D array, got shape {a.shape}.")
    return a


class ESZSL:
    """ESZSL in scikit-learn's conventions: ``fit(X, y, class_embeddings)``, then
    ``predict(X, class_embeddings)`` with the embeddings of any class set (seen or unseen).

    Parameters
    ----------
    gamma, lam
        :math:`\\gamma` (feature-side) and :math:`\\lambda` (embedding-side) regularisers.

    Attributes
    ----------
    V_ : (d, a) array
        The compatibility matrix.
    """

    def __init__(self, gamma: float = 1.0, lam: float = 1.0):
        self.gamma = gamma
        self.lam = lam

    def fit(self, X, y, class_embeddings) -> ESZSL:
        """``X`` (m, d) features, ``y`` (m,) indices into the rows of ``class_embeddings`` (z, a)."""
        g = check_number("gamma", self.gamma, low=0, low_inclusive=False)
        lam = check_number("lam", self.lam, low=0, low_inclusive=False)
        X = _matrix("X", X)
        E = _matrix("class_embeddings", class_embeddings)
        y = np.asarray(y)
        if y.shape != (len(X),) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"y must be {len(X)} integer class indices (one per row of X), got shape {y.shape}.")
        if (y < 0).any() or (y >= len(E)).any():
            raise DataError(f"y must index the {len(E)} rows of class_embeddings (one embedding per seen class); "
                            f"got values from {y.min()} to {y.max()}: give every class name an embedding.")
        Y = -np.ones((len(X), len(E)))
        Y[np.arange(len(X)), y] = 1.0
        S = E.T  # (a, z)
        d, a = X.shape[1], S.shape[0]
        left = np.linalg.solve(X.T @ X + g * np.eye(d), X.T @ Y @ S.T)      # (d, a)
        self.V_ = np.linalg.solve((S @ S.T + lam * np.eye(a)).T, left.T).T   # left @ inv(S S^T + lam I)
        self.n_features_in_, self.embedding_dim_ = d, a
        return self

    def decision_function(self, X, class_embeddings) -> np.ndarray:
        """Compatibilities ``X V S'`` (n, k) with the ``k`` classes of ``class_embeddings`` (k, a)."""
        if not hasattr(self, "V_"):
            raise DataError("ESZSL is not fitted; call fit(X, y, class_embeddings) first.")
        X, E = _matrix("X", X), _matrix("class_embeddings", class_embeddings)
        if X.shape[1] != self.n_features_in_ or E.shape[1] != self.embedding_dim_:
            raise DataError(f"ESZSL was fitted on {self.n_features_in_}-d features and {self.embedding_dim_}-d class "
                            f"embeddings, got {X.shape[1]} and {E.shape[1]}.")
        return X @ self.V_ @ E.T

    def predict(self, X, class_embeddings) -> np.ndarray:
        """Index (into the rows of ``class_embeddings``) of the most compatible class per row."""
        return self.decision_function(X, class_embeddings).argmax(1)
