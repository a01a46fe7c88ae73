"""``transferkit``: run experiments, the demo, and list what is available.

Errors that transferkit raises on purpose print one line and exit with code 2; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from importlib import resources
from pathlib import Path

from ..errors import TransferKitError


class _Parser(argparse.ArgumentParser):
    """argparse with transferkit's error format: one line, exit code 2 (no usage block)."""

    def error(self, message):
        print(f"transferkit: error: {_printable(message)}; see '{self.prog} --help'.", file=sys.stderr)
        raise SystemExit(2)


def _int_arg(low: int, high: int | None = None):
    """An ``int`` argparse type with a range (``--seeds 0`` is an error, not silently ignored)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < low or (high is not None and v > high):
            rng = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {rng}, got {v}")
        return v

    return parse


_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*(\x07|\x1b\\)?|[\x00-\x08\x0b-\x1f\x7f\x9b]")


def _printable(text: str) -> str:
    """One line without terminal escape sequences or control characters (a file name or a
    value from a config may hold them; they must not reach the terminal raw)."""
    return " ".join(_CONTROL.sub("?", str(text)).split())


def _one_line_warnings() -> None:
    """Every warning the command meets (ours or a library's) as one printable line on stderr,
    each distinct one once: no source lines, no raw escape codes, no floods of repeats."""
    import warnings

    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        from ..errors import TransferKitWarning

        name = "" if issubclass(category, TransferKitWarning) else f"{category.__name__}: "
        text = _printable(f"{name}{message}")[:500]
        if text not in seen:
            seen.add(text)
            print(f"transferkit: warning: {text}", file=sys.stderr)

    warnings.showwarning = show


def _quiet_cuda_extension_logs() -> None:
    """torchao logs a warning for each CUDA-only extension (``_C_mxfp8``, ``_C_cutlass_90a``) it
    cannot load on a CPU build, whenever it is imported (transformers imports it too); through
    logging's last-resort handler those lines would precede every error and break its one line."""
    import logging

    logging.getLogger("torchao").addFilter(lambda r: not str(r.msg).startswith("Failed to load"))


_THREADS_HELP = ("torch threads for this command (default: this machine's free cores shared among its processes, "
                 "or OMP_NUM_THREADS when set; with --num-processes, the total shared among them)")
_PROCS_HELP = ("train in N processes on this machine (data parallel through torch's launcher; default 1: this "
               "process)")


def _add_threads(parser) -> None:
    parser.add_argument("--threads", type=_int_arg(1, 4096), default=None, metavar="N", help=_THREADS_HELP)


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="transferkit", description="Transfer learning toolkit.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    r = sub.add_parser("run", help="run an experiment from a YAML file")
    r.add_argument("config", nargs="?", help="experiment YAML file (not with --resume)")
    r.add_argument("--resume", metavar="DIR",
                   help="continue an interrupted run in DIR with its stored config (finished runs are kept)")
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    r.add_argument("--out", help="output directory (default: config's output_dir or runs/NAME-TIMESTAMP)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    r.add_argument("--seeds", type=_int_arg(1, 10_000), help="number of seeds (overrides the config)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set split.labels_per_class=5 (repeatable)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.add_argument("--no-report", action="store_true", help="skip report.html / report.md")
    _add_threads(r)
    r.add_argument("--num-processes", type=_int_arg(1, 1024), default=1, metavar="N", help=_PROCS_HELP)

    d = sub.add_parser("demo", help="scratch vs feature extraction vs fine-tuning on shifted digits")
    d.add_argument("--out", help="output directory (default: runs/demo-TIMESTAMP)")
    d.add_argument("--overwrite", action="store_true")
    d.add_argument("--seeds", type=_int_arg(1, 10_000), default=None, help="number of seeds (default 3)")
    d.add_argument("--no-progress", action="store_true")
    d.add_argument("--no-report", action="store_true", help="skip report.html / report.md")
    _add_threads(d)
    d.add_argument("--num-processes", type=_int_arg(1, 1024), default=1, metavar="N", help=_PROCS_HELP)

    a = sub.add_parser("assess", help="measure domain shift and rank backbones before training",
                       description="Measure the shift, score backbones and estimate the bound before training. The "
                                   "target is split as 'transferkit run' splits it: only the training split's labels "
                                   "are read; validation labels and the test split (inputs and labels) are held out.")
    a.add_argument("--source", help="source dataset spec (not with --config)")
    a.add_argument("--target", help="target dataset spec (not with --config)")
    a.add_argument("--config", metavar="FILE",
                   help="experiment YAML: source, target, backbone and split from it, with the split of its first "
                        "seed (the labels 'transferkit run FILE' trains on with that seed)")
    a.add_argument("--labels-per-class", type=_int_arg(1, 10_000_000), default=None, metavar="K",
                   help="the split's labels per class, as split.labels_per_class of 'run' (the rest is cut into "
                        "validation and test: half each, or the config's val_fraction); default: the config's split, "
                        "else run's default split (60%% of the labeled target trains)")
    a.add_argument("--backbone", action="append", default=None, metavar="NAME",
                   help="backbone to score (repeatable; the first defines the feature space; default: the "
                        "data's, as run's backbone: auto: identity (the columns) for a table, efficientnet_lite0 "
                        "for images, minilm for text; with --config, added after the config's backbone)")
    a.add_argument("--image-size", type=_int_arg(8, 1024), default=None,
                   help="input side for image backbones (e.g. 64; default: the config's)")
    a.add_argument("--permutations", type=_int_arg(1, 100_000), default=200, help="MMD permutation-test permutations")
    a.add_argument("--max-samples", type=_int_arg(2, 10_000_000), default=2000,
                   help="per-domain subsample for divergences")
    a.add_argument("--seed", type=_int_arg(0, 2**32 - 1), default=None,
                   help="seeds the split (as a run's seed) and every random choice (default 0; with --config its "
                        "first seed)")
    a.add_argument("--out", help="output directory for assess.json (default: runs/assess-TIMESTAMP)")
    a.add_argument("--overwrite", action="store_true")
    a.add_argument("--no-report", action="store_true", help="skip report.html / report.md")
    _add_threads(a)

    bm = sub.add_parser("benchmark", help="benchmark transfer methods (digits-shift; real-shift: real data and source "
                                          "models; few-shot: every few-shot method on offline data; drift: "
                                          "source-free and test-time adaptation, uncertainty under corruption; "
                                          "label-spaces: partial, open-set, zero-shot, multi-source, domain "
                                          "generalisation; representation: self-supervised, multi-task, "
                                          "image-text; compress: distillation, pruning, INT8; rl-transfer: policy "
                                          "transfer between environments)")
    bm.add_argument("suite", nargs="?", choices=["digits-shift", "real-shift", "few-shot", "drift", "label-spaces",
                                                     "representation", "compress", "rl-transfer"],
                    help="the suite (not with --resume)")
    bm.add_argument("--resume", metavar="DIR",
                    help="continue an interrupted benchmark in DIR with its stored arguments (finished cells are kept)")
    bm.add_argument("--tasks", nargs="+", default=None, help="tasks (default: all)")
    bm.add_argument("--methods", nargs="+", default=None, help="methods (default: all)")
    bm.add_argument("--seeds", type=_int_arg(1, 1000), default=None, help="number of seeds (default 3)")
    bm.add_argument("--selection", default=None, help="unsupervised checkpoint scorer: dev (default), iwcv, snd, entropy")
    bm.add_argument("--epochs", type=_int_arg(1, 100_000), default=None, help="training epochs per cell (default 30)")
    bm.add_argument("--backbone", default=None, help="backbone (default efficientnet_lite0)")
    bm.add_argument("--image-size", type=_int_arg(8, 1024), default=None, help="input side (default 64)")
    bm.add_argument("--parts", nargs="+", default=None,
                    help="drift: source_free, corruptions, continual, uncertainty; label-spaces: partial, open_set, "
                         "zero_shot, multi_source, dg; representation: ssl, mtl, cross_modal; compress: fashion, "
                         "digits; rl-transfer: its variants (default: all)")
    bm.add_argument("--passes", type=_int_arg(1, 100), default=None,
                    help="drift: passes of the continual stream over the 13 corruptions (default 10)")
    bm.add_argument("--n-test", type=_int_arg(100, 10_000), default=None,
                    help="drift: corrupted Fashion-MNIST test images per (corruption, severity) (default 1000)")
    bm.add_argument("--out", help="output directory (default: runs/benchmark-TIMESTAMP)")
    bm.add_argument("--overwrite", action="store_true")
    bm.add_argument("--no-report", action="store_true", help="skip report.html / report.md")
    _add_threads(bm)

    _add_fewshot_parser(sub)
    _add_pretrain_parser(sub)
    _add_rl_parser(sub)

    dg = sub.add_parser("diagnose", help="negative transfer, sample efficiency, convergence and sharpness "
                                         "(the config's optional 'diagnose:' section)")
    dg.add_argument("config", nargs="?", help="experiment YAML file (not with --resume)")
    dg.add_argument("--resume", metavar="DIR",
                    help="continue an interrupted diagnose in DIR with its stored config (finished runs are kept)")
    dg.add_argument("--out", help="output directory (default: runs/diagnose-NAME-TIMESTAMP)")
    dg.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    dg.add_argument("--seeds", type=_int_arg(2, 10_000),
                    help="number of seeds (overrides the config; at least 2, 3 or more for the test)")
    dg.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set diagnose.labels_per_class=[1,10] (repeatable)")
    dg.add_argument("--no-progress", action="store_true", help="hide progress bars")
    dg.add_argument("--no-report", action="store_true", help="skip report.html / report.md")
    _add_threads(dg)

    rp = sub.add_parser("report", help="(re)write report.html and report.md of a run, assess, benchmark or diagnose "
                                       "directory")
    rp.add_argument("run_dir", metavar="RUN_DIR")
    rp.add_argument("--format", nargs="+", choices=["html", "md"], default=["html", "md"])

    pr = sub.add_parser("predict", help="apply a finished run's model to new data; write a CSV of predictions",
                        description="Predicted class, one probability per class and the true label (when DATA has "
                                    "one) per row, with the run's preprocessing (a table's feature columns by name).")
    pr.add_argument("run_dir", metavar="RUN_DIR", help="the run's --out folder, or one of its STRATEGY/seedN folders")
    pr.add_argument("data", nargs="?", metavar="DATA",
                    help="dataset spec as for 'run': a CSV/Parquet table, an image folder, an .npz file, digits:...")
    pr.add_argument("--split", choices=["test", "val", "train"], default=None,
                    help="instead of DATA: the run's own split of its target for the seed (needs the run's data)")
    pr.add_argument("--strategy", default=None, help="strategy key (default: the best mean validation accuracy)")
    pr.add_argument("--seed", type=_int_arg(0, 2**32 - 1), default=None, help="seed (default: the first trained one)")
    pr.add_argument("--out", default="predictions.csv", help="CSV file to write (default predictions.csv)")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    pr.add_argument("--compile", action="store_true",
                    help="a 'transferkit compress' folder: run its model compiled by inductor (slower to start; the "
                         "fast INT8 path on x86, ~1.8x over compiled FP32 at batch 64 in the compress benchmark)")
    pr.add_argument("--tta", default=None, metavar="METHOD",
                    help="adapt the model at test time over DATA's rows, in their order: bn_adapt, tent, t3a, eata "
                         "(the run directory is only read)")
    pr.add_argument("--tta-batch-size", type=_int_arg(1, 65_536), default=64, metavar="N",
                    help="batch size of the test-time adaptation stream (default 64)")
    pr.add_argument("--tta-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an option of the --tta method, e.g. --tta-option lr=0.0005 (repeatable)")
    _add_threads(pr)

    ex = sub.add_parser("export", help="export a finished run's model (preprocessed inputs -> logits) to ONNX or "
                                       "TorchScript, checked against PyTorch")
    ex.add_argument("run_dir", metavar="RUN_DIR", help="the run's --out folder, or one of its STRATEGY/seedN folders")
    ex.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    ex.add_argument("--out", default=None, help="file to write (default STRATEGY-seedN.onnx / .pt); the "
                                                "preprocessing goes to FILE.json")
    ex.add_argument("--strategy", default=None, help="strategy key (default: the best mean validation accuracy)")
    ex.add_argument("--seed", type=_int_arg(0, 2**32 - 1), default=None, help="seed (default: the first trained one)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _add_threads(ex)

    cp = sub.add_parser("compress", help="prune or quantize (INT8) a finished run's model; measure accuracy, size, "
                                         "MACs and latency against FP32; 'transferkit predict OUT' applies it")
    cp.add_argument("run_dir", help="the finished run (its --out folder, or a STRATEGY/seedN folder of it)")
    cp.add_argument("--method", required=True, choices=["prune", "sparsify", "int8", "dynamic-int8"],
                    help="prune: structured channels + fine-tune; sparsify: unstructured magnitude (sparsity "
                         "reported, no speed claimed); int8: static PT2E (x86) with QAT when PTQ loses "
                         "more than --budget; dynamic-int8: Linear layers (tables)")
    cp.add_argument("--out", required=True, help="the output folder (its own; not inside the run)")
    cp.add_argument("--strategy", help="which strategy of the run (default: the best by validation accuracy)")
    cp.add_argument("--seed", type=int, help="which seed (default: the first trained)")
    cp.add_argument("--ratio", type=float, default=0.5,
                    help="prune: MACs (or params) kept; sparsify: weights zeroed; in (0, 1) (default 0.5)")
    cp.add_argument("--target", default="macs", help="prune: macs (default) or params")
    cp.add_argument("--importance", default="magnitude", help="prune: magnitude (default) or taylor")
    cp.add_argument("--epochs", type=int, default=5, help="prune: fine-tuning epochs after pruning (default 5)")
    cp.add_argument("--lr", type=float, default=1e-3, help="prune: fine-tuning learning rate (default 0.001)")
    cp.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch size (default 32)")
    cp.add_argument("--calibration", type=int, default=256, help="int8: calibration rows (default 256)")
    cp.add_argument("--budget", type=float, default=1.0,
                    help="int8: validation accuracy points PTQ may lose before QAT runs (default 1.0)")
    cp.add_argument("--qat", default="auto", help="int8: auto (default), always or never")
    cp.add_argument("--qat-epochs", type=int, default=3, help="int8: QAT epochs (default 3)")
    cp.add_argument("--qat-lr", type=float, default=1e-4, help="int8: QAT learning rate (default 0.0001)")
    cp.add_argument("--onnx", action="store_true", help="prune: also write model.onnx (checked within 1e-4)")
    cp.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _add_threads(cp)

    ls = sub.add_parser("list", help="list backbones, datasets, strategies, divergences, transferability scores, "
                                     "few-shot methods or test-time adaptation methods")
    ls.add_argument("kind", choices=["backbones", "datasets", "strategies", "divergences", "transferability",
                                     "da_losses", "shallow_da", "scorers", "penalties", "fewshot", "tta", "pretext",
                                     "mtl_weighting", "rl_transfer"])
    ls.add_argument("--runs", default="runs", metavar="DIR",
                    help="backbones: also list the pretrained backbones of transferkit pretrain runs in DIR "
                         "(default: runs)")

    g = sub.add_parser("groups", help="print a backbone's layer groups")
    g.add_argument("backbone")
    g.add_argument("--no-pretrained", action="store_true")
    return p


def _run(cfg, args) -> int:
    from ..experiment import format_table, gains_over_baseline, run_experiment

    _override(cfg, args)
    t0 = time.perf_counter()
    if getattr(args, "resume", None):
        from ..experiment import resume_experiment

        res = resume_experiment(args.resume)
    else:
        config_file = getattr(args, "config", None)
        res = run_experiment(cfg, args.out, overwrite=args.overwrite, inputs=[config_file] if config_file else [])
    from .. import _dist

    if not _dist.is_main_process():  # the other ranks of a multi-process run: rank 0 prints and reports
        return 0
    print()
    print(format_table(res["summary"], baselines=res.get("baselines")))
    gains = gains_over_baseline(res["summary"])
    if gains:
        print(gains)
    if res.get("label_free"):
        from ..experiment import format_label_free

        print("\n" + format_label_free(res["label_free"]))
    print(f"\nselection: {res['selection']}")
    print(f"results: {os.path.join(res['output_dir'], 'results.json')}   ({time.perf_counter() - t0:.0f}s)")
    _report(res["output_dir"], args)
    return 0


def _override(cfg, args):
    """``--seeds N`` and ``--no-progress`` on top of a loaded config (``None``: a resumed run's own)."""
    if cfg is not None:
        if getattr(args, "seeds", None) is not None:
            cfg.seeds = list(range(args.seeds))
        if getattr(args, "no_progress", False):
            cfg.progress = False
    return cfg


def _new_out_dir(args, kind: str, inputs=()) -> str:
    """The output directory of a command that computes before it writes, checked *before* the
    work starts (see :func:`transferkit.train.rundir.check_output_dir`: an existing run needs
    ``--overwrite``, a folder transferkit did not create is never replaced, the working
    directory and folders holding an input are refused)."""
    from ..train.rundir import check_output_dir

    out = args.out or f"runs/{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_output_dir(out, overwrite=args.overwrite, inputs=inputs)
    return out


def _report_or_warn(args, write, out) -> None:
    """``write(out)`` (a report writer returning ``{"html": path, ...}``) and print where it went;
    a failure only warns in one line (the results are on disk already), unless ``--debug``."""
    t0 = time.perf_counter()
    try:
        paths = write(out)
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        print(f"transferkit: warning: report not written ({type(exc).__name__}: {exc}); retry with "
              f"'transferkit report {out}'", file=sys.stderr)
        return
    print(f"report: {paths['html']}   ({time.perf_counter() - t0:.0f}s)")


def _report(run_dir, args) -> None:
    """Write the report after a command; a failure here warns (the results are on disk already)."""
    from .. import _dist

    if getattr(args, "no_report", False) or not _dist.is_main_process():
        return
    from ..reports import write_report

    _report_or_warn(args, write_report, run_dir)


def _resume_alone(args, command: str, stored: str, given) -> None:
    """``--resume`` continues with what is stored in the directory: refuse anything else given
    with it (``given``: ``(flag, value)`` pairs; unset, false and empty-list values are not given)."""
    from ..errors import ConfigError

    extra = [flag for flag, v in given if v not in (None, False, [])]
    if extra:
        raise ConfigError(f"--resume continues a {command} with {stored} stored in it; drop {', '.join(extra)} "
                          f"(use 'transferkit {command} --resume {args.resume}').")


def _cmd_report(args) -> int:
    from ..reports import write_report
    from ..train.rundir import stored_suite

    suite = stored_suite(args.run_dir)
    if suite is None:  # a results.json without its benchmark.json (copied on its own): its own suite key
        try:
            suite = json.loads((Path(args.run_dir) / "results.json").read_text()).get("suite")
        except (OSError, ValueError, AttributeError):
            suite = None
    if suite is None and (Path(args.run_dir) / "rl.yaml").is_file():
        suite = "rl-transfer"  # a transferkit rl run: write_rl_report reads its result.json
    writers = {"drift": ("drift", "write_drift_report"), **{k: v[3:5] for k, v in PARTS_SUITES.items()}}
    if suite in writers:
        import importlib

        module, name = writers[suite]
        write = getattr(importlib.import_module(f"transferkit.reports.{module}"), name)
        for fmt, path in write(args.run_dir, formats=args.format).items():
            print(f"{fmt}: {path}")
        return 0
    for fmt, path in write_report(args.run_dir, formats=args.format).items():
        print(f"{fmt}: {path}")
    return 0


def _cmd_predict(args) -> int:
    from ..errors import ConfigError
    from ..inference import predict_to_csv

    predictor = None
    if args.tta is not None:
        import yaml

        from ..export import TTAPredictor

        options = {}
        for item in args.tta_option:
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"--tta-option {item!r} is not KEY=VALUE; e.g. --tta-option lr=0.0005.")
            options[key.strip()] = yaml.safe_load(value)
        predictor = TTAPredictor(args.tta, args.tta_batch_size, options)
    elif args.tta_option:
        raise ConfigError("--tta-option needs --tta METHOD (e.g. --tta tent).")
    if (Path(args.run_dir) / "compress.json").is_file():  # a 'transferkit compress' folder
        from ..compress.run import predict_compressed

        given = [f for f, v in (("--strategy", args.strategy), ("--seed", args.seed), ("--tta", args.tta))
                 if v is not None]
        if given:
            raise ConfigError(f"{given[0]} does not apply to a compressed model folder (it holds one model); drop it.")
        predict_compressed(args.run_dir, args.data, split=args.split, out=args.out, overwrite=args.overwrite,
                           compile=args.compile)
        return 0
    if args.compile:
        raise ConfigError(f"--compile applies to a 'transferkit compress' folder (with compress.json); "
                          f"{args.run_dir!r} is not one: drop --compile.")
    predict_to_csv(args.run_dir, args.data, strategy=args.strategy, seed=args.seed, split=args.split, out=args.out,
                   overwrite=args.overwrite, predictor=predictor)
    return 0


def _cmd_compress(args) -> int:
    from ..compress.run import compress_run

    opts = {k: getattr(args, k) for k in ("ratio", "target", "importance", "epochs", "lr", "batch_size", "calibration",
                                          "budget", "qat", "qat_epochs", "qat_lr", "onnx")}
    res = compress_run(args.run_dir, args.method, args.out, strategy=args.strategy, seed=args.seed,
                       overwrite=args.overwrite, **opts)
    print(f"written: {os.path.join(res['output_dir'], 'compress.json')} and model.pt2 "
          f"(transferkit predict {res['output_dir']} DATA)")
    return 0


def _cmd_export(args) -> int:
    from ..export import export_run

    export_run(args.run_dir, args.format, args.out, strategy=args.strategy, seed=args.seed, overwrite=args.overwrite)
    return 0


def _cmd_run(args) -> int:
    from ..config import load_config
    from ..errors import ConfigError

    if args.resume:
        _resume_alone(args, "run", "the config", (("a config file", args.config), ("--out", args.out),
                                                    ("--overwrite", args.overwrite), ("--seeds", args.seeds),
                                                    ("--set", args.set)))
        return _relaunch(args) if args.num_processes > 1 else _run(None, args)
    if not args.config:
        raise ConfigError("'transferkit run' needs an experiment file (transferkit run exp.yaml) "
                          "or --resume DIR to continue an interrupted run.")
    cfg = load_config(args.config, overrides=args.set)  # in the parent too: a bad config fails once, here
    if args.num_processes > 1:
        out = args.out or cfg.output_dir or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        return _relaunch(args, out, inputs=[args.config])
    return _run(cfg, args)


def _relaunch(args, out: str | None = None, inputs=()) -> int:
    """``--num-processes N`` (N > 1): the same command in N processes (:func:`transferkit.train.launch.relaunch`).

    The output directory is chosen and checked here, once: the children all get the same
    ``--out`` (a default name with a timestamp could differ between them by a second)."""
    from ..train.launch import child_threads, relaunch, strip_parent_options

    argv = list(args.argv)
    if out is not None:
        from ..train.rundir import check_output_dir

        check_output_dir(out, overwrite=args.overwrite, inputs=inputs)
        argv = [*strip_parent_options(argv, ("--out",)), "--out", str(out)]
    n = args.num_processes
    print(f"transferkit: {n} processes, {child_threads(n, args.threads)} torch thread(s) each", flush=True)
    return relaunch(argv, n, args.threads)


def _cmd_demo(args) -> int:
    from ..config import config_from_dict, safe_load_yaml

    text = resources.files("transferkit.configs").joinpath("demo.yaml").read_text()
    cfg = config_from_dict(safe_load_yaml(text, "demo.yaml"))
    if args.out is None:
        args.out = f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.num_processes > 1:
        return _relaunch(args, args.out)
    print("transferkit demo: does a pretrained EfficientNet-Lite0 help on 10 labels per class of shifted digits?")
    return _run(cfg, args)


def _cmd_assess(args) -> int:
    from ..assess import assess, format_assessment
    from ..train.rundir import open_run_dir, write_json, write_text

    from ..errors import ConfigError

    seed = 0 if args.seed is None else args.seed
    if args.config:
        from ..config import load_config
        from ..experiment import _check_split_sources

        given = [flag for flag, v in (("--source", args.source), ("--target", args.target)) if v is not None]
        if given:
            raise ConfigError(f"--config {args.config} takes the source and target from the experiment file; drop "
                              f"{' and '.join(given)}, or drop --config and give both --source and --target.")
        over = [] if args.labels_per_class is None else [f"split.labels_per_class={args.labels_per_class}"]
        cfg = load_config(args.config, overrides=over)  # the run's own loader: same checks, same split
        if cfg.source is None and not cfg.sources:
            raise ConfigError(f"{args.config}: no 'source' dataset; assess measures the shift from a source to the "
                              "target: add source: to the file, or use --source and --target without --config.")
        _check_split_sources(cfg)
        source, target, split = cfg.source, cfg.target, cfg.split
        if cfg.sources:  # several sources: the shift of the pooled sources, what single-source strategies train on
            from ..experiment import pooled_sources

            source = pooled_sources(cfg.sources)
            print(f"assess: sources pooled into one source ({len(cfg.sources)} datasets: {source.name})")
        backbones = [cfg.backbone, *(b for b in (args.backbone or []) if b != cfg.backbone.name)]
        image_size = args.image_size if args.image_size is not None else cfg.backbone.image_size
        if args.seed is None:
            seed = cfg.seeds[0]
        split_from = args.config + ("" if args.labels_per_class is None
                                    else f" with --labels-per-class {args.labels_per_class}")
        read = {k: v for k, v in cfg.to_dict().items() if k != "output_dir"}  # what it reads, as for run
        inputs = [args.config, read, *(args.backbone or [])]
    else:
        missing = [flag for flag, v in (("--source", args.source), ("--target", args.target)) if not v]
        if missing:
            raise ConfigError(f"assess needs {' and '.join(missing)} (dataset specs, e.g. --source digits:subset=0/2 "
                              "--target digits:subset=1/2,rotate=30), or --config FILE (an experiment file).")
        source, target, image_size = args.source, args.target, args.image_size
        backbones = args.backbone or None  # None: the data's default (identity for a table, as run's auto)
        split = None if args.labels_per_class is None else {"labels_per_class": args.labels_per_class}
        split_from = None if args.labels_per_class is None else f"--labels-per-class {args.labels_per_class}"
        inputs = [source, target, *(backbones or [])]
    out = _new_out_dir(args, "assess", inputs)
    res = assess(source, target, backbones=backbones, image_size=image_size, split=split, split_from=split_from,
                 n_permutations=args.permutations, max_samples=args.max_samples, seed=seed, progress=True,
                 echo=print, return_features=not args.no_report)
    feats = res.pop("features", None)  # arrays for the report's t-SNE, not part of assess.json
    text = format_assessment(res)
    with open_run_dir(out, overwrite=args.overwrite, inputs=inputs, kind="assess") as d:
        write_json(d / "assess.json", res)
        write_text(d / "assess.md", "```\n" + text + "\n```\n")
        if feats is not None:
            from ..reports.artifacts import save_domain_features

            save_domain_features(d, **feats, seed=seed)
    print()
    print(text)
    print(f"\nwritten: {os.path.join(str(out), 'assess.json')}   ({res['wall_time']:.0f}s)")
    _report(out, args)
    return 0


def _cmd_benchmark(args) -> int:
    from ..benchmark import check_benchmark_args, markdown_table, run_benchmark_dir
    from ..errors import ConfigError
    from ..train.rundir import check_output_dir, stored_suite

    if args.suite == "drift" or (args.resume and stored_suite(args.resume) == "drift"):
        return _cmd_drift(args)
    for suite in PARTS_SUITES:
        if args.suite == suite or (args.resume and stored_suite(args.resume) == suite):
            return _cmd_suite_of_parts(args, suite)
    drift_only = [f for f, v in (("--parts", args.parts), ("--passes", args.passes), ("--n-test", args.n_test))
                  if v is not None]
    if drift_only:
        where = ("'benchmark drift', 'label-spaces', 'representation', 'compress' and 'rl-transfer'"
                 if drift_only[0] == "--parts" else "'benchmark drift'")
        raise ConfigError(f"{drift_only[0]} is an option of {where} only; leave it out.")
    if args.suite == "real-shift" and not args.resume:
        return _cmd_real_shift(args)
    if args.resume and _real_shift_args(args.resume) is not None:
        _resume_alone(args, "benchmark", "the arguments",
                      (("the suite", args.suite), ("--tasks", args.tasks), ("--methods", args.methods),
                       ("--seeds", args.seeds), ("--epochs", args.epochs), ("--out", args.out),
                       ("--overwrite", args.overwrite)))
        return _cmd_real_shift(args, resume=_real_shift_args(args.resume))
    if args.suite == "few-shot" or (args.resume and _is_fewshot_bench(args.resume)):
        return _cmd_fewshot_bench(args)
    if args.resume:
        _resume_alone(args, "benchmark", "the arguments",
                      (("the suite", args.suite), ("--tasks", args.tasks), ("--methods", args.methods),
                       ("--seeds", args.seeds), ("--selection", args.selection), ("--epochs", args.epochs),
                       ("--backbone", args.backbone), ("--image-size", args.image_size), ("--out", args.out),
                       ("--overwrite", args.overwrite)))
        res = run_benchmark_dir(args.resume, resume=True)
    else:
        if args.suite is None:
            raise ConfigError("'transferkit benchmark' needs a suite (transferkit benchmark digits-shift) or "
                              "--resume DIR to continue an interrupted benchmark.")
        given = {"seeds": args.seeds, "selection": args.selection, "epochs": args.epochs, "backbone": args.backbone,
                 "image_size": args.image_size}
        kw = check_benchmark_args(args.tasks, args.methods, **{k: v for k, v in given.items() if v is not None})
        out = args.out or f"runs/benchmark-{time.strftime('%Y%m%d-%H%M%S')}"
        check_output_dir(out, overwrite=args.overwrite)  # before any training
        res = run_benchmark_dir(out, overwrite=args.overwrite, **kw)
    table = markdown_table(res)
    print()
    print(table)
    print(f"\n{res['protocol']}\nwritten: {os.path.join(res['output_dir'], 'results.json')}")
    _report(res["output_dir"], args)
    return 0


def _cmd_drift(args) -> int:
    from ..drift import check_drift_args, markdown, run_drift_dir
    from ..errors import ConfigError
    from ..train.rundir import stored_arguments

    if args.resume:
        _resume_alone(args, "benchmark", "the arguments",
                      (("the suite", args.suite), ("--parts", args.parts), ("--seeds", args.seeds),
                       ("--passes", args.passes), ("--n-test", args.n_test), ("--out", args.out),
                       ("--overwrite", args.overwrite)))
        kw = check_drift_args(**stored_arguments(args.resume, "benchmark.json",
                                                 ("parts", "seeds", "n_test", "passes", "sf_epochs"), suite="drift"))
        out = args.resume
    else:
        fixed = [f for f, v in (("--tasks", args.tasks), ("--methods", args.methods), ("--selection", args.selection),
                                ("--epochs", args.epochs), ("--backbone", args.backbone),
                                ("--image-size", args.image_size)) if v is not None]
        if fixed:
            raise ConfigError(f"benchmark drift: {fixed[0]} is fixed by the suite (its source models, methods and "
                              "hyper-parameters are fixed before any target label is read); use --parts, --seeds, "
                              "--passes or --n-test.")
        kw = check_drift_args(args.parts, **{k: v for k, v in (("seeds", args.seeds), ("passes", args.passes),
                                                               ("n_test", args.n_test)) if v is not None})
        out = args.out or f"runs/drift-{time.strftime('%Y%m%d-%H%M%S')}"
    res = run_drift_dir(out, overwrite=args.overwrite, **kw)
    print()
    print(markdown(res))
    if not args.no_report:
        from ..reports.drift import write_drift_report

        _report_or_warn(args, write_drift_report, res["output_dir"])
    print(f"\nwritten: {os.path.join(res['output_dir'], 'results.json')} and results.md "
          f"({res['seconds'] / 60:.1f} min)")
    return 0


#: The benchmarks of parts: suite -> (runner module, its check/run functions, report module and writer, why the
#: other options are fixed). Each runner has ``check_X_args``, ``run_X_dir`` and ``markdown``.
PARTS_SUITES = {
    "label-spaces": ("labelspaces", "check_label_space_args", "run_label_spaces_dir", "labelspaces",
                     "write_label_spaces_report",
                     "its tasks, methods, backbones and selection are fixed before any target label is read"),
    "representation": ("representation", "check_representation_args", "run_representation_dir", "representation",
                       "write_representation_report",
                       "its tasks, backbones and methods are fixed in transferkit/representation.py"),
    "compress": ("compression", "check_compression_args", "run_compression_dir", "compression",
                 "write_compression_report",
                 "its teacher, students and compression settings are fixed in transferkit/compression.py"),
    "rl-transfer": ("rl.benchmark", "check_rl_args", "run_rl_transfer_dir", "rl", "write_rl_report",
                    "its environments, methods and step budgets are fixed in transferkit/rl/benchmark.py"),
}


def _cmd_suite_of_parts(args, suite: str) -> int:
    import importlib

    module, check, run, report_module, writer, why = PARTS_SUITES[suite]
    runner = importlib.import_module(f"transferkit.{module}")

    def report(out):
        return getattr(importlib.import_module(f"transferkit.reports.{report_module}"), writer)(out)

    return _cmd_parts_suite(args, suite, getattr(runner, check), getattr(runner, run), runner.markdown, report, why)


def _cmd_parts_suite(args, suite: str, check_args, run_dir, markdown, report, fixed_why: str) -> int:
    """A benchmark of parts (label-spaces, representation): ``--parts/--seeds/--epochs``, ``--resume``."""
    from ..errors import ConfigError
    from ..train.rundir import stored_arguments

    if args.resume:
        _resume_alone(args, "benchmark", "the arguments",
                      (("the suite", args.suite), ("--parts", args.parts), ("--seeds", args.seeds),
                       ("--epochs", args.epochs), ("--out", args.out), ("--overwrite", args.overwrite)))
        kw = check_args(**stored_arguments(args.resume, "benchmark.json", ("parts", "seeds", "epochs"), suite=suite))
        out = args.resume
    else:
        fixed = [f for f, v in (("--tasks", args.tasks), ("--methods", args.methods), ("--selection", args.selection),
                                ("--backbone", args.backbone), ("--image-size", args.image_size),
                                ("--passes", args.passes), ("--n-test", args.n_test)) if v is not None]
        if fixed:
            raise ConfigError(f"benchmark {suite}: {fixed[0]} is fixed by the suite ({fixed_why}); use --parts, "
                              "--seeds or --epochs.")
        kw = check_args(args.parts, **{k: v for k, v in (("seeds", args.seeds), ("epochs", args.epochs))
                                       if v is not None})
        out = args.out or f"runs/{suite}-{time.strftime('%Y%m%d-%H%M%S')}"
    res = run_dir(out, overwrite=args.overwrite, **kw)
    print()
    print(markdown(res))
    if report is not None and not args.no_report:
        _report_or_warn(args, report, res["output_dir"])
    print(f"\nwritten: {os.path.join(res['output_dir'], 'results.json')} and results.md "
          f"({res['seconds'] / 60:.1f} min)")
    return 0


def _real_shift_args(path) -> dict | None:
    """The stored arguments of a real-shift benchmark directory, or ``None`` when it is not one."""
    from ..train.rundir import stored_arguments, stored_suite

    if stored_suite(path) != "real-shift":  # (a real-shift directory is written in place: no replacement folder)
        return None
    return stored_arguments(path, "benchmark.json", ("tasks", "methods", "seeds", "epochs"),
                            suite="real-shift")


def _cmd_real_shift(args, resume: dict | None = None) -> int:
    from ..errors import ConfigError
    from ..realshift import check_real_args, markdown_table, run_real_shift_dir

    if resume is not None:  # continue in the directory with its stored arguments (checked again)
        res = run_real_shift_dir(args.resume, **check_real_args(**resume))
        print()
        print(markdown_table(res))
        print(f"\n{res['protocol']}\nwritten: {os.path.join(res['output_dir'], 'results.json')} and results.md "
              f"({res['seconds'] / 60:.1f} min)")
        return 0
    fixed = [f for f, v in (("--selection", args.selection), ("--backbone", args.backbone),
                            ("--image-size", args.image_size)) if v is not None]
    if fixed:
        raise ConfigError(f"benchmark real-shift: {fixed[0]} is fixed per task (each task has its own backbone, input "
                          "size and label-free selection); leave it out.")
    kw = check_real_args(args.tasks, args.methods, **{k: v for k, v in (("seeds", args.seeds),
                                                                          ("epochs", args.epochs)) if v is not None})
    out = args.out or f"runs/real-shift-{time.strftime('%Y%m%d-%H%M%S')}"
    res = run_real_shift_dir(out, overwrite=args.overwrite, **kw)
    print()
    print(markdown_table(res))
    print(f"\n{res['protocol']}\nwritten: {os.path.join(res['output_dir'], 'results.json')} and results.md "
          f"({res['seconds'] / 60:.1f} min)")
    return 0


def _add_config_parser(sub, name: str, help: str, what: str, resume: str, example_set: str):
    """The parser of a command that runs one config file or continues ``--resume DIR`` (fewshot, pretrain)."""
    c = sub.add_parser(name, help=help)
    c.add_argument("config", nargs="?", help=f"{what} YAML file (not with --resume); see examples/{name}/")
    c.add_argument("--resume", metavar="DIR", help=resume)
    c.add_argument("--out", help="output directory (default: config's output_dir or runs/NAME-TIMESTAMP)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config value, e.g. --set {example_set} (repeatable)")
    _add_threads(c)
    return c


def _add_fewshot_parser(sub) -> None:
    fs = _add_config_parser(sub, "fewshot", "few-shot learning: meta-train, select on meta-val episodes, test on >= "
                            "600 meta-test episodes (mean and 95%% interval per N-way K-shot)", "few-shot experiment",
                            "continue an interrupted few-shot run in DIR with its stored config (finished cells are "
                            "kept)", "meta_train_steps=200")
    fs.add_argument("--no-report", action="store_true", help="skip report.html / report.md")


def _add_rl_parser(sub) -> None:
    _add_config_parser(sub, "rl", "policy transfer in reinforcement learning: a source policy trained, then moved to "
                       "target environments (zero-shot, fine-tune, domain randomisation, distillation) beside a "
                       "from-scratch baseline", "rl experiment", "continue an interrupted rl run in DIR with its "
                       "stored config (finished cells are kept)", "steps=20000")


def _cmd_rl(args) -> int:
    from ..rl.run import format_result, run_rl

    res = _config_command(args, "rl", "an rl file", run_rl)
    print()
    print(format_result(res))
    from ..reports.rl import write_rl_report

    _report_or_warn(args, write_rl_report, res["output_dir"])
    print(f"\nresult: {os.path.join(res['output_dir'], 'result.json')}")
    return 0


def _add_pretrain_parser(sub) -> None:
    _add_config_parser(sub, "pretrain", "self-supervised pretraining of a backbone on unlabeled data (rotation, "
                       "simclr, byol, simsiam, mae); strategies load it as backbone: file:RUN_DIR", "pretrain",
                       "continue an interrupted pretrain run in DIR with its stored config", "epochs=5")


def _config_command(args, command: str, what: str, run) -> dict:
    """A command that runs one config file (``fewshot``, ``pretrain``) or continues ``--resume DIR``
    with the config stored there; returns ``run``'s result."""
    from ..errors import ConfigError

    if args.resume:
        _resume_alone(args, command, "the config", (("a config file", args.config), ("--out", args.out),
                                                     ("--overwrite", args.overwrite), ("--set", args.set)))
        return run(None, args.resume, resume=True)
    if not args.config:
        raise ConfigError(f"'transferkit {command}' needs {what} (transferkit {command} exp.yaml, see "
                          f"examples/{command}/) or --resume DIR to continue an interrupted run.")
    return run(args.config, args.out, overwrite=args.overwrite, overrides=args.set)


def _cmd_pretrain(args) -> int:
    from ..pretrain.run import format_result, run_pretrain

    res = _config_command(args, "pretrain", "a pretrain file", run_pretrain)
    print()
    print(format_result(res))
    print(f"\nresult: {os.path.join(res['output_dir'], 'result.json')}")
    return 0


def _fewshot_report(out, args) -> None:
    """The few-shot report after a run; a failure warns (the results are on disk already)."""
    if getattr(args, "no_report", False):
        return
    from ..reports.fewshot import write_fewshot_report

    _report_or_warn(args, write_fewshot_report, out)


def _cmd_fewshot(args) -> int:
    from ..fewshot.run import format_results, run_fewshot

    res = _config_command(args, "fewshot", "a few-shot experiment file", run_fewshot)
    print()
    print(format_results(res))
    print(f"\nresults: {os.path.join(res['output_dir'], 'results.json')}")
    _fewshot_report(res["output_dir"], args)
    return 0


def _is_fewshot_bench(path) -> bool:
    from ..fewshot.bench import is_fewshot_bench_dir

    return is_fewshot_bench_dir(path)


def _cmd_fewshot_bench(args) -> int:
    from ..errors import ConfigError
    from ..fewshot.bench import markdown, run_fewshot_bench

    fixed = [f for f, v in (("--selection", args.selection), ("--backbone", args.backbone),
                            ("--image-size", args.image_size), ("--epochs", args.epochs)) if v is not None]
    if fixed:
        raise ConfigError(f"benchmark few-shot: {fixed[0]} is fixed per task (encoders, input sizes and "
                          "meta-training steps are set in transferkit/fewshot/bench.py; selection is on meta-val "
                          "episodes); leave it out.")
    if args.resume:
        _resume_alone(args, "benchmark", "the arguments",
                      (("the suite", args.suite), ("--tasks", args.tasks), ("--methods", args.methods),
                       ("--seeds", args.seeds), ("--out", args.out), ("--overwrite", args.overwrite)))
        res = run_fewshot_bench(args.resume, resume=True)
    else:
        out = args.out or f"runs/fewshot-benchmark-{time.strftime('%Y%m%d-%H%M%S')}"
        res = run_fewshot_bench(out, args.tasks, args.methods, 1 if args.seeds is None else args.seeds,
                                overwrite=args.overwrite)
    print()
    print(markdown(res))
    print(f"\nwritten: {os.path.join(res['output_dir'], 'results.json')} and results.md "
          f"({res['seconds'] / 60:.1f} min)")
    _fewshot_report(res["output_dir"], args)
    return 0


def _cmd_diagnose(args) -> int:
    from ..config import load_config
    from ..diagnostics.diagnose import resume_diagnose, run_diagnose
    from ..errors import ConfigError

    if args.resume:
        _resume_alone(args, "diagnose", "the config", (("a config file", args.config), ("--out", args.out),
                                                         ("--overwrite", args.overwrite), ("--seeds", args.seeds),
                                                         ("--set", args.set)))
        res = resume_diagnose(args.resume)
    else:
        if not args.config:
            raise ConfigError("'transferkit diagnose' needs an experiment file (transferkit diagnose exp.yaml) "
                              "or --resume DIR to continue an interrupted diagnose.")
        cfg = _override(load_config(args.config, overrides=args.set), args)
        res = run_diagnose(cfg, args.out, overwrite=args.overwrite, inputs=[args.config])
    nt = res["negative_transfer"]
    print(f"\nnegative transfer: {nt['verdict']}  ({res['transfer']} - {res['baseline']} = {nt['delta_mean']:+.3f}, "
          f"{round(100 * nt['confidence'])}% CI [{nt['ci_low']:+.3f}, {nt['ci_high']:+.3f}], {nt['method']}, "
          f"{nt['n_seeds']} seeds)")
    if nt["rising_val_loss"]["flagged"]:
        print(f"warning: {res['transfer']}'s validation loss rises from the start (seeds {nt['rising_val_loss']['seeds']})")
    if res["sample_efficiency"] and res["sample_efficiency"]["headline"]:
        print(res["sample_efficiency"]["headline"])
    print(f"written: {os.path.join(res['output_dir'], 'diagnose.json')}   ({res['wall_time']:.0f}s)")
    _report(res["output_dir"], args)
    return 0


def _cmd_list(args) -> int:
    if args.kind == "backbones":
        from ..backbones import list_backbones

        items = list_backbones(runs=args.runs)
    elif args.kind == "datasets":
        from ..data.spec import list_datasets

        items = list_datasets()
    else:
        from .._registry import describe

        kinds = {"strategies": "strategy", "divergences": "divergence", "da_losses": "da_loss", "scorers": "scorer",
                 "penalties": "penalty"}
        items = describe(kinds.get(args.kind, args.kind))
    w = max(map(len, items))
    for k, v in items.items():
        print(f"{k:<{w}}  {v}")
    return 0


def _cmd_groups(args) -> int:
    from ..backbones import create_backbone, describe_groups

    print(describe_groups(create_backbone(args.backbone, pretrained=not args.no_pretrained)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, one line printed by _Parser)
        return exc.code if isinstance(exc.code, int) else 2
    if args.version:
        from .. import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --num-processes starts again
    # torch already imported: main() was called from a program (a notebook, a test) that may have
    # chosen its own thread count; without --threads, that choice stays (from a shell it never is)
    args.torch_preloaded = "torch" in sys.modules
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    _quiet_cuda_extension_logs()
    with warnings.catch_warnings():
        _one_line_warnings()
        return _dispatch(args)


def _dispatch(args) -> int:
    if getattr(args, "out", None) == "":
        print("transferkit: error: --out '' is empty; give an output folder, e.g. --out runs/NAME "
              "(or leave --out out for the default).", file=sys.stderr)
        return 2
    try:
        if hasattr(args, "threads") and (args.threads is not None or not getattr(args, "torch_preloaded", False)):
            from .._threads import configure_threads  # the commands that run models, before any torch work

            configure_threads(args.threads)
        return {"run": _cmd_run, "demo": _cmd_demo, "assess": _cmd_assess, "benchmark": _cmd_benchmark,
                "list": _cmd_list, "report": _cmd_report, "diagnose": _cmd_diagnose,
                "groups": _cmd_groups, "predict": _cmd_predict, "export": _cmd_export, "compress": _cmd_compress,
                "fewshot": _cmd_fewshot, "pretrain": _cmd_pretrain, "rl": _cmd_rl}[args.command](args)
    except (TransferKitError, OSError) as exc:
        # OSError: a path that cannot be written or read (permissions, full disk), not a bug
        if args.debug:
            raise
        msg = _printable(exc)  # always one line, whatever the message holds
        if isinstance(exc, OSError) and not isinstance(exc, TransferKitError):
            msg += "; check the path, its permissions and the free disk space"
        print(f"transferkit: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferkit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, or a failure we did not foresee: still one line, and how to see more
        if args.debug:
            raise
        print(f"transferkit: error: unexpected {type(exc).__name__}: {_printable(exc)[:300]} (this is a bug or an "
              "unforeseen input; rerun with --debug for the traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
