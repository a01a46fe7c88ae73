"""What every strategy shares: fit on a labeled target train split, score on any split."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np

from .._validation import check_choice, check_number
from ..errors import ConfigError, DataError

#: Upper bounds that keep a typo (``epochs: 1000000000``) from asking for absurd time or memory.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_WIDTH = 65_536
MAX_LR = 10.0
#: Parameters a loss or penalty built from user options may have (4 GB of float32).
MAX_OPTION_PARAMS = 10**9


def _fmt(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range_text(low, high, low_inclusive: bool, high_inclusive: bool) -> str:
    if low is not None and high is not None:
        return f"in {'[' if low_inclusive else '('}{_fmt(low)}, {_fmt(high)}{']' if high_inclusive else ')'}"
    if low is not None:
        return f"{'>=' if low_inclusive else '>'} {_fmt(low)}"
    if high is not None:
        return f"{'<=' if high_inclusive else '<'} {_fmt(high)}"
    return ""


def check_param(where: str, value, *, low=None, high=None, low_inclusive: bool = True, high_inclusive: bool = True,
                integer: bool = False, none_ok: bool = False, example=None):
    """A finite number (or ``None`` when ``none_ok``) in range; returns it as ``int``/``float``.

    Numeric strings are converted (YAML 1.1 reads ``1e-3`` as a string). The message is one
    sentence: ``<where>=<value> ...; use <what is valid>, e.g. <example>.``
    """
    if value is None and none_ok:
        return None
    rng = _range_text(low, high, low_inclusive, high_inclusive)
    fix = f"use {'an integer' if integer else 'a finite number'}{' ' + rng if rng else ''}"
    if example is not None:
        fix += f", e.g. {where.rsplit('.', 1)[-1]}: {example}"
    if none_ok:
        fix += ", or leave it out"
    v = value
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise ConfigError(f"{where}={value!r} is not a number; {fix}.") from None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{where}={value!r} is not a number; {fix}.")
    if not math.isfinite(v):
        raise ConfigError(f"{where}={value!r} is not a finite number; {fix}.")
    if integer:
        if float(v) != int(v):
            raise ConfigError(f"{where}={value!r} is not a whole number; {fix}.")
        v = int(v)
    elif isinstance(v, (np.integer, np.floating)):
        v = v.item()
    try:
        check_number(where, v, low=low, high=high, low_inclusive=low_inclusive, high_inclusive=high_inclusive,
                     integer=integer)
    except ConfigError:
        raise ConfigError(f"{where}={value!r} is out of range; {fix}.") from None
    return v


def check_option(where: str, value, choices) -> object:
    """``value`` must be one of ``choices`` (the one format, with a suggestion)."""
    try:
        return check_choice(where, value, choices)
    except TypeError:  # an unhashable value compared with strings
        raise ConfigError(f"{where}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}.") from None


def check_flag(where: str, value) -> bool:
    """A real boolean: ``invert: maybe`` or ``1`` is an error, not silently true or false."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{where}={value!r} is not a boolean; write {where.rsplit('.', 1)[-1]}: true or false.")
    return bool(value)


def check_finite_tree(where: str, value) -> None:
    """No NaN or infinity anywhere inside an options mapping or list."""
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite_tree(f"{where}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite_tree(f"{where}[{i}]", v)
    elif isinstance(value, (float, np.floating)) and not math.isfinite(value):
        raise ConfigError(f"{where}={value!r} is not a finite number; give a finite value or leave the option out.")


def check_seed(where: str, value) -> int:
    return check_param(where, value, low=0, high=2**32 - 1, integer=True, example=0)


def check_backbone_arg(where: str, backbone) -> None:
    """A backbone name, instance or factory (the instance itself is checked by its builder)."""
    if isinstance(backbone, str):
        if not backbone.strip():
            raise ConfigError(f"{where}='' is empty; name a backbone, e.g. backbone: efficientnet_lite0.")
        return
    if not callable(backbone):
        raise ConfigError(f"{where}={backbone!r} must be a backbone name, a Backbone instance or a factory "
                          "f(pretrained=...); e.g. backbone: efficientnet_lite0.")


def check_unfreeze(where: str, spec, n_groups: int | None = None) -> int | None:
    """:func:`transferkit.finetune.parse_unfreeze` with the parameter named as ``where``."""
    from ..finetune.groups import parse_unfreeze

    return parse_unfreeze(spec, n_groups, where)


def n_backbone_groups(backbone) -> int | None:
    """Number of layer groups of a built backbone, or ``None`` when it is not built (a name or a
    factory: building it here would load weights)."""
    if backbone is None or isinstance(backbone, str) or not hasattr(backbone, "layer_groups"):
        return None
    try:
        from torch import nn

        if not isinstance(backbone, nn.Module):
            return None
    except ImportError:  # pragma: no cover
        return None
    return len(backbone.layer_groups())


def check_device_param(where: str, device):
    """A torch device this machine has (``None``: the GPU when there is one); see
    :func:`transferkit.train.trainer.check_device`."""
    if device is None:
        return None
    from ..train.trainer import check_device

    return check_device(device, param=where)


def check_options_signature(where: str, cls, options, *, what: str, skip=("self",)) -> None:
    """Every key of ``options`` is a constructor argument of ``cls``."""
    import inspect

    from .._validation import suggest

    if not isinstance(options, dict):
        raise ConfigError(f"{where}={options!r} must be a mapping of option names to values, e.g. {{lam: 100}}.")
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in skip]
    for k in options:
        if k not in params:
            raise ConfigError(f"{where} has an unknown option {k!r} for {what}." + suggest(str(k), params)
                              + (f" Options: {', '.join(params)}." if params else " It takes no options."))


