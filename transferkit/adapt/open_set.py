r"""Open-set and universal domain adaptation on cached features: OSBP, OVANet and a thresholded baseline.

The source has ``K`` classes ``0..K-1``; the target may hold classes the source never saw (open
set) and may also lack some of the source's (universal). Every model here predicts one of the
``K`` source classes or "unknown" = index ``K`` (the convention of
:func:`transferkit.metrics.open_set_scores`). All of them train an :class:`OpenSetNet` (a
bottleneck and a linear head on backbone features, plus OVANet's one-vs-all heads) through the
one :class:`~transferkit.train.Trainer`, with the Trainer's cross-entropy on the labeled source
batch and the method's extra loss as a Trainer term; none reads a target label.

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
``threshold``). The bottleneck's normalisation matters here: see ``norm`` in
:func:`fit_open_set`.

Measured on the shifted Gaussian-blob tasks of ``tests/adapt/test_open_set.py`` (seeds 0-3, mean
H-score; open set / universal): at 30 epochs threshold 0.68 / 0.65, OSBP 0.87 / 0.74, OVANet
0.75 / 0.76. At 100 epochs the margin is gone for OSBP (0.71 / 0.71 against 0.70 / 0.69) and
OVANet is all or nothing per seed (H 1.00, 1.00, 0.14, 0.32 in the open set): the open-set
entropy drives the whole unknown cluster to one side of the 0.5 boundary. Neither paper's
result transfers to a budget without a label-free way to pick it.

References
----------
K. Saito, S. Yamamoto, Y. Ushiku, T. Harada. "Open Set Domain Adaptation by Backpropagation." ECCV 2018.
K. Saito, K. Saenko. "OVANet: One-vs-All Network for Universal Domain Adaptation." ICCV 2021.
D. Hendrycks, K. Gimpel. "A Baseline for Detecting Misclassified and Out-of-Distribution Examples in
Neural Networks." ICLR 2017 (the maximum-softmax-probability baseline).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_number
from ..errors import ConfigError, DataError
from ..nn.grl import grad_reverse

__all__ = ["METHODS", "NORMS", "OSBPTerm", "OVATerm", "OpenSetModel", "OpenSetNet", "fit_open_set", "open_entropy",
           "osbp_adversarial_loss", "ova_loss", "ova_positive_prob"]

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
    """OVANet's losses as a :class:`~transferkit.train.Trainer` term: ``ova_weight * (pos + neg)``
    (:func:`ova_loss`) on the labeled source batch plus ``entropy_weight * open_entropy`` on
    the target batch (when there is one). The one-vs-all heads are the model's own
    (``model.ova_heads``, read from ``ctx.model``), so checkpoints keep them with the rest."""

    def __init__(self, ova_weight: float = 0.5, entropy_weight: float = 0.1):
        super().__init__()
        self.ova_weight = float(check_number("ova_weight", ova_weight, low=0))
        self.entropy_weight = float(check_number("entropy_weight", entropy_weight, low=0))

    def forward(self, ctx) -> dict:
        net = _unwrap(ctx.model)
        pos, neg = ova_loss(net.ova_heads(ctx.features), ctx.labels)
        loss = self.ova_weight * (pos + neg)
        out = {"ova_pos": pos.detach(), "ova_neg": neg.detach()}
        if ctx.target_features is not None and self.entropy_weight > 0:
            ent = open_entropy(net.ova_heads(ctx.target_features))
            loss = loss + self.entropy_weight * ent
            out["open_entropy"] = ent.detach()
        return {"loss": loss, **out}


#: Normalisations of :class:`OpenSetNet`'s bottleneck.
NORMS = ("batch", "pooled")


class OpenSetNet(nn.Module):
    r"""The open-set network on feature rows: a bottleneck, a linear head and (OVANet) the
    one-vs-all heads; ``features(x)`` is the bottleneck output, ``head`` the classifier.

    ``norm="batch"``: ``Linear -> BatchNorm -> ReLU -> Dropout``, the bottleneck of
    :class:`~transferkit.adapt.features.BottleneckClassifier`. The Trainer forwards the source
    and the target batch separately, so in training each domain is normalised with its own
    batch statistics: an implicit moment alignment that assumes both domains hold the same
    classes in the same proportions, which an open-set target breaks. ``norm="pooled"``: no
    batch statistics; the inputs are standardised with the mean and standard deviation of the
    pooled source + target training rows (buffers, fixed before training), then
    ``Linear -> ReLU -> Dropout``; both domains go through the same map, as in the papers,
    which forward one concatenated batch.
    """

    #: What the Trainer's data path needs to know: inputs are rows of features.
    spec = SimpleNamespace(modality="tabular", input_size=None)

    def __init__(self, in_features: int, n_outputs: int, bottleneck: int = 256, dropout: float = 0.5,
                 norm: str = "batch", n_ova: int = 0):
        super().__init__()
        self.norm = check_choice("norm", norm, NORMS)
        layers = [nn.Linear(in_features, bottleneck)]
        if self.norm == "batch":
            layers.append(nn.BatchNorm1d(bottleneck))
        self.bottleneck = nn.Sequential(*layers, nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(bottleneck, n_outputs)
        self.n_ova = int(n_ova)
        self.ova = nn.Linear(bottleneck, 2 * self.n_ova) if self.n_ova else None
        if self.norm == "pooled":
            self.register_buffer("input_mean", torch.zeros(in_features))
            self.register_buffer("input_scale", torch.ones(in_features))

    @torch.no_grad()
    def set_input_statistics(self, X: torch.Tensor) -> None:
        """``norm="pooled"``: standardise inputs with the mean and standard deviation of ``X``."""
        self.input_mean.copy_(X.mean(0))
        self.input_scale.copy_(X.std(0).clamp_min(1e-6))

    @torch.no_grad()
    def set_bn_statistics(self, X: torch.Tensor) -> None:
        """``norm="batch"``: the BatchNorm's running statistics set to those of ``X`` (AdaBN)."""
        lin, bn = self.bottleneck[0], self.bottleneck[1]
        h = lin(X)
        bn.running_mean.copy_(h.mean(0))
        bn.running_var.copy_(h.var(0, unbiased=True) if len(h) > 1 else torch.ones_like(bn.running_var))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "pooled":
            x = (x - self.input_mean) / self.input_scale
        return self.bottleneck(x)

    def ova_heads(self, features: torch.Tensor) -> torch.Tensor:
        """``(n, 2, K)`` one-vs-all logits (negative, positive) of bottleneck ``features``."""
        return self.ova(features).view(len(features), 2, self.n_ova)

    def preprocess(self, X) -> torch.Tensor:
        return torch.as_tensor(np.asarray(X), dtype=torch.float32)

    def move_inputs(self, batch, device):
        return batch.to(device)

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        groups = [("bottleneck", ["bottleneck." + n for n, _ in self.bottleneck.named_parameters()]),
                  ("head", ["head." + n for n, _ in self.head.named_parameters()])]
        if self.ova is not None:
            groups.append(("ova", ["ova." + n for n, _ in self.ova.named_parameters()]))
        return groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------------- the model
