"""FeatureExtractor (a scikit-learn transformer) and its on-disk cache.

Features of a frozen backbone are expensive (EfficientNet-Lite0 at 64x64 runs ~800 images/s on
2 cores) and the same for every seed and every head trained on them, so they are cached on
disk as ``.npy`` files keyed by the backbone (name, weights, input size, state hash) and a
content fingerprint of the data.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin

from .._faults import fault_point
from .._validation import check_number
from ..data.arrays import npy_header
from ..errors import ConfigError, DataError, TransferKitWarning


def default_cache_dir() -> str:
    """``$TRANSFERKIT_CACHE`` or ``~/.cache/transferkit/features``."""
    return os.environ.get("TRANSFERKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "transferkit", "features")


def backbone_key(backbone) -> str:
    """A stable identity of a backbone's function: spec plus a hash of its weights."""
    h = hashlib.sha256()
    spec = backbone.spec.to_dict()
    h.update(json.dumps({k: spec[k] for k in ("name", "input_size", "mean", "std", "weights", "feature_dim")},
                        sort_keys=True, default=str).encode())
    # every byte of every tensor (buffers included: BN statistics change features too);
    # ~30 ms for EfficientNet-Lite0, against seconds of extraction
    for k, v in backbone.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Check that the feature cache directory can be used; create it if it is missing.

    Called before a run directory is created, so that a cache directory that is a file, or
    cannot be created or written, fails in one line and before anything on disk changes.

    Parameters
    ----------
    path
        The cache directory; ``None`` uses :func:`default_cache_dir`.

    Returns
    -------
    Path
        The directory.

    Raises
    ------
    ConfigError
        ``path`` exists but is not a directory, or cannot be created or written.
    """
    shown = str(path) if path is not None else default_cache_dir()
    p = Path(shown).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(
            f"cache_dir {shown!r} exists but is not a directory (it is a file); point cache_dir at a "
            "folder (or remove the file)."
        )
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cache_dir {shown!r} cannot be created ({exc.strerror or type(exc).__name__}); point cache_dir "
            "at a folder you can write to."
        ) from None
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-check-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"cache_dir {shown!r} is not writable ({exc.strerror or type(exc).__name__}); point cache_dir "
            "at a folder you can write to, or fix its permissions."
        ) from None
    return p


def _invalid(p: Path, why: str) -> None:
    warnings.warn(
        f"feature cache entry {str(p)!r} is invalid ({why}); ignoring it, recomputing the features "
        "and overwriting it.", TransferKitWarning, stacklevel=4)


def _read_entry(p: Path, n: int | None, dim: int | None) -> np.ndarray | str:
    """The cached array, or a reason why the file is not a valid entry.

    The ``.npy`` header is read and checked (float32, 2-D, ``(n, dim)``) before the data, with
    ``np.lib.format`` directly: :func:`numpy.load` would also open a zip archive or, if
    allowed, a pickle. The data is then checked for NaN/inf in one pass.
    """
    fmt = np.lib.format
    try:
        with open(p, "rb") as fh:
            head = fh.read(1)
            fh.seek(0)
            try:
                shape, _, dtype = npy_header(fh)
            except ValueError:
                return "a pickle, not a .npy file; it was not unpickled" if head == b"\x80" else "not a .npy file"
            if dtype.hasobject:
                return f"dtype {dtype} holds Python objects; it was not unpickled"
            if dtype != np.float32:
                return f"dtype {dtype}, expected float32"
            if len(shape) != 2:
                return f"shape {shape}, expected 2-D (samples, features)"
            if (n is not None and shape[0] != n) or (dim is not None and shape[1] != dim):
                return f"shape {shape}, expected ({n}, {dim})"
            fh.seek(0)
            arr = fmt.read_array(fh, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # truncated, unreadable, bad header
        return f"unreadable: {type(exc).__name__}: {str(exc).strip()[:120]}"
    if not np.isfinite(arr).all():
        return "it holds NaN/inf values"
    return arr


class FeatureCache:
    """``.npy`` files under ``root``: one per (backbone key, data fingerprint). Writes are atomic.

    An entry that is not a float32 ``(n, d)`` array of finite values (a truncated or corrupt
    file, the wrong shape or dtype, NaN/inf, a pickle) is never used and never unpickled: it
    counts as a miss, a :class:`~transferkit.errors.TransferKitWarning` names the file, and the
    recomputed features replace it atomically.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root or default_cache_dir())
        self.hits = 0
        self.misses = 0
        self.invalid = 0

    def path(self, bkey: str, fingerprint: str) -> Path:
        return self.root / f"{bkey}-{fingerprint}.npy"

    def get(self, bkey: str, fingerprint: str, n: int | None = None, dim: int | None = None) -> np.ndarray | None:
        """The cached features, or ``None`` (a miss) when absent or invalid.

        ``n`` and ``dim``, when given, are the expected number of samples and feature width.
        """
        p = self.path(bkey, fingerprint)
        if p.is_file():
            got = _read_entry(p, n, dim)
            if isinstance(got, np.ndarray):
                self.hits += 1
                return got
            self.invalid += 1
            _invalid(p, got)
        elif p.exists():  # a folder (or a socket...): put() says so and leaves it alone
            self.invalid += 1
        self.misses += 1
        return None

    def put(self, bkey: str, fingerprint: str, feats: np.ndarray) -> None:
        """Write ``feats`` atomically (a temporary file, then ``os.replace``), mode 0666 less the
        umask. A cache that cannot be written only warns: the features are still returned."""
        target = self.path(bkey, fingerprint)
        if target.is_dir():
            warnings.warn(f"feature cache entry {str(target)!r} is a directory; the features are not cached "
                          "(remove that folder).", TransferKitWarning, stacklevel=3)
            return
        tmp = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.save(f, feats, allow_pickle=False)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            warnings.warn(f"cannot write the feature cache entry {str(target)!r} "
                          f"({exc.strerror or type(exc).__name__}); the features are not cached.",
                          TransferKitWarning, stacklevel=3)
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise


