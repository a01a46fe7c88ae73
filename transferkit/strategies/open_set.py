"""Open-set and universal domain adaptation on cached backbone features (OVANet, OSBP, a
thresholded source-only baseline): the target may hold classes the source never saw, and may
lack some of the source's."""

from __future__ import annotations

import json
import time

import numpy as np

from .._registry import register
from ..errors import DataError
from .adapt import Adapt, _check_source
from .base import Strategy, check_flag, check_option

#: What ``open_set.method`` and ``open_set.norm`` may be (:data:`transferkit.adapt.open_set.METHODS`, ``NORMS``).
METHODS = ("ovanet", "osbp", "threshold")
NORMS = ("batch", "pooled")

#: The name of the extra class of ``classes_``.
UNKNOWN = "unknown"


@register("strategy", "open_set")
class OpenSet(Strategy):
    """Open-set / universal adaptation from a labeled source to an unlabeled target.

    The source has ``K`` classes; the fitted model predicts one of them or "unknown" (index
    ``K``; ``classes_`` is the source's class names plus ``"unknown"``). A bottleneck classifier
    trains on cached features of the frozen backbone (the feature path of ``adapt``: the same
    extractor, cache and seeded source split) through
    :func:`transferkit.adapt.open_set.fit_open_set`. The labels of the target training split
    are never read, whatever it holds (``needs_target_labels = False``: it is re-wrapped with
    every label hidden before any use); ``threshold`` does not read the target at all.

    Parameters
    ----------
    method
        ``"ovanet"`` (default; Saito & Saenko 2021: one-vs-all heads, covers universal
        adaptation), ``"osbp"`` (Saito et al. 2018: a ``K+1``-way classifier trained
        adversarially against :math:`p_{K+1} = 0.5` on the target) or ``"threshold"`` (source
        only; unknown where the maximum softmax probability is below the value that keeps
        ``known_rate`` of the held-out labeled source rows known).
    selection
        ``None`` (default): ``"last"`` for ``ovanet``/``osbp`` (the papers' fixed budget),
        ``"source_val"`` (labeled source validation loss) for ``threshold``; each method accepts
        either. Neither reads a target label. The choice is recorded in ``selection_``.
    norm
        The bottleneck's normalisation (:class:`transferkit.adapt.open_set.OpenSetNet`):
        ``"batch"`` (BatchNorm; each domain's training batches normalised with their own
        statistics, an implicit moment alignment that assumes both domains hold the same
        classes) or ``"pooled"`` (inputs standardised with the pooled source + target training
        rows, no batch statistics). ``None`` (default): ``"pooled"`` for ``osbp``/``ovanet``,
        ``"batch"`` for ``threshold`` (see :func:`transferkit.adapt.open_set.fit_open_set` for
        the measurements behind it).
    domain_bn
        ``False`` (default): predict with the BatchNorm running statistics of training. ``True``:
        AdaBN, the target training rows' statistics (``norm="batch"`` only). AdaBN assumes both
        domains hold the same classes in the same proportions, which open-set targets break
        (extra classes, and in universal adaptation missing ones). Not used by ``threshold``.
    weight
        OSBP's adversarial weight (1, the paper's).
    entropy_weight
        OVANet's open-set entropy weight on the target (0.1, the paper's lambda).
    known_rate
        ``threshold``: the fraction of held-out labeled source rows kept as known (0.95).
    bottleneck, dropout, epochs, batch_size, lr, weight_decay, source_val_fraction
        As in ``adapt``.

    Fitted attributes (besides :class:`Strategy`'s)
    ------------------------------------------------
    model_ : transferkit.adapt.open_set.OpenSetModel
    classes_ : list[str]
        Source class names (their indices when the source has none) + ``["unknown"]``.
    n_known_ : int
        ``K``.
    selection_ : str
    """

    name = "open_set"
    needs_source = True
    needs_target_labels = False

    # the feature path of ``adapt``, reused as is (the same extractor, cache and source split)
    _features = Adapt._features
    _source_split = Adapt._source_split
    _target_features = Adapt._target_features
    _require_target = Adapt._require_target
    _check_network = Adapt._check_network

    def __init__(self, backbone="efficientnet_lite0", method="ovanet", selection=None, pretrained=True,
                 image_size=None, bottleneck=256, dropout=0.5, norm=None, epochs=30, batch_size=64, lr=1e-3,
                 weight_decay=5e-4,
                 source_val_fraction=0.2, domain_bn=False, weight=1.0, entropy_weight=0.1, known_rate=0.95,
                 cache_dir=None, seed=0, device=None, progress=False):
        self.backbone = backbone
        self.method = method
        self.selection = selection
        self.pretrained = pretrained
        self.image_size = image_size
        self.bottleneck = bottleneck
        self.dropout = dropout
        self.norm = norm
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.source_val_fraction = source_val_fraction
        self.domain_bn = domain_bn
        self.weight = weight
        self.entropy_weight = entropy_weight
        self.known_rate = known_rate
        self.cache_dir = cache_dir
        self.seed = seed
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ validation
    def _validate(self, backbone) -> None:
        from ..errors import ConfigError

        p = self._p
        self._check_common(backbone)
        self._check_network()
        method = check_option(p("method"), self.method, METHODS)
        if self.batch_size == 1:
            raise ConfigError(f"{p('batch_size')}=1 is too small: the bottleneck's BatchNorm needs at least 2 rows "
                              "per batch; use e.g. batch_size: 64.")
        if self.selection is not None:
            check_option(p("selection"), self.selection, ("last", "source_val"))
        norm = self._norm() if self.norm is None else check_option(p("norm"), self.norm, NORMS)
        if self.domain_bn and (norm != "batch" or method == "threshold"):
            raise ConfigError(f"{p('domain_bn')}=true sets BatchNorm statistics from the target, but "
                              f"{p('method')}={method!r} with {p('norm')}={norm!r} has "
                              f"{'no target input' if method == 'threshold' else 'no BatchNorm'}; drop domain_bn.")
        check_flag(p("domain_bn"), self.domain_bn)
        self._num("weight", low=0, high=1e4, example=1.0)
        self._num("entropy_weight", low=0, high=1e4, example=0.1)
        self._num("known_rate", low=0, high=1, low_inclusive=False, high_inclusive=False, example=0.95)

    def _norm(self) -> str:
        return self.norm or ("batch" if self.method == "threshold" else "pooled")

    def _selection(self) -> str:
        return self.selection or ("source_val" if self.method == "threshold" else "last")

    def _selection_text(self) -> str:
        sel = self._selection()
        what = "no target input" if self.method == "threshold" else "no target labels"
        return f"last epoch ({what})" if sel == "last" else f"source_val (labeled source validation loss; {what})"

    # ------------------------------------------------------------------ fit / predict
    def fit(self, train, val=None, *, source=None, run_dir=None):
        """Adapt from ``source`` (labeled) to ``train``, the unlabeled target training split;
        returns ``self``.

        ``train``'s labels are never read (only its inputs, and not even those for
        ``threshold``); ``val`` is not read; nothing is written to ``run_dir``.
        """
        from ..adapt.open_set import fit_open_set

        self.validate()
        self._reset_fitted()
        _check_source(self, source)
        t0 = time.perf_counter()
        source = self._known_classes(source)
        K = int(source.n_classes)
        method, selection = self.method, self._selection()
        Fs, ys, Fsv, ysv = self._source_split(source, hold_out=method == "threshold" or selection == "source_val")
        Ft = None
        if method != "threshold":
            self._require_target(train)
            pool = train.without_labels()  # from here on nothing can read the target's labels
            Ft = self._target_features(pool, Fs.shape[1])
        model = fit_open_set(Fs, ys, Ft, method=method, n_known=K, Xs_val=Fsv, ys_val=ysv,
                             bottleneck=self.bottleneck, dropout=self.dropout, norm=self.norm, epochs=self.epochs,
                             batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                             selection=selection, domain_bn=bool(self.domain_bn), weight=self.weight,
                             entropy_weight=self.entropy_weight, known_rate=self.known_rate, seed=self.seed,
                             device=self.device or "cpu")
        self.model_ = model
        self.history_, self.best_epoch_ = model.history_, model.best_epoch_
        self.selection_ = self._selection_text()
        self.n_known_ = K
        self.classes_ = self._class_names(source.classes, K)
        self.n_classes_ = K + 1
        self.threshold_ = float(model.threshold) if method == "threshold" else None
        self.trainable_params_ = int(sum(p.numel() for p in model.parameters()))
        self.n_target_labels_ = 0
        self.train_time_ = time.perf_counter() - t0
        return self

    @staticmethod
    def _known_classes(source):
        """The source with its label space: the classes its labeled rows show, renumbered
        ``0..K-1`` (a ``keep_classes=[0,1,2,3,4,5]`` source of a 10-class dataset knows 6)."""
        from ..data import DomainDataset

        y = np.asarray(source.labels)
        present = np.unique(y[y >= 0])
        n = int(source.n_classes)
        if len(present) == n and np.array_equal(present, np.arange(n)):
            return source
        lut = np.full(max(n, int(present.max()) + 1), -1, dtype=np.int64)
        lut[present] = np.arange(len(present))
        names = ([str(source.classes[c]) for c in present] if source.classes is not None
                 else [str(c) for c in present])
        return DomainDataset(source.inputs, np.where(y >= 0, lut[np.clip(y, 0, None)], -1), source.name,
                             source.modality, classes=names, spec=source.spec, meta=dict(source.meta))

    @staticmethod
    def _class_names(names, K: int) -> list[str]:
        names = [str(c) for c in names] if names is not None else [str(k) for k in range(K)]
        if UNKNOWN in names:
            raise DataError(f"the source has a class named {UNKNOWN!r}, which open-set adaptation reserves for the "
                            "classes the source never saw; rename that source class.")
        return [*names, UNKNOWN]

    def predict(self, dataset) -> np.ndarray:
        """``(n,)`` classes in ``0..K``; ``K`` (``classes_[-1] == "unknown"``) for a sample of a
        class the source never saw (each method's own decision rule)."""
        return self.model_.predict(self._features(dataset))

    def predict_proba(self, dataset) -> np.ndarray:
        """``(n, K+1)`` open-set probabilities (see
        :meth:`~transferkit.adapt.open_set.OpenSetModel.predict_proba`; decisions follow
        :meth:`predict`)."""
        return self.model_.predict_proba(self._features(dataset))

    def predict_logits(self, dataset) -> np.ndarray:
        """The log of :meth:`predict_proba`, ``(n, K+1)``."""
        return np.log(np.clip(self.predict_proba(dataset), 1e-12, None))

    def unknown_score(self, dataset) -> np.ndarray:
        """``(n,)``, higher = more likely a class the source never saw."""
        return self.model_.unknown_score(self._features(dataset))

    def _open_set_truth(self, dataset) -> np.ndarray:
        """The labels of ``dataset`` in ``0..K`` (``K`` = unknown): by class *name* when the
        dataset has names (a target class absent from the source is unknown), else by index
        (labels ``>= K`` are unknown)."""
        if dataset.labels is None or not (dataset.labels >= 0).any():
            raise DataError(f"cannot score on {dataset.name!r}: it has no labels.")
        y = np.asarray(dataset.labels)
        y = y[y >= 0]
        K = self.n_known_
        if dataset.classes is None:
            return np.where(y >= K, K, y)
        index = {c: k for k, c in enumerate(self.classes_[:-1])}
        names = [str(c) for c in dataset.classes]
        if not any(c in index for c in names):
            raise DataError(f"none of the classes of {dataset.name!r} ({', '.join(names[:5])}) is a source class "
                            f"({', '.join(self.classes_[:min(K, 5)])}); open-set scores need shared classes.")
        lut = np.array([index.get(c, K) for c in names], dtype=np.int64)
        return lut[y]

    def open_set_report(self, dataset, y_pred=None):
        """OS, OS*, UNK and the H-score on the labeled rows of ``dataset``
        (:func:`transferkit.metrics.open_set_scores`; target classes not among the source's
        count as unknown). For evaluation only: training never calls it."""
        from ..metrics.openset import open_set_scores

        truth = self._open_set_truth(dataset)
        pred = self.predict(dataset) if y_pred is None else np.asarray(y_pred)
        mask = np.asarray(dataset.labels) >= 0
        return open_set_scores(truth, pred[mask] if len(pred) == len(mask) else pred, self.n_known_)

    def score(self, dataset, y_pred=None) -> float:
        """Accuracy over every labeled row of ``dataset`` with the open-set truth (a class the
        source never saw must be predicted "unknown"): OSBP's "ALL". It never reads as NaN
        (a target without unknown rows gives the closed-set accuracy), so the experiment runner's
        ``accuracy`` stays defined; the H-score and OS/OS*/UNK are :meth:`open_set_report`'s."""
        truth = self._open_set_truth(dataset)
        pred = self.predict(dataset) if y_pred is None else np.asarray(y_pred)
        mask = np.asarray(dataset.labels) >= 0
        return float(np.mean((pred[mask] if len(pred) == len(mask) else pred) == truth))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The bottleneck classifier (``net.*``, BatchNorm statistics included), OVANet's
        one-vs-all heads (``ova.*``) and the threshold buffer (``threshold``)."""
        return self.model_.state_dict()

    def state_metadata(self) -> dict[str, str]:
        return {"transferkit.n_classes": str(self.n_classes_), "transferkit.open_set_method": self.method,
                "transferkit.classes": json.dumps(self.classes_)}

    def load_state(self, state: dict, metadata: dict | None = None, where: str = "model.safetensors"):
        """The fitted model from :meth:`state_dict` and :meth:`state_metadata`; returns ``self``."""
        from ..adapt.open_set import OpenSetModel

        self.validate()
        self._reset_fitted()
        meta = metadata or {}
        saved = meta.get("transferkit.open_set_method", self.method)
        if saved != self.method:
            raise DataError(f"{where} was fitted with method {saved!r} but the config says {self.method!r}; the file "
                            "and config.yaml must come from the same run.")
        classes = json.loads(meta["transferkit.classes"]) if "transferkit.classes" in meta else None
        if classes is None:
            h = state.get("net.head.weight")
            if h is None:
                raise DataError(f"{where} holds no open-set head (net.head.weight); it must come from an open_set run.")
            K = int(h.shape[0]) - (self.method == "osbp")
            classes = self._class_names(None, K)
        K = len(classes) - 1
        self.model_ = OpenSetModel.from_state(state, self.method, K, self.dropout, where)
        self.classes_, self.n_known_, self.n_classes_ = list(classes), K, K + 1
        self.history_, self.best_epoch_ = [], None
        self.selection_ = self._selection_text()
        self.threshold_ = float(self.model_.threshold) if self.method == "threshold" else None
        return self


__all__ = ["METHODS", "NORMS", "OpenSet", "UNKNOWN"]