def build_on_meta(where: str, build, options=()):
    """Run ``build()`` on the meta device (modules get shapes, no memory) to check option values
    the way the real constructor does; a constructor's ``ConfigError`` is re-raised naming
    ``where`` (``where.<option>`` when it names one of ``options``); returns the number of
    parameters the real object would have."""
    import torch

    try:
        with torch.device("meta"):
            obj = build()
    except ConfigError as exc:
        msg = str(exc)
        key = next((k for k in options if msg.startswith((f"{k} ", f"{k}="))), None)
        raise ConfigError(f"{where}.{msg}" if key is not None else f"{where}: {msg}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}; check the option values.") from None
    n = sum(p.numel() for p in obj.parameters()) if hasattr(obj, "parameters") else 0
    if n > MAX_OPTION_PARAMS:
        raise ConfigError(f"{where} would build {n:,} parameters (more than {MAX_OPTION_PARAMS:,}); "
                          "use smaller sizes (e.g. hidden).")
    return n


@contextmanager
def seeded(seed: int):
    """Seed torch, NumPy and Python's ``random`` from ``seed`` inside the block and give the
    caller's global states back afterwards: whatever ran before in the process, a backbone (or
    head) built in here is the same; whatever runs after is not disturbed."""
    import random

    import torch

    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def softmax(z) -> np.ndarray:
    """Row-wise softmax of logits ``(n, K)`` in float64."""
    z = np.asarray(z, dtype=np.float64)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def resolve_backbone(backbone, pretrained: bool = True, image_size: int | None = None, data=None):
    """See :func:`transferkit.backbones.resolve_backbone` (imported on use: strategies import light).

    ``backbone="identity"`` (or ``"none"``) given by name takes its width from ``data``, the
    table the strategy is fitted on, as ``backbone: auto`` does in an experiment file."""
    from ..backbones import create_backbone
    from ..backbones import resolve_backbone as _resolve
    from ..config import NO_BACKBONE_NAMES

    if isinstance(backbone, str) and backbone in NO_BACKBONE_NAMES and data is not None and data.modality == "tabular":
        return create_backbone("identity", in_features=int(np.shape(data.inputs)[1]))
    return _resolve(backbone, pretrained, image_size)