@torch.no_grad()
def extract_features(backbone, inputs, batch_size: int = 64, device: str | torch.device = "cpu",
                     progress: bool = False, desc: str = "features") -> np.ndarray:
    """Run ``backbone`` in eval mode over ``inputs`` in batches; return float32 ``(n, d)``."""
    from tqdm.auto import tqdm

    batch_size = check_number("batch_size", batch_size, low=1, integer=True)
    was_training = backbone.training
    backbone.eval()
    if backbone.spec.modality == "image":
        backbone.to(memory_format=torch.channels_last)
    n = len(inputs)
    out = np.empty((n, backbone.feature_dim), dtype=np.float32)
    try:
        for s in tqdm(range(0, n, batch_size), desc=desc, disable=None if progress else True, leave=False, unit="batch"):
            chunk = inputs[s : s + batch_size] if isinstance(inputs, np.ndarray) else [inputs[i] for i in range(s, min(n, s + batch_size))]
            x = backbone.move_inputs(backbone.preprocess(chunk), device)
            if isinstance(x, torch.Tensor) and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            out[s : s + len(chunk)] = backbone(x).float().cpu().numpy()
            fault_point("features.batch")
    finally:
        backbone.train(was_training)
    bad = ~np.isfinite(out)
    if bad.any():  # huge weights or inputs: every later fit would fail or learn nothing
        row = int(np.flatnonzero(bad.any(1))[0])
        raise DataError(
            f"backbone {getattr(backbone, 'name', type(backbone).__name__)!r} produced non-finite features (NaN or "
            f"inf in {int(bad.any(1).sum())} of {n} samples, first sample {row}) for {desc!r}; check the weights "
            "(finite but huge values overflow) and the inputs for huge values.")
    return out


def _tabular_width(backbone) -> int | None:
    """The input width a tabular backbone declares (``spec.extra["in_features"]``), else ``None``."""
    spec = getattr(backbone, "spec", None)
    if spec is None or spec.modality != "tabular":
        return None
    width = (spec.extra or {}).get("in_features")
    return int(width) if width is not None else None


