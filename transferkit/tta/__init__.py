"""Test-time adaptation: a trained classifier adapted on the unlabeled test stream it meets.

``tk.tta.wrap(model, method="tent")`` returns a module that predicts and adapts batch by batch
(registry kind ``tta``):

- ``bn_adapt``: test-time BatchNorm, each batch normalised with its own statistics (optionally
  mixed with the source's); no parameter changes (Nado et al. 2020; Schneider et al. 2020);
- ``tent``: entropy minimisation of the normalisation layers' affine parameters (Wang et al. 2021);
- ``t3a``: backprop-free prototype adjustment of the last linear layer (Iwasawa & Matsuo 2021);
- ``eata``: TENT on reliable, non-redundant samples with a Fisher anchor to the source, the
  continual method that resists error accumulation (Niu et al. 2022).

Every method has ``mode="online"`` (state carried across batches) or ``"episodic"`` (reset
before each batch), ``reset()`` (the exact initial state back), ``batch_size`` (of
:meth:`~transferkit.tta.base.TTAMethod.predict_logits`), ``changed_parameters()`` and
``describe()`` (which parameters change, which statistics are used). Source-free adaptation of
the whole network (SHOT, NRC) is the ``source_free`` strategy.
"""

from __future__ import annotations

from .._registry import available, get, register  # noqa: F401
from .base import MODES, TTAMethod, softmax_entropy
from .eata import EATA
from .norm import BNAdapt, TestTimeBatchNorm
from .t3a import T3A
from .tent import Tent

__all__ = ["BNAdapt", "EATA", "MODES", "T3A", "TTAMethod", "Tent", "TestTimeBatchNorm", "methods", "softmax_entropy",
           "wrap"]


def methods() -> list[str]:
    """The registered test-time adaptation methods."""
    return available("tta")


def wrap(model, method: str = "tent", **options) -> TTAMethod:
    """Put test-time adaptation around a trained classifier.

    Parameters
    ----------
    model
        An ``nn.Module`` from model-ready inputs to logits, or a fitted strategy whose predictor
        is one network (``finetune``, ``scratch``, ``source_free``...).
    method
        A registered method: ``bn_adapt``, ``tent``, ``t3a``, ``eata``.
    **options
        The method's parameters (``mode``, ``batch_size``, ``lr``, ``steps``, ``prior``,
        ``filter_k``...); an unknown one is a one-line error naming the valid ones.

    Returns
    -------
    TTAMethod
        Call it on a batch (``adapted(x)`` gives logits and adapts), or
        ``adapted.predict_logits(stream)`` on a tensor, array or dataset; ``reset()`` restores
        the initial state; ``describe()`` says what changes.
    """
    import inspect

    from .._validation import suggest
    from ..errors import ConfigError

    if not isinstance(method, str):
        raise ConfigError(f"method={method!r} must be the name of a test-time adaptation method: "
                          f"{', '.join(methods())}.")
    cls = get("tta", method)
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model")]
    for k in options:
        if k not in valid:
            raise ConfigError(f"tta method {method!r} has no option {k!r}." + suggest(str(k), valid)
                              + f" Options: {', '.join(valid)}.")
    return cls(model, **options)
