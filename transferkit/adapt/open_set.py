r"""Open-set and universal domain adaptation on cached features: OSBP, OVANet and a thresholded baseline.

The source has ``K`` classes ``0..K-1``; the target may hold classes the source never saw (open
set) and may also lack some of the source's (universal). Every model here predicts one of the
``K`` source classes or "unknown" = index ``K`` (the convention of
:func:`transferkit.metrics.open_set_scores`). All of them train the
:class:`~transferkit.adapt.features.BottleneckClassifier` of the feature-level adapters through
the one :class:`~transferkit.train.Trainer` (:func:`~transferkit.adapt.features.train_feature_adapter`),
with the method's extra loss as a Trainer term; none reads a target label.

Methods
-------
``"osbp"`` (Saito et al., 2018)
    A ``K+1``-way classifier :math:`C` on the features :math:`G(x)`. Source: cross-entropy over
    the ``K+1`` outputs with labels ``0..K-1`` (exactly the Trainer's own classification loss
    on a ``K+1``-wide head). Target: the binary cross-entropy between the "unknown" probability
    :math:`p_{K+1}(x_t)` and :math:`t = 0.5`,

    .. math::

        L_{adv}(x_t) = -\,t \log p_{K+1}(x_t) - (1 - t) \log\big(1 - p_{K+1}(x_t)\big),

    which the classifier minimises and the feature extractor maximises (a gradient reversal
    layer between :math:`G` and :math:`C`): :math:`C` learns a boundary at
    :math:`p_{K+1} = t`, and :math:`G` moves each target sample to one side of it, aligning
    it with the known classes or rejecting it as unknown. Prediction: the argmax of the
    ``K+1`` outputs.
``"ovanet"`` (Saito & Saenko, 2021)
    A closed-set ``K``-way head plus ``K`` one-vs-all binary heads :math:`o_k` (two logits
    each; :math:`p_k^+(x)` the softmax probability that :math:`x` belongs to class :math:`k`).
    Source: cross-entropy of the closed-set head plus the OVA loss with hard-negative mining,
    weighted ``ova_weight`` (0.5, the authors' code)

    .. math::

        L_{ova}(x_s, y_s) = -\log p_{y_s}^+(x_s) - \min_{j \neq y_s} \log\big(1 - p_j^+(x_s)\big),

    (the positive head and the hardest negative head: the one most confident the sample is
    its class). Target: the open-set entropy minimisation, weighted ``entropy_weight`` (0.1,
    the paper's :math:`\lambda`)

    .. math::

        L_{ent}(x_t) = -\frac{1}{K} \sum_k \Big(p_k^+ \log p_k^+ + (1 - p_k^+) \log(1 - p_k^+)\Big),

    which pushes each target sample to be clearly known or clearly unknown for every head.
    Prediction: the closed-set argmax :math:`\hat k`, "unknown" when :math:`p_{\hat k}^+ < 0.5`.
    No threshold is tuned: the source's inter-class margin learned by the OVA heads is the
    decision boundary, so it covers universal adaptation (unknown overlap of label sets).
``"threshold"`` (the baseline of open-set recognition)
    A source-only classifier (no target input at all; checkpoint by the labeled source
    validation loss); "unknown" where the largest softmax probability is below a threshold
    :math:`\tau`. :math:`\tau` is chosen without target labels (nor target inputs): the
    ``1 - known_rate`` quantile of the maximum softmax probability on the held-out labeled
    source rows, so that ``known_rate`` (0.95) of them are kept as known.

Checkpoint selection never reads target labels: ``"last"`` (the default for ``osbp`` and
``ovanet``: the papers train a fixed budget, and the labeled source loss does not see the open-set
objective) or ``"source_val"`` (the labeled source validation loss; the default of
``threshold``).

References
----------
K. Saito, S. Yamamoto, Y. Ushiku, T. Harada. "Open Set Domain Adaptation by Backpropagation." ECCV 2018.
K. Saito, K. Saenko. "OVANet: One-vs-All Network for Universal Domain Adaptation." ICCV 2021.
D. Hendrycks, K. Gimpel. "A Baseline for Detecting Misclassified and Out-of-Distribution Examples in
Neural Networks." ICLR 2017 (the maximum-softmax-probability baseline).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_number
from ..errors import ConfigError, DataError
from ..nn.grl import grad_reverse

__all__ = ["METHODS", "OSBPTerm", "OVATerm", "OpenSetModel", "fit_open_set", "open_entropy", "osbp_adversarial_loss",
           "ova_loss", "ova_positive_prob"]

#: The open-set methods of :func:`fit_open_set`.
METHODS = ("ovanet", "osbp", "threshold")

_EPS = 1e-8


# ---------------------------------------------------------------------------------- losses
def osbp_adversarial_loss(logits_t: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    r"""OSBP's target loss: the mean binary cross-entropy between :math:`p_{K+1}(x_t)` (the softmax
    probability of the last, "unknown" output) and ``t``:
    :math:`-\frac1n\sum_i t \log p_{K+1}(x_i) + (1 - t) \log(1 - p_{K+1}(x_i))`.

    Parameters
    ----------
    logits_t : (n, K+1) tensor
        Classifier outputs on target samples (the last column is "unknown").
    t
        The target probability of "unknown" (0.5 in the paper).
    """
    p = F.softmax(logits_t, dim=1)[:, -1]
    return -(t * torch.log(p + _EPS) + (1 - t) * torch.log(1 - p + _EPS)).mean()


def _ova_view(ova_logits: torch.Tensor) -> torch.Tensor:
    if ova_logits.ndim != 3 or ova_logits.shape[1] != 2:
        raise DataError(f"one-vs-all outputs must have shape (n, 2, K) (negative, positive logits of each class), "
                        f"got {tuple(ova_logits.shape)}.")
    return F.softmax(ova_logits, dim=1)


def ova_positive_prob(ova_logits: torch.Tensor) -> torch.Tensor:
    """:math:`p_k^+(x)`: each one-vs-all head's probability that ``x`` is its class, ``(n, K)``,
    from outputs of shape ``(n, 2, K)`` (index 1 along dim 1 is "positive")."""
    return _ova_view(ova_logits)[:, 1, :]


def ova_loss(ova_logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""OVANet's source loss with hard-negative mining, as ``(positive, negative)`` means:
    :math:`\frac1n\sum_i -\log p^+_{y_i}(x_i)` and
    :math:`\frac1n\sum_i \max_{j \neq y_i} -\log(1 - p^+_j(x_i))`.

    Parameters
    ----------
    ova_logits : (n, 2, K) tensor
        Negative and positive logits of the ``K`` one-vs-all heads.
    labels : (n,) int tensor
        Source classes in ``0..K-1``.
    """
    P = _ova_view(ova_logits)
    onehot = F.one_hot(labels, P.shape[2]).to(P.dtype)
    pos = -(torch.log(P[:, 1, :] + _EPS) * onehot).sum(1).mean()
    # the positive class is masked to 0 (-log of a probability is >= 0, so the max is a negative's)
    neg = (-(torch.log(P[:, 0, :] + _EPS)) * (1 - onehot)).max(1).values.mean()
    return pos, neg


