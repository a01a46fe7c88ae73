"""Export a run's model to ONNX or TorchScript: preprocessed inputs in, logits out.

The exported graph is the trained predictor end to end: the backbone and the head of a
fine-tuned model; the frozen backbone and the trained head of a cached-feature strategy (a
logistic-regression head becomes the equivalent linear layer, the feature standardization a
fixed affine map); the backbone, the target side of a shallow adapter (subspace alignment's
projection, TCA's kernel map; CORAL and OT leave target rows as they are) and the classifier
for closed-form domain adaptation. Preprocessing stays outside the graph and is written next
to it (``FILE.json``: input shape, mean/std, class names, feature columns). An ONNX export is
checked against PyTorch in onnxruntime on a few samples (max abs difference of the logits at
most :data:`ONNX_TOLERANCE`, else nothing is written); a TorchScript export is reloaded and
compared the same way.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError
from .inference import RunRef, _load, check_output_file, locate_run
from .nn.onnx import ONNX_TOLERANCE, check_onnx, require_onnx, write_onnx  # noqa: F401  (ONNX_TOLERANCE: its old home)

#: Export formats and their file suffixes.
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


def _torch():
    import torch
    from torch import nn

    return torch, nn


def _linear(W, b, dtype=None):
    torch, nn = _torch()
    W, b = torch.as_tensor(np.asarray(W)), torch.as_tensor(np.asarray(b))
    lin = nn.Linear(W.shape[1], W.shape[0]).to(W.dtype if dtype is None else dtype)
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(b)
    return lin


def _logistic_logits(clf, n_classes: int):
    """A fitted ``LogisticRegression`` as ``(W, b)`` in float64 over all ``n_classes``: the
    decision function (binary: ``(-d/2, d/2)``), so ``softmax`` is ``predict_proba``."""
    coef, icpt = np.asarray(clf.coef_, dtype=np.float64), np.asarray(clf.intercept_, dtype=np.float64)
    cls = np.asarray(clf.classes_).astype(int)
    W = np.zeros((n_classes, coef.shape[1]))
    b = np.full(n_classes, -1e4)
    if len(cls) == 2:
        W[cls], b[cls] = np.vstack([-coef, coef]) / 2, np.r_[-icpt, icpt] / 2
    else:
        W[cls], b[cls] = coef, icpt
    return W, b


def _target_map(adapter):
    """The adapter's map of *target* rows (what predicting applies) as a float64 module."""
    torch, nn = _torch()
    from .adapt.shallow import CORALAdapter, OTMappingAdapter, SubspaceAlignmentAdapter, TCAAdapter

    if adapter is None or isinstance(adapter, (CORALAdapter, OTMappingAdapter)):
        return nn.Identity()  # these leave target rows unchanged
    # the pooled z-score the adapter fitted in (standardize=True), as a float64 linear map first
    m, sc = getattr(adapter, "input_mean_", None), getattr(adapter, "input_scale_", None)
    scale = (nn.Identity() if m is None or sc is None else
             _linear(np.diag(1.0 / np.asarray(sc, dtype=np.float64)),
                     -np.asarray(m, dtype=np.float64) / np.asarray(sc, dtype=np.float64), torch.float64))
    if isinstance(adapter, SubspaceAlignmentAdapter):
        P = np.asarray(adapter.components_target_, dtype=np.float64)
        return nn.Sequential(scale, _linear(P.T, -np.asarray(adapter.mean_target_, dtype=np.float64) @ P))
    if isinstance(adapter, TCAAdapter):
        return nn.Sequential(scale, _KernelMap(adapter.X_fit_, adapter.components_, adapter.kernel, adapter.gamma_))
    raise ConfigError(f"export does not support the adapter {type(adapter).__name__}; predict with "
                      "'transferkit predict' or tk.load_run instead.")


def _modules():
    torch, nn = _torch()

    class KernelMap(nn.Module):
        """TCA's embedding ``k(x, X_fit) W`` (rbf: ``exp(-gamma |x - x'|^2)``), in float64."""

        def __init__(self, X, W, kernel, gamma):
            super().__init__()
            self.register_buffer("X", torch.as_tensor(np.asarray(X, dtype=np.float64)))
            self.register_buffer("W", torch.as_tensor(np.asarray(W, dtype=np.float64)))
            self.rbf = kernel == "rbf"
            self.gamma = float(gamma or 0.0)

        def forward(self, x):
            dot = x @ self.X.T
            if self.rbf:
                d2 = (x * x).sum(1, keepdim=True) - 2 * dot + (self.X * self.X).sum(1)[None]
                dot = torch.exp(-self.gamma * d2.clamp_min(0))
            return dot @ self.W

    class FeatureModel(nn.Module):
        """``head(standardize(backbone(x)))``; ``float64=True`` runs the head in float64."""

        def __init__(self, backbone, head, mean=None, scale=None, float64=False):
            super().__init__()
            self.backbone, self.head, self.float64 = backbone, head, float64
            self.standardize = mean is not None
            if self.standardize:
                self.register_buffer("mean", torch.as_tensor(np.asarray(mean)))
                self.register_buffer("scale", torch.as_tensor(np.asarray(scale)))

        def forward(self, x):
            f = self.backbone(x)
            if self.standardize:
                f = (f - self.mean) / self.scale
            if self.float64:
                return self.head(f.double()).float()
            return self.head(f)

    return KernelMap, FeatureModel


