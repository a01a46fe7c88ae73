"""What every strategy shares: fit on a labeled target train split, score on any split."""

from __future__ import annotations

import time

import numpy as np

from ..errors import DataError


def resolve_backbone(backbone, pretrained: bool = True, image_size: int | None = None):
    """See :func:`transferkit.backbones.resolve_backbone` (imported on use: strategies import light)."""
    from ..backbones import resolve_backbone as _resolve

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

    def get_params(self) -> dict:
        import inspect

        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    def validate(self, backbone=None) -> None:
        """Check every parameter without touching data or disk: types, finiteness, ranges and
        cross-field rules; raise :class:`~transferkit.errors.ConfigError` naming the parameter
        and what to do.

        ``backbone``: the built backbone instance when the caller has one (rules such as
        ``unfreeze="last:k"`` depend on its layer groups). The experiment runner calls this for
        every strategy before the run directory is created or an old run is replaced; ``fit``
        calls it again, so the Python API gets the same checks.
        """

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

    def save(self, path, metadata: dict | None = None) -> None:
        """Write :meth:`state_dict` to ``path`` as safetensors (never a pickle)."""
        import torch
        from safetensors.torch import save_file

        state = {k: torch.as_tensor(v).detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})

    def predict_logits(self, dataset) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, dataset) -> np.ndarray:
        return self.predict_logits(dataset).argmax(1)

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
