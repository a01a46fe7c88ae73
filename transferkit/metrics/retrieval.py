r"""Retrieval recall@k: image -> text and text -> image search scored by their top-k hits.

Given a similarity matrix :math:`S \in \mathbb R^{q \times m}` between ``q`` queries and ``m``
items (cosine similarities of image and caption embeddings, say) and the set :math:`R_i` of items
relevant to query :math:`i`, query :math:`i` is a hit at :math:`k` when a relevant item is among
its :math:`k` most similar items, and

.. math:: \mathrm{R@}k = \frac{1}{q} \sum_{i=1}^{q}
          \mathbb 1\!\left[\,\#\{j \notin R_i : S_{ij} \ge \max_{r \in R_i} S_{ir}\} < k\,\right],

the fraction of hits: the best-ranked relevant item of query :math:`i` sits at rank
:math:`1 + \#\{j \notin R_i : S_{ij} \ge \max_{r \in R_i} S_{ir}\}`. With several relevant items
a query is a hit when *any* of them is in its top :math:`k` (the convention of image-caption
benchmarks, where an image has five captions: Karpathy & Fei-Fei, CVPR 2015, "Deep
visual-semantic alignments for generating image descriptions"; CLIP, Radford et al. 2021,
table 13). **Ties count against the query**: a non-relevant item as similar as the best relevant
one is ranked before it, so a constant similarity (a collapsed embedding) scores 0 at every
:math:`k` up to the number of non-relevant items, not a perfect recall. A ``k`` above the number
of non-relevant items makes every query a hit.

Image -> text recall scores ``S`` with the texts as items; text -> image recall scores
:math:`S^\top` with the relevance transposed (:func:`retrieval_recall` does both).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError

__all__ = ["recall_at_k", "retrieval_recall"]


def _similarity(similarity, name: str = "similarity") -> np.ndarray:
    S = similarity.detach().cpu().numpy() if hasattr(similarity, "detach") else similarity
    try:
        S = np.asarray(S, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a numeric (n_queries, n_items) array, got "
                        f"{type(similarity).__name__}.") from None
    if S.ndim != 2 or 0 in S.shape:
        raise DataError(f"{name} must be a non-empty (n_queries, n_items) array, got shape {S.shape}.")
    if np.isnan(S).any():
        bad = int(np.isnan(S).any(1).sum())
        raise DataError(f"{name} holds NaN in {bad} query row(s); NaN has no rank: fix the embeddings that gave it.")
    return S


def _relevance(relevant, shape: tuple[int, int]) -> np.ndarray:
    q, m = shape
    R = relevant.detach().cpu().numpy() if hasattr(relevant, "detach") else relevant
    R = np.asarray(R)
    if R.dtype == bool:
        if R.shape != (q, m):
            raise DataError(f"relevant is a boolean matrix of shape {R.shape}; it must be (n_queries, n_items) = "
                            f"{(q, m)}, like similarity.")
        none = np.flatnonzero(~R.any(1))
        if len(none):
            raise DataError(f"relevant: query {int(none[0])} (and {len(none) - 1} more) has no relevant item; "
                            "recall is undefined for it: drop such queries.")
        return R
    if R.ndim != 1 or len(R) != q:
        raise DataError(f"relevant must be a boolean (n_queries, n_items) matrix or one item index per query "
                        f"(shape ({q},)), got shape {R.shape}.")
    if R.size and not np.issubdtype(R.dtype, np.integer):
        if np.issubdtype(R.dtype, np.floating) and np.all(R == np.round(R)):
            R = R.astype(np.int64)
        else:
            raise DataError(f"relevant must hold integer item indices, got dtype {R.dtype}.")
    if (R < 0).any() or (R >= m).any():
        raise DataError(f"relevant holds item indices from {int(R.min())} to {int(R.max())}; they must be in "
                        f"0..{m - 1} (the columns of similarity).")
    M = np.zeros((q, m), dtype=bool)
    M[np.arange(q), R.astype(np.int64)] = True
    return M


def _ks(ks) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
        ks = (ks,)
    try:
        ks = tuple(ks)
    except TypeError:
        raise DataError(f"ks must be a list of positive whole numbers such as (1, 5, 10), got {ks!r}.") from None
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise DataError(f"ks must be a non-empty list of positive whole numbers such as (1, 5, 10), got {ks!r}.")
    return tuple(dict.fromkeys(int(k) for k in ks))


def recall_at_k(similarity, relevant, ks: Sequence[int] | int = (1, 5, 10)) -> dict[int, float]:
    """Recall@k of a retrieval: the fraction of queries with a relevant item in their top ``k``.

    Parameters
    ----------
    similarity : (n_queries, n_items) array
        Higher means more similar (e.g. cosine similarities). No NaN; infinities rank as such.
    relevant
        Either a boolean ``(n_queries, n_items)`` matrix (``True`` where the item is relevant
        to the query; every query needs at least one) or ``(n_queries,)`` integer indices, the
        one relevant item of each query.
    ks
        The cut-offs (positive whole numbers; duplicates are dropped).

    Returns
    -------
    dict
        ``{k: R@k}`` in the order of ``ks``, each in [0, 1] (see the module notes for the
        formula, the rule for several relevant items and for ties).

    Raises
    ------
    DataError
        A similarity that is not a non-empty 2-D array or holds NaN; a relevance of the wrong
        shape, with an index out of range, or with a query that has no relevant item; bad ``ks``.

    Examples
    --------
    >>> S = [[0.9, 0.1, 0.5], [0.2, 0.3, 0.8]]
    >>> recall_at_k(S, [0, 0], ks=(1, 2))  # query 0 finds item 0 first; query 1 ranks it third
    {1: 0.5, 2: 0.5}
    """
    S = _similarity(similarity)
    R = _relevance(relevant, S.shape)
    ks = _ks(ks)
    best = np.where(R, S, -np.inf).max(1)
    # rank of each query's best relevant item - 1: the non-relevant items at least as similar
    ahead = ((S >= best[:, None]) & ~R).sum(1)
    return {k: float((ahead < k).mean()) for k in ks}


def retrieval_recall(similarity, relevant, ks: Sequence[int] | int = (1, 5, 10)) -> dict[str, dict[int, float]]:
    """Recall@k in both directions of a cross-modal similarity.

    Parameters
    ----------
    similarity : (n_images, n_texts) array
        Similarities between every image and every text.
    relevant
        A boolean ``(n_images, n_texts)`` matrix, or ``(n_images,)`` indices of each image's
        text; every text must be relevant to at least one image (else text -> image recall is
        undefined for it).
    ks
        The cut-offs.

    Returns
    -------
    dict
        ``{"image_to_text": {k: R@k}, "text_to_image": {k: R@k}}``: the images as queries over
        the texts (:func:`recall_at_k` of ``similarity``), and the texts as queries over the
        images (of ``similarity.T`` and the transposed relevance).
    """
    S = _similarity(similarity)
    R = _relevance(relevant, S.shape)
    if not R.any(0).all():
        j = int(np.flatnonzero(~R.any(0))[0])
        raise DataError(f"relevant: text {j} is relevant to no image, so text -> image recall is undefined for it; "
                        "drop the texts no image is paired with.")
    return {"image_to_text": recall_at_k(S, R, ks), "text_to_image": recall_at_k(S.T, R.T, ks)}
