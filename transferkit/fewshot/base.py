"""What every few-shot method shares: an encoder, episode prediction, optional meta-training.

A method is registered under kind ``fewshot`` (``@register("fewshot", "protonet")``) and is a
class whose ``__init__`` only stores its parameters (the scikit-learn rule; ``get_params`` lists
them). It works on a :class:`MetaData`: one tensor holding every row (raw images ``(n, C, H, W)``,
table rows ``(n, d)``, or cached backbone features ``(n, d)``), their labels, and the samplers of
the class splits. The runner gives it an *encoder*, a ``torch.nn.Module`` mapping a batch of rows
to ``(batch, d)`` features (``nn.Identity`` on cached features, :func:`conv4` on raw images).

Life cycle::

    method = get("fewshot", "protonet")(distance="sqeuclidean")
    method.setup(encoder, feature_dim=d, seed=0)
    if method.needs_meta_training:        # or, for a baseline, supervised pre-training
        history = method.meta_train(data, steps=2000, log=print)   # selects on data.val episodes only
    logits = method.predict_episode(xs, ys, xq, n_way)              # (n_query, n_way)

:func:`evaluate` runs ``predict_episode`` over a sampler's episodes and returns the per-episode
accuracies (mean and 95% interval via :func:`transferkit.fewshot.episodes.mean_ci95`).
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .._validation import check_number, check_seed
from ..errors import ConfigError
from .episodes import Episode, EpisodeSampler, mean_ci95


@dataclass
class MetaData:
    """Every row of a few-shot dataset and the samplers over its class splits.

    Attributes
    ----------
    inputs
        ``(n, ...)`` float tensor: raw inputs or cached features, indexed by episode rows.
    labels
        ``(n,)`` int array of dataset label values.
    train, val, test
        :class:`EpisodeSampler` over the meta-train / meta-val / meta-test classes (``None`` when
        the split is absent). A method that meta-trains must not touch ``test``.
    class_names
        Names aligned with the label values, when known.
    """

    inputs: torch.Tensor
    labels: np.ndarray
    train: EpisodeSampler | None = None
    val: EpisodeSampler | None = None
    test: EpisodeSampler | None = None
    class_names: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def rows(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(support_x, support_y, query_x, query_y)`` of an episode as tensors."""
        xs = self.inputs[torch.as_tensor(episode.support)]
        xq = self.inputs[torch.as_tensor(episode.query)]
        return xs, torch.as_tensor(episode.support_labels), xq, torch.as_tensor(episode.query_labels)


