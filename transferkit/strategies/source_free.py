"""Source-free domain adaptation: a trained source model adapted on the unlabeled target alone."""

from __future__ import annotations

import copy
import time

import numpy as np

from .._registry import register
from ..errors import ConfigError, DataError
from .base import MAX_EPOCHS, MAX_LR, Strategy, check_option, resolve_backbone, seeded

#: What ``source_free.method`` may be (:data:`transferkit.adapt.source_free.METHODS`).
METHODS = ("shot", "shot_im", "aad")


@register("strategy", "source_free")
class SourceFree(Strategy):
    """Source-free adaptation (SHOT, SHOT-IM, AaD): no source data, no target labels.

    The backbone must carry the classifier it was trained with (``Backbone.source_head``: the
    digit CNNs ``usps_cnn``, ``svhn_cnn`` and ``mnist_cnn``, an ImageNet model's own head, or a
    ``file:`` model whose weights include it). That classifier stays frozen; every backbone
    parameter is trained on the inputs of the unlabeled target training split by
    :func:`transferkit.adapt.source_free.train_source_free`, and the model predicts
    ``source_head(backbone(x))``. The labels of the training split are never read, whatever it
    holds (``needs_target_labels = False``), and no source dataset is needed
    (``needs_source = False``). The kept model is the last epoch's (``selection_``): there is
    nothing label-free to select with that the methods do not already optimise.

    Parameters
    ----------
    backbone
        A source model with its classifier (name, instance or factory). An instance is copied:
        fitting never changes the caller's model.
    method
        ``"shot"`` (default; information maximisation + clustering pseudo-labels), ``"shot_im"``
        (information maximisation alone) or ``"aad"`` (attracting and dispersing, with a
        memory bank of the target pool). See :mod:`transferkit.adapt.source_free` for the
        papers' settings these defaults come from (fixed before any target label was seen).
    epochs, batch_size, lr
        Passes over the target pool (SHOT's digit setting: 30), batch size (64, at least 2)
        and the initial SGD learning rate of the backbone (0.01, decayed as
        ``lr * (1 + 10 t/T) ** -0.75``).
    beta
        SHOT's pseudo-label weight; ``None`` (default): 0.1 for ``shot`` (the authors' digit
        setting), 0 for ``shot_im``. Not used by ``aad`` (an error there).
    n_neighbors
        AaD's neighbours per sample; ``None`` (default): 3. Only for ``aad``.
    pretrained, image_size, seed, device, progress
        As in the other strategies; ``pretrained`` must stay true (the trained source model).
    cache_dir
        Accepted for the experiment's common options and unused: the backbone trains, so no
        feature is cached.

    Fitted attributes (besides :class:`Strategy`'s)
    ------------------------------------------------
    model_ : transferkit.adapt.source_free.SourceModel
        The adapted backbone and the frozen source head, in eval mode.
    selection_ : str
        ``"last epoch (no target labels)"``.
    beta_, n_neighbors_ : float or int or None
        The values the method used.
    n_classes_ : int
        The source classifier's classes.
    """

    name = "source_free"
    needs_target_labels = False
    needs_source = False
    #: trains on the target's inputs alone: an experiment without labels and without a source runs it
    source_free = True

    def __init__(self, backbone="efficientnet_lite0", method="shot", epochs=30, batch_size=64, lr=0.01, beta=None,
                 n_neighbors=None, pretrained=True, image_size=None, cache_dir=None, seed=0, device=None,
                 progress=False):
        self.backbone = backbone
        self.method = method
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.beta = beta
        self.n_neighbors = n_neighbors
        self.pretrained = pretrained
        self.image_size = image_size
        self.cache_dir = cache_dir
        self.seed = seed
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ validation
    def _validate(self, backbone) -> None:
        from torch import nn

        p = self._p
        self._check_common(backbone)
        method = check_option(p("method"), self.method, METHODS)
        self._num("epochs", low=1, high=MAX_EPOCHS, integer=True, example=30)
        if self.batch_size == 1:
            raise ConfigError(f"{p('batch_size')}=1 is too small: the diversity term and BatchNorm need at least 2 "
                              "samples per batch; use e.g. batch_size: 64.")
        self._num("batch_size", low=2, integer=True, example=64)
        self._num("lr", low=0, high=MAX_LR, low_inclusive=False, example=0.01)
        beta = self._num("beta", low=0, high=100, none_ok=True, example=0.1)
        if beta is not None and method == "shot_im" and beta != 0:
            raise ConfigError(f"{p('beta')}={beta!r} contradicts {p('method')}='shot_im' (SHOT-IM is SHOT with "
                              "beta=0); use method: shot for a pseudo-label weight, or drop beta.")
        if beta is not None and method == "aad":
            raise ConfigError(f"{p('beta')} is SHOT's pseudo-label weight and {p('method')}='aad' does not use it; "
                              "drop beta, or use method: shot.")
        k = self._num("n_neighbors", low=1, high=1000, integer=True, none_ok=True, example=3)
        if k is not None and method != "aad":
            raise ConfigError(f"{p('n_neighbors')} is AaD's neighbourhood size and {p('method')}={method!r} does not "
                              "use it; drop n_neighbors, or use method: aad.")
        # a built instance is used as it is; a name or a factory is built with ``pretrained``
        if not self.pretrained and not isinstance(self.backbone, nn.Module):
            raise ConfigError(f"{p('pretrained')}=false builds the backbone without its trained weights and "
                              "classifier, but source-free adaptation starts from the trained source model; leave "
                              "pretrained out (true).")

    def check_target(self, backbone, target) -> None:
        """Before anything is written (the experiment runner calls this with the built backbone
        and the target): the backbone carries a source classifier whose classes are the
        target's."""
        from ..adapt.source_free import source_model

        model = source_model(backbone, where=self._p("backbone"), pretrained=self.pretrained)
        names = getattr(target, "classes", None)
        if names is not None and len(names) != model.num_classes:
            raise DataError(f"the source classifier of {self._p('backbone')} has {model.num_classes} classes but the "
                            f"target {target.name!r} has {len(names)}; source-free adaptation keeps the source classes: "
                            f"use a source model trained on the target's {len(names)} classes.")

    # ------------------------------------------------------------------ model
    def _backbone(self, pretrained: bool):
        """The backbone, built from the seed (a factory or name); an instance is copied so
        that training never changes the caller's model."""
        from torch import nn

        if isinstance(self.backbone, nn.Module):
            return copy.deepcopy(self.backbone)
        with seeded(self.seed):
            return resolve_backbone(self.backbone, pretrained, self.image_size)

    def fit(self, train, val=None, *, run_dir=None):
        """Adapt the source model on the inputs of ``train`` (the unlabeled target training
        split); returns ``self``.

        ``train``'s labels are never read (it is re-wrapped with every label hidden before any
        use); ``val`` is not read (selection is the last epoch), nor is ``run_dir`` written.
        """
        from ..adapt.source_free import source_model, train_source_free

        self.validate()
        self._reset_fitted()
        if train is None or len(train) == 0:
            raise DataError(f"{self.name} needs the target training split (its unlabeled inputs); got "
                            f"{'None' if train is None else 'an empty split'}.")
        pool = train.without_labels()  # from here on nothing can read the target's labels
        t0 = time.perf_counter()
        model = source_model(self._backbone(self.pretrained), where=self._p("backbone"), pretrained=self.pretrained)
        names = pool.classes
        if names is not None and len(names) != model.num_classes:
            raise DataError(f"the source classifier of {self._p('backbone')} has {model.num_classes} classes but the "
                            f"target {pool.name!r} has {len(names)}; source-free adaptation keeps the source classes: "
                            f"use a source model trained on the target's {len(names)} classes.")
        res = train_source_free(model, pool, method=self.method, epochs=self.epochs, batch_size=self.batch_size,
                                lr=self.lr, beta=self.beta, n_neighbors=self.n_neighbors, seed=self.seed,
                                device=self.device, progress=self.progress)
        self.model_ = model
        self.history_ = res["history"]
        self.best_epoch_ = self.epochs - 1
        self.selection_ = "last epoch (no target labels)"
        self.beta_, self.n_neighbors_ = res["beta"], res["n_neighbors"]
        self.n_classes_ = model.num_classes
        self.trainable_params_ = int(sum(p.numel() for p in model.backbone.parameters()))
        self.train_time_ = time.perf_counter() - t0
        return self

    def predict_logits(self, dataset) -> np.ndarray:
        """``source_head(backbone(x))`` for every input of ``dataset`` (eval mode), ``(n, K)``."""
        from ..adapt.source_free import predict_outputs

        return predict_outputs(self.model_, dataset)[1]

    def state_dict(self) -> dict:
        """The adapted backbone (``backbone.*``, BatchNorm statistics included) and the source
        head (``head.weight``, ``head.bias``)."""
        return self.model_.state_dict()

    def state_metadata(self) -> dict[str, str]:
        return {"transferkit.n_classes": str(self.n_classes_)}

    def load_state(self, state: dict, metadata: dict | None = None, where: str = "model.safetensors"):
        """The adapted model from :meth:`state_dict` (the backbone is built without pretrained
        weights: every tensor comes from ``state``); returns ``self``."""
        import torch
        from torch import nn

        from ..adapt.source_free import SourceModel, _default_device
        from ._state import load_module_state

        self.validate()
        self._reset_fitted()
        w = state.get("head.weight")
        if w is None or w.ndim != 2:
            raise DataError(f"{where} holds no source head (head.weight); the file and config.yaml must come from the "
                            "same source_free run.")
        bb = self._backbone(False)
        model = SourceModel(bb, nn.Linear(int(w.shape[1]), int(w.shape[0])))
        load_module_state(model, {k: torch.as_tensor(v) for k, v in state.items()}, where)
        self.model_ = model.prepare(_default_device(self.device)).eval()
        self.history_, self.best_epoch_ = [], None
        self.selection_ = "last epoch (no target labels)"
        self.n_classes_ = int(w.shape[0])
        return self
