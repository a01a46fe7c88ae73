"""Shallow domain adaptation: scikit-learn estimators on feature matrices.

Every estimator takes skada's input convention, ``fit(X, y=None, *, sample_domain=...)`` with
``X`` the source and target rows together, ``sample_domain`` positive for source rows and
negative for target rows, and ``y = -1`` for unlabeled rows. Two kinds:

- **mapping adapters** move rows to a new representation, ``transform(X, sample_domain=None)``
  (``None``: all rows are target rows): :class:`CORALAdapter` (``coral``),
  :class:`SubspaceAlignmentAdapter` (``sa``), :class:`TCAAdapter` (``tca``),
  :class:`OTMappingAdapter` (``ot_mapping``, needs POT);
- **reweighters** give the source rows importance weights ``weights_``
  (:meth:`~BaseReweighter.compute_weights` for new rows): :class:`KMMReweighter` (``kmm``),
  :class:`KLIEPReweighter` (``kliep``).

:class:`DAClassifier` chains either kind with a classifier trained on the adapted, labeled
source rows. The names in brackets are the ``shallow_da`` registry keys;
:func:`make_shallow` builds one from its key and a mapping of options (unknown options are an
error naming the nearest valid one), and :func:`shallow_options` lists them.

Estimators with randomness (TCA, KMM, KLIEP, SA's dimension estimate) take ``random_state``,
default ``0``, so that repeated fits are identical; ``max_samples`` bounds the rows of the
quadratic-memory ones (TCA, KMM) and a subsample is warned about. Every fitted estimator has
``diagnostics_`` (the same keys for all: ``converged``, ``n_iter``, ``ess``, ``n_fit_samples``,
``n_components``, ``warnings``, ...; see :mod:`._base`), and a solver that stops early or
importance weights carried by a few rows (effective sample size below 10% of the source) give a
:class:`~transferkit.errors.TransferKitWarning`.

All are scikit-learn estimators (transformers, and :class:`DAClassifier` a classifier) that pass
scikit-learn's own estimator checks (``tests/test_sklearn_checks.py``). Without
``sample_domain``, ``fit`` takes the rows with ``y == -1`` as the target (skada's rule), or, with
none, pools the rows with a warning. They also work as steps of ``skada.make_da_pipeline``
(``sample_domain`` is requested by default); there a reweighter hands its weights to the
steps that request ``sample_weight``, following skada's reweighting-adapter protocol.
"""

from ._base import (
    DIAGNOSTIC_KEYS,
    ESS_WARN_FRACTION,
    BaseMappingAdapter,
    BaseReweighter,
    ShallowConvergenceWarning,
    effective_sample_size,
)
from ._factory import make_shallow, shallow_options
from .coral import CORALAdapter
from .kliep import KLIEPReweighter
from .kmm import KMMReweighter
from .ot_mapping import OTMappingAdapter
from .pipeline import DAClassifier
from .subspace_alignment import SubspaceAlignmentAdapter
from .tca import TCAAdapter

__all__ = [
    "DIAGNOSTIC_KEYS",
    "ESS_WARN_FRACTION",
    "BaseMappingAdapter",
    "BaseReweighter",
    "CORALAdapter",
    "DAClassifier",
    "KLIEPReweighter",
    "KMMReweighter",
    "OTMappingAdapter",
    "ShallowConvergenceWarning",
    "SubspaceAlignmentAdapter",
    "TCAAdapter",
    "effective_sample_size",
    "make_shallow",
    "shallow_options",
]
