r"""An ensemble of other strategies of the same experiment: the hedge against negative transfer.

Transfer can hurt (Rosenstein et al., 2005: a source far from the target, a backbone that learned
the wrong thing), and
which of "train from scratch" and "fine-tune the pretrained model" wins is only known after
both ran. The ensemble combines the predictions of strategies that the experiment has already
fitted on the same seed and splits (for example ``scratch`` and ``finetune``)::

    strategies:
      - scratch
      - finetune
      - {name: ensemble, members: [scratch, finetune]}   # combine: weighted (default) | mean

and predicts the mixture of their class probabilities

.. math:: \bar p(y \mid x) = \sum_{m=1}^M w_m\, p_m(y \mid x), \qquad w \in \Delta^{M-1},

with ``combine="weighted"``: the weights that minimise the negative log-likelihood of the labeled
target *validation* split (:func:`transferkit.metrics.uncertainty.fit_ensemble_weights`; a convex
problem, so the fitted mixture's validation NLL is not above the best member's, up to the
optimiser's tolerance), or
``combine="mean"``: equal weights (needs no labels). With ``calibrate=True`` (the default) each
member is first temperature-scaled on the same validation split, so that a sharp but poor member
(a backbone pretrained on the wrong task) does not outvote a cautious good one. A member that only adds noise gets a weight
near 0, so the ensemble falls back on the better strategy; when both carry information, the
mixture is better calibrated than either (Lakshminarayanan et al., 2017; Ovadia et al., 2019).
The test split is never seen: the weights are fitted in :meth:`Ensemble.fit`, which receives
the train and validation splits only.

How members arrive (the hook)
-----------------------------
A strategy that combines other fitted strategies sets the class attribute
``uses_members = True``. The experiment runner then

- checks before anything is written that its members (:meth:`Ensemble.resolve_members`) are
  strategies of the experiment listed *before* it and not themselves combiners;
- passes ``members={key: fitted strategy}`` (the members fitted on the same seed, or read back
  from their run directories when a resumed run kept them) to ``fit``;
- saves only the weights and the member keys (``model.safetensors``'s tensors and header);
  :func:`transferkit.load_run` rebuilds the members from their own run directories of the same
  seed and passes them to :meth:`Ensemble.load_state` the same way.

From Python: ``Ensemble(members=["scratch", "finetune"]).fit(train, val, members={"scratch":
s, "finetune": f})`` with two fitted strategies ``s`` and ``f``.

References
----------
Lakshminarayanan, Pritzel, Blundell. "Simple and scalable predictive uncertainty estimation
using deep ensembles", NeurIPS 2017.
Ovadia et al. "Can you trust your model's uncertainty? Evaluating predictive uncertainty under
dataset shift", NeurIPS 2019.
Rosenstein, Marx, Kaelbling, Dietterich. "To transfer or not to transfer", NIPS 2005 workshop
on inductive transfer.
"""

from __future__ import annotations

import json
import time

import numpy as np

from .._registry import register
from .._validation import suggest
from ..errors import ConfigError, DataError
from .base import Strategy, check_device_param, check_flag, check_option, check_seed

COMBINE = ("weighted", "mean")
#: Header keys of ``model.safetensors`` (the tensors hold the weights: ``ensemble.weights``).
META_MEMBERS = "transferkit.ensemble.members"
META_COMBINE = "transferkit.ensemble.combine"
#: Log-probabilities are floored here (a member's exact 0 would give -inf logits).
_TINY = np.finfo(np.float64).tiny


