"""Dataset spec strings: ``NAME[:key=value,key=value,...]`` -> :class:`DomainDataset`.

``NAME`` is a registered dataset (``digits:rotate=45,seed=1``) or a path: a folder (one
subfolder of images per class), a ``.csv``/``.tsv``/``.parquet`` table
(``reviews.csv:text=review,label=stars``) or an ``.npz`` archive (``arrays.npz:x=images``).
IDX files (MNIST, Fashion-MNIST; raw or ``.gz``) come in pairs and are named by options:
``idx:images=train-images-idx3-ubyte.gz,labels=train-labels-idx1-ubyte.gz`` (see
:mod:`transferkit.data.idx`; a path holding ``,`` or ``=`` needs the dict form
``{"name": "idx", "images": ..., "labels": ...}``).

Values are parsed as ``int``, ``float``, ``true``/``false``, ``none``, or kept as strings, so a
range ``22..45`` and a part ``0/2`` stay strings. A list is written in brackets:
``table.csv:features=[age,income],label=churn``.

Every image dataset (registered, a folder, an ``.npz`` or IDX pair) takes three more options,
applied after loading (:mod:`transferkit.data.corruptions`, CIFAR-10-C-style):
``corrupt=NAME`` (or a list ``[fog,pixelate]``, applied in order), ``severity=1..5`` (default
3) and ``corrupt_seed=`` (default 0), e.g. ``digits:corrupt=motion_blur,severity=3``. They are
checked before loading (``severity`` or ``corrupt_seed`` without ``corrupt`` is an error, as is
``corrupt`` on a table or a text dataset); array inputs are corrupted at once, lazy ones (IDX
files, image folders) per image on access, image ``i`` always from seed
``(corrupt_seed, i)``. The dataset's name gets a suffix such as ``[gaussian_noise@5]``.

Every labeled dataset also takes ``keep_classes=[...]``: keep only the rows of those classes, given
as class indices or class names (``fashion_mnist:split=test,keep_classes=[0,1,2,3,4]``). The class
list and the label indices stay those of the full dataset, so a target restricted this way
still lines up with a source that has every class (partial adaptation), and a source
restricted this way leaves the other classes unseen (open-set adaptation). The name gets a
suffix such as ``[classes=0,1,2]`` (the ``classes=`` option of ``idx`` and tables names the
classes; ``keep_classes=`` selects among them).

A registered name wins over a file or folder of the same name; write ``./digits`` for the
folder. A path that itself contains ``:`` is read as a path when the whole string (or the part
before an option list) exists.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._registry import available, describe, get
from .._validation import suggest
from ..errors import ConfigError, DataError
from .domain import DomainDataset

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
ARRAY_SUFFIXES = (".npz",)

FILE_KINDS: dict[str, str] = {
    "<folder>": "image folder: one subfolder of images per class (options: size, name, extensions, cache_size)",
    "<file>.csv": "CSV table: text=COLUMN for text, or numeric features (options: text, label, features, name)",
    "<file>.tsv": "tab-separated table (same options as .csv)",
    "<file>.parquet": "Parquet table, needs pyarrow (same options as .csv)",
    "<file>.npz": "NumPy archive of inputs and labels (options: x, y, name)",
}


def parse_value(text: str) -> Any:
    """Parse one option value: int, float, bool (``true``/``false``), ``none``, ``[a,b]`` or str."""
    v = text.strip()
    low = v.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    if low in ("none", "null"):
        return None
    if _INT.match(v):
        return int(v)
    if _FLOAT.match(v):
        return float(v)
    if v.startswith("[") and v.endswith("]"):
        inner = v[1:-1].strip()
        return [parse_value(p) for p in _split_top(inner)] if inner else []
    return v


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _parse_options(text: str, spec: str) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if text.count("[") != text.count("]"):
        raise ConfigError(f"dataset spec {spec!r}: unbalanced brackets in {text!r}; write lists as key=[a,b].")
    for part in _split_top(text):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(
                f"dataset spec {spec!r}: option {part!r} has no value; write {part}=VALUE "
                "(e.g. invert=true), and lists in brackets (features=[a,b])."
            )
        key, value = (s.strip() for s in part.split("=", 1))
        if not _KEY.match(key):
            raise ConfigError(f"dataset spec {spec!r}: {key!r} is not a valid option name (letters, digits, _).")
        if key in opts:
            raise ConfigError(f"dataset spec {spec!r}: option {key!r} is given twice.")
        opts[key] = parse_value(value)
    return opts


def _registered() -> list[str]:
    return available("dataset")


def _exists(name: str) -> bool:
    if not name:
        return False  # Path("") is the current directory
    try:
        return Path(name).expanduser().exists()
    except (OSError, ValueError):  # name too long, NUL byte, ...
        return False


def _is_known(name: str) -> bool:
    return bool(name) and (name in _registered() or _exists(name))


def parse_spec(spec: str | dict) -> tuple[str, dict[str, Any]]:
    """Split a dataset spec into ``(name, options)``.

    Parameters
    ----------
    spec
        ``"NAME"`` or ``"NAME:k=v,k=v"``; or a dict with ``"name"`` (or ``"path"``) and options.

    Returns
    -------
    (name, options)
        ``name`` is a registered dataset or a path; ``options`` maps option names to parsed values.

    Examples
    --------
    >>> parse_spec("digits:rotate=22..45,seed=1,invert=true")
    ('digits', {'rotate': '22..45', 'seed': 1, 'invert': True})
    >>> parse_spec("reviews.csv:text=review,label=stars")
    ('reviews.csv', {'text': 'review', 'label': 'stars'})
    """
    if isinstance(spec, dict):
        opts = dict(spec)
        has = [k for k in ("name", "path") if k in opts]
        if len(has) != 1:
            raise ConfigError(
                f"dataset spec {spec!r} needs exactly one of 'name' (a registered dataset) or 'path' "
                "(a folder or file)" + (", not both." if len(has) == 2 else ".")
            )
        name = opts.pop(has[0])
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"dataset spec {spec!r}: {has[0]!r} must be a non-empty string.")
        # 'name' of a dict spec is the dataset to load; a display name is given as 'domain_name'.
        if "domain_name" in opts:
            opts["name"] = opts.pop("domain_name")
        return name.strip(), opts
    if not isinstance(spec, str):
        raise ConfigError(
            f"a dataset spec must be a string like 'digits:rotate=30' or a dict, got {type(spec).__name__}."
        )
    s = spec.strip()
    if not s:
        raise ConfigError("the dataset spec is empty; give a registered name (e.g. 'digits') or a path.")
    if ":" not in s or _exists(s):
        return s, {}
    colons = [i for i, c in enumerate(s) if c == ":"]
    # 1) the part before a colon is a registered dataset or an existing path: parse strictly,
    #    so a typo in the options is reported as such.
    for i in colons:
        if _is_known(s[:i].strip()):
            return s[:i].strip(), _parse_options(s[i + 1 :], spec)
    # 2) otherwise, the first colon after which a valid option list follows.
    for i in colons:
        if not s[:i].strip():
            continue
        try:
            return s[:i].strip(), _parse_options(s[i + 1 :], spec)
        except ConfigError:
            continue
    return s, {}


def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_format_value(x) for x in v) + "]"
    return str(v)


def format_spec(name: str, options: dict[str, Any]) -> str:
    """The spec string of ``name`` with ``options`` (inverse of :func:`parse_spec`)."""
    if not options:
        return name
    return name + ":" + ",".join(f"{k}={_format_value(v)}" for k, v in options.items())


def _check_options(loader: Callable, options: dict[str, Any], what: str) -> None:
    params = inspect.signature(loader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the loader validates its own extra options
    valid = [n for n, p in params.items() if n != "path" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"{what}: unknown option {key!r}." + suggest(key, valid) + f" Options: {', '.join(valid)}."
            )


def _looks_like_path(name: str) -> bool:
    return (
        any(sep in name for sep in ("/", "\\"))
        or name.startswith((".", "~"))
        or Path(name).suffix.lower() in TABLE_SUFFIXES + ARRAY_SUFFIXES + (".npy", ".txt", ".json")
    )


def _resolve(name: str) -> tuple[Callable[..., DomainDataset], str, bool]:
    """(loader, description, takes_path) for a registered name or an existing path."""
    if name in _registered():
        return get("dataset", name), f"dataset {name!r}", False
    p = Path(name).expanduser()
    if _exists(name) and p.is_dir():
        if p.suffix.lower() in TABLE_SUFFIXES + ARRAY_SUFFIXES:
            raise DataError(
                f"dataset {name!r} is a directory, expected a file: a {p.suffix.lower()} dataset is read from "
                f"a file; give the path of the {p.suffix.lower()} file (an image folder's name should not end "
                f"in {p.suffix.lower()})."
            )
        from .folder import load_image_folder

        return load_image_folder, f"image folder {name!r}", True
    if _exists(name):
        suffix = p.suffix.lower()
        if suffix in TABLE_SUFFIXES:
            from .tables import load_table

            return load_table, f"table {name!r}", True
        if suffix in ARRAY_SUFFIXES:
            from .arrays import load_npz

            return load_npz, f"array file {name!r}", True
        idx_hint = (f" For IDX (MNIST-format) files write idx:images={name},labels=LABELS_FILE."
                    if "ubyte" in p.name.lower() or ".idx" in p.name.lower() else "")
        raise ConfigError(
            f"dataset {name!r}: unsupported file type {suffix or '(no extension)'!r} (it is a file, not a "
            "folder); transferkit reads a folder of class subfolders (give the folder's path), .csv, .tsv, .parquet "
            "and .npz files." + idx_hint
        )
    names = _registered()
    if _looks_like_path(name):
        raise ConfigError(
            f"dataset {name!r}: no such file or folder (looked at {str(p.absolute())!r}); check the path. "
            f"(It is not a registered dataset either; registered: {', '.join(names)}.)"
        )
    stem = name.split(":", 1)[0]
    hint = suggest(name, names) or suggest(stem, names)
    raise ConfigError(
        f"unknown dataset {name!r}: it is neither a registered dataset nor an existing file or folder."
        + hint + f" Registered datasets: {', '.join(names)}; or give a path to a folder, .csv, .tsv, "
        ".parquet or .npz file."
    )


def load_dataset(spec: str | dict, **overrides: Any) -> DomainDataset:
    """Build a :class:`DomainDataset` from a spec string (or dict) plus keyword overrides.

    Parameters
    ----------
    spec
        ``NAME[:k=v,...]`` (see the module docstring) or ``{"name"|"path": ..., **options}``;
        in a dict, ``"name"`` is the dataset to load and ``"domain_name"`` the display name.
    **overrides
        Options that replace those in ``spec``.

    Returns
    -------
    DomainDataset
        With ``spec`` set to the spec string it was built from (including overrides).

    Raises
    ------
    ConfigError
        Unknown dataset name (with the nearest registered names), a path that does not exist,
        an unsupported file type, or an unknown option.
    DataError
        The file or folder exists but its content is invalid.

    Examples
    --------
    >>> ds = load_dataset("digits:subset=1/2,rotate=22..45,translate=0.1")  # doctest: +SKIP
    >>> ds = load_dataset("reviews.csv:text=review,label=stars")  # doctest: +SKIP
    """
    name, options = parse_spec(spec)
    options.update(overrides)
    loader, what, takes_path = _resolve(name)
    given = dict(options)
    corruption = _pop_corruption(options, what)
    keep_classes = _pop_classes(options, what)
    _check_options(loader, options, what)
    if what.startswith("table ") and "label" in options and options["label"] is None:
        options["label"] = False  # ``label=none`` written out: an unlabeled table (left out: the usual names)
    ds = loader(name, **options) if takes_path else loader(**options)
    if corruption is not None:
        ds = _apply_corruption(ds, corruption, what)
    if keep_classes is not None:
        ds = _apply_classes(ds, keep_classes, what)
    if isinstance(spec, str) and not overrides:
        ds.spec = spec.strip()
    else:
        ds.spec = format_spec(name, given)
    return ds


#: Options every image dataset takes (:mod:`transferkit.data.corruptions`); removed before the loader is called.
CORRUPTION_OPTIONS = ("corrupt", "severity", "corrupt_seed")


def _pop_corruption(options: dict[str, Any], what: str) -> tuple | None:
    """Remove and check ``corrupt``/``severity``/``corrupt_seed``: ``(names, severity, seed)`` or ``None``."""
    got = {k: options.pop(k) for k in CORRUPTION_OPTIONS if k in options}
    if not got:
        return None
    if got.get("corrupt") is None:
        extra = ", ".join(f"{k}={_format_value(v)}" for k, v in got.items())
        raise ConfigError(f"{what}: {extra} given without corrupt=; add a corruption (e.g. corrupt=gaussian_noise) "
                          "or remove it.")
    if what.startswith("table "):
        raise ConfigError(f"{what}: corrupt= applies to image datasets only, and a table holds text or numeric "
                          "features; remove corrupt, severity and corrupt_seed.")
    from .corruptions import check_corruption

    return check_corruption(got["corrupt"], got.get("severity"), got.get("corrupt_seed", 0), what=what)


def _pop_classes(options: dict[str, Any], what: str) -> list | None:
    """Remove and check ``keep_classes=[...]`` (class indices or names): the list, or ``None``."""
    if "keep_classes" not in options:
        return None
    v = options.pop("keep_classes")
    v = [v] if isinstance(v, (int, str)) and not isinstance(v, bool) else v
    if not isinstance(v, list) or not v or any(isinstance(c, bool) or not isinstance(c, (int, str)) for c in v):
        raise ConfigError(f"{what}: keep_classes={_format_value(v)} must be a non-empty list of class indices or "
                          "names, e.g. keep_classes=[0,1,2].")
    if len(set(map(str, v))) != len(v):
        raise ConfigError(f"{what}: keep_classes={_format_value(v)} names a class twice; list each class once.")
    return v


def _apply_classes(ds: DomainDataset, keep: list, what: str) -> DomainDataset:
    """The rows of the ``keep`` classes, with the full class list and label indices unchanged."""
    import numpy as np

    if ds.labels is None or not (ds.labels >= 0).any():
        raise ConfigError(f"{what}: keep_classes= keeps the rows of some classes, but this dataset has no labels; "
                          "remove keep_classes=.")
    n = ds.n_classes
    names = [str(c) for c in ds.classes] if ds.classes is not None else [str(i) for i in range(n)]
    idx = []
    for c in keep:
        if isinstance(c, int):
            if not 0 <= c < n:
                raise ConfigError(f"{what}: keep_classes= holds {c}, but the class indices run 0..{n - 1}.")
            idx.append(c)
        elif c in names:
            idx.append(names.index(c))
        else:
            raise ConfigError(f"{what}: keep_classes= holds {c!r}, which is not a class of this dataset."
                              + suggest(c, names) + f" Classes: {', '.join(names[:20])}"
                              + (" ..." if len(names) > 20 else "") + ".")
    rows = np.flatnonzero(np.isin(ds.labels, idx))
    if len(rows) == 0:
        raise DataError(f"{what}: no row belongs to keep_classes={_format_value(keep)}.")
    out = ds.subset(rows, name=f"{ds.name}[classes={','.join(map(str, keep))}]")
    out.classes = list(ds.classes) if ds.classes is not None else names
    out.meta = {**out.meta, "kept_classes": sorted(idx)}
    return out


def _apply_corruption(ds: DomainDataset, corruption: tuple, what: str) -> DomainDataset:
    from .corruptions import corrupt_inputs, describe

    names, severity, seed = corruption
    if ds.modality != "image":
        raise ConfigError(f"{what}: corrupt= applies to image datasets only, and this one is {ds.modality}; "
                          "remove corrupt, severity and corrupt_seed.")
    ds.inputs = corrupt_inputs(ds.inputs, names, severity, seed)
    ds.name = ds.name + describe(names, severity)
    ds.meta = {**ds.meta, "corruption": {"names": list(names), "severity": severity, "seed": seed}}
    return ds


def list_datasets() -> dict[str, str]:
    """Registered dataset names and the file kinds a path may name -> one-line descriptions."""
    out = dict(describe("dataset"))
    out.update(FILE_KINDS)
    return out
