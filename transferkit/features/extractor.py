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
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from .._validation import check_number


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


class FeatureCache:
    """``.npy`` files under ``root``: one per (backbone key, data fingerprint). Writes are atomic."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root or default_cache_dir())
        self.hits = 0
        self.misses = 0

    def path(self, bkey: str, fingerprint: str) -> Path:
        return self.root / f"{bkey}-{fingerprint}.npy"

    def get(self, bkey: str, fingerprint: str) -> np.ndarray | None:
        p = self.path(bkey, fingerprint)
        if p.is_file():
            try:
                arr = np.load(p, allow_pickle=False)
                self.hits += 1
                return arr
            except (OSError, ValueError):
                p.unlink(missing_ok=True)  # a corrupt entry is recomputed, never trusted
        self.misses += 1
        return None

    def put(self, bkey: str, fingerprint: str, feats: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, feats, allow_pickle=False)
            os.replace(tmp, self.path(bkey, fingerprint))
        except BaseException:
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
    finally:
        backbone.train(was_training)
    return out


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
    """

    def __init__(self, backbone="efficientnet_lite0", image_size=None, batch_size=64, cache_dir=None,
                 progress=False, device="cpu"):
        self.backbone = backbone
        self.image_size = image_size
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.progress = progress
        self.device = device

    def fit(self, X=None, y=None):
        if isinstance(self.backbone, str):
            from ..backbones import create_backbone

            self.backbone_ = create_backbone(self.backbone, image_size=self.image_size)
        else:
            self.backbone_ = self.backbone
        self.backbone_.to(self.device)
        self.cache_ = None if self.cache_dir is False else FeatureCache(self.cache_dir)
        self._bkey = backbone_key(self.backbone_) if self.cache_ is not None else None
        return self

    def transform(self, X) -> np.ndarray:
        """``X``: a :class:`DomainDataset` or raw inputs accepted by the backbone."""
        if not hasattr(self, "backbone_"):
            self.fit()
        inputs = X.inputs if hasattr(X, "inputs") and hasattr(X, "fingerprint") else X
        fp = None
        if self.cache_ is not None:
            if hasattr(X, "fingerprint"):
                fp = X.fingerprint()
            else:
                from ..data import DomainDataset

                mod = self.backbone_.spec.modality
                fp = DomainDataset(inputs=inputs, labels=None, name="_", modality=mod if mod != "tabular" else "tabular").fingerprint()
            hit = self.cache_.get(self._bkey, fp)
            if hit is not None and len(hit) == len(inputs):
                return hit
        feats = extract_features(self.backbone_, inputs, self.batch_size, self.device, self.progress)
        if self.cache_ is not None:
            self.cache_.put(self._bkey, fp, feats)
        return feats
