r"""Zero-shot transfer through a semantic space of class embeddings (issue 17).

Every method here learns, from the *seen* classes only, how features relate to class embeddings
(attribute vectors, or sentence or word vectors of the class names: see
:func:`transferkit.features.label_embeddings.class_name_embeddings`), so that any class, seen or
not, can be recognised from its embedding alone. They share one API in scikit-learn's
conventions::

    model.fit(X_seen, y_seen, S_seen)        # y_seen indexes the rows of S_seen (z, a)
    model.decision_function(X, S_candidates) # (n, k) scores against the k candidate classes
    model.predict(X, S_candidates)           # index into the rows of S_candidates

Candidates are the unseen classes (zero-shot learning) or all classes (generalised zero-shot
learning; scored by :func:`transferkit.metrics.zero_shot.gzsl_scores`).

**ESZSL** (Romera-Paredes & Torr, ICML 2015, "An embarrassingly simple approach to zero-shot
learning"): a bilinear compatibility :math:`f(x, s) = x^\top V s` between a feature :math:`x \in
\mathbb R^d` and a class embedding :math:`s \in \mathbb R^a`, fitted on the seen classes by

.. math::

    \min_V \lVert X V S - Y \rVert_F^2 + \gamma \lVert V S \rVert_F^2 + \lambda \lVert X V \rVert_F^2
    + \gamma\lambda \lVert V \rVert_F^2

with :math:`X \in \mathbb R^{m \times d}` the training features (rows), :math:`S \in \mathbb
R^{a \times z}` the seen classes' embeddings (columns) and :math:`Y \in \{-1, 1\}^{m \times z}`
(1 for the sample's class). Its minimiser has the closed form

.. math:: V = (X^\top X + \gamma I)^{-1} X^\top Y S^\top (S S^\top + \lambda I)^{-1},

and an unseen class set with embeddings :math:`S'` is classified by :math:`\arg\max_k x^\top V s'_k`.

**DeViSE** (Frome et al., NeurIPS 2013, "DeViSE: A deep visual-semantic embedding model"): a
linear map :math:`M \in \mathbb R^{a \times d}` from features into the embedding space, trained with
the hinge rank loss

.. math:: \ell(x, y) = \sum_{j \ne y} \max\bigl(0,\ \text{margin} - e_y^\top M x + e_j^\top M x\bigr)

over the seen classes' unit-norm embeddings :math:`e_j` (margin 0.1 as in the paper); a sample is
assigned the candidate class of largest :math:`e_k^\top M x`.

**ConSE** (Norouzi et al., ICLR 2014, "Zero-shot learning by convex combination of semantic
embeddings"): no map is learned beyond a classifier over the seen classes. With
:math:`p(\hat y_1|x) \ge p(\hat y_2|x) \ge \dots` its sorted probabilities, the image is embedded as

.. math:: f(x) = \frac{1}{Z} \sum_{t=1}^{T} p(\hat y_t | x)\, s(\hat y_t), \qquad
          Z = \sum_{t=1}^{T} p(\hat y_t | x),

and assigned the candidate class of largest cosine similarity :math:`\cos(f(x), s'_k)` (T = 10 in
the paper; all seen classes when there are fewer).
"""

from __future__ import annotations

import numpy as np

from .._validation import check_choice, check_number, check_seed
from ..errors import ConfigError, DataError

__all__ = ["ConSE", "DeViSE", "ESZSL", "conse_embedding", "hinge_rank_loss"]


def _matrix(name: str, a, ndim: int = 2) -> np.ndarray:
    a = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a, dtype=np.float64)
    if a.ndim != ndim or 0 in a.shape or not np.isfinite(a).all():
        raise DataError(f"{name} must be a finite, non-empty {ndim}-D array, got shape {a.shape}.")
    return a


def _labels(y, n: int, n_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"y must be {n} integer class indices (one per row of X), got shape {y.shape}.")
    if (y < 0).any() or (y >= n_classes).any():
        raise DataError(f"y must index the {n_classes} rows of class_embeddings (one embedding per seen class); "
                        f"got values from {y.min()} to {y.max()}: give every class name an embedding.")
    return y.astype(np.int64)


def _unit_rows(E: np.ndarray, name: str = "class_embeddings") -> np.ndarray:
    norms = np.linalg.norm(E, axis=1, keepdims=True)
    if (norms == 0).any():
        raise DataError(f"{name} row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros: a class needs a "
                        "non-zero embedding to be compared by direction.")
    return E / norms


