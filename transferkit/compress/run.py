"""``transferkit compress RUN_DIR``: a finished run's model pruned or quantized, measured, saved, predictable.

Methods (``--method``):

- ``prune``: structured channel pruning to ``--ratio`` of the counted MACs (or parameters,
  ``--target params``) by magnitude or Taylor importance (:func:`~.prune.prune_structured`),
  then fine-tuned on the run's labeled training rows for ``--epochs`` with the one Trainer
  (the epoch kept by validation accuracy);
- ``int8``: post-training static INT8 (PT2E, x86 quantizer) calibrated on ``--calibration``
  training rows of the run's target (labels not used); when it loses more than ``--budget``
  accuracy points on the *validation* split (never the test split), quantization-aware
  fine-tuning (``--qat auto``; ``always``/``never``) replaces it;
- ``sparsify``: unstructured global magnitude pruning of ``--ratio`` of the Conv/Linear weights, for
  comparison: the sparsity is reported, no speed is claimed (the tensors stay dense);
- ``dynamic-int8``: dynamic INT8 of the Linear layers (torchao), for Linear-heavy models (tables).

The output folder holds ``model.pt2`` (a ``torch.export`` archive, read back without pickle),
``compress.json`` (what was done; accuracies on the run's validation and test splits before and
after; parameters, file sizes, counted MACs, latency at batch 1 and 64 as ratios to the FP32
model measured in the same process), ``compress.log``, and with ``--onnx`` (pruned models)
``model.onnx`` checked in onnxruntime within 1e-4. ``transferkit predict OUT DATA`` applies it
(the preprocessing is the source run's, which must still exist).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .._validation import check_choice, check_number
from ..errors import ConfigError, DataError

__all__ = ["METHODS", "CompressedPredictor", "check_compress_args", "compress_run", "predict_compressed"]

METHODS = ("prune", "sparsify", "int8", "dynamic-int8")
QAT = ("auto", "always", "never")
INFO = "compress.json"
MODEL = "model.pt2"
LOG = "compress.log"
#: Batches timed for the latency columns (batch 1: one phone-like request; 64: throughput).
LATENCY_BATCHES = (1, 64)


def check_compress_args(method: str, *, ratio: float = 0.5, target: str = "macs", importance: str = "magnitude",
                        epochs: int = 5, lr: float = 1e-3, batch_size: int = 32, calibration: int = 256,
                        budget: float = 1.0, qat: str = "auto", qat_epochs: int = 3, qat_lr: float = 1e-4,
                        onnx: bool = False) -> dict:
    """Every option of :func:`compress_run`, checked before anything is read or written."""
    check_choice("--method", method, METHODS)
    a = {"method": method}
    if method == "prune":
        a["ratio"] = float(check_number("--ratio", ratio, low=0, high=1, low_inclusive=False, high_inclusive=False))
        a["target"] = check_choice("--target", target, ("macs", "params"))
        a["importance"] = check_choice("--importance", importance, ("magnitude", "taylor"))
        a["epochs"] = int(check_number("--epochs", epochs, low=0, high=10_000, integer=True))
        a["lr"] = float(check_number("--lr", lr, low=0, low_inclusive=False))
        a["batch_size"] = int(check_number("--batch-size", batch_size, low=1, high=65_536, integer=True))
    if method == "sparsify":
        a["ratio"] = float(check_number("--ratio", ratio, low=0, high=1, low_inclusive=False, high_inclusive=False))
    if method == "int8":
        a["calibration"] = int(check_number("--calibration", calibration, low=1, high=100_000, integer=True))
        a["budget"] = float(check_number("--budget", budget, low=0, high=100))
        a["qat"] = check_choice("--qat", qat, QAT)
        a["qat_epochs"] = int(check_number("--qat-epochs", qat_epochs, low=1, high=1000, integer=True))
        a["qat_lr"] = float(check_number("--qat-lr", qat_lr, low=0, low_inclusive=False))
        a["batch_size"] = int(check_number("--batch-size", batch_size, low=1, high=65_536, integer=True))
    if onnx and method != "prune":
        raise ConfigError(f"--onnx exports FP32 graphs (--method prune); the {method} model is a torch.export "
                          "archive (model.pt2): drop --onnx, or export the pruned model.")
    a["onnx"] = bool(onnx)
    return a


def _require_method(method: str) -> None:
    """The optional libraries and the CPU's quantized engine, before any work."""
    from .._validation import require

    if method == "prune":
        require("torch_pruning", "compress", "structured pruning")
    elif method == "sparsify":
        return
    else:
        require("torchao", "compress", f"{method} quantization")
    if method == "int8":
        from .quantize import check_backend

        check_backend()