def _KernelMap(*a):
    return _modules()[0](*a)


def export_module(strategy):
    """``(module, backbone)``: a fitted strategy's predictor as one ``nn.Module`` from
    preprocessed inputs to logits ``(n, K)``, in eval mode, and the backbone whose
    ``preprocess`` makes its inputs; a fitted label-shift (prior) correction is part of it."""
    module, bb = _export_module(strategy)
    ratio = getattr(strategy, "prior_log_ratio_", None)
    if ratio is None:
        return module, bb
    torch, nn = _torch()

    class PriorCorrected(nn.Module):
        """``logits + log(target prior / source prior)``: adapt's ``label_shift`` correction."""

        def __init__(self, inner, log_ratio):
            super().__init__()
            self.inner = inner
            self.register_buffer("log_ratio", torch.as_tensor(np.asarray(log_ratio, dtype=np.float32)))

        def forward(self, x):
            return self.inner(x) + self.log_ratio

    return PriorCorrected(module, ratio).eval(), bb


def _export_module(strategy):
    torch, nn = _torch()
    from .nn import TransferModel

    FeatureModel = _modules()[1]
    model = getattr(strategy, "model_", None)
    if isinstance(model, TransferModel):  # fine-tuned, or adapted through the backbone
        return model.eval(), model.backbone
    if hasattr(strategy, "_extractor"):  # feature extraction: frozen backbone + head
        bb = strategy._extractor().backbone_
        state = strategy.state_dict()
        head = _linear(state["head.weight"], state["head.bias"])
        std = (state["feature_mean"], state["feature_scale"]) if "feature_mean" in state else (None, None)
        return FeatureModel(bb, head, *std).eval(), bb
    if not hasattr(strategy, "_features"):
        raise ConfigError(f"export does not know strategy {type(strategy).__name__}.")
    bb = _frozen_backbone(strategy)
    if model is not None:  # a bottleneck + head on the frozen backbone's features
        return FeatureModel(bb, model.eval()).eval(), bb
    clf = getattr(strategy.clf_, "estimator_", strategy.clf_)
    W, b = _logistic_logits(clf, int(strategy.n_classes_))
    head = nn.Sequential(_target_map(getattr(strategy, "_adapter", None)), _linear(W, b, torch.float64))
    return FeatureModel(bb, head, float64=True).eval(), bb


def _frozen_backbone(strategy):
    """The frozen backbone of a cached-feature adaptation strategy, built as its ``_features``
    builds it (seeded, so a random backbone is the one the run used)."""
    if not hasattr(strategy, "extractor_"):
        from .features import FeatureExtractor
        from .strategies.base import resolve_backbone, seeded

        with seeded(strategy.seed):
            bb = resolve_backbone(strategy.backbone, strategy.pretrained, strategy.image_size)
        strategy.extractor_ = FeatureExtractor(bb, cache_dir=strategy.cache_dir, progress=False).fit()
    return strategy.extractor_.backbone_


def sample_inputs(ref: RunRef, backbone, n: int = 4):
    """A few preprocessed inputs: the run's first target samples when its data can be loaded,
    else seeded standard-normal tensors of the input shape. Returns ``(tensor, where)``."""
    torch, _ = _torch()
    try:
        from .data.spec import load_dataset

        ds = load_dataset(ref.cfg.target)
        raw = ds.inputs[:n] if isinstance(ds.inputs, np.ndarray) else [ds.inputs[i] for i in range(min(n, len(ds)))]
        return backbone.preprocess(raw).float().contiguous(), f"the first {len(raw)} target samples"
    except Exception:
        shape = _input_shape(backbone, ref)
        g = torch.Generator().manual_seed(0)
        return torch.randn(n, *shape[1:], generator=g), f"{n} seeded random inputs"


def _input_shape(backbone, ref: RunRef) -> list:
    spec = backbone.spec
    if spec.modality == "image":
        return [None, *map(int, spec.input_size)]
    if spec.modality == "tabular":
        width = (spec.extra or {}).get("in_features") or ref.facts.get("n_features")
        return [None, int(width)]
    raise ConfigError(f"export covers image and tabular models; the run's backbone {spec.name!r} takes {spec.modality} "
                      "(its tokenizer is not part of a graph): use 'transferkit predict' or tk.load_run instead.")