class _ZeroShot:
    """What the three methods share: the checks of fit/predict inputs and ``predict``."""

    def _check_fit(self, X, y, class_embeddings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = _matrix("X", X)
        E = _matrix("class_embeddings", class_embeddings)
        y = _labels(y, len(X), len(E))
        return X, y, E

    def _check_predict(self, X, class_embeddings=None) -> tuple[np.ndarray, np.ndarray | None]:
        name = type(self).__name__
        if not hasattr(self, "embedding_dim_"):
            raise DataError(f"{name} is not fitted; call fit(X, y, class_embeddings) first.")
        X = _matrix("X", X)
        E = None if class_embeddings is None else _matrix("class_embeddings", class_embeddings)
        if X.shape[1] != self.n_features_in_ or (E is not None and E.shape[1] != self.embedding_dim_):
            what = "class probabilities" if getattr(self, "classifier", None) == "precomputed" else "features"
            raise DataError(f"{name} was fitted on {self.n_features_in_}-d {what} and {self.embedding_dim_}-d class "
                            f"embeddings, got {X.shape[1]} and {self.embedding_dim_ if E is None else E.shape[1]}.")
        return X, E

    def predict(self, X, class_embeddings) -> np.ndarray:
        """Index (into the rows of ``class_embeddings``) of the best-scoring class per row of ``X``."""
        return self.decision_function(X, class_embeddings).argmax(1)


class ESZSL(_ZeroShot):
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
        X, y, E = self._check_fit(X, y, class_embeddings)
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
        X, E = self._check_predict(X, class_embeddings)
        return X @ self.V_ @ E.T


def hinge_rank_loss(scores, y, margin: float = 0.1):
    """DeViSE's hinge rank loss, averaged over samples (torch tensors in, a scalar tensor out).

    .. math:: \\frac1n \\sum_i \\sum_{j \\ne y_i} \\max(0,\\ \\text{margin} - s_{i y_i} + s_{ij})

    Parameters
    ----------
    scores : (n, z) tensor
        Similarities :math:`s_{ij} = e_j^\\top M x_i` with the ``z`` classes.
    y : (n,) long tensor
        The true class of each row.
    margin
        The margin (0.1 in Frome et al. 2013).
    """
    import torch

    true = scores.gather(1, y[:, None])
    viol = torch.clamp(margin - true + scores, min=0.0)
    viol = viol.masked_fill(torch.nn.functional.one_hot(y, scores.shape[1]).bool(), 0.0)  # j == y left out
    return viol.sum(1).mean()


class DeViSE(_ZeroShot):
    """DeViSE: a linear map into the class-embedding space trained with the hinge rank loss.

    Parameters
    ----------
    margin
        Hinge margin (0.1, Frome et al. 2013; the embeddings are unit-norm, so it is a margin in
        cosine units times ``||M x||``).
    lr, epochs, batch_size
        Adam (or SGD) step size, passes over the data, rows per step (``None``: full batch).
    optimizer
        ``"adam"`` or ``"sgd"`` (momentum 0.9, as the paper's SGD).
    weight_decay
        L2 penalty on :math:`M`.
    standardize
        Centre and scale the features with the training mean and standard deviation before the
        map (``mean_``, ``scale_``), so that one learning rate and margin suit any backbone.
    seed
        Seeds the initial :math:`M` and the batch order (training is deterministic on CPU).
    device
        Where the map trains.

    Attributes
    ----------
    M_ : (a, d) array
        The map, applied to standardised features: ``scores = ((X - mean_) / scale_) @ M_.T @ E.T``.
    loss_curve_ : list of float
        Mean hinge rank loss per epoch.
    """

    def __init__(self, margin: float = 0.1, lr: float = 1e-3, epochs: int = 100, batch_size: int | None = 128,
                 optimizer: str = "adam", weight_decay: float = 0.0, standardize: bool = True, seed: int = 0,
                 device: str = "cpu"):
        self.margin = margin
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.standardize = standardize
        self.seed = seed
        self.device = device

    def _features(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) / self.scale_

    def fit(self, X, y, class_embeddings) -> DeViSE:
        """``X`` (m, d) features, ``y`` (m,) indices into the rows of ``class_embeddings`` (z >= 2, a)."""
        import torch

        margin = check_number("margin", self.margin, low=0, low_inclusive=False)
        lr = check_number("lr", self.lr, low=0, low_inclusive=False)
        epochs = check_number("epochs", self.epochs, low=1, integer=True)
        bs = None if self.batch_size is None else check_number("batch_size", self.batch_size, low=1, integer=True)
        opt_name = check_choice("optimizer", self.optimizer, ("adam", "sgd"))
        wd = check_number("weight_decay", self.weight_decay, low=0)
        seed = check_seed("seed", self.seed)
        X, y, E = self._check_fit(X, y, class_embeddings)
        if len(E) < 2:
            raise DataError("DeViSE ranks the true class above the others: class_embeddings needs at least 2 seen "
                            f"classes, got {len(E)}.")
        if self.standardize:
            self.mean_, sd = X.mean(0), X.std(0)
            self.scale_ = np.where(sd > 0, sd, 1.0)  # a constant feature stays 0 rather than dividing by 0
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
        gen = torch.Generator().manual_seed(seed)
        d, a = X.shape[1], E.shape[1]
        dev = torch.device(self.device)
        Xt = torch.as_tensor(self._features(X), dtype=torch.float32, device=dev)
        Et = torch.as_tensor(_unit_rows(E), dtype=torch.float32, device=dev)
        yt = torch.as_tensor(y, device=dev)
        M = (torch.randn(a, d, generator=gen) / np.sqrt(d) * 0.1).to(dev).requires_grad_(True)
        opt = (torch.optim.Adam([M], lr=lr, weight_decay=wd) if opt_name == "adam"
               else torch.optim.SGD([M], lr=lr, momentum=0.9, weight_decay=wd))
        n = len(Xt)
        bs = n if bs is None else min(bs, n)
        self.loss_curve_ = []
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).to(dev)
            total = 0.0
            for s in range(0, n, bs):
                idx = order[s : s + bs]
                loss = hinge_rank_loss(Xt[idx] @ M.T @ Et.T, yt[idx], margin)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            self.loss_curve_.append(total / n)
        if not np.isfinite(self.loss_curve_[-1]):
            raise DataError(f"DeViSE training diverged (loss {self.loss_curve_[-1]}); lower lr={lr}.")
        self.M_ = M.detach().cpu().numpy().astype(np.float64)
        self.n_features_in_, self.embedding_dim_ = d, a
        return self

    def embed(self, X) -> np.ndarray:
        """The features mapped into the embedding space, ``(n, a)``."""
        X, _ = self._check_predict(X)
        return self._features(X) @ self.M_.T

    def decision_function(self, X, class_embeddings) -> np.ndarray:
        """Similarities :math:`e_k^\\top M x` (n, k) with the unit-normalised rows of ``class_embeddings``."""
        X, E = self._check_predict(X, class_embeddings)
        return self._features(X) @ self.M_.T @ _unit_rows(E).T

    def loss(self, X, y, class_embeddings) -> float:
        """The hinge rank loss of the fitted map on ``(X, y)`` against ``class_embeddings`` (z, a)."""
        import torch

        X, E = self._check_predict(X, class_embeddings)
        y = _labels(y, len(X), len(E))
        S = torch.as_tensor(self.decision_function(X, E))
        return float(hinge_rank_loss(S, torch.as_tensor(y), check_number("margin", self.margin, low=0)))