def open_entropy(ova_logits: torch.Tensor) -> torch.Tensor:
    r"""OVANet's open-set entropy: the binary entropy of each one-vs-all head, averaged over the
    ``K`` heads and the batch: :math:`-\frac{1}{nK}\sum_{i,k} \sum_{c \in \{+,-\}} p_{k,c} \log p_{k,c}`."""
    P = _ova_view(ova_logits)
    return -(P * torch.log(P + _EPS)).sum(1).mean()


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # under a DDP/accelerate wrapper


class OSBPTerm(nn.Module):
    """OSBP's adversarial target loss as a :class:`~transferkit.train.Trainer` loss term.

    The target features pass a gradient reversal layer before the model's own ``K+1``-way head
    (read from ``ctx.model``: the term holds no parameter), so one backward pass makes the head
    *minimise* :func:`osbp_adversarial_loss` and the bottleneck *maximise* it.

    Parameters
    ----------
    t
        The target probability of "unknown" (0.5).
    weight
        Weight of the term (1 in the paper); the reversal coefficient is 1.
    """

    def __init__(self, t: float = 0.5, weight: float = 1.0):
        super().__init__()
        self.t = float(check_number("t", t, low=0, high=1, low_inclusive=False, high_inclusive=False))
        self.weight = float(check_number("weight", weight, low=0))

    def forward(self, ctx) -> dict:
        if ctx.target_features is None:
            raise DataError("OSBP needs target batches: train with target=unlabeled_target and a model with "
                            "features() and head().")
        logits = _unwrap(ctx.model).head(grad_reverse(ctx.target_features, 1.0))
        adv = osbp_adversarial_loss(logits, self.t)
        return {"loss": self.weight * adv, "osbp_adv": adv.detach()}