class Strategy:
    """Base of the registered strategies (scikit-learn conventions: no logic in ``__init__``,
    fitted attributes end in ``_``, ``fit`` returns ``self``).

    Fitted attributes
    -----------------
    train_time_ : float
        Seconds spent in ``fit`` (feature extraction included).
    trainable_params_ : int
        Parameters updated by training.
    history_ : list[dict]
        Per-epoch metrics (empty for closed-form heads).
    """

    name = "strategy"

    #: Whether ``fit`` needs labeled target training samples (the domain-adaptation strategies
    #: and their source-only baselines do not: they train on a labeled source).
    needs_target_labels = True

    #: Parameters that decide the feature extractor a strategy builds (``extractor_`` is kept
    #: across fits while these stay the same: it holds no data, only the built backbone).
    _EXTRACTOR_PARAMS = ("backbone", "pretrained", "image_size", "cache_dir", "batch_size", "device", "progress",
                         "seed")

    @classmethod
    def _param_names(cls) -> list[str]:
        import inspect

        return [k for k in inspect.signature(cls.__init__).parameters if k != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """The constructor parameters (scikit-learn's contract; ``deep`` is accepted for
        ``sklearn.base.clone``: strategies hold no nested estimators among their parameters)."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params):
        """Set constructor parameters (scikit-learn's contract); an unknown name is a
        :class:`~transferkit.errors.ConfigError` with the nearest valid names. Returns ``self``."""
        from .._validation import suggest

        valid = self._param_names()
        for k, v in params.items():
            if k not in valid:
                raise ConfigError(f"{self.name}: unknown parameter {k!r}." + suggest(k, valid)
                                  + f" Valid parameters: {', '.join(valid)}.")
            if k in self._EXTRACTOR_PARAMS:
                self.__dict__.pop("extractor_", None)  # built from the old value
            setattr(self, k, v)
        return self

    def _reset_fitted(self) -> None:
        """Forget everything an earlier ``fit`` left behind (attributes ending in ``_`` and the
        private fitted state), so a refit never predicts with an old model; the feature
        extractor is kept (see :attr:`_EXTRACTOR_PARAMS`)."""
        for k in list(self.__dict__):
            if (k.endswith("_") and not k.startswith("__") and k != "extractor_") or k == "_adapter":
                del self.__dict__[k]

    def validate(self, backbone=None) -> None:
        """Check every parameter without touching data or disk: types, finiteness, ranges and
        cross-field rules; raise :class:`~transferkit.errors.ConfigError` naming the parameter
        and what to do.

        ``backbone``: the built backbone instance when the caller has one (rules such as
        ``unfreeze="last:k"`` depend on its layer groups). The experiment runner calls this for
        every strategy before the run directory is created or an old run is replaced; ``fit``
        calls it again, so the Python API gets the same checks.

        Numeric strings (YAML 1.1 reads ``1e-3`` as a string) are converted in place; nothing
        else is changed. Subclasses check their parameters in :meth:`_validate`.
        """
        self._validate(backbone)

    def _validate(self, backbone) -> None:  # pragma: no cover - every strategy overrides it
        pass

    def _p(self, param: str) -> str:
        """The parameter as the user wrote it in a config: ``<strategy>.<param>``."""
        return f"{self.name}.{param}"

    def _num(self, param: str, **rule):
        """Check the numeric parameter ``param`` (see :func:`check_param`) and store the
        converted value."""
        v = check_param(self._p(param), getattr(self, param), **rule)
        setattr(self, param, v)
        return v

    def _check_common(self, backbone) -> None:
        """Parameters every strategy has: backbone, pretrained, image_size, batch_size, seed,
        device, progress, cache_dir."""
        import os

        check_backbone_arg(self._p("backbone"), self.backbone if backbone is None else backbone)
        check_flag(self._p("pretrained"), self.pretrained)
        self._num("image_size", low=8, high=1024, integer=True, none_ok=True, example=64)
        self._num("batch_size", low=1, high=MAX_BATCH_SIZE, integer=True, example=32)
        self.seed = check_seed(self._p("seed"), self.seed)
        check_device_param(self._p("device"), self.device)
        check_flag(self._p("progress"), self.progress)
        if self.cache_dir not in (None, False) and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise ConfigError(f"{self._p('cache_dir')}={self.cache_dir!r} must be a folder path (false: no cache), "
                              "or leave it out.")

    @staticmethod
    def _check_train(train) -> None:
        if train.labels is None or not (train.labels >= 0).any():
            raise DataError(
                f"training dataset {train.name!r} has no labeled samples; this strategy needs labels "
                "(give a label column or one folder per class)."
            )

    def fit(self, train, val=None, *, run_dir=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Tensors that reproduce the fitted predictor (saved as safetensors by :meth:`save`)."""
        raise NotImplementedError

    def state_metadata(self) -> dict[str, str]:
        """Strings :meth:`load_state` needs besides the tensors (saved in the safetensors header
        by :meth:`save`); none by default."""
        return {}

    def load_state(self, state: dict, metadata: dict | None = None):
        """Rebuild the fitted predictor from :meth:`state_dict`'s tensors and
        :meth:`state_metadata`'s strings (as :func:`transferkit.load_run` reads them from a
        run's ``model.safetensors``), with this instance's parameters; returns ``self``."""
        raise NotImplementedError(f"{type(self).__name__} cannot be rebuilt from a saved state.")

    def save(self, path, metadata: dict | None = None) -> None:
        """Write :meth:`state_dict` to ``path`` as safetensors (never a pickle), with
        :meth:`state_metadata` and ``metadata`` in its header."""
        import torch
        from safetensors.torch import save_file

        state = {k: torch.as_tensor(v).detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {**self.state_metadata(), **(metadata or {})}
        save_file(state, str(path), metadata={k: str(v) for k, v in meta.items()})

    def predict_logits(self, dataset) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, dataset) -> np.ndarray:
        return self.predict_logits(dataset).argmax(1)

    def predict_proba(self, dataset) -> np.ndarray:
        """Class probabilities ``(n, K)``: the softmax of :meth:`predict_logits` (for the
        closed-form heads, whose logits are log-probabilities, the classifier's own)."""
        return softmax(self.predict_logits(dataset))

    def score(self, dataset, y_pred=None) -> float:
        """Accuracy on the labeled samples of ``dataset`` (``y_pred``: its predictions, when
        already computed)."""
        if dataset.labels is None or not (dataset.labels >= 0).any():
            raise DataError(f"cannot score on {dataset.name!r}: it has no labels.")
        mask = dataset.labels >= 0
        pred = self.predict(dataset) if y_pred is None else np.asarray(y_pred)
        return float((pred[mask] == dataset.labels[mask]).mean())

    def _timer(self):
        return time.perf_counter()