class FewShotMethod:
    """Base class of the registered few-shot methods.

    Subclasses set ``needs_meta_training`` (True: :meth:`meta_train` is required before
    prediction, and a run without meta-train classes is refused) and implement
    :meth:`predict_episode`; those that learn from the meta-train classes implement
    :meth:`meta_train`. ``pretrains`` marks a transfer baseline whose optional
    :meth:`meta_train` is ordinary supervised training on the meta-train classes.
    """

    needs_meta_training: bool = False
    #: True for baselines whose meta_train is supervised pre-training of the encoder (optional).
    pretrains: bool = False

    # ---------------------------------------------------------------- parameters (sklearn-style)
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def get_params(self, deep: bool = False) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> FewShotMethod:
        names = self._param_names()
        for k, v in params.items():
            if k not in names:
                from .._validation import suggest

                raise ConfigError(f"unknown parameter {k!r} for {type(self).__name__}." + suggest(k, names)
                                  + f" Parameters: {', '.join(names)}.")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------- life cycle
    def setup(self, encoder: nn.Module, feature_dim: int, seed: int = 0) -> FewShotMethod:
        """Attach the encoder (``(batch, ...) -> (batch, feature_dim)``) and seed the method.

        Checks the parameters (one pass, before any training) via :meth:`_check_params`.
        """
        self._check_params()
        self.encoder_ = encoder
        self.feature_dim_ = check_number("feature_dim", feature_dim, low=1, integer=True)
        self.seed_ = check_seed("seed", seed)
        self.meta_trained_ = False
        return self

    def _check_params(self) -> None:
        """Validate the parameters; raise :class:`ConfigError` naming the bad one."""

    def meta_train(self, data: MetaData, *, steps: int, log: Callable[[str], None] | None = None,
                   eval_every: int = 100, val_episodes: int = 100) -> list[dict]:
        """Learn from meta-train episodes; select the checkpoint on meta-val episodes only.

        Returns the history: one dict per evaluation (``step``, ``loss``, ``val_accuracy``,
        ``seconds``). Methods without training return ``[]``.
        """
        return []

    def predict_episode(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                        n_way: int) -> torch.Tensor:
        """Logits ``(n_query, n_way)`` for the query rows of one episode."""
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers for subclasses
    def _require_setup(self) -> None:
        if not hasattr(self, "encoder_"):
            raise ConfigError(f"{type(self).__name__}: call setup(encoder, feature_dim) first.")
        if self.needs_meta_training and not self.meta_trained_:
            raise ConfigError(
                f"{type(self).__name__} needs meta-training before it predicts; call meta_train on data with "
                "meta-train classes (classes: {train: ...})."
            )

    def _check_meta_train_data(self, data: MetaData) -> None:
        if data.train is None:
            raise ConfigError(
                f"{type(self).__name__} meta-trains but the data has no meta-train classes; give "
                "classes: {train: [...]} (or a train fraction), or choose a method that needs no meta-training "
                "(simpleshot, baseline, baseline_pp, finetune)."
            )


def snapshot(module: nn.Module) -> dict:
    """A detached copy of a module's state (parameters and buffers) for best-checkpoint keeping."""
    return copy.deepcopy({k: v.detach().clone() for k, v in module.state_dict().items()})


@torch.no_grad()
def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def evaluate(method: FewShotMethod, data: MetaData, sampler: EpisodeSampler, *,
             log: Callable[[str], None] | None = None, log_every: int = 100,
             confusion: bool = False) -> dict:
    """Run ``method`` on every episode of ``sampler``.

    Returns
    -------
    dict
        ``accuracies`` (per episode), ``mean``, ``ci95`` (half-width), ``episodes``, ``seconds``;
        with ``confusion=True`` also ``confusion``: a ``(n_classes, n_classes)`` count matrix over the
        dataset's label values of the sampler's classes (rows true, columns predicted), summed over
        episodes.
    """
    accs = []
    classes = sampler.classes
    pos = {int(c): i for i, c in enumerate(classes)}
    conf = np.zeros((len(classes), len(classes)), dtype=np.int64) if confusion else None
    t0 = time.perf_counter()
    for ep in sampler:
        xs, ys, xq, yq = data.rows(ep)
        logits = method.predict_episode(xs, ys, xq, ep.n_way)
        if logits.shape != (len(yq), ep.n_way):
            raise RuntimeError(f"{type(method).__name__}.predict_episode returned shape {tuple(logits.shape)}, "
                               f"expected {(len(yq), ep.n_way)}")
        pred = logits.argmax(1)
        accs.append(float((pred == yq).float().mean()))
        if conf is not None:
            t = np.array([pos[int(ep.classes[j])] for j in yq.tolist()])
            p = np.array([pos[int(ep.classes[j])] for j in pred.tolist()])
            np.add.at(conf, (t, p), 1)
        if log is not None and (ep.index + 1) % log_every == 0:
            m, h = mean_ci95(accs)
            log(f"{sampler.where}: episode {ep.index + 1}/{len(sampler)}: accuracy {m:.4f} +- {h:.4f} "
                f"({time.perf_counter() - t0:.1f} s)")
    m, h = mean_ci95(accs)
    out = {"accuracies": accs, "mean": m, "ci95": h, "episodes": len(accs),
           "seconds": time.perf_counter() - t0}
    if conf is not None:
        out["confusion"] = conf
        out["confusion_classes"] = classes.tolist()
    return out