def _check_inputs(X, width: int | None, who: str, backbone_name: str | None = None):
    """The inputs of ``X`` (a :class:`DomainDataset` or raw inputs), validated; one-line errors.

    Every input: not sparse, not empty, no NaN/inf in a float array. A tabular backbone with a
    known input ``width`` also needs a real 2-D numeric array with ``width`` columns (the
    messages carry the phrases scikit-learn's estimator checks look for).
    """
    name = getattr(X, "name", "the input")
    inputs = X.inputs if hasattr(X, "inputs") and hasattr(X, "fingerprint") else X
    if sparse.issparse(inputs):
        raise DataError(f"{who}: {name!r} is a scipy sparse matrix; pass a dense array (X.toarray()).")
    if width is not None and not isinstance(inputs, torch.Tensor):
        A = np.asarray(inputs)
        if np.iscomplexobj(A):
            raise DataError(f"{who}: Complex data not supported ({name!r} has dtype {A.dtype}); pass real features.")
        if A.dtype == object:
            try:
                A = A.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{who}: {name!r} must be numeric ({exc}); encode non-numeric columns first.") from None
        elif A.dtype.kind not in "biuf":
            raise DataError(f"{who}: {name!r} must be numeric, got dtype {A.dtype}; encode non-numeric columns first.")
        if A.ndim == 1 and len(A):
            raise DataError(
                f"{who}: {name!r} must be 2-D (n_samples, n_features), got a 1-D array of shape {A.shape}; "
                "Reshape your data with X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample."
            )
        if A.ndim not in (1, 2):
            raise DataError(f"{who}: {name!r} must be 2-D (n_samples, n_features), got shape {A.shape}.")
        if A.ndim == 2 and A.shape[1] == 0:
            raise DataError(f"{who}: {name!r} has 0 feature(s) (shape=({A.shape[0]}, 0)) while a minimum of 1 is "
                            "required; pass at least one column.")
        if A.ndim == 2 and len(A) and A.shape[1] != width:
            raise DataError(
                f"X has {A.shape[1]} features, but FeatureExtractor is expecting {width} features as input (the "
                f"in_features of backbone {backbone_name!r}); pass rows with that many columns or use another backbone."
            )
        inputs = A
    if len(inputs) == 0:
        raise DataError(f"{who}: {name!r} has no samples; there is nothing to extract features from.")
    floating = isinstance(inputs, np.ndarray) and np.issubdtype(inputs.dtype, np.floating)
    if floating and not np.isfinite(inputs).all():
        raise DataError(f"{who}: {name!r} holds NaN or infinite values; fill or drop them before extracting "
                        "features.")
    return inputs


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """Frozen backbone as a scikit-learn transformer: ``transform(inputs) -> (n, d)``.

    Parameters
    ----------
    backbone
        A backbone name (see :func:`transferkit.backbones.create_backbone`) or instance.
    image_size
        Input side for image backbones when ``backbone`` is a name.
    batch_size
        Inference batch size.
    cache_dir
        Feature cache directory; ``None`` uses ``$TRANSFERKIT_CACHE`` or
        ``~/.cache/transferkit/features``; ``False`` disables caching.
    progress
        Show a progress bar.

    Attributes
    ----------
    backbone_
        The backbone instance.
    cache_
        The :class:`FeatureCache` (``None`` when disabled).
    n_features_in_ : int
        Only for a tabular backbone that declares its input width (``tiny_mlp``, ``identity``):
        the number of columns ``X`` must have. Tabular inputs are validated like any
        scikit-learn transformer's (2-D, real, finite, that width); images and text are passed
        to the backbone as they are.

    Notes
    -----
    ``fit`` does not copy the backbone: ``backbone_`` is the instance given (moved to
    ``device``), so that a large model is not held twice.
    """

    def __init__(self, backbone="efficientnet_lite0", image_size=None, batch_size=64, cache_dir=None,
                 progress=False, device="cpu"):
        self.backbone = backbone
        self.image_size = image_size
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.progress = progress
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = ["float32"]  # features are float32 whatever the input
        return tags

    def fit(self, X=None, y=None):
        """Resolve the backbone (and the cache); ``X``, when given, is only validated.

        Parameters
        ----------
        X : optional
            Inputs like those of :meth:`transform`; for a tabular backbone, checked to be a
            finite 2-D array with the backbone's input width.
        y : ignored

        Returns
        -------
        self
        """
        if isinstance(self.backbone, str):
            from ..backbones import create_backbone

            backbone = create_backbone(self.backbone, image_size=self.image_size)
        else:
            backbone = self.backbone
        width = _tabular_width(backbone)
        if X is not None:
            _check_inputs(X, width, "FeatureExtractor.fit", getattr(backbone, "name", None) or backbone.spec.name)
        self.backbone_ = backbone
        self.backbone_.to(self.device)
        if width is not None:
            self.n_features_in_ = width
        self.cache_ = None if self.cache_dir is False else FeatureCache(self.cache_dir)
        self._bkey = backbone_key(self.backbone_) if self.cache_ is not None else None
        return self

    def transform(self, X) -> np.ndarray:
        """``X``: a :class:`DomainDataset` or raw inputs accepted by the backbone.

        Raises scikit-learn's ``NotFittedError`` before :meth:`fit`, and a
        :class:`~transferkit.errors.DataError` for no samples or non-finite numeric inputs."""
        if not hasattr(self, "backbone_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this FeatureExtractor is not fitted yet; call fit() first "
                                 "(FeatureExtractor(backbone).fit().transform(data)).")
        inputs = _check_inputs(X, _tabular_width(self.backbone_), "FeatureExtractor.transform",
                               self.backbone_.spec.name)
        fp = None
        if self.cache_ is not None:
            if hasattr(X, "fingerprint"):
                fp = X.fingerprint()
            else:
                from ..data import DomainDataset

                mod = self.backbone_.spec.modality
                fp = DomainDataset(inputs=inputs, labels=None, name="_", modality=mod if mod != "tabular" else "tabular").fingerprint()
            hit = self.cache_.get(self._bkey, fp, n=len(inputs), dim=self.backbone_.feature_dim)
            if hit is not None:
                return hit
        feats = extract_features(self.backbone_, inputs, self.batch_size, self.device, self.progress)
        if self.cache_ is not None:
            self.cache_.put(self._bkey, fp, feats)
        return feats