class OVATerm(nn.Module):
    """OVANet's one-vs-all heads and their losses as a :class:`~transferkit.train.Trainer` term.

    Holds the ``K`` binary heads (one ``Linear(bottleneck, 2K)``, viewed ``(n, 2, K)``); the
    loss is ``ova_weight * (pos + neg)`` (:func:`ova_loss`) on the labeled source batch plus
    ``entropy_weight * open_entropy`` on the target batch (when there is one).
    """

    def __init__(self, in_features: int, n_known: int, ova_weight: float = 0.5, entropy_weight: float = 0.1):
        super().__init__()
        self.n_known = int(n_known)
        self.ova = nn.Linear(in_features, 2 * self.n_known)
        self.ova_weight = float(check_number("ova_weight", ova_weight, low=0))
        self.entropy_weight = float(check_number("entropy_weight", entropy_weight, low=0))

    def heads(self, features: torch.Tensor) -> torch.Tensor:
        """``(n, 2, K)`` one-vs-all logits (negative, positive) of ``features``."""
        return self.ova(features).view(len(features), 2, self.n_known)

    def forward(self, ctx) -> dict:
        pos, neg = ova_loss(self.heads(ctx.features), ctx.labels)
        loss = self.ova_weight * (pos + neg)
        out = {"ova_pos": pos.detach(), "ova_neg": neg.detach()}
        if ctx.target_features is not None and self.entropy_weight > 0:
            ent = open_entropy(self.heads(ctx.target_features))
            loss = loss + self.entropy_weight * ent
            out["open_entropy"] = ent.detach()
        return {"loss": loss, **out}


