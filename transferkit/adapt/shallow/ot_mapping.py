"""Optimal-transport barycentric mapping of the source onto the target (Courty et al., 2017)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import pairwise_distances_argmin

from ..._registry import register
from ..._validation import check_choice, check_number, require
from ._base import BaseMappingAdapter, ShallowConvergenceWarning, split_domains


@register("shallow_da", "ot_mapping")
class OTMappingAdapter(BaseMappingAdapter):
    r"""Move each source row to the barycentre of the target rows it is transported to.

    With uniform weights :math:`a = \mathbf 1/n_s`, :math:`b = \mathbf 1/n_t` and cost
    :math:`C_{ij} = c(x^s_i, x^t_j)`, a coupling :math:`\gamma \in \Pi(a, b)` is computed by

    - ``method="emd"``: exact optimal transport, :math:`\min_{\gamma} \langle \gamma, C\rangle`;
    - ``method="sinkhorn"``: entropic OT,
      :math:`\min_{\gamma} \langle \gamma, C\rangle - \varepsilon H(\gamma)`,
      :math:`H(\gamma) = -\sum_{ij} \gamma_{ij}(\log \gamma_{ij} - 1)`, :math:`\varepsilon` =
      ``reg_e`` (Cuturi, 2013),

    and each source row is mapped to its barycentric image (Courty et al., 2017, Eq. 13)

    .. math:: \hat x^s_i = \frac{\sum_j \gamma_{ij}\, x^t_j}{\sum_j \gamma_{ij}} .

    A new source row :math:`x` (not seen in ``fit``) is moved by the displacement of its nearest
    fitted source row :math:`x^s_{i^\ast}` (Euclidean):
    :math:`x + \hat x^s_{i^\ast} - x^s_{i^\ast}` (Ferradans et al., 2014; POT's and skada's
    out-of-sample rule), which reduces to :math:`\hat x^s_i` on fitted rows. Target rows are
    returned unchanged. Needs POT (``pip install 'transferkit[ot]'``).

    With ``method="emd"`` and :math:`n_s = n_t`, :math:`\gamma` is a permutation matrix divided
    by :math:`n`, so the source is mapped exactly onto a permutation of the target rows.

    Parameters
    ----------
    method : {"emd", "sinkhorn"}, default "emd"
    reg_e : float, default 1.0
        :math:`\varepsilon > 0` for ``method="sinkhorn"`` (in the units of the, possibly
        normalized, cost). Ignored for ``"emd"``.
    metric : {"sqeuclidean", "euclidean"}, default "sqeuclidean"
        The ground cost :math:`c`.
    norm : {None, "median", "max"}, default None
        Divide the cost matrix by its median or maximum before solving (makes ``reg_e``
        scale-free).
    max_iter : int or None, default None
        Iteration cap: network-simplex iterations for ``"emd"`` (default 100000) or Sinkhorn
        iterations for ``"sinkhorn"`` (default 1000).
    tol : float, default 1e-9
        Sinkhorn stopping threshold on the marginal violation.

    Attributes
    ----------
    coupling_ : ndarray of shape (n_source, n_target)
        :math:`\gamma`.
    X_source_ : ndarray of shape (n_source, n_features)
        The fitted source rows.
    displacement_ : ndarray of shape (n_source, n_features)
        :math:`\hat x^s_i - x^s_i`; zero for a row with no transported mass (Sinkhorn
        underflow), which therefore stays where it is.
    cost_scale_ : float
        The factor the cost was divided by (1.0 without ``norm``).
    n_iter_ : int
        Sinkhorn iterations run (``method="sinkhorn"``, the last solver when it fell back to
        the log domain). For ``"emd"`` POT does not report the network-simplex iteration
        count: 1 for one exact solve, ``max_iter`` when it stopped at the cap (with a
        :class:`~transferkit.adapt.shallow._base.ShallowConvergenceWarning`, also a
        :class:`~sklearn.exceptions.ConvergenceWarning`).
    converged_ : bool
        Whether the solver reached optimality (``"emd"``) or ``tol`` (``"sinkhorn"``).
    diagnostics_ : dict
        See :mod:`transferkit.adapt.shallow._base` (``converged``, ``n_iter``).
    n_features_in_ : int

    Notes
    -----
    Sinkhorn runs in the standard (scaling) domain first and falls back to POT's log-domain
    solver when the scalings under- or overflow (small ``reg_e`` relative to the cost), so a
    valid coupling is always returned.

    References
    ----------
    N. Courty, R. Flamary, D. Tuia and A. Rakotomamonjy. "Optimal Transport for Domain
    Adaptation." IEEE TPAMI 39(9), 2017.
    M. Cuturi. "Sinkhorn Distances: Lightspeed Computation of Optimal Transport." NeurIPS 2013.
    S. Ferradans, N. Papadakis, G. Peyré and J.-F. Aujol. "Regularized Discrete Optimal
    Transport." SIAM J. Imaging Sciences 7(3), 2014.
    """

    _key = "ot_mapping"

    def __init__(self, method: str = "emd", reg_e: float = 1.0, metric: str = "sqeuclidean", norm: str | None = None,
                 max_iter: int | None = None, tol: float = 1e-9):
        self.method = method
        self.reg_e = reg_e
        self.metric = metric
        self.norm = norm
        self.max_iter = max_iter
        self.tol = tol

    def _check_params(self) -> dict:
        check_choice("method", self.method, ("emd", "sinkhorn"))
        check_choice("metric", self.metric, ("sqeuclidean", "euclidean"))
        check_choice("norm", self.norm, (None, "median", "max"))
        max_iter = 100_000 if self.method == "emd" else 1000
        if self.max_iter is not None:
            max_iter = check_number("max_iter", self.max_iter, low=1, integer=True)
        return {"reg_e": check_number("reg_e", self.reg_e, low=0.0, low_inclusive=False),
                "tol": check_number("tol", self.tol, low=0.0, low_inclusive=False), "max_iter": max_iter}

    def fit(self, X, y=None, *, sample_domain=None) -> OTMappingAdapter:
        """Compute the coupling and the barycentric displacement of every source row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Source and target rows together.
        y : array-like of shape (n_samples,), optional
            Labels are not used; only read to find the target rows (``y == -1``) when
            ``sample_domain`` is ``None``.
        sample_domain : array-like of shape (n_samples,), optional
            Positive for source rows, negative for target rows; ``None``: inferred from ``y``
            (:func:`~transferkit.adapt.shallow._base.infer_sample_domain`).

        Returns
        -------
        self
        """
        p = self._check_params()
        reg_e, tol, max_iter = p["reg_e"], p["tol"], p["max_iter"]
        ot = require("ot", "ot", "OTMappingAdapter")
        X, _, is_source, is_target = self._fit_input(X, y, sample_domain, min_rows_per_domain=1)
        Xs, Xt = split_domains(X, is_source, is_target)
        a = np.full(len(Xs), 1.0 / len(Xs))
        b = np.full(len(Xt), 1.0 / len(Xt))
        C = ot.dist(Xs, Xt, metric=self.metric)
        scale = 1.0
        if self.norm == "median":
            scale = float(np.median(C))
        elif self.norm == "max":
            scale = float(C.max())
        if scale > 0:
            C = C / scale
        else:
            scale = 1.0
        notes = []
        if self.method == "emd":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # POT's own warning; ours below names the parameter
                G, log = ot.emd(a, b, C, numItermax=max_iter, log=True)
            # POT does not report the network-simplex iteration count, only whether it hit the cap
            capped = log.get("result_code") == 3 or "numItermax" in str(log.get("warning") or "")
            if capped:
                self._warn(notes, f"the exact solver stopped at max_iter={max_iter} iterations before optimality; "
                                  "increase max_iter or use method='sinkhorn'.", ShallowConvergenceWarning)
            n_iter, converged = (max_iter if capped else 1), not capped
        else:
            G, n_iter, err = self._sinkhorn(ot, a, b, C, reg_e, max_iter, tol)
            converged = bool(np.isfinite(err) and err <= tol)
            if not converged:
                self._warn(notes, f"Sinkhorn did not reach tol={tol:g} in max_iter={max_iter} iterations "
                                  f"(marginal error {err:.2g}); increase max_iter or reg_e, or set norm='median'.",
                           ShallowConvergenceWarning)
        mass = G.sum(axis=1)
        moved = mass > 0
        bary = Xs.copy()
        bary[moved] = (G[moved] @ Xt) / mass[moved, None]
        self.coupling_ = G
        self.X_source_ = Xs
        self.displacement_ = bary - Xs
        self.cost_scale_ = scale
        self.n_iter_ = int(n_iter)
        self.converged_ = bool(converged)
        self.diagnostics_ = self._diagnostics(notes, n_samples=len(X), n_fit_samples=len(X), converged=converged,
                                              n_iter=n_iter)
        return self

    @staticmethod
    def _sinkhorn(ot, a, b, C, reg_e, max_iter, tol):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            G, log = ot.sinkhorn(a, b, C, reg_e, method="sinkhorn", numItermax=max_iter, stopThr=tol, log=True)
        # underflow of exp(-C / reg_e) shows as NaN/inf or rows with no mass
        if not (np.isfinite(G).all() and (G.sum(axis=1) > 0).all() and abs(G.sum() - 1.0) < 1e-2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                G, log = ot.sinkhorn(a, b, C, reg_e, method="sinkhorn_log", numItermax=max_iter, stopThr=tol,
                                     log=True)
        err = log.get("err") or [0.0]
        n_iter = int(log.get("niter", 0)) + 1  # POT logs the 0-based index of the last iteration
        return np.nan_to_num(G, nan=0.0, posinf=0.0, neginf=0.0), n_iter, float(err[-1])

    def transform(self, X, sample_domain=None) -> np.ndarray:
        """Move source rows by the displacement of their nearest fitted source row; keep target rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        sample_domain : array-like of shape (n_samples,), optional
            Positive = source, negative = target; ``None``: all rows are target rows.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        X, is_source = self._new_input(X, sample_domain, default_source=False)
        out = X.copy()
        if is_source.any():
            Xs = X[is_source]
            if Xs.shape == self.X_source_.shape and np.array_equal(Xs, self.X_source_):
                out[is_source] = Xs + self.displacement_  # the fitted rows: skip the neighbour search
            else:
                nearest = pairwise_distances_argmin(Xs, self.X_source_)
                out[is_source] = Xs + self.displacement_[nearest]
        return out
