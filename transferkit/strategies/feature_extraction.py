"""Feature extraction: frozen pretrained backbone, cached features, a new linear head."""

from __future__ import annotations

import time

import numpy as np

from .._compat import one_blas_thread
from .._faults import fault_point
from .._registry import register
from .._validation import check_number
from ..features import FeatureExtractor
from .base import MAX_EPOCHS, MAX_LR, Strategy, check_flag, check_option, check_param, resolve_backbone, seeded


def logistic_as_linear(clf, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted scikit-learn ``LogisticRegression`` as a linear layer over all ``n_classes``.

    Returns ``(W, b)`` with ``W: (n_classes, d)`` such that ``argmax(F @ W.T + b)`` equals
    ``clf.predict(F)``. The binary case's single decision function ``d`` becomes the logits
    ``(-d/2, d/2)``; classes absent from the training labels get a bias of -1e4.
    """
    d = clf.coef_.shape[1]
    W = np.zeros((n_classes, d), dtype=np.float32)
    b = np.full(n_classes, -1e4, dtype=np.float32)
    if len(clf.classes_) == 2:
        W[clf.classes_] = np.vstack([-clf.coef_, clf.coef_]) / 2
        b[clf.classes_] = np.r_[-clf.intercept_, clf.intercept_] / 2
    else:
        W[clf.classes_] = clf.coef_
        b[clf.classes_] = clf.intercept_
    return W, b


@register("strategy", "feature_extraction")
class FeatureExtraction(Strategy):
    """Frozen backbone + new linear head (logistic regression, or a trained linear layer).

    Features are computed once per (backbone, data) and cached on disk, so every seed and every
    head reuses them.

    Parameters
    ----------
    backbone
        Backbone name or instance.
    head
        ``"logistic"``: multinomial logistic regression (L-BFGS, L2 penalty ``1/C``) on the raw
        features; ``"linear"``: a linear layer trained with AdamW on the features.
    C
        Inverse L2 strength of the logistic head. ``"auto"`` picks it from a small grid by
        validation accuracy (never test).
    standardize
        Standardize features before the head. Off by default: ImageNet features are already
        on a common scale, and standardizing them amplifies dead dimensions.
    image_size, batch_size, cache_dir, progress, seed
        See :class:`transferkit.features.FeatureExtractor`.
    """

    name = "feature_extraction"

    def __init__(self, backbone="efficientnet_lite0", head="logistic", C=1.0, standardize=False,
                 image_size=None, batch_size=64, epochs=100, lr=1e-2, weight_decay=1e-4,
                 cache_dir=None, progress=False, seed=0, device="cpu", pretrained=True):
        self.backbone = backbone
        self.head = head
        self.C = C
        self.standardize = standardize
        self.image_size = image_size
        self.batch_size = batch_size
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.cache_dir = cache_dir
        self.progress = progress
        self.seed = seed
        self.device = device
        self.pretrained = pretrained

    def _validate(self, backbone) -> None:
        self._check_common(backbone)
        check_option(self._p("head"), self.head, ("logistic", "linear"))
        if self.C != "auto":
            self.C = check_param(self._p("C"), self.C, low=0, high=1_000_000, low_inclusive=False,
                                 example="1.0 (or auto)")
        check_flag(self._p("standardize"), self.standardize)
        self._num("epochs", low=1, high=MAX_EPOCHS, integer=True, example=100)
        self._num("lr", low=0, high=MAX_LR, low_inclusive=False, example=0.01)
        self._num("weight_decay", low=0, high=10, example=0.0001)

    def _extractor(self, data=None):
        if not hasattr(self, "extractor_"):
            # a randomly initialised backbone is part of the seeded run, whatever ran before
            with seeded(self.seed):
                bb = resolve_backbone(self.backbone, self.pretrained, self.image_size, data=data)
            self.extractor_ = FeatureExtractor(bb, batch_size=self.batch_size, cache_dir=self.cache_dir,
                                               progress=self.progress, device=self.device).fit()
        return self.extractor_

    def transform(self, dataset) -> np.ndarray:
        f = self._extractor(dataset).transform(dataset)
        return (f - self.mean_) / self.scale_ if self.standardize else f

    def fit(self, train, val=None, *, run_dir=None):
        self.validate()
        self._reset_fitted()  # a refit never reuses an earlier fit's state
        self._check_train(train)
        t0 = time.perf_counter()
        mask = train.labeled_mask
        ex = self._extractor(train)
        F_all = ex.transform(train)
        Ftr, ytr = F_all[mask], train.labels[mask]
        if self.standardize:
            self.mean_, self.scale_ = Ftr.mean(0), Ftr.std(0) + 1e-6
            Ftr = (Ftr - self.mean_) / self.scale_
        self.classes_ = np.arange(train.n_classes)
        if self.head == "logistic":
            self.clf_, self.C_ = self._fit_logistic(Ftr, ytr, val)
            self.trainable_params_ = int(self.clf_.coef_.size + self.clf_.intercept_.size)
            self.history_ = []
        else:
            self._fit_linear(Ftr, ytr, val, run_dir)
        self.train_time_ = time.perf_counter() - t0
        return self

    def _fit_logistic(self, X, y, val):
        from sklearn.linear_model import LogisticRegression

        grid = [0.01, 0.1, 1.0, 10.0] if self.C == "auto" else [check_number("C", self.C, low=0, low_inclusive=False)]
        if len(grid) > 1 and val is None:
            grid = [1.0]
        best = None
        Fv = self.transform(val) if len(grid) > 1 else None
        for C in grid:
            clf = LogisticRegression(C=C, max_iter=5000, tol=1e-6)
            with one_blas_thread():
                clf.fit(X, y)
            fault_point("feature_extraction.logistic")
            if len(grid) == 1:
                return clf, C
            m = val.labeled_mask
            acc = (clf.predict(Fv[m]) == val.labels[m]).mean()
            if best is None or acc > best[0]:
                best = (acc, clf, C)
        return best[1], best[2]

    def _fit_linear(self, X, y, val, run_dir):
        from ..data import DomainDataset
        from ..finetune import build_param_groups
        from ..nn import TransferModel
        from ..train import Trainer
        from ..backbones.vision import IdentityBackbone

        with seeded(self.seed):
            # every class of the dataset, not only those present in the labeled train samples
            model = TransferModel(IdentityBackbone(X.shape[1]), max(len(self.classes_), int(y.max()) + 1))
        tr = DomainDataset(X, y, "features", "tabular")
        va = None
        if val is not None:
            va = DomainDataset(self.transform(val), val.labels, "features-val", "tabular")
        trainer = Trainer(model, build_param_groups(model, self.lr, weight_decay=self.weight_decay),
                          epochs=self.epochs, batch_size=self.batch_size, seed=self.seed, run_dir=run_dir,
                          progress=self.progress, warmup_epochs=0, device=self.device, tag="linear head")
        trainer.fit(tr, va)
        self.linear_ = model
        self.history_ = trainer.history
        self.trainable_params_ = sum(p.numel() for p in model.head.parameters())

    def state_dict(self) -> dict:
        """The head only (the backbone is the unchanged pretrained one): ``head.weight``,
        ``head.bias``, and the standardization when used."""
        if self.head == "logistic":
            W, b = logistic_as_linear(self.clf_, len(self.classes_))
            out = {"head.weight": W, "head.bias": b}
        else:
            out = {k: v for k, v in self.linear_.state_dict().items() if k.startswith("head.")}
            out = {"head.weight": out["head.fc.weight"], "head.bias": out["head.fc.bias"]}
        if self.standardize:
            out.update({"feature_mean": self.mean_.astype(np.float32), "feature_scale": self.scale_.astype(np.float32)})
        if self.head == "logistic":  # the classifier itself (float64), so load_state predicts exactly as it did
            from ._state import estimator_state

            out.update(estimator_state(self.clf_, "clf")[0])
        return out

    def state_metadata(self) -> dict[str, str]:
        if self.head != "logistic":
            return {}
        from ._state import estimator_state

        return {"transferkit.clf": estimator_state(self.clf_, "clf")[1]}

    def load_state(self, state: dict, metadata: dict | None = None, where: str = "model.safetensors"):
        """The fitted head from :meth:`state_dict` (the backbone is rebuilt from the parameters,
        as in ``fit``); returns ``self``."""
        from ._state import _numpy, load_module_state, logistic_from_linear, rebuild_estimator

        self.validate()
        self._reset_fitted()
        W, b = _numpy(state["head.weight"]), _numpy(state["head.bias"])
        self.classes_ = np.arange(len(b))
        if self.standardize:
            self.mean_, self.scale_ = _numpy(state["feature_mean"]), _numpy(state["feature_scale"])
        if self.head == "logistic":
            from sklearn.linear_model import LogisticRegression

            header = (metadata or {}).get("transferkit.clf")
            self.clf_ = (rebuild_estimator(state, header, "clf", LogisticRegression, where) if header
                         else logistic_from_linear(W, b))
            self.trainable_params_ = int(self.clf_.coef_.size + self.clf_.intercept_.size)
        else:
            import torch

            from ..backbones.vision import IdentityBackbone
            from ..nn import TransferModel

            with seeded(self.seed):
                model = TransferModel(IdentityBackbone(W.shape[1]), len(b))
            load_module_state(model, {"head.fc.weight": torch.as_tensor(W), "head.fc.bias": torch.as_tensor(b)}, where)
            self.linear_ = model.eval()
            self.trainable_params_ = int(W.size + b.size)
        self.history_ = []
        return self

    def predict_logits(self, dataset) -> np.ndarray:
        F = self.transform(dataset)
        if self.head == "logistic":
            W, b = logistic_as_linear(self.clf_, len(self.classes_))
            return F @ W.T + b
        import torch

        with torch.no_grad():
            self.linear_.eval()
            return self.linear_(torch.as_tensor(F)).numpy()