def conse_embedding(proba, class_embeddings, top_t: int = 10) -> np.ndarray:
    """ConSE's embedding: the convex combination of the ``top_t`` most probable classes' embeddings.

    Parameters
    ----------
    proba : (n, z) array
        Probabilities (or any non-negative scores) over the ``z`` seen classes.
    class_embeddings : (z, a) array
        The seen classes' embeddings, one row per column of ``proba``.
    top_t
        ``T``; capped at ``z``.

    Returns
    -------
    (n, a) array
        :math:`\\sum_{t \\le T} p(\\hat y_t|x)\\, s(\\hat y_t) / \\sum_{t \\le T} p(\\hat y_t|x)`; ties in
        probability are broken by the lower class index.
    """
    P = _matrix("proba", proba)
    E = _matrix("class_embeddings", class_embeddings)
    T = check_number("top_t", top_t, low=1, integer=True)
    if P.shape[1] != len(E):
        raise DataError(f"proba has {P.shape[1]} columns but class_embeddings has {len(E)} rows; give one "
                        "embedding per seen class, in the classifier's column order.")
    if (P < 0).any():
        raise DataError("proba must be non-negative (class probabilities); apply a softmax to logits first.")
    T = min(T, P.shape[1])
    top = np.argsort(-P, axis=1, kind="stable")[:, :T]
    w = np.take_along_axis(P, top, 1)
    z = w.sum(1, keepdims=True)
    if (z == 0).any():
        raise DataError(f"proba row {int(np.flatnonzero(z[:, 0] == 0)[0])} has zero mass on its top {T} classes; "
                        "ConSE weights the embeddings by the probabilities.")
    return np.einsum("nt,nta->na", w / z, E[top])


