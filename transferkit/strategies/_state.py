"""A fitted strategy's state as safetensors tensors plus short JSON strings (never a pickle).

:meth:`Strategy.state_dict` gives the tensors, :meth:`Strategy.state_metadata` the strings that
go into the file's header, and :meth:`Strategy.load_state` rebuilds the fitted predictor from
both (``transferkit.load_run``). The helpers here serve every strategy: a fitted scikit-learn
estimator (a logistic-regression head, a shallow adapter) as arrays + a JSON header, and a
:class:`~transferkit.nn.TransferModel` rebuilt from its state dict with a Trainer to predict.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import DataError

_SCALARS = (bool, int, float, str, type(None))


def _plain(v) -> bool:
    """JSON-representable without loss: numbers, strings, None, and lists/dicts of them."""
    if isinstance(v, _SCALARS):
        return not isinstance(v, float) or np.isfinite(v)
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return False


def estimator_state(est, prefix: str) -> tuple[dict[str, np.ndarray], str]:
    """A fitted scikit-learn estimator as ``({prefix.attr: array}, header)``.

    Every fitted attribute (a name ending in ``_``) that is a numeric or boolean array becomes a
    tensor; scalars and string arrays go into the JSON ``header`` with the class name and the
    constructor parameters. Attributes of other kinds (nested estimators, score dictionaries)
    are left out: none of them is needed to predict. Arrays keep their dtype (float64 stays
    float64), so the rebuilt estimator computes exactly what the fitted one did.
    """
    tensors: dict[str, np.ndarray] = {}
    attrs: dict = {}
    for k, v in vars(est).items():
        if not k.endswith("_") or k.startswith("_"):
            continue
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, np.ndarray) and v.dtype.kind in "fiub":
            tensors[f"{prefix}.{k}"] = np.ascontiguousarray(v)
        elif isinstance(v, np.ndarray) and v.dtype.kind == "U":
            attrs[k] = {"strings": v.tolist()}
        elif _plain(v) and not isinstance(v, (list, tuple, dict)):
            attrs[k] = v
    params = {k: v for k, v in est.get_params(deep=False).items() if _plain(v)}
    header = json.dumps({"class": type(est).__name__, "params": params, "attributes": attrs}, sort_keys=True)
    return tensors, header


def rebuild_estimator(state: dict, header: str, prefix: str, cls, where: str):
    """The estimator :func:`estimator_state` described, as an instance of ``cls`` (the class the
    caller expects: the file's header never chooses what is imported). ``where`` names the file
    in errors."""
    if header is None:
        raise DataError(f"{where}: no saved {prefix!r} header; the file was written by an older transferkit that did "
                        "not save it: train the run again to predict with it.")
    try:
        info = json.loads(header)
        name, params, attrs = info["class"], info["params"], info["attributes"]
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{where}: the saved {prefix!r} header is not valid JSON state; the file is damaged "
                        "(train the run again).") from None
    if name != cls.__name__:
        raise DataError(f"{where}: the saved {prefix!r} is a {name}, but this strategy rebuilds a {cls.__name__}; "
                        "the file does not belong to this strategy.")
    est = cls(**{k: v for k, v in params.items() if k in cls().get_params(deep=False)})
    for k, v in attrs.items():
        setattr(est, k, np.array(v["strings"]) if isinstance(v, dict) else v)
    keys = [k for k in state if k.startswith(prefix + ".")]
    if not keys:
        raise DataError(f"{where}: no {prefix!r} arrays in the file; it was written by an older transferkit that did "
                        "not save them; train the run again to predict with it.")
    for k in keys:
        setattr(est, k[len(prefix) + 1:], _numpy(state[k]))
    return est


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def logistic_from_linear(W: np.ndarray, b: np.ndarray):
    """A ``LogisticRegression`` whose :func:`~transferkit.strategies.feature_extraction.logistic_as_linear`
    is ``(W, b)`` (the head of a file that kept only it): classes with a bias of -1e4 were
    absent from training; two present classes are the binary case ``(-d/2, d/2)``."""
    from sklearn.linear_model import LogisticRegression

    W, b = np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64)
    present = np.flatnonzero(b > -1e4 + 1)
    clf = LogisticRegression()
    clf.classes_ = present
    if len(present) == 2:
        clf.coef_ = (W[present[1]] - W[present[0]])[None]
        clf.intercept_ = np.array([b[present[1]] - b[present[0]]])
    else:
        clf.coef_, clf.intercept_ = W[present], b[present]
    clf.n_features_in_ = W.shape[1]
    return clf


def transfer_model_from_state(strategy, state: dict, n_classes: int, head: str, dropout: float, where: str,
                              backbone=None):
    """``(model, trainer)``: the strategy's :class:`~transferkit.nn.TransferModel` (its backbone,
    or ``backbone`` when given, built without pretrained weights: every tensor comes from
    ``state``) in eval mode, with a
    :class:`~transferkit.train.Trainer` that predicts as the fitted one did (same batches, same
    device, channels-last images)."""
    import torch

    from ..nn import TransferModel
    from ..train import Trainer
    from .base import resolve_backbone, seeded

    with seeded(strategy.seed):
        bb = resolve_backbone(strategy.backbone, False, strategy.image_size) if backbone is None else backbone
        model = TransferModel(bb, n_classes, head=head, dropout=dropout)
    load_module_state(model, state, where)
    trainer = Trainer(model, [], epochs=1, device=strategy.device, progress=False, tag=strategy.name,
                      checkpoint=False)
    if getattr(model.spec, "modality", None) == "image":
        model.to(memory_format=torch.channels_last)  # as the Trainer trains (and predicts) image models
    model.to(trainer.device).eval()
    return model, trainer


def load_module_state(module, state: dict, where: str) -> None:
    """``module.load_state_dict(state)``, strict; a mismatch is one line naming what differs."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or shapes:
        what = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                else f"{shapes[0]} has shape {tuple(state[shapes[0]].shape)}, the architecture {tuple(own[shapes[0]].shape)}")
        raise DataError(f"{where} does not fit the architecture the run's config builds ({what}); the file and "
                        "config.yaml must come from the same run.")
    module.load_state_dict(state)
