r"""Domain generalisation: several labeled source domains, the target domain unseen until test.

The sources are pooled (:func:`~transferkit.adapt.multi_domain.pool_sources`) and a bottleneck
+ head trains on cached backbone features through the one Trainer
(:func:`~transferkit.adapt.features.train_feature_adapter` with ``Xt=None``); a method is a
:class:`~transferkit.adapt.multi_domain.DomainTerm` added to the plain mean cross-entropy the
Trainer computes on each pooled batch:

- ``erm``: no term (Vapnik's empirical risk minimisation on the pooled sources; DomainBed's
  strongest baseline),
- ``irm``: :class:`IRMTerm` (IRMv1, Arjovsky et al. 2019),
- ``vrex``: :class:`VRExTerm` (V-REx, Krueger et al. 2021),
- ``groupdro``: :class:`GroupDROTerm` (Sagawa et al. 2020),
- ``coral``: :class:`CORALTerm` (DomainBed's CORAL: mean and covariance matching across every
  pair of sources).

Defaults are DomainBed's (Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization",
ICLR 2021, ``hparams_registry.py``). Two differences follow from the one Trainer and are
stated once here: (1) DomainBed draws one equal-size minibatch per domain and its
classification loss is the mean of the per-domain means; here a batch is drawn from the pooled
rows, so domains appear in proportion to their size and the classification loss is the pooled
batch mean (the terms use the per-domain risks of the domains present in the batch). (2)
DomainBed resets Adam when IRM's / V-REx's penalty weight jumps at ``anneal_iters``; the
Trainer keeps its optimizer state.

Model selection is DomainBed's *training-domain validation*: 20% of every source domain is
held out (stratified, seeded) and the checkpoint with the lowest pooled held-out cross-entropy
is kept (``selection="source_val"``); the unseen domain is read by nothing but the final test.
:func:`leave_one_domain_out` runs DomainBed's protocol: each domain in turn is the test
domain, the others the sources.

:class:`MixStyle` (Zhou et al., ICLR 2021) mixes the channel statistics of convolutional
feature maps; pooled feature vectors have no maps, so it is not a feature-level method: it goes
into a CNN backbone with :func:`insert_mixstyle`, and :func:`fit_dg_backbone` trains such a
backbone (with or without one of the terms above) on the pooled source images.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_number
from ..errors import ConfigError, DataError
from .multi_domain import DomainTerm, check_sources, per_domain_risks, pool_sources

__all__ = ["CORALTerm", "DG_METHODS", "GroupDROTerm", "IRMTerm", "MixStyle", "VRExTerm", "build_dg_term",
           "fit_dg_backbone", "fit_domain_generalization", "insert_mixstyle", "irm_scale_gradient",
           "leave_one_domain_out", "set_mixstyle_domains"]

#: Feature-level domain generalisation methods (``None`` term: ERM).
DG_METHODS = ("erm", "irm", "vrex", "groupdro", "coral")


def _annealed(weight: float, anneal_iters: int, step) -> float:
    """DomainBed's schedule of IRM's and V-REx's penalty weight: 1 for the first
    ``anneal_iters`` optimizer steps, then ``weight``."""
    return 1.0 if int(step or 0) < anneal_iters else weight


def irm_scale_gradient(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""The derivative of the mean cross-entropy of ``w * logits`` at ``w = 1``, in closed form.

    With :math:`p_i = \mathrm{softmax}(z_i)`,

    .. math::
        \frac{\partial}{\partial w}\Big|_{w=1} \frac1n\sum_i \mathrm{CE}(w z_i, y_i)
        = \frac1n\sum_i \big(p_i^\top z_i - z_{i,y_i}\big),

    (the derivative of :math:`\log\sum_k e^{w z_{ik}} - w z_{i y_i}`). Differentiable in
    ``logits`` (the same value and gradient as ``autograd.grad(..., create_graph=True)`` on a
    dummy scale, without a nested autograd call inside the Trainer's forward).
    """
    p = torch.softmax(logits.float(), dim=1)
    z = logits.float()
    return ((p * z).sum(1) - z.gather(1, labels.view(-1, 1)).squeeze(1)).mean()