class OpenSetModel(nn.Module):
    """A fitted open-set predictor on feature rows: predictions in ``0..K`` (``K`` = unknown).

    Parameters
    ----------
    net
        The trained :class:`OpenSetNet` (``K+1`` outputs for ``osbp``, ``K`` otherwise; with
        the one-vs-all heads for ``ovanet``).
    method
        ``"ovanet"``, ``"osbp"`` or ``"threshold"``.
    n_known
        ``K``.
    threshold
        The ``threshold`` method's maximum-softmax threshold :math:`\\tau`.

    The threshold is a buffer, so :meth:`state_dict` holds everything :meth:`predict` needs.
    """

    def __init__(self, net: OpenSetNet, method: str, n_known: int, threshold: float = 0.0):
        super().__init__()
        self.net, self.method, self.n_known = net, check_choice("method", method, METHODS), int(n_known)
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    @property
    def bottleneck(self) -> nn.Module:
        return self.net.bottleneck

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The network's bottleneck features of input rows ``x`` (a tensor; what the run
        artifacts draw as the adapted features)."""
        return self.net.features(x)

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
            return self.net.head(f), (self.net.ova_heads(f) if self.method == "ovanet" else None)
        finally:
            self.train(was)

    def predict_proba_known(self, X) -> np.ndarray:
        """``(n, K)`` probabilities over the known classes: the closed-set softmax (``ovanet``,
        ``threshold``), or OSBP's softmax over its first ``K`` outputs renormalised."""
        logits, _ = self._outputs(X)
        return F.softmax(logits[:, :self.n_known], dim=1).cpu().numpy()

    def unknown_score(self, X) -> np.ndarray:
        """``(n,)``, higher = more likely unknown: ``1 - p^+_{k}`` of the closed-set argmax ``k``
        (``ovanet``, unknown above 0.5), :math:`p_{K+1}` (``osbp``) or ``1 - max softmax``
        (``threshold``, unknown above ``1 - threshold``)."""
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
        if self.method == "osbp":
            return logits.argmax(1).cpu().numpy()
        k = logits.argmax(1)
        if self.method == "ovanet":
            unknown = ova_positive_prob(ova).gather(1, k[:, None])[:, 0] < 0.5
        else:
            unknown = F.softmax(logits, dim=1).max(1).values < self.threshold
        return torch.where(unknown, torch.full_like(k, self.n_known), k).cpu().numpy()

    def predict_proba(self, X) -> np.ndarray:
        r"""``(n, K+1)`` open-set probabilities whose argmax is :meth:`predict` (the package's
        contract: predictions are the argmax of the outputs, also after ``load_run``).

        OSBP: its own ``K+1``-way softmax. OVANet, with :math:`p` the closed-set softmax,
        :math:`\hat k` its argmax and :math:`u = 1 - p^+_{\hat k}`:
        :math:`[(1-u)\,p_1, \dots, (1-u)\,p_K,\; u\,p_{\hat k}] / Z`; the unknown column beats
        the best known one exactly when :math:`u > 1/2`, the paper's rule. Threshold, with
        :math:`	au` the fitted threshold: :math:`[p_1, \dots, p_K, 	au] / (1 + 	au)`, unknown
        exactly when :math:`\max_k p_k < 	au`. (:meth:`unknown_score` is the raw score.)"""
        logits, ova = self._outputs(X)
        if self.method == "osbp":
            return F.softmax(logits, dim=1).cpu().numpy()
        p = F.softmax(logits[:, :self.n_known], dim=1).double()
        if self.method == "ovanet":
            k = logits[:, :self.n_known].argmax(1)
            u = 1 - ova_positive_prob(ova).gather(1, k[:, None])[:, 0].double()
            out = torch.cat([p * (1 - u)[:, None], (u * p.gather(1, k[:, None])[:, 0])[:, None]], 1)
        else:
            out = torch.cat([p, torch.full_like(p[:, :1], float(self.threshold))], 1)
        return (out / out.sum(1, keepdim=True)).cpu().numpy()

    @classmethod
    def from_state(cls, state: dict, method: str, n_known: int, dropout: float = 0.5,
                   where: str = "state") -> OpenSetModel:
        """Rebuild a fitted model from its :meth:`state_dict` (shapes and the normalisation read
        from the tensors)."""
        method = check_choice("method", method, METHODS)
        w, h = state.get("net.bottleneck.0.weight"), state.get("net.head.weight")
        if w is None or h is None:
            raise DataError(f"{where} holds no open-set bottleneck classifier (net.bottleneck.0.weight, "
                            "net.head.weight); the file must come from an open_set run.")
        width = int(h.shape[0])
        if width != n_known + (method == "osbp"):
            raise DataError(f"{where}: its head has {width} outputs, but method={method!r} with {n_known} known "
                            f"classes needs {n_known + (method == 'osbp')}; the file and the config must agree.")
        norm = "pooled" if "net.input_mean" in state else "batch"
        net = OpenSetNet(int(w.shape[1]), width, int(w.shape[0]), dropout, norm,
                         n_ova=n_known if method == "ovanet" else 0)
        model = cls(net, method, n_known)
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
    bottleneck: int = 256, dropout: float = 0.5, norm: str | None = None, epochs: int = 30,
    steps_per_epoch: int | None = None, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 5e-4,
    selection: str | None = None, domain_bn: bool = False, t: float = 0.5, weight: float = 1.0,
    ova_weight: float = 0.5, entropy_weight: float = 0.1, known_rate: float = 0.95, seed: int = 0,
    device: str = "cpu",
) -> OpenSetModel:
    """Fit an open-set / universal adaptation model on feature rows; no target label is read.

    Trains an :class:`OpenSetNet` through the one :class:`~transferkit.train.Trainer` with the
    recipe of :func:`~transferkit.adapt.features.train_feature_adapter`: AdamW, the ``inverse``
    learning-rate annealing, ``steps_per_epoch`` source batches per epoch with a target batch at
    every step, the Trainer's cross-entropy on the labeled source batch plus the method's term
    (:class:`OSBPTerm`, :class:`OVATerm`), and the epoch chosen by
    :class:`~transferkit.train.selection.SelectionCallback`.

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
        The network and its training (as in ``train_feature_adapter``).
    norm
        ``"batch"`` or ``"pooled"`` (see :class:`OpenSetNet`); default ``"pooled"`` for
        ``osbp``/``ovanet`` and ``"batch"`` for ``threshold`` (a plain source model; under
        ``"pooled"`` it would standardise with the source rows alone). Per-domain batch
        statistics align the moments of the two domains, which assumes they hold the same
        classes in the same proportions; an open-set target does not. On the shifted
        Gaussian-blob tasks of the tests (seeds 0-3, mean H-score) ``"pooled"`` lifted OSBP from
        0.67 to 0.87 (open set) and 0.72 to 0.74 (universal), and OVANet in the universal task
        from 0.57 to 0.76, where with ``"batch"`` most unknown target rows were taken for the
        source class the target lacks; it cost OVANet in the open-set task (0.82 to 0.75).
    selection
        ``"last"`` or ``"source_val"``; default ``"last"`` for ``osbp``/``ovanet`` (the papers'
        fixed budget: the labeled source loss does not see the open-set objective),
        ``"source_val"`` for ``threshold``. Neither reads a target label.
    domain_bn
        ``norm="batch"`` only: AdaBN, the fitted model normalises with the target training
        rows' BatchNorm statistics. Off by default: the target's statistics mix in its unknown
        classes (and miss its absent ones). ``threshold`` never uses target inputs.
    t, weight
        OSBP's unknown probability target (0.5) and adversarial weight (1).
    ova_weight, entropy_weight
        OVANet's OVA-loss weight (0.5, the authors' code) and open-set entropy weight (0.1,
        the paper's lambda).
    known_rate
        ``threshold``: the fraction of held-out labeled source rows kept as known (0.95).

    Returns
    -------
    OpenSetModel
        In eval mode, with ``history_``, ``best_epoch_`` and ``selection_`` attributes.
    """
    from ..train import Trainer
    from ..train.selection import SelectionCallback
    from .features import _rows

    method = check_choice("method", method, METHODS)
    norm = check_choice("norm", norm or ("batch" if method == "threshold" else "pooled"), NORMS)
    check_number("epochs", epochs, low=1, integer=True)
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
    known_rate = check_number("known_rate", known_rate, low=0, high=1, low_inclusive=False, high_inclusive=False)
    if domain_bn and (norm != "batch" or method == "threshold"):
        raise ConfigError(f"domain_bn=True sets BatchNorm statistics from the target, but method={method!r} with "
                          f"norm={norm!r} has {'no target input' if method == 'threshold' else 'no BatchNorm'}; "
                          "drop domain_bn.")
    if method == "threshold":
        Xt = None  # source only: the baseline reads no target input at all
    else:
        if Xt is None or len(Xt) == 0:
            raise DataError(f"method={method!r} needs unlabeled target features Xt; use method='threshold' "
                            "for a model that sees no target input.")
        Xt = np.ascontiguousarray(Xt, dtype=np.float32)
        if Xt.ndim != 2 or Xt.shape[1] != Xs.shape[1]:
            raise DataError(f"Xt must be (n, {Xs.shape[1]}) like Xs, got {Xt.shape}.")
    if (selection == "source_val" or method == "threshold") and (Xs_val is None or ys_val is None):
        Xs, ys, Xs_val, ys_val = _split_source(Xs, ys, source_val_fraction, seed)

    torch.manual_seed(seed)
    net = OpenSetNet(Xs.shape[1], K + (method == "osbp"), bottleneck, dropout, norm,
                     n_ova=K if method == "ovanet" else 0)
    if norm == "pooled":  # one affine map for both domains, from the training inputs (no labels)
        net.set_input_statistics(torch.as_tensor(Xs if Xt is None else np.vstack([Xs, Xt])))
    net.to(device)
    terms = {"osbp": [OSBPTerm(t, weight)], "ovanet": [OVATerm(ova_weight, entropy_weight)]}.get(method, [])
    source = _rows(Xs, ys, "source")
    target = None if Xt is None else _rows(Xt, np.full(len(Xt), -1), "target")
    source_val = None if Xs_val is None else _rows(Xs_val, ys_val, "source_val")
    groups = [{"params": list(p.parameters()), "lr": lr, "weight_decay": weight_decay, "name": name}
              for name, p in (("bottleneck", net.bottleneck), ("head", net.head), ("ova", net.ova)) if p is not None]
    n_rows = max(len(source), 0 if target is None else len(target))
    steps = steps_per_epoch or max(1, int(np.ceil(n_rows / batch_size)))
    cb = SelectionCallback(selection, model=net, target=target, source_val=source_val)
    trainer = Trainer(net, groups, epochs=epochs, batch_size=batch_size, steps_per_epoch=steps, optimizer="adamw",
                      schedule="inverse", warmup_epochs=0.0, grad_clip=None, augment="none", selection=cb, seed=seed,
                      device=device, progress=False, tag=f"open_set:{method}", losses=terms, fault_prefix="adapt")
    trainer.fit(source, None, target=target if terms else None)
    if domain_bn:  # after the weights: the statistics are those of the restored layers
        net.set_bn_statistics(torch.as_tensor(Xt, device=device))
    net.eval()
    threshold = 0.0
    if method == "threshold":
        with torch.no_grad():
            conf = F.softmax(net(torch.as_tensor(np.asarray(Xs_val, dtype=np.float32), device=device)), 1)
        threshold = float(np.quantile(conf.max(1).values.cpu().numpy(), 1 - known_rate))
    model = OpenSetModel(net, method, K, threshold).eval()
    model.history_ = trainer.history
    model.best_epoch_ = cb.best_epoch
    model.selection_ = selection
    return model