# ---------------------------------------------------------------------------------- the model
class OpenSetModel(nn.Module):
    """A fitted open-set predictor on feature rows: predictions in ``0..K`` (``K`` = unknown).

    Parameters
    ----------
    net
        The trained :class:`~transferkit.adapt.features.BottleneckClassifier` (``K+1`` outputs
        for ``osbp``, ``K`` otherwise).
    method
        ``"ovanet"``, ``"osbp"`` or ``"threshold"``.
    n_known
        ``K``.
    ova
        OVANet's one-vs-all heads (``Linear(bottleneck, 2K)``), else ``None``.
    threshold
        The ``threshold`` method's maximum-softmax threshold :math:`\\tau`.

    The threshold is a buffer, so :meth:`state_dict` holds everything :meth:`predict` needs.
    """

    def __init__(self, net: nn.Module, method: str, n_known: int, ova: nn.Module | None = None,
                 threshold: float = 0.0):
        super().__init__()
        self.net, self.method, self.n_known = net, method, int(n_known)
        self.ova = ova
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    @torch.no_grad()
    def _outputs(self, X):
        was = self.training
        self.eval()
        try:
            dev = next(self.net.parameters()).device
            x = torch.as_tensor(np.asarray(X), dtype=torch.float32, device=dev)
            if x.ndim != 2:
                raise DataError(f"X must be a 2-D array of feature rows, got shape {tuple(x.shape)}.")
            f = self.net.features(x)
            logits = self.net.head(f)
            ova = None if self.ova is None else self.ova(f).view(len(f), 2, self.n_known)
            return logits, ova
        finally:
            self.train(was)

    def predict_proba_known(self, X) -> np.ndarray:
        """``(n, K)`` probabilities over the known classes: the closed-set softmax (``ovanet``,
        ``threshold``), or OSBP's softmax over its first ``K`` outputs renormalised."""
        logits, _ = self._outputs(X)
        return F.softmax(logits[:, :self.n_known], dim=1).cpu().numpy()

    def unknown_score(self, X) -> np.ndarray:
        """``(n,)``, higher = more likely unknown: ``1 - p^+_{\\hat k}`` (``ovanet``, unknown
        above 0.5), :math:`p_{K+1}` (``osbp``) or ``1 - max softmax`` (``threshold``, unknown
        above ``1 - threshold``)."""
        logits, ova = self._outputs(X)
        if self.method == "ovanet":
            k = logits.argmax(1)
            return (1 - ova_positive_prob(ova).gather(1, k[:, None])[:, 0]).cpu().numpy()
        if self.method == "osbp":
            return F.softmax(logits, dim=1)[:, -1].cpu().numpy()
        return (1 - F.softmax(logits, dim=1).max(1).values).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """``(n,)`` classes in ``0..K``, ``K`` meaning unknown (each method's own rule: see the
        module docstring)."""
        logits, ova = self._outputs(X)
        K = self.n_known
        if self.method == "osbp":
            return logits.argmax(1).cpu().numpy()
        k = logits.argmax(1)
        if self.method == "ovanet":
            unknown = ova_positive_prob(ova).gather(1, k[:, None])[:, 0] < 0.5
        else:
            unknown = F.softmax(logits, dim=1).max(1).values < self.threshold
        return torch.where(unknown, torch.full_like(k, K), k).cpu().numpy()

    def predict_proba(self, X) -> np.ndarray:
        """``(n, K+1)`` open-set probabilities ``[(1 - u) p_1, ..., (1 - u) p_K, u]`` with ``u`` the
        unknown probability (OSBP: its own softmax; OVANet: ``1 - p^+_{\\hat k}``; threshold:
        ``1 - max softmax``). Their argmax need not equal :meth:`predict`'s rule (which is each
        method's own), so use :meth:`predict` for decisions."""
        if self.method == "osbp":
            logits, _ = self._outputs(X)
            return F.softmax(logits, dim=1).cpu().numpy()
        p, u = self.predict_proba_known(X), self.unknown_score(X)
        return np.c_[p * (1 - u)[:, None], u]

    @classmethod
    def from_state(cls, state: dict, method: str, n_known: int, dropout: float = 0.5,
                   where: str = "state") -> OpenSetModel:
        """Rebuild a fitted model from its :meth:`state_dict` (shapes read from the tensors)."""
        from .features import BottleneckClassifier

        method = check_choice("method", method, METHODS)
        w, h = state.get("net.bottleneck.0.weight"), state.get("net.head.weight")
        if w is None or h is None:
            raise DataError(f"{where} holds no open-set bottleneck classifier (net.bottleneck.0.weight, "
                            "net.head.weight); the file must come from an open_set run.")
        width = int(h.shape[0])
        if width != n_known + (method == "osbp"):
            raise DataError(f"{where}: its head has {width} outputs, but method={method!r} with {n_known} known "
                            f"classes needs {n_known + (method == 'osbp')}; the file and the config must agree.")
        net = BottleneckClassifier(int(w.shape[1]), width, int(w.shape[0]), dropout)
        ova = nn.Linear(int(w.shape[0]), 2 * n_known) if method == "ovanet" else None
        model = cls(net, method, n_known, ova)
        own = model.state_dict()
        bad = sorted(set(own) ^ set(state)) or [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
        if bad:
            raise DataError(f"{where} does not fit an open-set {method} model ({bad[0]!r} differs); the file and the "
                            "config must come from the same run.")
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        return model.eval()


# ---------------------------------------------------------------------------------- fitting
def _split_source(Xs, ys, fraction: float, seed: int):
    from ..data import stratified_split

    tr, va = stratified_split(ys, [1 - fraction, fraction], seed=seed)
    return Xs[tr], ys[tr], Xs[va], ys[va]


def fit_open_set(
    Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray | None, *, method: str = "ovanet", n_known: int | None = None,
    Xs_val: np.ndarray | None = None, ys_val: np.ndarray | None = None, source_val_fraction: float = 0.2,
    bottleneck: int = 256, dropout: float = 0.5, epochs: int = 30, steps_per_epoch: int | None = None,
    batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 5e-4, selection: str | None = None,
    domain_bn: bool = True, t: float = 0.5, weight: float = 1.0, ova_weight: float = 0.5,
    entropy_weight: float = 0.1, known_rate: float = 0.95, seed: int = 0, device: str = "cpu",
) -> OpenSetModel:
    """Fit an open-set / universal adaptation model on feature rows; no target label is read.

    Parameters
    ----------
    Xs, ys
        Labeled source features ``(n_s, d)`` and classes in ``0..K-1``.
    Xt
        Unlabeled target features ``(n_t, d)`` (its rows may belong to unknown classes). Not
        used by ``threshold`` (may be ``None`` there).
    method
        ``"ovanet"`` (default), ``"osbp"`` or ``"threshold"`` (see the module docstring).
    n_known
        ``K``; default ``max(ys) + 1``.
    Xs_val, ys_val
        Held-out labeled source rows for ``selection="source_val"`` and for the ``threshold``
        calibration; when needed and not given, ``source_val_fraction`` of the source
        (stratified, seeded) is held out.
    bottleneck, dropout, epochs, steps_per_epoch, batch_size, lr, weight_decay
        The bottleneck classifier and its training (as
        :func:`~transferkit.adapt.features.train_feature_adapter`).
    selection
        ``"last"`` or ``"source_val"``; default ``"last"`` for ``osbp``/``ovanet``, ``"source_val"``
        for ``threshold``. Both read no target label.
    domain_bn
        AdaBN for ``osbp``/``ovanet``: the fitted model normalizes with the target training
        rows' BatchNorm statistics. ``threshold`` never uses target inputs.
    t, weight
        OSBP's unknown probability target (0.5) and adversarial weight (1).
    ova_weight, entropy_weight
        OVANet's OVA-loss weight (0.5) and open-set entropy weight (0.1).
    known_rate
        ``threshold``: the fraction of held-out labeled source rows kept as known (0.95).

    Returns
    -------
    OpenSetModel
        In eval mode, with ``history_``, ``best_epoch_`` and ``selection_`` attributes.
    """
    from .features import train_feature_adapter

    method = check_choice("method", method, METHODS)
    Xs = np.ascontiguousarray(Xs, dtype=np.float32)
    ys = np.asarray(ys)
    if Xs.ndim != 2 or ys.shape != (len(Xs),):
        raise DataError(f"Xs must be (n, d) and ys (n,), got {Xs.shape} and {ys.shape}.")
    if not np.issubdtype(ys.dtype, np.integer) or (ys < 0).any():
        raise DataError("ys must hold the source classes as integers 0..K-1 (no unlabeled rows); drop them first.")
    ys = ys.astype(np.int64)
    K = int(ys.max()) + 1 if n_known is None else int(check_number("n_known", n_known, low=1, integer=True))
    if ys.max() >= K:
        raise DataError(f"ys holds class {int(ys.max())} but n_known={K}; the source classes are 0..n_known-1.")
    if K < 2 and method == "ovanet":
        raise ConfigError("method='ovanet' needs n_known >= 2 (its hard negative is another known class).")
    selection = selection or ("source_val" if method == "threshold" else "last")
    check_choice("selection", selection, ("last", "source_val"))
    if method == "ovanet" and selection != "last":
        # the checkpoint callback restores the bottleneck classifier, not the one-vs-all heads
        # that live in the loss term: a restored epoch would pair with the last epoch's heads
        raise ConfigError(f"selection={selection!r} is not available for method='ovanet' (its one-vs-all heads "
                          "are kept from the last epoch); use selection='last'.")
    known_rate = check_number("known_rate", known_rate, low=0, high=1, low_inclusive=False, high_inclusive=False)
    if method != "threshold":
        if Xt is None or len(Xt) == 0:
            raise DataError(f"method={method!r} needs unlabeled target features Xt; use method='threshold' "
                            "for a model that sees no target input.")
        Xt = np.ascontiguousarray(Xt, dtype=np.float32)
        if Xt.ndim != 2 or Xt.shape[1] != Xs.shape[1]:
            raise DataError(f"Xt must be (n, {Xs.shape[1]}) like Xs, got {Xt.shape}.")
    needs_val = selection == "source_val" or method == "threshold"
    if needs_val and (Xs_val is None or ys_val is None):
        Xs, ys, Xs_val, ys_val = _split_source(Xs, ys, source_val_fraction, seed)
    common = dict(Xs_val=Xs_val, ys_val=ys_val, bottleneck=bottleneck, dropout=dropout, epochs=epochs,
                  steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                  selection=selection, seed=seed, device=device)
    ova = None
    threshold = 0.0
    if method == "threshold":
        # source only: no target input at all, so the threshold below is the source model's
        res = train_feature_adapter(Xs, ys, None, num_classes=K, method=None, domain_bn=False, **common)
        net = res["model"]
        with torch.no_grad():
            dev = next(net.parameters()).device
            conf = F.softmax(net(torch.as_tensor(np.asarray(Xs_val, dtype=np.float32), device=dev)), 1)
            conf = conf.max(1).values.cpu().numpy()
        threshold = float(np.quantile(conf, 1 - known_rate))
    elif method == "osbp":
        res = train_feature_adapter(Xs, ys, Xt, num_classes=K + 1, method=None, domain_bn=domain_bn,
                                    terms=[OSBPTerm(t, weight)], **common)
        net = res["model"]
    else:
        torch.manual_seed(seed)  # the one-vs-all heads' initialisation is part of the seeded run
        term = OVATerm(bottleneck, K, ova_weight, entropy_weight)
        res = train_feature_adapter(Xs, ys, Xt, num_classes=K, method=None, domain_bn=domain_bn, terms=[term],
                                    **common)
        net, ova = res["model"], term.ova
    model = OpenSetModel(net, method, K, ova, threshold).eval()
    model.history_ = res["history"]
    model.best_epoch_ = res["best_epoch"]
    model.selection_ = selection
    return model