class IRMTerm(DomainTerm):
    r"""IRMv1 penalty: every domain's risk is stationary in a scalar multiplier of the classifier.

    .. math::
        \mathcal{P} = \frac{1}{|E|}\sum_{e\in E}
        \big\lVert \nabla_{w\,|\,w=1} R_e(w \cdot f(x)) \big\rVert^2,
        \qquad \text{loss} = \lambda_t\, \mathcal{P},

    over the domains :math:`E` present in the batch (:func:`irm_scale_gradient` gives the
    gradient in closed form). ``estimator="halves"`` (default, DomainBed's): the unbiased
    estimate :math:`g_e^{(1)} g_e^{(2)}` with the gradients of the domain's even and odd rows
    (the plain square is biased upwards by the gradient's sampling variance); domains with
    fewer than two rows in the batch are skipped. ``estimator="plain"``: :math:`(g_e)^2` on
    all of the domain's rows. :math:`\lambda_t = 1` for the first ``anneal_iters`` steps, then
    ``weight`` (DomainBed: ``irm_lambda = 1e2``, ``irm_penalty_anneal_iters = 500``).

    References
    ----------
    M. Arjovsky, L. Bottou, I. Gulrajani, D. Lopez-Paz. "Invariant Risk Minimization."
    arXiv:1907.02893, 2019 (eq. IRMv1).
    """

    def __init__(self, domains, weight: float = 1e2, anneal_iters: int = 500, estimator: str = "halves"):
        super().__init__(domains, weight)
        self.anneal_iters = int(check_number("anneal_iters", anneal_iters, low=0, integer=True))
        if estimator not in ("halves", "plain"):
            raise ConfigError(f"estimator={estimator!r} is not an IRM penalty estimator; use 'halves' "
                              "(DomainBed's unbiased split-batch estimate) or 'plain'.")
        self.estimator = estimator

    def penalty(self, logits: torch.Tensor, labels: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        terms = []
        for e in torch.unique(domains).tolist():
            m = domains == e
            z, y = logits[m], labels[m]
            if self.estimator == "plain":
                terms.append(irm_scale_gradient(z, y) ** 2)
            elif len(y) >= 2:
                terms.append(irm_scale_gradient(z[0::2], y[0::2]) * irm_scale_gradient(z[1::2], y[1::2]))
        if not terms:
            return logits.sum() * 0.0
        return torch.stack(terms).mean()

    def forward(self, ctx) -> dict:
        p = self.penalty(ctx.logits, ctx.labels, self.batch_domains(ctx))
        lam = _annealed(self.weight, self.anneal_iters, ctx.step)
        return {"loss": lam * p, "irm_penalty": p.detach()}


class VRExTerm(DomainTerm):
    r"""V-REx: the variance of the per-domain risks.

    .. math::
        \mathcal{P} = \frac{1}{|E|}\sum_{e\in E}\big(R_e - \bar R\big)^2,
        \quad \bar R = \frac{1}{|E|}\sum_e R_e, \qquad \text{loss} = \lambda_t\, \mathcal{P},

    :math:`R_e` the mean cross-entropy of domain :math:`e`'s rows in the batch, over the
    domains present (population variance, as DomainBed; 0 with fewer than two).
    :math:`\lambda_t = 1` for the first ``anneal_iters`` steps, then ``weight`` (DomainBed:
    ``vrex_lambda = 10``, ``vrex_penalty_anneal_iters = 500``).

    References
    ----------
    D. Krueger et al. "Out-of-Distribution Generalization via Risk Extrapolation (REx)."
    ICML 2021.
    """

    def __init__(self, domains, weight: float = 1e1, anneal_iters: int = 500):
        super().__init__(domains, weight)
        self.anneal_iters = int(check_number("anneal_iters", anneal_iters, low=0, integer=True))

    def penalty(self, logits, labels, domains) -> torch.Tensor:
        risks, present = per_domain_risks(logits.float(), labels, domains, self.n_domains)
        r = risks[present]
        if len(r) < 2:
            return logits.sum() * 0.0
        return ((r - r.mean()) ** 2).mean()

    def forward(self, ctx) -> dict:
        p = self.penalty(ctx.logits, ctx.labels, self.batch_domains(ctx))
        lam = _annealed(self.weight, self.anneal_iters, ctx.step)
        return {"loss": lam * p, "vrex_penalty": p.detach()}


class GroupDROTerm(DomainTerm):
    r"""Group DRO with online group weights (Sagawa et al. 2020, Algorithm 1; groups = domains).

    At every step, for each domain :math:`g` present in the batch,
    :math:`q_g \leftarrow q_g\, e^{\eta R_g}` (:math:`R_g` detached), then
    :math:`q \leftarrow q / \sum_g q_g`; the objective is :math:`\sum_g q_g R_g`. The Trainer
    already adds the plain mean cross-entropy :math:`\bar\ell` of the batch, so this term
    returns :math:`\sum_g q_g R_g - \bar\ell`: the total minimised is the Group DRO objective.
    ``q`` starts uniform and is a buffer (moves with ``.to()``, checkpointed with the run).
    Default :math:`\eta = 10^{-2}` (DomainBed's ``groupdro_eta``).

    References
    ----------
    S. Sagawa, P. W. Koh, T. B. Hashimoto, P. Liang. "Distributionally Robust Neural Networks
    for Group Shifts." ICLR 2020.
    """

    def __init__(self, domains, eta: float = 1e-2):
        super().__init__(domains, 1.0)
        self.eta = float(check_number("eta", eta, low=0))
        self.register_buffer("q", torch.full((self.n_domains,), 1.0 / self.n_domains))

    def objective(self, logits, labels, domains, *, update: bool = True) -> torch.Tensor:
        risks, present = per_domain_risks(logits.float(), labels, domains, self.n_domains)
        if update:
            with torch.no_grad():
                q = self.q.to(risks.device) * torch.where(present, torch.exp(self.eta * risks.detach()),
                                                          torch.ones_like(risks))
                self.q.copy_((q / q.sum()).to(self.q.device))
        return (self.q.to(risks.device) * risks).sum()

    def forward(self, ctx) -> dict:
        obj = self.objective(ctx.logits, ctx.labels, self.batch_domains(ctx))
        mean_ce = F.cross_entropy(ctx.logits.float(), ctx.labels)
        return {"loss": obj - mean_ce, "groupdro_objective": obj.detach(),
                "groupdro_max_q": self.q.max().detach()}


class CORALTerm(DomainTerm):
    r"""DomainBed's CORAL across sources: match the feature means and covariances of every pair.

    .. math::
        \mathcal{P} = \frac{1}{\binom{|E|}{2}} \sum_{i<j}
        \Big(\tfrac1d\lVert \mu_i - \mu_j\rVert^2 + \tfrac{1}{d^2}\lVert C_i - C_j\rVert_F^2\Big),
        \qquad \text{loss} = \gamma\, \mathcal{P},

    over the bottleneck features (``ctx.features``, width :math:`d`) of the pairs of domains
    present in the batch with at least two rows each; :math:`C` the unbiased covariance
    (:func:`~transferkit.adapt.deep.deep_coral.batch_covariance`). For two domains the
    covariance part is 4 times Deep CORAL's :math:`\frac{1}{4d^2}\lVert C_S - C_T\rVert_F^2`.
    Default :math:`\gamma = 1` (DomainBed's ``mmd_gamma``).

    References
    ----------
    B. Sun and K. Saenko. "Deep CORAL." ECCV 2016 Workshops; I. Gulrajani and D. Lopez-Paz,
    "In Search of Lost Domain Generalization", ICLR 2021 (the multi-domain form).
    """

    def __init__(self, domains, weight: float = 1.0):
        super().__init__(domains, weight)

    @staticmethod
    def penalty(features: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        from .deep.deep_coral import batch_covariance

        f = features.float()
        stats = []
        for e in torch.unique(domains).tolist():
            x = f[domains == e]
            if len(x) >= 2:
                stats.append((x.mean(0), batch_covariance(x)))
        total, pairs = f.sum() * 0.0, 0
        for i in range(len(stats)):
            for j in range(i + 1, len(stats)):
                total = total + (stats[i][0] - stats[j][0]).pow(2).mean() + (stats[i][1] - stats[j][1]).pow(2).mean()
                pairs += 1
        return total / max(pairs, 1)

    def forward(self, ctx) -> dict:
        if ctx.features is None:
            raise DataError("CORALTerm needs the bottleneck features (ctx.features): train a model with "
                            "features() and head(), such as the feature-level BottleneckClassifier.")
        p = self.penalty(ctx.features, self.batch_domains(ctx))
        return {"loss": self.weight * p, "coral_penalty": p.detach()}


#: Method -> (term class, its option names, what ``weight`` sets).
_TERMS = {"irm": (IRMTerm, ("anneal_iters", "estimator")), "vrex": (VRExTerm, ("anneal_iters",)),
          "groupdro": (GroupDROTerm, ()), "coral": (CORALTerm, ())}


def _check_method(method) -> str:
    if method == "mixstyle":
        raise ConfigError("method='mixstyle' mixes the channel statistics of (n, C, H, W) feature maps, and "
                          "cached pooled feature vectors have none: MixStyle is not defined at the feature level. "
                          "Insert it into a CNN backbone with transferkit.adapt.dg.insert_mixstyle and train the "
                          "backbone, or pick a feature-level method: " + ", ".join(DG_METHODS) + ".")
    if method not in DG_METHODS:
        close = difflib.get_close_matches(str(method), DG_METHODS, n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"method={method!r} is not a domain generalisation method.{hint} Use one of "
                          f"{', '.join(DG_METHODS)}.")
    return method


def build_dg_term(method: str, domains, weight: float | None = None, options: dict | None = None):
    """The loss term of ``method`` for pooled rows of domains ``domains`` (``None`` for ERM).

    ``weight``: IRM's / V-REx's penalty weight after annealing, CORAL's :math:`\\gamma`,
    GroupDRO's :math:`\\eta`; ``None`` takes DomainBed's default. ``options``: ``anneal_iters``
    (IRM, V-REx), ``estimator`` (IRM)."""
    method = _check_method(method)
    options = dict(options or {})
    if method == "erm":
        if options or weight is not None:
            raise ConfigError("method='erm' has no penalty: drop weight and options (or pick irm, vrex, groupdro "
                              "or coral).")
        return None
    cls, names = _TERMS[method]
    bad = [k for k in options if k not in names]
    if bad:
        raise ConfigError(f"method={method!r} has no option {bad[0]!r}."
                          + (f" Options: {', '.join(names)}." if names else " It takes no options."))
    if weight is not None:
        check_number("weight", weight, low=0)
        options["eta" if method == "groupdro" else "weight"] = float(weight)
    return cls(domains, **options)


def _split_domain(y: np.ndarray, fraction: float, seed: int, k: int):
    from ..data import stratified_split

    if len(y) < 2:
        raise DataError(f"sources[{k}] has {len(y)} labeled rows; training-domain validation holds out "
                        f"{fraction:.0%} of every source, so each needs at least 2.")
    return stratified_split(y, [1 - fraction, fraction], seed=seed)


def fit_domain_generalization(
    Xs_list: Sequence[np.ndarray], ys_list: Sequence[np.ndarray], *, method: str = "erm",
    weight: float | None = None, options: dict | None = None, val_fraction: float = 0.2,
    num_classes: int | None = None, bottleneck: int = 256, dropout: float = 0.5, epochs: int = 30,
    steps_per_epoch: int | None = None, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 5e-4,
    selection: str = "source_val", seed: int = 0, device: str = "cpu",
) -> dict:
    r"""Train a bottleneck + head on several labeled sources for an unseen target domain.

    Every source is split (stratified by class, seeded by ``seed``) into ``1 - val_fraction``
    training rows and ``val_fraction`` held-out rows (DomainBed's training-domain validation,
    20%); the training rows are pooled and the model trains through
    :func:`~transferkit.adapt.features.train_feature_adapter` with no target input
    (``Xt=None``, no AdaBN), the mean cross-entropy plus ``method``'s term (see the module
    docstring), and the checkpoint with the lowest cross-entropy on the pooled held-out rows
    (``selection="source_val"``).

    Parameters
    ----------
    Xs_list, ys_list
        One feature matrix ``(n_k, d)`` and label vector per source domain (-1: unlabeled,
        dropped).
    method
        ``"erm"``, ``"irm"``, ``"vrex"``, ``"groupdro"`` or ``"coral"``.
    weight, options
        The term's weight (``None``: DomainBed's default) and options (:func:`build_dg_term`).
    val_fraction
        Held-out share of every source.
    num_classes
        Output width (default: the largest label + 1).
    selection
        ``"source_val"`` (default: the checkpoint with the lowest pooled held-out cross-entropy,
        DomainBed's training-domain validation) or ``"last"`` (the last epoch; the held-out rows
        are still held out and scored). Training-domain validation favours whatever predicts
        the sources best, a spurious feature included (Gulrajani & Lopez-Paz, section 4), so an
        invariance penalty that only bites after ``anneal_iters`` may lose its epochs to it.
    bottleneck, dropout, epochs, steps_per_epoch, batch_size, lr, weight_decay, seed, device
        As in :func:`~transferkit.adapt.features.train_feature_adapter`.

    Returns
    -------
    dict
        ``train_feature_adapter``'s dict (``model``, ``history``, ``best_epoch``, ``score``, ...)
        plus ``method``, ``term`` (``None`` for ERM), ``n_sources`` and ``val_accuracy`` (the
        selected model's accuracy on the pooled held-out rows).
    """
    from .features import train_feature_adapter

    method = _check_method(method)
    if selection not in ("source_val", "last"):
        raise ConfigError(f"selection={selection!r} is not a domain generalisation selection; use 'source_val' "
                          "(training-domain validation) or 'last'. No target input exists to score.")
    check_number("val_fraction", val_fraction, low=0, high=1, low_inclusive=False, high_inclusive=False)
    pairs = check_sources([(np.asarray(x), np.asarray(y)) for x, y in zip(Xs_list, ys_list, strict=True)])
    tr_x, tr_y, va_x, va_y = [], [], [], []
    for k, (x, y) in enumerate(pairs):
        if len(x) != len(y):
            raise DataError(f"sources[{k}] has {len(x)} rows but {len(y)} labels.")
        keep = np.flatnonzero(y >= 0)
        x, y = x[keep], y[keep]
        tr, va = _split_domain(y, val_fraction, seed, k)
        tr_x.append(x[tr]), tr_y.append(y[tr]), va_x.append(x[va]), va_y.append(y[va])
    X, y, dom = pool_sources(tr_x, tr_y)
    Xv, yv = np.concatenate(va_x), np.concatenate(va_y)
    n_classes = int(num_classes) if num_classes is not None else int(max(y.max(), yv.max())) + 1
    term = build_dg_term(method, dom, weight, options)
    res = train_feature_adapter(
        X, y, None, Xs_val=Xv, ys_val=yv, num_classes=n_classes, method=None, bottleneck=bottleneck,
        dropout=dropout, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, selection=selection, seed=seed, device=device, domain_bn=False,
        terms=[term] if term is not None else [])
    model = res["model"]
    with torch.no_grad():
        pv = model(torch.as_tensor(np.ascontiguousarray(Xv, dtype=np.float32), device=device)).argmax(1).cpu().numpy()
    return {**res, "method": method, "term": term, "n_sources": len(pairs), "val_accuracy": float((pv == yv).mean())}


def _as_xy(domain, k: int):
    """``(X, y)`` of a domain given as a pair or as a dataset of feature rows."""
    if isinstance(domain, tuple):
        X, y = domain
    else:
        X, y = getattr(domain, "inputs", None), getattr(domain, "labels", None)
    X = np.asarray(X) if X is not None else None
    if X is None or X.ndim != 2 or y is None:
        raise DataError(f"domains[{k}] must be an (X, y) pair or a labeled dataset of feature rows (n, d); for "
                        "images, extract features first or use the domain_generalization strategy.")
    return X, np.asarray(y)


def leave_one_domain_out(domains: Sequence, method: str = "erm", seed: int = 0, *, names: Sequence[str] | None = None,
                         **fit_options) -> dict:
    """DomainBed's protocol: each domain in turn is the unseen test domain, the others the sources.

    For held-out domain ``k``, :func:`fit_domain_generalization` trains on the other domains
    (their own 20% held out for selection) and the selected model is scored on every labeled
    row of domain ``k``. Domain ``k`` is read only after that fold's training and selection
    have finished.

    Parameters
    ----------
    domains
        At least two domains: ``(X, y)`` pairs or labeled datasets of feature rows.
    method, seed, fit_options
        Passed to :func:`fit_domain_generalization`.
    names
        Domain names (default: the datasets' ``name`` or ``"domain<k>"``).

    Returns
    -------
    dict
        ``accuracy`` (held-out domain name -> test accuracy), ``val_accuracy`` (name -> the
        fold's pooled training-domain validation accuracy), ``mean`` (the mean test accuracy
        over domains), ``method``, ``seed``.
    """
    if isinstance(domains, (str, bytes)) or not isinstance(domains, Sequence) or len(domains) < 2:
        raise ConfigError("leave_one_domain_out needs a list of at least two domains ((X, y) pairs or datasets).")
    n = len(domains)
    if names is None:
        names = [getattr(d, "name", None) or f"domain{k}" for k, d in enumerate(domains)]
    names = [str(s) for s in names]
    if len(names) != n or len(set(names)) != n:
        raise ConfigError(f"names must give {n} distinct domain names, got {names!r}.")
    acc, val = {}, {}
    for k in range(n):
        sources = [_as_xy(domains[j], j) for j in range(n) if j != k]  # never domain k
        res = fit_domain_generalization([x for x, _ in sources], [y for _, y in sources], method=method, seed=seed,
                                        **fit_options)
        X, y = _as_xy(domains[k], k)  # read only now: training and selection are over
        lab = y >= 0
        if not lab.any():
            raise DataError(f"domains[{k}] ({names[k]!r}) has no labels to test on.")
        model = res["model"]
        dev = next(model.parameters()).device
        with torch.no_grad():
            pred = model(torch.as_tensor(np.ascontiguousarray(X[lab], dtype=np.float32), device=dev)).argmax(1)
        acc[names[k]] = float((pred.cpu().numpy() == y[lab]).mean())
        val[names[k]] = res["val_accuracy"]
    return {"accuracy": acc, "val_accuracy": val, "mean": float(np.mean(list(acc.values()))), "method": method,
            "seed": seed}


# ---------------------------------------------------------------------------------- MixStyle
class MixStyle(nn.Module):
    r"""MixStyle: mix instance-level channel statistics with a partner's (Zhou et al., ICLR 2021).

    With probability ``p`` per training forward, for feature maps :math:`x` of shape
    ``(n, C, H, W)``, per-instance, per-channel :math:`\mu, \sigma` (over ``H, W``;
    :math:`\sigma = \sqrt{\mathrm{var} + \epsilon}`, both detached from the graph as in the
    paper's code), a partner :math:`j = \pi(i)` and :math:`\lambda_i \sim \mathrm{Beta}(\alpha, \alpha)`:

    .. math::
        \tilde x_i = \big(\lambda_i \sigma_i + (1-\lambda_i)\sigma_j\big)\,\frac{x_i - \mu_i}{\sigma_i}
        + \lambda_i \mu_i + (1-\lambda_i)\mu_j .

    ``mix="random"``: :math:`\pi` a random permutation of the batch. ``mix="crossdomain"``:
    each row's partner is drawn from the rows of *other* domains, given as ``domains`` (to
    :meth:`forward`, or with :meth:`set_domains` for a module called by a forward hook); without
    domain ids, the paper's convention: the batch's two halves come from two domains and are
    paired across. Identity in eval mode and with ``p = 0``. Defaults ``p = 0.5``,
    ``alpha = 0.1``, ``eps = 1e-6`` (the paper's).

    References
    ----------
    K. Zhou, Y. Yang, Y. Qiao, T. Xiang. "Domain Generalization with MixStyle." ICLR 2021.
    """

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6, mix: str = "random"):
        super().__init__()
        self.p = float(check_number("p", p, low=0, high=1))
        self.alpha = float(check_number("alpha", alpha, low=0, low_inclusive=False))
        self.eps = float(check_number("eps", eps, low=0, low_inclusive=False))
        if mix not in ("random", "crossdomain"):
            raise ConfigError(f"mix={mix!r} is not a MixStyle variant; use 'random' or 'crossdomain'.")
        self.mix = mix
        self._domains = None

    def set_domains(self, domains: torch.Tensor | None) -> None:
        """Domain ids of the next batch (``crossdomain``), for a MixStyle called by a hook."""
        self._domains = None if domains is None else torch.as_tensor(domains, dtype=torch.int64)

    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}, eps={self.eps}, mix={self.mix!r}"

    def mix_with(self, x: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """The mix for given :math:`\\lambda` (``(n,)``) and partner indices ``perm`` (``(n,)``)."""
        if x.ndim != 4:
            raise DataError(f"MixStyle mixes (n, C, H, W) feature maps; got a tensor of shape {tuple(x.shape)}. "
                            "Pooled feature vectors have no channel statistics to mix: insert MixStyle after a "
                            "convolutional layer (insert_mixstyle).")
        mu = x.mean(dim=(2, 3), keepdim=True).detach()
        sig = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt().detach()
        lam = lam.to(x.dtype).view(-1, 1, 1, 1)
        perm = perm.to(x.device)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sig_mix = lam * sig + (1 - lam) * sig[perm]
        return (x - mu) / sig * sig_mix + mu_mix

    def partners(self, n: int, domains: torch.Tensor | None, device) -> torch.Tensor:
        if self.mix == "random":
            return torch.randperm(n, device=device)
        if domains is None:  # the paper's convention: two halves from two domains, paired across
            rev = torch.arange(n - 1, -1, -1, device=device)
            b, a = rev[: n // 2], rev[n // 2:]
            return torch.cat([b[torch.randperm(len(b), device=device)], a[torch.randperm(len(a), device=device)]])
        d = torch.as_tensor(domains, device=device).view(-1)
        if len(d) != n:
            raise DataError(f"MixStyle got {len(d)} domain ids for a batch of {n}.")
        perm = torch.randperm(n, device=device)  # rows with no other domain in the batch mix randomly
        other = d.view(-1, 1) != d.view(1, -1)
        has = other.any(1)
        if has.any():
            w = other[has].float()
            perm[has] = torch.multinomial(w, 1).view(-1)
        return perm

    def forward(self, x: torch.Tensor, domains: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or self.p == 0 or torch.rand(()) >= self.p:
            return x
        n = x.shape[0]
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((n,)).to(x.device)
        doms = domains if domains is not None else self._domains
        return self.mix_with(x, lam, self.partners(n, doms, x.device))


def insert_mixstyle(backbone: nn.Module, after: Sequence[str] = ("stem", "stage1"), **mixstyle_options) -> list:
    """Apply :class:`MixStyle` to the outputs of the named submodules of a CNN backbone.

    Each named module (``backbone.named_modules()`` names; for ``tiny_cnn``: ``stem``,
    ``stage1``, ``stage2``; Zhou et al. put it after the first residual stages) gets a forward
    hook that passes its output through a MixStyle; the MixStyles are registered under
    ``backbone.mixstyle`` so ``train()``/``eval()`` switch them (identity in eval). Returns the
    hook handles (``handle.remove()`` takes a MixStyle out again). For ``crossdomain``, give each
    batch's domain ids with :func:`set_mixstyle_domains` before the forward pass.
    """
    if isinstance(after, str):
        after = [after]
    mods = dict(backbone.named_modules())
    for name in after:
        if name not in mods or name == "":
            close = difflib.get_close_matches(str(name), [m for m in mods if m], n=3)
            raise ConfigError(f"insert_mixstyle: {type(backbone).__name__} has no layer {name!r}."
                              + (f" Did you mean {', '.join(map(repr, close))}?" if close else "")
                              + " Name modules from backbone.named_modules().")
    holder = getattr(backbone, "mixstyle", None)
    if not isinstance(holder, nn.ModuleDict):
        holder = nn.ModuleDict()
        backbone.mixstyle = holder
    handles = []
    for name in after:
        key = name.replace(".", "__")
        ms = MixStyle(**mixstyle_options)
        holder[key] = ms
        handles.append(mods[name].register_forward_hook(lambda _m, _inp, out, ms=ms: ms(out)))
    return handles


def set_mixstyle_domains(backbone: nn.Module, domains) -> None:
    """Give every MixStyle inserted by :func:`insert_mixstyle` the domain ids of the next batch."""
    for ms in getattr(backbone, "mixstyle", {}).values():
        ms.set_domains(domains)


#: Where :func:`fit_dg_backbone` puts MixStyle by default: after the early stages, where
#: channel statistics carry style (Zhou et al.: after ResNet's res1-res3, not the last stage).
DEFAULT_MIXSTYLE_LAYERS = {"tiny_cnn": ("stem", "stage1")}


def fit_dg_backbone(
    sources: Sequence, *, backbone="tiny_cnn", method: str = "erm", weight: float | None = None,
    options: dict | None = None, mixstyle: bool = True, mixstyle_after: Sequence[str] | None = None,
    mixstyle_options: dict | None = None, val_fraction: float = 0.2, num_classes: int | None = None,
    epochs: int = 10, batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 0.0, pretrained: bool = False,
    image_size: int | None = None, augment="none", selection: str = "source_val", seed: int = 0,
    device: str | None = None, progress: bool = False,
) -> dict:
    r"""Domain generalisation through a CNN backbone: MixStyle inside it, a term on its outputs.

    The whole model ``TransferModel(backbone, num_classes, head="mlp")`` trains on the pooled
    labeled source images through the one Trainer (AdamW, cosine schedule), with
    :class:`MixStyle` (``mix="random"``, ``mixstyle_options`` such as ``p``, ``alpha``) after
    the ``mixstyle_after`` layers of the backbone when ``mixstyle``, and ``method``'s term
    (:func:`build_dg_term`; CORAL on the backbone's pooled features). As in
    :func:`fit_domain_generalization`, ``val_fraction`` of every source is held out and the
    checkpoint with the lowest pooled held-out cross-entropy is kept; there is no target input.

    MixStyle's ``crossdomain`` variant is not offered here: it needs each batch's domain ids
    inside the backbone's forward, and the Trainer hands row indices only to loss terms (after
    the forward). Use :class:`MixStyle` with ``domains=`` in your own loop for it.

    Returns
    -------
    dict
        ``model`` (eval mode; MixStyle is identity there), ``trainer`` (``predict_logits`` /
        ``evaluate`` on any dataset), ``history``, ``best_epoch``, ``score``, ``term``,
        ``mixstyle`` (the hook handles), ``val_accuracy``.
    """
    from ..backbones import resolve_backbone
    from ..data import concat_datasets
    from ..finetune import build_param_groups
    from ..nn import TransferModel
    from ..train import Trainer
    from ..train.selection import SelectionCallback

    method = _check_method(method)
    if selection not in ("source_val", "last"):
        raise ConfigError(f"selection={selection!r} is not a domain generalisation selection; use 'source_val' "
                          "(training-domain validation) or 'last'.")
    check_number("val_fraction", val_fraction, low=0, high=1, low_inclusive=False, high_inclusive=False)
    check_number("epochs", epochs, low=1, integer=True)
    sources = check_sources(sources)
    mixstyle_options = dict(mixstyle_options or {})
    if mixstyle_options.get("mix", "random") != "random":
        raise ConfigError("fit_dg_backbone runs MixStyle with mix='random' only: 'crossdomain' needs each batch's "
                          "domain ids inside the backbone's forward, which the Trainer does not pass.")
    if mixstyle and any(getattr(s, "modality", None) != "image" for s in sources):
        raise ConfigError("MixStyle mixes the channel statistics of image feature maps; the sources are not all "
                          "images (pass mixstyle=False, or use fit_domain_generalization on features).")
    train_parts, val_parts = [], []
    for k, s in enumerate(sources):
        s = s.subset(np.flatnonzero(np.asarray(s.labels) >= 0))
        tr, va = _split_domain(np.asarray(s.labels), val_fraction, seed, k)
        train_parts.append(s.subset(tr))
        val_parts.append(s.subset(va))
    train = concat_datasets(train_parts, name="sources")
    val = concat_datasets(val_parts, name="sources_val")
    domains = train.meta["attributes"]["domain"]
    n_classes = int(num_classes) if num_classes is not None else max(s.n_classes for s in sources)

    torch.manual_seed(seed)
    bb = resolve_backbone(backbone, pretrained, image_size)
    handles = []
    if mixstyle:
        after = mixstyle_after
        if after is None:
            arch = getattr(getattr(bb, "spec", None), "architecture", None)
            if arch not in DEFAULT_MIXSTYLE_LAYERS:
                raise ConfigError(f"backbone {arch!r} has no default MixStyle layers; name them with mixstyle_after "
                                  "(e.g. its early stages, from backbone.named_modules()).")
            after = DEFAULT_MIXSTYLE_LAYERS[arch]
        handles = insert_mixstyle(bb, after=after, **mixstyle_options)
    model = TransferModel(bb, n_classes, head="mlp")
    term = build_dg_term(method, domains, weight, options)
    groups = build_param_groups(model, lr, weight_decay=weight_decay)
    cb = SelectionCallback(selection, model=model, source_val=val)
    trainer = Trainer(model, groups, epochs=epochs, batch_size=batch_size, optimizer="adamw", schedule="cosine",
                      warmup_epochs=0.0, augment=augment, selection=cb, seed=seed, device=device, progress=progress,
                      tag=f"dg_backbone:{method}", losses=[term] if term is not None else [])
    trainer.fit(train, None)
    model.eval()
    ev = trainer.predict_logits(val).argmax(1)
    return {"model": model, "trainer": trainer, "history": trainer.history, "best_epoch": cb.best_epoch,
            "score": cb.best, "term": term, "mixstyle": handles, "method": method,
            "val_accuracy": float((ev == val.labels).mean())}
