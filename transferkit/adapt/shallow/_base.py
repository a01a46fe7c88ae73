"""What every shallow domain-adaptation estimator shares: input checks, the domain split, and
the two base classes (mapping adapters and reweighters).

The data convention is skada's: one matrix ``X`` holds the source and target rows together and
``sample_domain`` says which is which,

- ``sample_domain[i] > 0``: row ``i`` is a **source** row (several positive values = several
  source domains, pooled here into one source),
- ``sample_domain[i] < 0``: row ``i`` is a **target** row (pooled likewise),
- ``0`` is not allowed.

Unlabeled target rows carry ``y = -1``. None of the adapters here reads the labels in ``y``:
they are unsupervised with respect to the target, and only
:class:`~transferkit.adapt.shallow.DAClassifier` uses the labels of source rows.

Without ``sample_domain``, ``fit`` follows skada's ``allow_auto_sample_domain`` rule: rows with
``y == -1`` (or ``y`` NaN) are target rows, the others source rows. When that finds no target
row either (``y`` absent, or no ``-1`` in it; what scikit-learn's own calls do), every row is
used as both source and target and a :class:`~transferkit.errors.TransferKitWarning` says so:
the adapter then learns the no-shift special case of its map (CORAL and OT the identity,
SA a PCA projection, TCA kernel PCA, KMM and KLIEP weights close to 1), which keeps them valid
scikit-learn transformers. ``transform(X)`` without ``sample_domain`` treats every row as a
target row (skada's rule, and what you have at prediction time).

Every estimator records what its fit did in ``diagnostics_``, a dict with the same keys for all
of them (:data:`DIAGNOSTIC_KEYS`; ``None`` where a key does not apply), meant for a results
file: ``converged`` and ``n_iter`` (iterative solvers), ``ess`` and ``ess_fraction`` (the
effective sample size of importance weights), ``n_samples`` and ``n_fit_samples`` (rows given,
rows the solution was computed on), ``n_components`` (embedding dimension) and ``warnings``
(the messages of the :class:`~transferkit.errors.TransferKitWarning` the fit issued: a
subsample, a solver that stopped early, weights carried by a few rows).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from ..._sklearn import check_X
from ..._sklearn import masked_labels as _masked_labels
from ...errors import ConfigError, DataError, TransferKitWarning

__all__ = [
    "DIAGNOSTIC_KEYS",
    "ESS_WARN_FRACTION",
    "BaseMappingAdapter",
    "BaseReweighter",
    "ShallowConvergenceWarning",
    "check_domain_input",
    "effective_sample_size",
    "infer_sample_domain",
    "split_domains",
    "sym_power",
]

#: The keys of every shallow estimator's ``diagnostics_`` (``None`` where one does not apply).
DIAGNOSTIC_KEYS = ("estimator", "converged", "n_iter", "ess", "ess_fraction", "n_samples", "n_fit_samples",
                   "n_components", "warnings")

#: A reweighter warns when its weights' effective sample size is below this fraction of the
#: source rows: the weighted classifier then rests on a few rows.
ESS_WARN_FRACTION = 0.1


class ShallowConvergenceWarning(TransferKitWarning, ConvergenceWarning):
    """A shallow estimator's solver stopped before its stopping rule was met.

    A :class:`~transferkit.errors.TransferKitWarning` (the experiment runner records it) and a
    :class:`sklearn.exceptions.ConvergenceWarning` (scikit-learn's filters catch it)."""


def effective_sample_size(w) -> float:
    r"""Kish's effective sample size of non-negative weights, :math:`(\sum_i w_i)^2 / \sum_i w_i^2`.

    ``n`` for equal weights, 1 when a single row carries all the weight; 0 for all-zero weights.
    """
    w = np.asarray(w, dtype=float)
    sq = float(w @ w)
    return float(w.sum() ** 2 / sq) if sq > 0 else 0.0


def _check_sample_domain(sample_domain, n: int, who: str) -> np.ndarray:
    """``sample_domain`` as an int64 array of length ``n`` with no zeros."""
    sd = np.asarray(sample_domain)
    if sd.ndim == 0:
        sd = np.full(n, sd.item())
    if sd.ndim != 1 or len(sd) != n:
        raise DataError(
            f"sample_domain has shape {sd.shape} but X has {n} rows; give one domain label per row."
        )
    if not (np.issubdtype(sd.dtype, np.integer) or np.issubdtype(sd.dtype, np.floating)):
        raise DataError(
            f"sample_domain must hold integers (positive = source, negative = target), got dtype {sd.dtype}."
        )
    if np.issubdtype(sd.dtype, np.floating):
        if not np.isfinite(sd).all() or not np.all(sd == np.round(sd)):
            raise DataError("sample_domain must hold integers (positive = source, negative = target).")
    sd = sd.astype(np.int64)
    zeros = int((sd == 0).sum())
    if zeros:
        raise DataError(
            f"sample_domain is 0 for {zeros} rows; use positive values for source rows and negative "
            "values for target rows."
        )
    return sd


def infer_sample_domain(y, sample_domain, n: int, who: str = "fit") -> np.ndarray | None:
    """The ``sample_domain`` of a fit: given, or derived from ``y`` by skada's rule.

    Parameters
    ----------
    y : ndarray of shape (n,) or None
    sample_domain : array-like of shape (n,), scalar or None
    n : int
        Number of rows.

    Returns
    -------
    ndarray of shape (n,), int64, or None
        The validated ``sample_domain``; without one, ``-2`` on the rows with a masked label
        (``y == -1``, or NaN) and ``1`` elsewhere (skada's defaults); ``None`` when no row is
        masked either, i.e. no target row can be identified (the caller then pools the rows).
    """
    if sample_domain is not None:
        return _check_sample_domain(sample_domain, n, who)
    if y is None:
        return None
    masked = _masked_labels(np.asarray(y))
    if not masked.any():
        return None
    if masked.all():
        raise DataError(
            f"{who}: every row has y = -1 (or NaN: unlabeled target) and no sample_domain was given, so there "
            "is no source row; pass sample_domain (positive = source, negative = target)."
        )
    return np.where(masked, -2, 1).astype(np.int64)


def check_domain_input(X, y=None, sample_domain=None, *, who: str = "fit", min_rows_per_domain: int = 2,
                       estimator=None):
    """Validate a skada-style fit input and return ``(X, y, is_source, is_target)``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Source and target rows, concatenated in any order. Must be finite.
    y : array-like of shape (n_samples,), optional
        Labels; ``-1`` for unlabeled rows. Used only to find the target rows when
        ``sample_domain`` is not given (:func:`infer_sample_domain`).
    sample_domain : array-like of shape (n_samples,), optional
        Positive for source rows, negative for target rows.
    who : str
        Name used in error messages (``"CORALAdapter.fit"``).
    min_rows_per_domain : int
        Fewest rows each domain must have.
    estimator : estimator, optional
        Gets ``n_features_in_`` (and ``feature_names_in_``), see :func:`check_X`.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float64
    y : ndarray of shape (n_samples,) or None
    is_source, is_target : ndarray of shape (n_samples,), bool
        Complementary masks; both all ``True`` when no target row can be identified (the
        rows are pooled, with a :class:`~transferkit.errors.TransferKitWarning`).

    Raises
    ------
    DataError
        Malformed ``sample_domain``, a domain with no (or too few) rows, lengths that
        disagree, or a malformed ``X`` (see :func:`check_X`).
    """
    X = check_X(X, who=who, min_rows=2, estimator=estimator, reset=True)
    n = X.shape[0]
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != n:
            raise DataError(f"y has shape {y.shape} but X has {n} rows; give one label per row (-1 when unlabeled).")
    sd = infer_sample_domain(y, sample_domain, n, who)
    if sd is None:
        warnings.warn(
            f"{who}: no target rows identified (no sample_domain, and no y == -1), so every row is used as both "
            "source and target and nothing is adapted; pass sample_domain (positive = source, negative = target) "
            "or label the target rows -1.", TransferKitWarning, stacklevel=4,
        )
        every = np.ones(n, dtype=bool)
        return X, y, every, every.copy()
    is_source = sd > 0
    n_s, n_t = int(is_source.sum()), int((~is_source).sum())
    if n_s == 0 or n_t == 0:
        got = "only target rows (all negative)" if n_s == 0 else "only source rows (all positive)"
        raise DataError(
            "sample_domain must contain both positive (source) and negative (target) values; "
            f"got {got}. Pass the source and target rows together in X."
        )
    for name, k in (("source", n_s), ("target", n_t)):
        if k < min_rows_per_domain:
            raise DataError(f"{who}: the {name} domain has {k} rows; at least {min_rows_per_domain} are needed.")
    return X, y, is_source, ~is_source


def split_domains(X: np.ndarray, is_source: np.ndarray, is_target: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(X[is_source], X[is_target])`` (``is_target`` defaults to ``~is_source``), rows in order."""
    return X[is_source], X[~is_source if is_target is None else is_target]


def _called_by_skada_selector(frame) -> bool:
    """Whether ``frame`` (the caller of ``fit_transform``) is a method of a skada pipeline selector.

    skada's selectors (``Shared``, ``PerDomain``, ...; :class:`skada.base.BaseSelector`) call
    ``fit_transform`` of the step they wrap and read an ``(X, params)`` tuple from it as
    metadata for the next steps; scikit-learn (and everything else) needs an array. Nothing else
    in the call tells the two apart, so the caller is looked at; skada is never imported here.
    """
    base = sys.modules.get("skada.base")
    selector = getattr(base, "BaseSelector", None)
    for _ in range(3):  # skip scikit-learn's set_output wrapper, if any
        if frame is None or selector is None:
            return False
        owner = frame.f_locals.get("self")
        if isinstance(owner, selector):
            return True
        if not frame.f_globals.get("__name__", "").startswith("sklearn.utils._set_output"):
            return False
        frame = frame.f_back
    return False


class _ShallowDA(TransformerMixin, BaseEstimator):
    """Shared validation for shallow DA estimators (no parameters of its own).

    ``sample_domain`` is requested by default for ``fit`` and ``transform`` (as skada's own
    adapters do), so a metadata-routing pipeline (``skada.make_da_pipeline``, or a scikit-learn
    :class:`~sklearn.pipeline.Pipeline` with routing on) passes it on without
    ``set_fit_request``.
    """

    __metadata_request__fit = {"sample_domain": True}
    __metadata_request__transform = {"sample_domain": True}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.target_tags.required = False
        return tags

    #: registry key, named in warnings and in ``diagnostics_["estimator"]``
    _key = None

    def _check_params(self) -> dict:
        """Validate the parameters that need no data (a ``ConfigError`` names the first bad one)
        and return them converted; ``fit`` starts with it, and
        :func:`~transferkit.adapt.shallow.make_shallow` calls it before any data is seen."""
        return {}

    def _warn(self, notes: list, message: str, category=TransferKitWarning, stacklevel: int = 3) -> None:
        """Issue ``message`` (prefixed with the registry key) and keep it for ``diagnostics_``."""
        message = f"{self._key}: {message}"
        notes.append(message)
        warnings.warn(message, category, stacklevel=stacklevel)

    def _warn_subsample(self, notes: list, n_fit: int, n: int, what: str, memory: str) -> None:
        self._warn(notes, f"fitted {what} on {n_fit} of {n} rows (max_samples={self.max_samples}, a seeded subsample, "
                          f"random_state={self.random_state!r}); raise max_samples to use more rows ({memory}).",
                   stacklevel=4)

    def _check_ess(self, notes: list, w: np.ndarray) -> tuple[float, float]:
        """``(ess, ess / n)`` of the weights ``w``, with a warning below :data:`ESS_WARN_FRACTION`."""
        ess = effective_sample_size(w)
        frac = ess / len(w) if len(w) else 0.0
        if frac < ESS_WARN_FRACTION:
            self._warn(notes, f"the importance weights have an effective sample size of {ess:.0f} of {len(w)} "
                              f"source rows ({100 * frac:.1f}%, below {100 * ESS_WARN_FRACTION:.0f}%), so a "
                              "classifier trained with them rests on a few rows; the domains may barely "
                              "overlap: check the weights (diagnostics_), widen the kernel, or use a mapping "
                              "method instead.", stacklevel=4)
        return ess, frac

    def _diagnostics(self, notes: list, *, n_samples: int, n_fit_samples: int, n_components=None,
                     converged=None, n_iter=None, ess=None, ess_fraction=None) -> dict:
        """The ``diagnostics_`` dict (keys :data:`DIAGNOSTIC_KEYS`, plain Python values)."""
        return {
            "estimator": self._key,
            "converged": None if converged is None else bool(converged),
            "n_iter": None if n_iter is None else int(n_iter),
            "ess": None if ess is None else float(ess),
            "ess_fraction": None if ess_fraction is None else float(ess_fraction),
            "n_samples": int(n_samples),
            "n_fit_samples": int(n_fit_samples),
            "n_components": None if n_components is None else int(n_components),
            "warnings": list(notes),
        }

    def _fit_input(self, X, y, sample_domain, *, min_rows_per_domain: int = 2):
        return check_domain_input(X, y, sample_domain, who=f"{type(self).__name__}.fit",
                                  min_rows_per_domain=min_rows_per_domain, estimator=self)

    def _new_input(self, X, sample_domain, *, default_source: bool, method: str = "transform"):
        """Validate rows for ``transform``/``compute_weights``; ``sample_domain=None`` means all
        rows are source (``default_source``) or all target."""
        check_is_fitted(self)
        X = check_X(X, who=f"{type(self).__name__}.{method}", min_rows=1, estimator=self, reset=False)
        if sample_domain is None:
            return X, np.full(X.shape[0], default_source)
        return X, _check_sample_domain(sample_domain, X.shape[0], type(self).__name__) > 0

    @staticmethod
    def _fit_domains(X, y, sample_domain):
        """The ``sample_domain`` a ``fit`` on these arguments uses (``None``: rows pooled); called
        after that ``fit`` succeeded, so the arguments are already validated."""
        n = len(X) if hasattr(X, "__len__") else np.asarray(X).shape[0]
        return infer_sample_domain(None if y is None else np.asarray(y), sample_domain, n)


class BaseMappingAdapter(_ShallowDA):
    """Base class of adapters that map rows to a new representation.

    Subclasses implement ``fit(X, y=None, *, sample_domain)`` and ``transform(X, sample_domain=None)``;
    ``sample_domain=None`` in ``transform`` means every row is a target row (what you have at
    prediction time).
    """

    def fit_transform(self, X, y=None, *, sample_domain=None) -> np.ndarray:
        """Fit, then map the training rows with the domains the fit used.

        ``sample_domain`` given, or derived from ``y == -1``: source rows are mapped as source
        rows. Otherwise (pooled rows) every row is transformed as a target row, so the result
        equals ``fit(X, y).transform(X)``.
        """
        self.fit(X, y, sample_domain=sample_domain)
        return self.transform(X, sample_domain=self._fit_domains(X, y, sample_domain))


class BaseReweighter(_ShallowDA):
    """Base class of adapters that weight source rows instead of moving them.

    After ``fit``, ``weights_`` (shape ``(n_source,)``, source rows in the order they appear in
    ``X``) are the importance weights :math:`w(x) \\approx p_t(x) / p_s(x)` to pass as
    ``sample_weight`` when training on the source rows. ``transform`` leaves rows unchanged so
    a reweighter can stand where a mapping adapter stands.

    Inside a skada pipeline (``skada.make_da_pipeline(KMMReweighter(), clf)``),
    ``fit_transform`` follows skada's reweighting-adapter protocol (``BaseReweightAdapter``): it
    returns ``(X, {"sample_weight": w})``, ``w`` the weight of every row (0 on target rows),
    and skada's selector routes ``w`` to the ``fit`` of the steps that request it
    (``clf.set_fit_request(sample_weight=True)``; skada raises ``IncompatibleMetadataError``
    when no later step does). Called by anything else, ``fit_transform`` returns the rows, as a
    scikit-learn transformer must; :class:`~transferkit.adapt.shallow.DAClassifier` reads
    ``weights_`` directly.
    """

    def compute_weights(self, X, sample_domain=None) -> np.ndarray:
        """Importance weights of the rows of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        sample_domain : array-like of shape (n_samples,), optional
            Positive = source, negative = target. ``None``: every row is a source row.

        Returns
        -------
        ndarray of shape (n_samples,)
            The weight of each source row; target rows get 0 (they are not training rows).
        """
        X, is_source = self._new_input(X, sample_domain, default_source=True, method="compute_weights")
        w = np.zeros(X.shape[0])
        if is_source.any():
            w[is_source] = self._weights_at(X[is_source])
        return w

    def transform(self, X, sample_domain=None) -> np.ndarray:
        """Rows unchanged (reweighting does not move samples); validated like a mapping."""
        X, _ = self._new_input(X, sample_domain, default_source=False)
        return X

    def fit_transform(self, X, y=None, *, sample_domain=None):
        """``fit`` then ``transform``; inside a skada pipeline also the weights (see the class doc).

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            The rows, unchanged.
        (ndarray, dict)
            When called by a skada pipeline selector: the rows and ``{"sample_weight": w}``,
            ``w`` of shape ``(n_samples,)``.
        """
        self.fit(X, y, sample_domain=sample_domain)
        sd = self._fit_domains(X, y, sample_domain)
        Xt = self.transform(X, sample_domain=sd)
        if _called_by_skada_selector(sys._getframe(1)):
            return Xt, {"sample_weight": self.compute_weights(X, sample_domain=sd)}
        return Xt

    def _weights_at(self, Xs: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def sym_power(C: np.ndarray, p: float, *, floor: float = 0.0) -> np.ndarray:
    r"""``C**p`` for a symmetric positive (semi-)definite matrix, by eigendecomposition.

    .. math:: C^p = V \operatorname{diag}(\lambda_i^p) V^\top,
       \quad \lambda_i \leftarrow \max(\lambda_i, \text{floor})

    Eigenvalues below ``floor`` (or 0) are clipped so that round-off cannot produce NaN.
    """
    lam, V = np.linalg.eigh((C + C.T) / 2)
    lam = np.maximum(lam, floor)
    if p < 0:
        # a negative power of an exactly singular matrix: treat the null space as absent
        tiny = lam.max() * 1e-12 if lam.max() > 0 else 1.0
        lam = np.maximum(lam, tiny)
    return (V * lam**p) @ V.T


def check_flag(param: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{param} must be True or False, got {value!r}.")
    return bool(value)


def pooled_scaling(X: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, scale)`` of the z-score over all rows of ``X`` (source and target pooled), or
    ``(0, 1)`` without ``standardize``; a constant column gets scale 1 (as scikit-learn's
    :class:`~sklearn.preprocessing.StandardScaler`).

    Pooling keeps the scaling unsupervised and neutral: it puts the columns on one scale (a
    kernel's bandwidth or a PCA is otherwise set by the column with the largest units) without
    moving one domain towards the other; per-domain scaling would itself be an adaptation, and
    under label shift would remove the class signal carried by the target's mean.
    """
    d = X.shape[1]
    if not standardize:
        return np.zeros(d), np.ones(d)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[~(scale > 10 * np.finfo(float).eps * np.maximum(np.abs(mean), 1.0))] = 1.0
    return mean, scale


def check_random_state_param(value):
    """``random_state`` as scikit-learn takes it (None, an int >= 0, or a RandomState)."""
    if value is None or isinstance(value, np.random.RandomState):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**32:
        raise ConfigError(f"random_state must be None, a whole number 0 <= seed < 2**32 or a "
                          f"numpy RandomState, got {value!r}.")
    return int(value)
