"""Domain generalisation strategy: several labeled sources, no target input at all.

Registered as ``domain_generalization``. The backbone is frozen and its features are cached per
source (the feature path of ``adapt``); a bottleneck + head trains on the pooled sources with
ERM or a multi-domain term (IRM, V-REx, GroupDRO, CORAL: :mod:`transferkit.adapt.dg`), the
checkpoint chosen on 20% held out of every source. The target is unseen until
``predict``/``score``.
"""

from __future__ import annotations

import time

import numpy as np

from .._registry import register
from ..errors import ConfigError
from .adapt import Adapt, _check_source
from .base import check_option, check_param


@register("strategy", "domain_generalization")
class DomainGeneralization(Adapt):
    """Train on several labeled source domains for a target domain never seen in training.

    ``fit(train=None, val=None, *, source=[ds1, ds2, ...])``: ``train`` and ``val`` (the target's
    splits) are never read, not even their inputs (they may be ``None``); one source alone
    (not in a list) is ERM on it, the source-only model. Each source's labeled rows are
    featurised by the frozen backbone (cached), ``source_val_fraction`` of every source is held
    out (stratified, seeded) and the rest pooled; the bottleneck + head of ``adapt`` trains on
    it with the mean cross-entropy plus ``method``'s term
    (:func:`transferkit.adapt.dg.fit_domain_generalization`). No AdaBN: the BatchNorm
    statistics are the pooled sources'.

    Parameters
    ----------
    method
        ``"erm"`` (default: pooled sources, no term), ``"irm"``, ``"vrex"``, ``"groupdro"``,
        ``"coral"``. (``"mixstyle"`` works on CNN feature maps, not on cached features:
        :func:`transferkit.adapt.dg.insert_mixstyle`.)
    weight
        The term's weight: IRM's / V-REx's penalty weight after annealing, GroupDRO's step
        size :math:`\\eta`, CORAL's :math:`\\gamma`; ``None`` (default) takes DomainBed's
        (1e2, 10, 1e-2, 1).
    loss_options
        ``{anneal_iters: 500}`` (IRM, V-REx; DomainBed's default), ``{estimator: halves|plain}``
        (IRM).
    selection
        ``"source_val"`` (default: DomainBed's training-domain validation, the lowest pooled
        held-out cross-entropy) or ``"last"``.
    bottleneck, dropout, epochs, batch_size, lr, weight_decay, source_val_fraction
        As in ``adapt``.
    """

    name = "domain_generalization"
    needs_source = True
    multi_source = True  # the experiment passes ``sources: [...]`` as a list (one ``source`` as a list of one)
    needs_target_labels = False
    label_shift = None  # adapt's prior correction needs target inputs
    # adapt parameters this strategy fixes (not constructor parameters; see Adapt._fix_class_parameters)
    domain_bn = False
    level = 'features'
    backbone_lr_mult = 0.1
    unfreeze = 'all'
    target_labels = False

    def __init__(self, backbone="efficientnet_lite0", method="erm", weight=None, loss_options=None,
                 selection="source_val", pretrained=True, image_size=None, bottleneck=256, dropout=0.5, epochs=30,
                 batch_size=64, lr=1e-3, weight_decay=5e-4, source_val_fraction=0.2, cache_dir=None, seed=0,
                 device=None, progress=False):
        super().__init__(backbone=backbone, method=method, weight=weight, selection=selection, pretrained=pretrained,
                         image_size=image_size, bottleneck=bottleneck, dropout=dropout, epochs=epochs,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay, loss_options=loss_options,
                         source_val_fraction=source_val_fraction, cache_dir=cache_dir, seed=seed, device=device,
                         progress=progress, domain_bn=False)

    def _validate(self, backbone) -> None:
        from ..adapt.dg import _check_method, build_dg_term

        self._check_common(backbone)
        self._check_network()
        check_option(self._p("selection"), self.selection, ("source_val", "last"))
        try:
            _check_method(self.method)
        except ConfigError as e:
            raise ConfigError(f"{self._p('method')}: {e}") from None
        if self.weight is not None:
            self.weight = check_param(self._p("weight"), self.weight, low=0, high=1e6, example=100.0)
        opts = self.loss_options
        if opts is not None and not isinstance(opts, dict):
            raise ConfigError(f"{self._p('loss_options')}={opts!r} must be a mapping, e.g. {{anneal_iters: 500}}.")
        try:  # unknown options and bad values fail here, before any data is read
            build_dg_term(self.method, np.arange(2), self.weight, opts)
        except ConfigError as e:
            raise ConfigError(f"{self._p('loss_options')}: {e}" if opts else f"{self._p('method')}: {e}") from None

    def fit(self, train=None, val=None, *, source=None, run_dir=None):
        """Train on the labeled ``source`` domains (a list of datasets, or one dataset).

        ``train`` and ``val`` are not read at all (both may be ``None``)."""
        from ..adapt.dg import fit_domain_generalization
        from ..adapt.multi_domain import check_sources

        self.validate()
        self._reset_fitted()
        if source is None:
            raise ConfigError(f"strategy {self.name!r} needs labeled source datasets: fit(source=[ds1, ds2, ...]).")
        sources = check_sources(list(source) if isinstance(source, (list, tuple)) else [source], what="source")
        for s in sources:
            _check_source(self, s)
        t0 = time.perf_counter()
        Fs, ys = [], []
        for s in sources:  # each source's features cached on its own, as adapt caches its source
            lab = np.flatnonzero(s.labels >= 0)
            Fs.append(self._features(s)[lab])
            ys.append(np.asarray(s.labels)[lab])
        n_classes = max(s.n_classes for s in sources)
        res = fit_domain_generalization(
            Fs, ys, method=self.method, weight=self.weight, options=self.loss_options,
            val_fraction=self.source_val_fraction, num_classes=n_classes, bottleneck=self.bottleneck,
            dropout=self.dropout, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
            weight_decay=self.weight_decay, selection=self.selection, seed=self.seed, device=self.device or "cpu")
        self.model_, self.history_, self.best_epoch_ = res["model"].cpu().eval(), res["history"], res["best_epoch"]
        self.selection_ = ("source_val (training-domain validation: pooled held-out source loss; no target input)"
                           if self.selection == "source_val" else "last epoch (no target input)")
        self.source_val_accuracy_ = res["val_accuracy"]
        self.n_sources_ = len(sources)
        self.source_names_ = [s.name for s in sources]
        self.n_target_labels_ = 0
        self.n_classes_ = n_classes
        self.trainable_params_ = int(sum(p.numel() for p in self.model_.parameters()))
        self.train_time_ = time.perf_counter() - t0
        return self
