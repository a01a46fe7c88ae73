"""The report's figures, each returned as PNG bytes.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly, never
through ``pyplot``: no global figure registry, no backend switch, no ``rcParams`` change, so
drawing a report leaves the caller's matplotlib state as it was. matplotlib is imported
inside the functions, keeping ``import transferkit`` light.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

DPI = 100
# colour-blind-safe pair for the two domains (Okabe & Ito 2008)
DOMAIN_COLORS = {"source": "#0072B2", "target": "#E69F00"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _band(ax, x, runs: list[np.ndarray], label: str, color=None, style: str = "-") -> None:
    """Mean over seeds with a ±1 std band (seeds of unequal length are cut to the shortest)."""
    n = min(len(r) for r in runs)
    Y = np.array([r[:n] for r in runs], dtype=float)
    # epochs without a value in any seed (validation scored every few epochs) are left out, not
    # averaged over nothing; a band needs two seeds with a value
    have = np.isfinite(Y).sum(0)
    keep = have > 0
    xs, Y = np.asarray(x[:n])[keep], Y[:, keep]
    m = np.array([np.mean(c[np.isfinite(c)]) for c in Y.T])
    (line,) = ax.plot(xs, m, style, color=color, label=label, lw=1.6, marker="." if keep.sum() < n else None)
    if len(runs) > 1:
        s = np.array([np.std(c[np.isfinite(c)], ddof=1) if np.isfinite(c).sum() > 1 else 0.0 for c in Y.T])
        ax.fill_between(xs, m - s, m + s, color=line.get_color(), alpha=0.15, lw=0)


_NOT_LOSS = {"epoch", "epoch_time", "lr", "score", "step"}


def curve_keys(histories: Sequence[Sequence[Mapping]]) -> tuple[list[str], list[str]]:
    """``(loss_keys, accuracy_keys)`` found in per-epoch history rows.

    Accuracy keys contain ``accuracy`` (plus ``score``, a checkpoint-selection score); every
    other numeric key except ``epoch``, ``epoch_time`` and ``lr`` is a loss term.
    """
    keys: dict[str, None] = {}
    for h in histories:
        for row in h:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    keys.setdefault(k)
    acc = [k for k in keys if "accuracy" in k or k == "score"]
    loss = [k for k in keys if k not in acc and k not in _NOT_LOSS]
    return loss, acc


def learning_curves(histories: Sequence[Sequence[Mapping]], title: str = "") -> bytes:
    """Loss (left) and accuracy (right) against the epoch; one history per seed, drawn as the
    mean over seeds with a ±1 std band. Validation curves are dashed."""
    loss, acc = curve_keys(histories)
    panels = [(loss, "loss"), (acc, "accuracy / selection score")]
    panels = [p for p in panels if p[0]]
    fig = _figure(4.2 * max(len(panels), 1), 3.0)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    bases = list(dict.fromkeys(k.removeprefix("train_").removeprefix("val_") for k in loss + acc))
    for ax, (keys, ylabel) in zip(axes, panels):
        for k in keys:
            runs = [np.array([row.get(k, np.nan) for row in h], dtype=float) for h in histories if h]
            runs = [r for r in runs if len(r) and not np.all(np.isnan(r))]
            if not runs:
                continue
            x = np.array([row.get("epoch", j) for j, row in enumerate(max(histories, key=len))], dtype=float)
            style = "--" if k.startswith("val_") else "-"
            # train_x and val_x share a colour; validation is dashed
            color = f"C{bases.index(k.removeprefix('train_').removeprefix('val_')) % 10}"
            _band(ax, x, runs, k, color=color, style=style)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return _png(fig)


def confusion_matrix_plot(cm: np.ndarray, classes: Sequence[str], title: str = "") -> bytes:
    """Row-normalized confusion matrix (rows: true class) with the counts written in the cells."""
    cm = np.asarray(cm, dtype=float)
    k = len(cm)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = 1.6 + 0.42 * k
    fig = _figure(min(side + 1.0, 10), min(side, 9))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.6 else "black")
    names = [str(c) for c in classes] if len(classes) == k else [str(i) for i in range(k)]
    ax.set_xticks(range(k), names, rotation=90 if max(map(len, names)) > 3 else 0, fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    if title:
        ax.set_title(title, fontsize=10)
    return _png(fig)


def tsne_embed(X: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE (van der Maaten & Hinton 2008) of ``X``, seeded, PCA-initialized.

    Run on at most a few hundred rows of 50 principal components (see
    :mod:`transferkit.artifacts`). All thread pools (BLAS and OpenMP) are limited to one
    thread: on small inputs the threads only contend (measured here: 1.0 s on one thread
    against 7-11 s with the default pools on a busy 2-core machine, 600 x 50).
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, dtype=np.float64)
    perp = float(min(perplexity, max(2.0, (len(X) - 1) / 3)))
    with threadpool_limits(1):
        return TSNE(2, perplexity=perp, init="pca", random_state=seed).fit_transform(X)


def tsne_plot(Y: np.ndarray, domain: np.ndarray | None, labels: np.ndarray, classes: Sequence[str],
              title: str = "") -> bytes:
    """Two panels over the same embedding ``Y``: coloured by domain (left, when there are two)
    and by class (right; source circles, target crosses)."""
    has_domain = domain is not None and len(np.unique(domain)) > 1
    fig = _figure(8.4 if has_domain else 4.6, 3.8)
    axes = fig.subplots(1, 2 if has_domain else 1, squeeze=False)[0]
    dom = np.asarray(domain) if domain is not None else np.full(len(Y), "target")
    if has_domain:
        ax = axes[0]
        for name in ("source", "target"):
            m = dom == name
            ax.scatter(Y[m, 0], Y[m, 1], s=7, alpha=0.6, c=DOMAIN_COLORS[name], label=f"{name} ({m.sum()})", lw=0)
        ax.legend(fontsize=8, markerscale=2)
        ax.set_title("by domain", fontsize=9)
    ax = axes[-1]
    labels = np.asarray(labels)
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(np.unique(labels)) <= 10 else "tab20"]
    uniq = [u for u in np.unique(labels) if u >= 0]
    for name, marker in (("source", "o"), ("target", "x")):
        m = dom == name
        if not m.any():
            continue
        c = [cmap(int(u) % cmap.N) if u >= 0 else (0.6, 0.6, 0.6, 1.0) for u in labels[m]]
        ax.scatter(Y[m, 0], Y[m, 1], s=9 if marker == "x" else 7, alpha=0.7, c=c, marker=marker,
                   lw=0.8 if marker == "x" else 0)
    from matplotlib.lines import Line2D

    names = [str(c) for c in classes]
    handles = [Line2D([], [], ls="", marker="s", color=cmap(int(u) % cmap.N),
                      label=names[int(u)] if int(u) < len(names) else str(u)) for u in uniq]
    ax.legend(handles=handles, fontsize=7, ncol=2, loc="best", title="class", title_fontsize=7)
    ax.set_title("by class (o source, x target)" if has_domain else "by class", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return _png(fig)


def accuracy_bars(names: Sequence[str], means: Sequence[float], stds: Sequence[float],
                  title: str = "test accuracy (mean ± std over seeds)") -> bytes:
    """Horizontal bars of mean accuracy with ±1 std error bars."""
    fig = _figure(6.0, 0.9 + 0.38 * len(names))
    ax = fig.subplots()
    y = np.arange(len(names))[::-1]
    ax.barh(y, means, xerr=stds, color="#4C72B0", alpha=0.85, capsize=3)
    for yi, m, s in zip(y, means, stds):
        ax.text(min(m + s + 0.01, 1.0), yi, f"{m:.3f}", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=9)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("accuracy")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str = "",
            fmt: str = "{:.3f}") -> bytes:
    """An annotated heat map (e.g. benchmark accuracy, methods x tasks)."""
    M = np.asarray(matrix, dtype=float)
    fig = _figure(1.8 + 1.1 * len(cols), 0.9 + 0.32 * len(rows))
    ax = fig.subplots()
    im = ax.imshow(M, cmap="viridis", aspect="auto")
    finite = M[np.isfinite(M)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            if np.isfinite(M[i, j]):
                ax.text(j, i, fmt.format(M[i, j]), ha="center", va="center", fontsize=7,
                        color="black" if M[i, j] > mid else "white")
    ax.set_xticks(range(len(cols)), cols, fontsize=8, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        ax.set_title(title, fontsize=10)
    return _png(fig)


def sample_efficiency_plot(x: Sequence[float], curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                           xlabels: Sequence[str] | None = None, title: str = "") -> bytes:
    """Accuracy against labels per class (log axis), one line per strategy with a ±1 std band."""
    return line_plot(x, curves, xlabel="labeled training samples per class", ylabel="test accuracy",
                     title=title or "sample efficiency", xticks=xlabels, log_x=True)


def interval_plot(names: Sequence[str], means: Sequence[float], lows: Sequence[float], highs: Sequence[float],
                  title: str = "", xlabel: str = "accuracy difference (transfer - baseline)") -> bytes:
    """Point estimates with confidence intervals and a line at zero (a forest plot)."""
    fig = _figure(6.0, 1.0 + 0.45 * len(names))
    ax = fig.subplots()
    y = np.arange(len(names))[::-1]
    means, lows, highs = (np.asarray(v, dtype=float) for v in (means, lows, highs))
    colors = ["#009E73" if lo > 0 else "#D55E00" if hi < 0 else "#555555" for lo, hi in zip(lows, highs)]
    for yi, m, lo, hi, c in zip(y, means, lows, highs, colors):
        ax.errorbar([m], [yi], xerr=[[m - lo], [hi - m]], fmt="none", ecolor=c, capsize=4, lw=1.5)
    ax.scatter(means, y, c=colors, zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, names, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return _png(fig)


def divergence_plot(names: Sequence[str], values: Sequence[float], p_values: Sequence[float | None]) -> bytes:
    """Divergence values as horizontal bars on a symmetric-log axis (the measures live on very
    different scales, some can be slightly negative); a filled bar has p < 0.05, a hatched one
    p >= 0.05, a grey one no test."""
    fig = _figure(6.2, 0.9 + 0.36 * len(names))
    ax = fig.subplots()
    y = np.arange(len(names))[::-1]
    vals = np.asarray(values, dtype=float)
    for yi, v, p in zip(y, vals, p_values):
        color = "#999999" if p is None else "#CC79A7"
        hatch = "//" if p is not None and p >= 0.05 else None
        ax.barh(yi, v, color=color, hatch=hatch, edgecolor="black" if hatch else None, lw=0.5)
        ax.text(v if v > 0 else 0, yi, f" {v:.3g}" + ("" if p is None else f" (p={p:.2g})"), va="center", fontsize=8)
    finite = np.abs(vals[np.isfinite(vals) & (vals != 0)])
    lin = float(max(finite.min(), 1e-6)) if finite.size else 1e-3
    ax.set_xscale("symlog", linthresh=lin)
    ax.set_yticks(y, names, fontsize=9)
    ax.set_xlabel("value (symmetric log scale)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("divergence between source and target features", fontsize=10)
    return _png(fig)


def line_plot(x: Sequence[float], curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str,
              ylabel: str, title: str = "", xticks: Sequence[str] | None = None, log_x: bool = False) -> bytes:
    """One line per curve (``name: (means, stds)``) with a ±1 std band; linear or log x axis."""
    fig = _figure(5.6, 3.6)
    ax = fig.subplots()
    x = np.asarray(x, dtype=float)
    for i, (name, (mean, std)) in enumerate(curves.items()):
        mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        ax.plot(x, mean, "-o", ms=4, color=f"C{i}", label=name)
        ax.fill_between(x, mean - std, mean + std, color=f"C{i}", alpha=0.15, lw=0)
    ticks = list(xticks) if xticks is not None else [f"{v:g}" for v in x]
    if not log_x:
        ax.set_xticks(x, ticks)
    elif len(x) and np.all(x > 0):  # a log axis only for positive x (else matplotlib's default ticks)
        ax.set_xscale("log")
        ax.set_xticks(x, ticks)
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _png(fig)