# ----------------------------------------------------------------------------- data as tensors
def _chunks(backbone, ds, batch: int = 256):
    """``(preprocessed inputs, labels)`` of ``ds`` in row order, ``batch`` rows at a time."""
    import torch

    for s in range(0, len(ds), batch):
        idx = np.arange(s, min(s + batch, len(ds)))
        raw = ds.inputs[idx] if isinstance(ds.inputs, np.ndarray) else [ds.inputs[i] for i in idx]
        x = backbone.preprocess(raw).float().contiguous()
        y = torch.as_tensor(ds.labels[idx] if ds.labels is not None else np.full(len(idx), -1), dtype=torch.long)
        yield x, y


def _logits(module, backbone, ds) -> np.ndarray:
    import torch

    outs = []
    with torch.no_grad():
        for x, _ in _chunks(backbone, ds):
            outs.append(module(x).float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def _accuracy(logits: np.ndarray, ds) -> float | None:
    if ds is None or ds.labels is None:
        return None
    lab = ds.labels >= 0
    return float((logits[lab].argmax(1) == ds.labels[lab]).mean()) if lab.any() else None


def _split(ref, name: str):
    from ..inference import run_split

    try:
        return run_split(ref, name)
    except ConfigError:
        return None


def _file_size(module, example, folder: Path, name: str) -> int:
    """Bytes of the model as ``torch.export.save`` writes it (every variant the same way)."""
    from .quantize import save_quantized

    return save_quantized(module, example, folder / name).stat().st_size


def _timed(models: dict, backbone, ds, repeats: int = 15) -> dict:
    """Median seconds per forward at batch 1 and 64 for each model, interleaved in one process."""
    from .quantize import latency

    x64 = next(_chunks(backbone, ds, 64))[0]
    if len(x64) < 64:
        x64 = x64.repeat((64 + len(x64) - 1) // len(x64), *([1] * (x64.ndim - 1)))[:64]
    out = {k: {} for k in models}
    for b in LATENCY_BATCHES:
        x = x64[:b].contiguous()
        for _ in range(3):  # rounds interleave the models, so a noisy moment hits them all
            for k, m in models.items():
                out[k].setdefault(b, []).append(latency(m, x, repeats=repeats, warmup=3))
    return {k: {f"batch{b}": float(np.median(v)) for b, v in d.items()} for k, d in out.items()}


# ----------------------------------------------------------------------------- the command
def compress_run(run_dir, method: str, out, *, strategy=None, seed=None, overwrite: bool = False, echo=print,
                 **options) -> dict:
    """``transferkit compress``: compress the model of a finished run into ``out``; see the module
    docstring. Returns what ``compress.json`` holds, with ``"output_dir"``."""
    import copy

    import torch

    from ..export import _input_shape, export_module, sidecar
    from ..inference import _load, locate_run
    from ..train.rundir import RunLog, is_inside, mark_complete, mark_incomplete, open_run_dir, write_json
    from .prune import count_macs_params
    from .strategy import check_finished_run

    args = check_compress_args(method, **options)
    _require_method(method)
    ref = locate_run(run_dir, strategy, seed)
    check_finished_run(ref)
    if is_inside(out, ref.root) or is_inside(ref.root, out):
        raise ConfigError(f"--out {str(out)!r} and the run {str(ref.root)!r} overlap; write the compressed model to "
                          "a folder of its own, e.g. --out runs/NAME-compressed.")
    model = _load(ref, device="cpu")
    fp32, backbone = export_module(model)
    _input_shape(backbone, ref)  # text backbones fail here: their tokenizer is not part of a graph
    fp32 = fp32.cpu().float().eval()
    from ..nn import TransferModel

    if method == "prune" and not isinstance(fp32, TransferModel):
        raise ConfigError(f"--method prune needs a network trained end to end (finetune, scratch, distill, adapt at "
                          f"level backbone); {ref.key!r} is {ref.scfg.name} on frozen features: use --method int8 "
                          "or dynamic-int8.")
    train, val, test = _split(ref, "train"), _split(ref, "val"), _split(ref, "test")
    if train is None or len(train) == 0:
        raise DataError(f"the run {str(ref.root)!r} has no training rows to calibrate or fine-tune on; check that its "
                        "target data can still be loaded.")
    if method == "prune" and args["epochs"] > 0 and (train.labels is None or not (train.labels >= 0).any()):
        raise DataError(f"--epochs {args['epochs']} fine-tunes the pruned model on the run's labeled training rows, "
                        f"but {train.name!r} has none; use --epochs 0.")
    example = next(_chunks(backbone, train, 8))[0]
    t0 = time.perf_counter()
    with open_run_dir(out, overwrite=overwrite, inputs=[ref.root], kind="compress") as d:
        d = Path(d)
        mark_incomplete(d)
        log = RunLog(d / LOG, echo)
        log(f"compress {ref.key} (seed {ref.seed}) of {ref.root} with {method}: {json.dumps(args)}")
        info: dict = {"method": method, "options": args,
                      "source": {"run_dir": str(ref.root), "strategy": ref.key, "seed": ref.seed,
                                 "method": ref.scfg.name},
                      "preprocessing": sidecar(ref, model, backbone, "torch.export", 0.0, "not checked"),
                      "files": {"model": MODEL}}
        for k in ("format", "max_abs_diff", "checked_on"):
            info["preprocessing"].pop(k, None)
        macs0, params0 = count_macs_params(fp32, example)
        before = {"val": _logits(fp32, backbone, val) if val is not None else None,
                  "test": _logits(fp32, backbone, test) if test is not None else None}
        compressed, timing_model, notes = None, None, []
        if method == "prune":
            compressed, timing_model, extra = _prune(fp32, train, val, example, args, ref, log)
        elif method == "int8":
            compressed, timing_model, extra = _int8(fp32, backbone, train, val, before["val"], example, args, ref,
                                                    log)
        elif method == "sparsify":
            from .prune import prune_unstructured

            compressed = copy.deepcopy(fp32)
            achieved = prune_unstructured(compressed, args["ratio"])
            timing_model, extra = compressed, {"sparsity": achieved}
            log(f"unstructured: {achieved:.3f} of the Conv/Linear weights are zero (dense tensors: no speed-up is "
                "claimed)")
        else:
            from .quantize import quantize_dynamic_int8

            compressed = quantize_dynamic_int8(fp32)
            timing_model, extra = compressed, {}
        info.update(extra)
        after = {"val": _logits(compressed, backbone, val) if val is not None else None,
                 "test": _logits(compressed, backbone, test) if test is not None else None}
        from .quantize import save_quantized

        save_quantized(compressed, example, d / MODEL)
        fp32_size = _file_size(fp32, example, d, ".fp32.pt2")
        (d / ".fp32.pt2").unlink()
        macs1, params1 = count_macs_params(compressed, example) if method == "prune" else (macs0, params0)
        log("timing FP32 and compressed at batch 1 and 64 (one process, interleaved)")
        times = _timed({"fp32": fp32, "compressed": timing_model}, backbone, train)
        info["fp32"] = {"val_accuracy": _accuracy(before["val"], val), "test_accuracy": _accuracy(before["test"], test),
                        "params": params0, "macs": macs0, "file_bytes": fp32_size, "latency_s": times["fp32"]}
        info["compressed"] = {"val_accuracy": _accuracy(after["val"], val),
                              "test_accuracy": _accuracy(after["test"], test), "params": params1, "macs": macs1,
                              "file_bytes": (d / MODEL).stat().st_size, "latency_s": times["compressed"]}
        info["speedup"] = {b: times["fp32"][b] / times["compressed"][b] for b in times["fp32"]}
        if before["test"] is not None:
            info["test_argmax_agreement"] = float((before["test"].argmax(1) == after["test"].argmax(1)).mean())
        info["threads"] = torch.get_num_threads()
        if args["onnx"]:
            from .deploy import export_onnx

            diff = export_onnx(compressed, example, d / "model.onnx")
            info["files"]["onnx"] = "model.onnx"
            info["onnx_max_abs_diff"] = diff
            log(f"ONNX: model.onnx, max |onnxruntime - PyTorch| = {diff:.2e}")
        for side in ("fp32", "compressed"):
            r = info[side]
            lat = r["latency_s"]
            log(f"{side}: val acc {_fmt(r['val_accuracy'])}, test acc {_fmt(r['test_accuracy'])}, {r['params']:,} "
                f"params, {r['macs']:,} MACs, {r['file_bytes']:,} bytes, latency b1 {lat['batch1'] * 1e3:.2f} ms, "
                f"b64 {lat['batch64'] * 1e3:.1f} ms")
        log(f"speed-up over FP32: batch 1 {info['speedup']['batch1']:.2f}x, batch 64 {info['speedup']['batch64']:.2f}x")
        if info["speedup"]["batch64"] < 1:
            notes.append(f"the compressed model is slower than FP32 at batch 64 ({info['speedup']['batch64']:.2f}x) on "
                         "this CPU")
        info["notes"] = notes
        info["seconds"] = time.perf_counter() - t0
        write_json(d / INFO, info)
        mark_complete(d)
    info["output_dir"] = str(out)
    return info


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _prune(fp32, train, val, example, args, ref, log):
    from ..finetune import build_param_groups
    from ..train import Trainer
    from .prune import prune_structured

    calib = next(_chunks(fp32.backbone, train.subset(np.flatnonzero(train.labels >= 0)) if train.labels is not None
                         else train, 64))
    kw = {f"target_{args['target']}_ratio": args["ratio"]}
    pruned, rep = prune_structured(fp32, example, importance=args["importance"],
                                   calibration=calib if args["importance"] == "taylor" else None, **kw)
    log(f"pruned: {args['target']} ratio {rep[args['target'] + '_ratio']:.3f} (target {args['ratio']}), "
        f"{rep['params_before']:,} -> {rep['params_after']:,} params, {rep['macs_before']:,} -> {rep['macs_after']:,} "
        "MACs per example")
    history = []
    if args["epochs"] > 0:
        for p in pruned.parameters():
            p.requires_grad_(True)
        groups = build_param_groups(pruned, args["lr"], backbone_lr_mult=1.0, layer_decay=1.0, weight_decay=0.01)
        has_val = val is not None and val.labels is not None and (val.labels >= 0).any()
        trainer = Trainer(pruned, groups, epochs=args["epochs"], batch_size=args["batch_size"], seed=ref.seed,
                          device="cpu", progress=False, tag="prune", monitor="val_accuracy", augment="none",
                          checkpoint=False)
        trainer.fit(train.subset(np.flatnonzero(train.labels >= 0)), val if has_val else None)
        history = trainer.history
        log(f"fine-tuned {args['epochs']} epochs on {int((train.labels >= 0).sum())} labeled rows"
            + (f"; kept epoch {trainer.best_epoch}" if has_val else " (no labeled validation split: the last epoch)"))
    pruned = pruned.cpu().float().eval()
    return pruned, pruned, {"pruning": rep, "fine_tune": {"epochs": args["epochs"], "history": history}}


def _int8(fp32, backbone, train, val, val_fp32, example, args, ref, log):
    from .quantize import lower_to_x86, quantize_qat_int8, quantize_static_int8

    rng = np.random.default_rng(ref.seed)
    rows = np.sort(rng.choice(len(train), min(args["calibration"], len(train)), replace=False))
    calib = [x for x, _ in _chunks(backbone, train.subset(rows), 64)]
    q = quantize_static_int8(fp32, calib, example)
    log(f"static INT8 calibrated on {len(rows)} training rows (labels not used)")
    extra = {"quantization": {"kind": "static", "calibration_rows": int(len(rows)), "qat": None}}
    drop = None
    if val_fp32 is not None and _accuracy(val_fp32, val) is not None:
        drop = 100 * (_accuracy(val_fp32, val) - _accuracy(_logits(q, backbone, val), val))
        log(f"PTQ validation accuracy loss: {drop:.2f} points (budget {args['budget']})")
    extra["quantization"]["ptq_val_loss_points"] = drop
    want_qat = args["qat"] == "always" or (args["qat"] == "auto" and drop is not None and drop > args["budget"])
    if args["qat"] == "auto" and drop is None:
        log("no labeled validation split: PTQ kept (QAT is decided on validation accuracy only)")
    if want_qat:
        lab = np.flatnonzero(train.labels >= 0) if train.labels is not None else np.array([], int)
        if len(lab) == 0:
            raise DataError(f"quantization-aware training needs labeled training rows; {train.name!r} has none: "
                            "use --qat never.")
        batches = list(_chunks(backbone, train.subset(lab), args["batch_size"]))
        q = quantize_qat_int8(fp32, batches, example, epochs=args["qat_epochs"], lr=args["qat_lr"], seed=ref.seed)
        extra["quantization"]["qat"] = {"epochs": args["qat_epochs"], "lr": args["qat_lr"],
                                        "losses": list(q.qat_losses_)}
        extra["quantization"]["kind"] = "qat"
        log(f"quantization-aware fine-tuning: {args['qat_epochs']} epochs, losses "
            + ", ".join(f"{v:.3f}" for v in q.qat_losses_))
    return q, lower_to_x86(q, example), extra


# ----------------------------------------------------------------------------- predict
def read_info(folder) -> dict | None:
    """``compress.json`` of a compressed-model folder, or ``None`` when ``folder`` is not one."""
    p = Path(os.path.expanduser(str(folder))) / INFO
    if not p.is_file():
        return None
    try:
        info = json.loads(p.read_text())
    except (OSError, ValueError):
        raise DataError(f"{str(p)!r} is not readable JSON; compress the run again.") from None
    if not isinstance(info, dict) or not isinstance(info.get("source"), dict):
        raise DataError(f"{str(p)!r} has no 'source' section; compress the run again.")
    return info


class CompressedPredictor:
    """The ``predictor`` of :func:`transferkit.inference.predict_to_csv` for a compressed model:
    the source run's preprocessing, then ``model.pt2`` (static INT8 lowered to oneDNN kernels)."""

    def __init__(self, folder, info: dict, compile: bool = False):
        self.folder, self.info, self.compile = Path(folder), info, bool(compile)
        acc = (info.get("compressed") or {}).get("test_accuracy")
        self.recorded = {"accuracy": acc} if acc is not None else {"accuracy": None}

    def check(self, strategy) -> None:
        from ..export import export_module
        from .quantize import load_quantized, lower_to_x86

        path = self.folder / MODEL
        self.module = load_quantized(path)
        _, self.backbone = export_module(strategy)
        if self.compile:  # inductor lowers and fuses the q/dq graph itself (on first use of each batch shape)
            import torch

            self.module = torch.compile(self.module, dynamic=False)
        elif self.info.get("method") == "int8":
            from .quantize import check_backend

            check_backend()
            example = next(_chunks(self.backbone, _tiny(self.info, self.backbone), 8))[0]
            self.module = lower_to_x86(self.module, example)

    def describe(self) -> str:
        how = ", compiled by inductor" if self.compile else ""
        return f"compressed model ({self.info.get('method')}{how}): {self.folder / MODEL}"

    def logits(self, strategy, ds) -> np.ndarray:
        from ..inference import apply

        outer = self

        class _Compressed:  # ``apply``'s one-line errors for data the network cannot take
            def predict_logits(self, d):
                import torch._inductor.config as inductor_config

                # freezing: constant weights folded and prepacked, which inductor's int8 patterns need
                with inductor_config.patch(freezing=True):
                    return _logits(outer.module, outer.backbone, d)

        return apply(_Compressed(), ds, "the data")


def _tiny(info, backbone):
    """Two rows of zeros in the model's input form (for lowering: a trace, not data)."""
    from ..data import DomainDataset

    shape = info.get("preprocessing", {}).get("input_shape") or []
    if info.get("preprocessing", {}).get("modality") == "image":
        h, w = (shape[-2], shape[-1]) if len(shape) >= 3 else (32, 32)
        return DomainDataset(inputs=np.zeros((2, h, w), np.float32), labels=np.zeros(2, np.int64), name="trace",
                             modality="image")
    width = shape[-1] if shape else 1
    return DomainDataset(inputs=np.zeros((2, width), np.float32), labels=np.zeros(2, np.int64), name="trace",
                         modality="tabular")


def predict_compressed(folder, data=None, *, split=None, out="predictions.csv", overwrite=False, echo=print,
                       compile: bool = False) -> dict:
    """``transferkit predict COMPRESSED_DIR ...``: the compressed model on ``data`` or the source
    run's ``split``, through the source run's preprocessing and class names."""
    from ..inference import predict_to_csv

    info = read_info(folder)
    if info is None:
        raise DataError(f"{str(folder)!r} is not a compressed model folder (no {INFO}); give the --out folder of "
                        "'transferkit compress'.")
    if (Path(folder) / ".incomplete").exists() or not (Path(folder) / MODEL).is_file():
        raise DataError(f"{str(folder)!r} is not finished (marked incomplete or {MODEL} missing); compress the run "
                        "again.")
    src = info["source"]
    if not Path(str(src.get("run_dir"))).is_dir():
        raise DataError(f"the source run {src.get('run_dir')!r} of {str(folder)!r} is gone; its preprocessing and "
                        "classes are needed to predict: restore it, or use the ONNX export (--onnx) with its sidecar.")
    return predict_to_csv(src["run_dir"], data, strategy=src.get("strategy"), seed=src.get("seed"), split=split,
                          out=out, overwrite=overwrite, echo=echo, predictor=CompressedPredictor(folder, info, compile))