@register("strategy", "ensemble")
class Ensemble(Strategy):
    """The weighted mixture of other fitted strategies' predicted probabilities (see the module
    docstring).

    Parameters
    ----------
    members
        Keys of the strategies to combine (their ``label``, else their name), each listed
        before the ensemble in the experiment's ``strategies``; ``None``: every strategy listed
        before it that is not itself an ensemble. At least two.
    combine
        ``"weighted"``: weights minimising the labeled validation split's NLL (needs labeled
        validation data: ``split.val_fraction`` or ``split.val``); ``"mean"``: equal weights.
    calibrate
        With ``combine="weighted"``: temperature-scale each member on the labeled validation split
        first (:class:`~transferkit.metrics.uncertainty.TemperatureScaling` on the log of its
        probabilities), then fit the weights on the calibrated members. Without it, the NLL-optimal
        weights of an over-confident poor member and an under-confident good one split evenly and
        the sharper, worse member decides the class (measured: ``benchmarks/ensemble_hedge.py``,
        the shuffled-label backbone). A member that classifies the validation split perfectly keeps
        ``T = 1`` (its temperature is not identifiable).
    backbone, seed, device, progress, cache_dir
        Accepted so that the experiment runner hands every strategy the same experiment-wide
        options; the ensemble trains no network, and its members keep their own.

    Fitted attributes (besides :class:`Strategy`'s)
    ------------------------------------------------
    member_keys_ : list of str
        The members, in order.
    members_ : dict
        ``{key: fitted strategy}``.
    weights_ : (M,) ndarray
        Member weights (non-negative, summing to 1), in ``member_keys_`` order.
    temperatures_ : (M,) ndarray
        Each member's temperature (1 without calibration).
    val_nll_ : dict or None
        Validation NLL of each member and of the ensemble (``"ensemble"``); ``None`` without
        labeled validation data.
    ensemble_ : dict
        What a run records: members, weights by key, combine, validation NLLs.
    """

    name = "ensemble"
    #: The runner passes ``members={key: fitted strategy}`` to :meth:`fit` and :meth:`load_state`.
    uses_members = True
    #: It combines its members' predictions (an ensemble never nests in another; a ``distill``
    #: student, which also takes a member, its teacher, is an ordinary predictor).
    combines_predictions = True
    #: The ensemble trains on nothing itself; ``combine="weighted"`` needs labeled *validation*
    #: data, which the runner checks (:meth:`needs_val_labels`).
    needs_target_labels = False

    def __init__(self, backbone=None, members=None, combine="weighted", calibrate=True, seed=0, device=None,
                 progress=False, cache_dir=None):
        self.backbone = backbone
        self.members = members
        self.combine = combine
        self.calibrate = calibrate
        self.seed = seed
        self.device = device
        self.progress = progress
        self.cache_dir = cache_dir

    @property
    def needs_val_labels(self) -> bool:
        """Whether ``fit`` needs a labeled validation split (``combine="weighted"``)."""
        return self.combine == "weighted"

    # ------------------------------------------------------------------ validation
    def _validate(self, backbone) -> None:
        check_option(self._p("combine"), self.combine, COMBINE)
        check_flag(self._p("calibrate"), self.calibrate)
        self.seed = check_seed(self._p("seed"), self.seed)
        check_device_param(self._p("device"), self.device)
        check_flag(self._p("progress"), self.progress)
        if self.members is None:
            return
        where = self._p("members")
        if isinstance(self.members, str) or not isinstance(self.members, (list, tuple)):
            raise ConfigError(f"{where}={self.members!r} must be a list of strategy keys, e.g. members: [scratch, "
                              "finetune].")
        for m in self.members:
            if not isinstance(m, str) or not m:
                raise ConfigError(f"{where} holds {m!r}; each member is a strategy key (its label, else its name), "
                                  "e.g. members: [scratch, finetune].")
        dup = sorted({m for m in self.members if list(self.members).count(m) > 1})
        if dup:
            raise ConfigError(f"{where} lists {dup[0]!r} twice; give each member once.")
        if len(self.members) < 2:
            raise ConfigError(f"{where}={list(self.members)!r} has {len(self.members)} member; an ensemble combines at "
                              "least two strategies, e.g. members: [scratch, finetune].")

    def resolve_members(self, keys: list[str], index: int, combiners=()) -> list[str]:
        """The member keys of this ensemble, the ``index``-th strategy of an experiment whose
        strategy keys are ``keys`` (in order); ``combiners``: the keys of strategies that are
        themselves ensembles. A :class:`ConfigError` names an unknown member (with the nearest
        key), one listed after the ensemble, the ensemble itself or a nested ensemble."""
        self.validate()
        where, me = self._p("members"), keys[index]
        before = list(keys[:index])
        if self.members is None:
            found = [k for k in before if k not in combiners]
            if len(found) < 2:
                raise ConfigError(f"{where} is left out, so the ensemble {me!r} combines the strategies listed before "
                                  f"it, but there {'is' if len(found) == 1 else 'are'} {len(found)} "
                                  f"({', '.join(found) or 'none'}); list at least two strategies above it, e.g. "
                                  "[scratch, finetune, ensemble].")
            return found
        for m in self.members:
            if m == me:
                raise ConfigError(f"{where} lists {m!r}, the ensemble itself; list the strategies it combines.")
            if m not in keys:
                listed = f" Strategies listed before it: {', '.join(before)}." if before else " None is before it."
                raise ConfigError(f"{where} lists {m!r}, which is not a strategy of this experiment."
                                  + suggest(m, before) + listed)
            if m in combiners:
                raise ConfigError(f"{where} lists {m!r}, which is itself an ensemble; ensembles do not nest: list the "
                                  f"strategies {m!r} combines instead.")
            if m not in before:
                raise ConfigError(f"{where} lists {m!r}, which is listed after the ensemble {me!r} in 'strategies'; "
                                  f"members are fitted first: move {m!r} above {me!r}.")
        return list(self.members)

    # ------------------------------------------------------------------ fit
    def _member_dict(self, members, where: str) -> dict:
        if not isinstance(members, dict) or not members:
            raise ConfigError(f"{self.name}: {where} needs members={{key: fitted strategy}} (the experiment runner "
                              "passes them; from Python give the fitted strategies to combine).")
        keys = list(members) if self.members is None else list(self.members)
        missing = [k for k in keys if k not in members]
        if missing:
            raise ConfigError(f"{self._p('members')} lists {missing[0]!r}, but members= has no fitted strategy under "
                              f"that key (it has {', '.join(map(str, members))}).")
        if len(keys) < 2:
            raise ConfigError(f"{self.name}: members= holds {len(keys)} strategy; an ensemble combines at least two.")
        for k in keys:
            if getattr(members[k], "combines_predictions", False):
                raise ConfigError(f"{self._p('members')}: {k!r} is itself an ensemble; ensembles do not nest.")
            if not callable(getattr(members[k], "predict_proba", None)):
                raise ConfigError(f"{self.name}: members[{k!r}] is a {type(members[k]).__name__}, not a fitted "
                                  "strategy (it has no predict_proba).")
        return {k: members[k] for k in keys}

    def _member_probs(self, dataset) -> list[np.ndarray]:
        out = []
        for k, m in self.members_.items():
            p = np.asarray(m.predict_proba(dataset), dtype=np.float64)
            if p.ndim != 2 or len(p) != len(dataset) or (out and p.shape != out[0].shape):
                first = self.member_keys_[0]
                raise DataError(f"{self.name}: member {k!r} predicts {p.shape} probabilities for {len(dataset)} rows"
                                + (f" but member {first!r} predicts {out[0].shape}" if out else "")
                                + "; every member must predict the same classes (fit them on the same target).")
            out.append(p)
        return out

    def fit(self, train, val=None, *, run_dir=None, members=None):
        """Combine the fitted ``members`` (``{key: fitted strategy}``): weights fitted on the
        labeled samples of ``val`` (``combine="weighted"``) or equal (``"mean"``). ``train`` and
        ``run_dir`` are not used (the members were trained on ``train`` already). Returns ``self``."""
        from ..metrics.uncertainty import fit_ensemble_weights, negative_log_likelihood

        self.validate()
        self._reset_fitted()
        t0 = time.perf_counter()
        self.members_ = self._member_dict(members, "fit")
        self.member_keys_ = list(self.members_)
        labeled = val is not None and val.labels is not None and bool((val.labels >= 0).any())
        if self.combine == "weighted" and not labeled:
            what = "no validation split" if val is None else f"the validation split {val.name!r} has no labels"
            raise ConfigError(f"{self._p('combine')}='weighted' fits the member weights on labeled validation data, "
                              f"but there is {what}; use combine: mean, or give split.val_fraction (e.g. 0.5).")
        self.val_nll_ = None
        M = len(self.members_)
        if labeled:
            mask = val.labels >= 0
            vsub = val if mask.all() else val.subset(np.flatnonzero(mask), name=f"{val.name}/labeled")
            raw = self._member_probs(vsub)
            y = vsub.labels
            self.temperatures_ = np.ones(M)
            if self.combine == "weighted" and self.calibrate:
                self.temperatures_ = np.array([_fit_temperature(p, y) for p in raw])
            P = [_tempered(p, t) for p, t in zip(raw, self.temperatures_)]
            w = fit_ensemble_weights(P, y) if self.combine == "weighted" else np.full(M, 1.0 / M)
            self.weights_ = np.asarray(w, dtype=np.float64)
            self.n_classes_ = int(P[0].shape[1])
            self.val_nll_ = {k: negative_log_likelihood(p, y).value for k, p in zip(self.member_keys_, raw)}
            self.val_nll_["ensemble"] = negative_log_likelihood(self._mix(P), y).value
        else:
            self.weights_ = np.full(M, 1.0 / M)
            self.temperatures_ = np.ones(M)
            self.n_classes_ = None
        self._finish(time.perf_counter() - t0)
        return self

    def _finish(self, seconds: float) -> None:
        self.combine_ = self.combine
        self.train_time_ = float(seconds)
        self.trainable_params_ = len(self.weights_) * (1 + bool(self.calibrate)) if self.combine == "weighted" else 0
        self.history_, self.best_epoch_ = [], None
        self.selection_ = (("members temperature-scaled, then weights minimising" if self.calibrate else
                            "member weights minimising") + " the labeled target validation split's NLL"
                           if self.combine == "weighted" else "equal member weights (no selection)")
        self.ensemble_ = {"members": list(self.member_keys_), "combine": self.combine,
                          "weights": {k: float(w) for k, w in zip(self.member_keys_, self.weights_)},
                          "temperatures": {k: float(t) for k, t in zip(self.member_keys_, self.temperatures_)},
                          "val_nll": getattr(self, "val_nll_", None)}

    # ------------------------------------------------------------------ predict
    def _mix(self, probs: list[np.ndarray]) -> np.ndarray:
        from ..metrics.uncertainty import ensemble_probs

        return ensemble_probs(probs, self.weights_)

    def predict_proba(self, dataset) -> np.ndarray:
        """``(n, K)``: the weighted mean of the members' probabilities."""
        if not hasattr(self, "weights_"):
            raise ConfigError(f"{self.name} is not fitted; call fit(train, val, members=...) or load a run.")
        return self._mix([_tempered(p, t) for p, t in zip(self._member_probs(dataset), self.temperatures_)])

    def predict_logits(self, dataset) -> np.ndarray:
        """``log`` of :meth:`predict_proba` (floored at the smallest float64), so the softmax of
        these logits is the ensemble's distribution and their argmax its prediction."""
        return np.log(np.maximum(self.predict_proba(dataset), _TINY))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"ensemble.weights": np.ascontiguousarray(self.weights_, dtype=np.float64),
                "ensemble.temperatures": np.ascontiguousarray(self.temperatures_, dtype=np.float64)}

    def state_metadata(self) -> dict[str, str]:
        meta = {META_MEMBERS: json.dumps(list(self.member_keys_)), META_COMBINE: self.combine}
        if self.n_classes_ is not None:
            meta["transferkit.n_classes"] = str(self.n_classes_)
        return meta

    @staticmethod
    def saved_members(metadata: dict | None, where: str = "model.safetensors") -> list[str]:
        """The member keys a saved ensemble needs (from the file's header)."""
        raw = (metadata or {}).get(META_MEMBERS)
        try:
            keys = json.loads(raw) if raw is not None else None
        except ValueError:
            keys = None
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
            raise DataError(f"{where} has no valid list of ensemble members in its header ({META_MEMBERS}); the file "
                            "is damaged or not an ensemble's: train the run again.")
        return keys

    def load_state(self, state: dict, metadata: dict | None = None, where: str = "model.safetensors", members=None):
        """The fitted ensemble from its weights and member keys, with ``members={key: fitted
        strategy}`` rebuilt by the caller (:func:`transferkit.load_run` reads them from their run
        directories of the same seed); returns ``self``."""
        self.validate()
        self._reset_fitted()
        keys = self.saved_members(metadata, where)
        if self.members is not None and list(self.members) != keys:
            raise DataError(f"{where} combines {keys} but config.yaml says members={list(self.members)}; the file and "
                            "its config do not belong together.")
        w = state.get("ensemble.weights")
        w = None if w is None else np.asarray(w.detach().cpu().numpy() if hasattr(w, "detach") else w, np.float64)
        if w is None or w.shape != (len(keys),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise DataError(f"{where} holds no valid ensemble.weights for its {len(keys)} members; the file is "
                            "damaged: train the run again.")
        if not isinstance(members, dict) or any(k not in members for k in keys):
            raise ConfigError(f"{self.name}: the saved ensemble combines {', '.join(keys)}; load it with "
                              "transferkit.load_run (it rebuilds the members from their run directories) or pass "
                              "members={key: fitted strategy}.")
        self.members_ = {k: members[k] for k in keys}
        self.member_keys_ = keys
        self.weights_ = w / w.sum()
        t = state.get("ensemble.temperatures")
        t = np.ones(len(keys)) if t is None else \
            np.asarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t, np.float64)
        if t.shape != (len(keys),) or not np.isfinite(t).all() or (t <= 0).any():
            raise DataError(f"{where} holds no valid ensemble.temperatures for its {len(keys)} members; the file is "
                            "damaged: train the run again.")
        self.temperatures_ = t
        combine = (metadata or {}).get(META_COMBINE, self.combine)
        if combine != self.combine:
            raise DataError(f"{where} was fitted with combine={combine!r} but config.yaml says {self.combine!r}; the "
                            "file and its config do not belong together.")
        n = (metadata or {}).get("transferkit.n_classes")
        self.n_classes_ = int(n) if n is not None and str(n).isdigit() else None
        self._finish(0.0)
        return self


def _tempered(p: np.ndarray, t: float) -> np.ndarray:
    """``softmax(log p / t)``: the member's probabilities at temperature ``t``."""
    if t == 1.0:
        return p
    z = np.log(np.maximum(p, _TINY)) / t
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def _fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """The validation temperature of one member's probabilities (1 when it classifies every
    validation sample correctly: no temperature is identifiable then)."""
    import warnings

    from ..metrics.uncertainty import TemperatureScaling

    if (p.argmax(1) == y).all():
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a bound or a separated member: the bounded fit is still the best T
        return float(TemperatureScaling(bounds=(0.05, 20.0)).fit(np.log(np.maximum(p, _TINY)), y).temperature_)
