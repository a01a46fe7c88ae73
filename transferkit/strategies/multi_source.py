"""Multi-source domain adaptation on cached backbone features: several labeled sources, one
unlabeled target (:mod:`transferkit.adapt.multi_source`).

Registered strategy ``multi_source``: ``fit(train, source=[src1, src2, ...])`` with ``train``
the unlabeled target pool. It is ``adapt``'s feature-level recipe (the same cached features,
bottleneck + head, source hold-out, checkpoint selection and prediction) with the sources
pooled and the method's multi-domain terms added.
"""

from __future__ import annotations

import time

import numpy as np

from .._registry import available, register
from ..errors import ConfigError
from .adapt import Adapt, _class_count
from .base import check_flag, check_option

__all__ = ["MultiSource"]


@register("strategy", "multi_source")
class MultiSource(Adapt):
    """Adapt from several labeled sources to one unlabeled target.

    Each source's features are extracted (and cached) by the one frozen backbone, split into
    training and held-out rows (stratified, ``source_val_fraction``), and the training rows of
    all sources are pooled, each row keeping its source. The bottleneck + head trains on the
    pool with unlabeled target batches (:func:`transferkit.adapt.multi_source.fit_multi_source`):

    - ``"m3sda"`` (default): M3SDA's moment matching between every source and the target and
      between every pair of sources (Peng et al., ICCV 2019; one shared classifier, see
      :class:`~transferkit.adapt.multi_source.MomentMatchingTerm` for the deviations);
    - ``"weighted"``: the pooled cross-entropy reweighted by each source's estimated relevance
      to the target (``relevance``: a source-vs-target domain classifier or the MMD);
    - ``"m3sda+weighted"``: both;
    - ``"pooled"``: the baseline, all sources concatenated with no domain term.

    The target's labels are never read; the checkpoint (and a ``weight`` from a list) is
    chosen by ``selection`` on the pooled held-out source rows (``dev``, ``iwcv``,
    ``source_val``) or on target predictions (``snd``, ``entropy``); ``target_val`` uses a
    labeled target validation split when the user has one.

    Parameters
    ----------
    method
        ``"m3sda"``, ``"weighted"``, ``"m3sda+weighted"`` or ``"pooled"``.
    weight
        :math:`\\lambda` of the moment distance, or a list of candidates (chosen by ``selection``).
    moments
        Highest moment order matched (M3SDA: 2).
    relevance
        ``"domain_classifier"`` or ``"mmd"`` (see :func:`transferkit.adapt.multi_source.source_relevance`).
    selection, source_val_fraction, domain_bn, bottleneck, dropout, epochs, batch_size, lr, weight_decay
        As in ``adapt``.

    Fitted attributes
    -----------------
    source_weights_ : (n_sources,) array
        The relevance weights the weighting methods used (uniform otherwise), summing to 1.
    n_sources_ : int
    model_, history_, best_epoch_, selection_, weight_
        As in ``adapt``.
    """

    name = "multi_source"
    needs_source = True
    multi_source = True  # the experiment passes ``sources: [...]`` as a list (one ``source`` as a list of one)
    needs_target_labels = False
    # adapt parameters this strategy fixes (not constructor parameters; see Adapt._fix_class_parameters)
    loss_options = None
    level = "features"
    backbone_lr_mult = 0.1
    unfreeze = "all"
    target_labels = False
    label_shift = None

    def __init__(self, backbone="efficientnet_lite0", method="m3sda", weight=1.0, moments=2,
                 relevance="domain_classifier", selection="dev", pretrained=True, image_size=None, bottleneck=256,
                 dropout=0.5, epochs=30, batch_size=64, lr=1e-3, weight_decay=5e-4, source_val_fraction=0.2,
                 cache_dir=None, seed=0, device=None, progress=False, domain_bn=True):
        super().__init__(backbone=backbone, method=method, weight=weight, selection=selection, pretrained=pretrained,
                         image_size=image_size, bottleneck=bottleneck, dropout=dropout, epochs=epochs,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay, loss_options=None,
                         source_val_fraction=source_val_fraction, cache_dir=cache_dir, seed=seed, device=device,
                         progress=progress, domain_bn=domain_bn, level="features", backbone_lr_mult=0.1,
                         unfreeze="all", target_labels=False, label_shift=None)
        self.moments = moments
        self.relevance = relevance

    def _validate(self, backbone) -> None:
        from ..adapt.multi_source import MULTI_SOURCE_METHODS, RELEVANCE_METHODS

        p = self._p
        self._check_common(backbone)
        check_option(p("method"), self.method, MULTI_SOURCE_METHODS)
        self._check_weights()
        self._num("moments", low=1, high=8, integer=True, example=2)
        check_option(p("relevance"), self.relevance, RELEVANCE_METHODS)
        check_option(p("selection"), self.selection, [*available("scorer"), "source_val", "target_val", "last"])
        self._check_network()
        check_flag(p("domain_bn"), self.domain_bn)

    @staticmethod
    def _as_sources(source) -> list:
        """``source``: one labeled dataset or a list of them -> a checked list."""
        from ..adapt.multi_domain import check_sources

        if source is None:
            raise ConfigError("strategy 'multi_source' needs labeled source datasets: fit(train, source=[src1, src2]).")
        if not isinstance(source, (list, tuple)):
            source = [source]
        return check_sources(source, what="source")

    def fit(self, train, val=None, *, source=None, run_dir=None):
        """Adapt from the labeled ``source`` datasets (a list, or one dataset) to ``train``, the
        unlabeled target pool: only its inputs are read, never its labels. ``val`` is read only
        by ``selection="target_val"``."""
        from ..adapt.multi_source import fit_multi_source
        from ..errors import DataError

        self.validate()
        self._reset_fitted()
        sources = self._as_sources(source)
        t0 = time.perf_counter()
        splits = [self._source_split(s) for s in sources]  # features cached per source, as adapt's
        d = splits[0][0].shape[1]
        Ft = self._target_features(train, d)
        n_classes = max(_class_count(s, train) for s in sources)
        extra = {}
        if self.selection == "target_val":
            if val is None or val.labels is None or not (val.labels >= 0).any():
                raise DataError("selection='target_val' needs a labeled target validation split.")
            extra = {"Xt_val": self._features(val), "yt_val": val.labels}

        def train_one(wt, n_candidates):
            res = fit_multi_source(
                [s[0] for s in splits], [s[1] for s in splits], Ft, method=self.method, weight=wt,
                moments=self.moments, relevance=self.relevance, Xs_val_list=[s[2] for s in splits],
                ys_val_list=[s[3] for s in splits], selection=self.selection, num_classes=n_classes, seed=self.seed,
                bottleneck=self.bottleneck, dropout=self.dropout, epochs=self.epochs, batch_size=self.batch_size,
                lr=self.lr, weight_decay=self.weight_decay, device=self.device or "cpu", domain_bn=self.domain_bn,
                **extra)
            return res["history"][res["best_epoch"]]["score"], res

        grid, res = self._fit_weight_grid(train_one)
        self.selection_ = self.selection + (f" (epoch and weight from {grid})" if len(grid) > 1 else "")
        self.model_, self.history_, self.best_epoch_ = res["model"], res["history"], res["best_epoch"]
        self.source_weights_ = np.asarray(res["source_weights"], dtype=np.float64)
        self.n_sources_ = len(sources)
        self.n_target_labels_ = 0
        self.n_classes_ = n_classes
        self.trainable_params_ = int(sum(p.numel() for p in self.model_.parameters()))
        self.train_time_ = time.perf_counter() - t0
        return self