class ConSE(_ZeroShot):
    """ConSE: a seen-class classifier's top-T probabilities mix the seen classes' embeddings.

    Parameters
    ----------
    top_t
        ``T``, the number of most probable seen classes combined (10 as in Norouzi et al. 2014;
        all of them when there are fewer).
    classifier
        ``None``: a multinomial logistic regression on the features (``C``, ``max_iter``,
        seeded); a scikit-learn classifier with ``predict_proba`` (cloned, then fitted); or
        ``"precomputed"``: ``X`` given to ``fit`` and ``predict`` already holds the probabilities
        over the seen classes, one column per row of the seen class embeddings.
    C, max_iter
        Of the default logistic regression.
    seed
        ``random_state`` of the classifier when it has one.

    Attributes
    ----------
    classifier_
        The fitted classifier (``None`` with ``"precomputed"``).
    seen_embeddings_ : (z, a) array
        The seen classes' embeddings.
    """

    def __init__(self, top_t: int = 10, classifier=None, C: float = 1.0, max_iter: int = 1000, seed: int = 0):
        self.top_t = top_t
        self.classifier = classifier
        self.C = C
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, X, y, class_embeddings) -> ConSE:
        """``X`` (m, d) features (or (m, z) probabilities), ``y`` (m,) indices into the rows of
        ``class_embeddings`` (z, a)."""
        check_number("top_t", self.top_t, low=1, integer=True)
        seed = check_seed("seed", self.seed)
        X, y, E = self._check_fit(X, y, class_embeddings)
        if isinstance(self.classifier, str):
            check_choice("classifier", self.classifier, ("precomputed",))
            if X.shape[1] != len(E):
                raise DataError(f"classifier='precomputed' takes X as probabilities over the {len(E)} seen classes, "
                                f"got {X.shape[1]} columns.")
            self.classifier_ = None
        else:
            if len(np.unique(y)) < 2:
                raise DataError("ConSE's classifier needs samples of at least 2 seen classes in y.")
            if self.classifier is None:
                from sklearn.linear_model import LogisticRegression

                clf = LogisticRegression(C=check_number("C", self.C, low=0, low_inclusive=False),
                                         max_iter=check_number("max_iter", self.max_iter, low=1, integer=True),
                                         random_state=seed)
            else:
                from sklearn.base import clone

                if not hasattr(self.classifier, "predict_proba"):
                    raise ConfigError(f"classifier={type(self.classifier).__name__} has no predict_proba; ConSE "
                                      "weights the embeddings by class probabilities.")
                clf = clone(self.classifier)
                if "random_state" in clf.get_params():
                    clf.set_params(random_state=seed)
            self.classifier_ = clf.fit(X, y)
        self.seen_embeddings_ = E
        self.n_features_in_, self.embedding_dim_ = X.shape[1], E.shape[1]
        return self

    def predict_proba_seen(self, X) -> np.ndarray:
        """Probabilities over the seen classes (n, z), columns in the order of the fitted embeddings;
        a seen class with no training sample has probability 0."""
        X, _ = self._check_predict(X)
        if self.classifier_ is None:
            return X
        P = np.zeros((len(X), len(self.seen_embeddings_)))
        P[:, np.asarray(self.classifier_.classes_, dtype=np.int64)] = self.classifier_.predict_proba(X)
        return P

    def embed(self, X) -> np.ndarray:
        """ConSE's embedding of each row of ``X`` (n, a): see :func:`conse_embedding`."""
        return conse_embedding(self.predict_proba_seen(X), self.seen_embeddings_, self.top_t)

    def decision_function(self, X, class_embeddings) -> np.ndarray:
        """Cosine similarities (n, k) between the ConSE embeddings and the rows of ``class_embeddings``."""
        X, E = self._check_predict(X, class_embeddings)
        F = self.embed(X)
        F = F / np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-12)
        return F @ _unit_rows(E).T