def sidecar(ref: RunRef, strategy, backbone, fmt: str, diff: float, checked_on: str) -> dict:
    """The preprocessing and provenance written next to the exported file."""
    spec = backbone.spec
    info = {"format": fmt, "input": "input", "output": "logits (apply softmax for probabilities)",
            "input_shape": _input_shape(backbone, ref), "dtype": "float32", "modality": spec.modality,
            "classes": [str(c) for c in strategy.classes_], "run_dir": str(ref.root), "strategy": ref.key,
            "method": ref.scfg.name, "seed": ref.seed, "backbone": spec.name, "max_abs_diff": diff,
            "checked_on": checked_on}
    if spec.modality == "image":
        info["preprocess"] = ("images as float in [0, 1], (H, W, C) or (H, W); grayscale repeated to the model's "
                              "channels; resized to (H, W) of input_shape (bilinear, antialiased); then "
                              "(x - mean) / std per channel; NCHW")
        info["mean"], info["std"] = list(spec.mean or ()), list(spec.std or ())
    else:
        info["preprocess"] = "rows of the feature columns, float32, in this order (standardization is in the graph)"
        info["feature_columns"] = ref.facts.get("feature_columns")
    return info


def _check_torchscript(path: str, module, x) -> float:
    torch, _ = _torch()
    loaded = torch.jit.load(path)
    with torch.no_grad():
        return float((loaded(x) - module(x)).abs().max())


def export_run(run_dir, fmt: str = "onnx", out=None, *, strategy=None, seed=None, overwrite=False,
               echo=print) -> dict:
    """``transferkit export``: write the run's model as ``fmt`` to ``out`` and its preprocessing
    to ``out + ".json"``, after checking the export against PyTorch. Returns the sidecar's facts
    with ``"path"``."""
    from ._io import atomic_path
    from .train.rundir import write_json

    torch, _ = _torch()
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not valid; choose one of {', '.join(FORMATS)}.")
    if fmt == "onnx":
        require_onnx()
    ref = locate_run(run_dir, strategy, seed)
    out = out if out is not None else f"{ref.key}-seed{ref.seed}{FORMATS[fmt]}"
    path = check_output_file(out, overwrite=overwrite)
    side = check_output_file(f"{out}.json", overwrite=overwrite, what="the sidecar")
    model = _load(ref, device="cpu")
    module, backbone = export_module(model)
    _input_shape(backbone, ref)  # text backbones fail here, before anything is written
    module = module.cpu().float() if not _has_float64(module) else module.cpu()
    module.eval()
    x, where = sample_inputs(ref, backbone)
    with atomic_path(path) as tmp:
        if fmt == "onnx":
            write_onnx(module, x, tmp)
        else:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the tracer's notes
                torch.jit.save(torch.jit.trace(module, x), tmp)
        diff = (check_onnx if fmt == "onnx" else _check_torchscript)(tmp, module, x)
        if not diff <= ONNX_TOLERANCE:
            raise DataError(f"the {fmt} export differs from PyTorch by {diff:.2e} (more than {ONNX_TOLERANCE:g}) on "
                            f"{where}; nothing was written.")
    info = sidecar(ref, model, backbone, fmt, diff, where)
    write_json(side, info)
    echo(f"exported {ref.key} (seed {ref.seed}) of {ref.root} as {fmt}: {path}")
    echo(f"checked against PyTorch on {where}: max |logit difference| = {diff:.2e}")
    echo(f"preprocessing: {side}")
    return {**info, "path": str(path), "sidecar": str(side)}


def _has_float64(module) -> bool:
    torch, _ = _torch()
    return any(t.dtype == torch.float64 for t in [*module.parameters(), *module.buffers()])


class TTAPredictor:
    """``transferkit predict --tta METHOD``: a run's network adapted at test time
    (:func:`transferkit.tta.wrap`) over the rows of the data, in their order, in batches of
    ``batch_size``; the run directory is only read (the adapted copy lives in memory)."""

    def __init__(self, method: str, batch_size: int = 64, options: dict | None = None):
        from ._registry import get

        get("tta", method)  # an unknown name fails here, with the nearest valid ones
        self.method, self.batch_size, self.options = method, batch_size, dict(options or {})
        self._adapter = None

    def check(self, strategy) -> None:
        from . import tta

        module, bb = export_module(strategy)
        self._adapter = tta.wrap(module, self.method, batch_size=self.batch_size, **self.options)
        self._prepare = bb

    def describe(self) -> str:
        return "test-time adaptation: " + self._adapter.describe()

    def logits(self, strategy, ds) -> np.ndarray:
        from .inference import apply

        class _Adapted:  # ``apply``'s one-line errors for data the network cannot take
            def predict_logits(_self, d):
                return self._adapter.predict_logits(d, prepare=self._prepare)

        return apply(_Adapted(), ds, "the data")
