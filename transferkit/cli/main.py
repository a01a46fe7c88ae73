"""``transferkit``: run experiments, the demo, and list what is available.

Errors that transferkit raises on purpose print one line and exit with code 2; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib import resources

from ..errors import TransferKitError


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transferkit", description="Transfer learning toolkit.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    r = sub.add_parser("run", help="run an experiment from a YAML file")
    r.add_argument("config", help="experiment YAML file")
    r.add_argument("--out", help="output directory (default: config's output_dir or runs/NAME-TIMESTAMP)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    r.add_argument("--seeds", type=int, help="number of seeds (overrides the config)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set split.labels_per_class=5 (repeatable)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")

    d = sub.add_parser("demo", help="scratch vs feature extraction vs fine-tuning on shifted digits")
    d.add_argument("--out", help="output directory (default: runs/demo-TIMESTAMP)")
    d.add_argument("--overwrite", action="store_true")
    d.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    d.add_argument("--no-progress", action="store_true")

    a = sub.add_parser("assess", help="measure domain shift and rank backbones before training")
    a.add_argument("--source", required=True, help="source dataset spec")
    a.add_argument("--target", required=True, help="target dataset spec")
    a.add_argument("--backbone", action="append", default=None, metavar="NAME",
                   help="backbone to score (repeatable; the first defines the feature space; default efficientnet_lite0)")
    a.add_argument("--image-size", type=int, default=None, help="input side for image backbones (e.g. 64)")
    a.add_argument("--permutations", type=int, default=200, help="MMD permutation-test permutations")
    a.add_argument("--max-samples", type=int, default=2000, help="per-domain subsample for divergences")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--out", help="output directory for assess.json (default: runs/assess-TIMESTAMP)")
    a.add_argument("--overwrite", action="store_true")

    bm = sub.add_parser("benchmark", help="benchmark domain adaptation methods (digits-shift)")
    bm.add_argument("suite", choices=["digits-shift"])
    bm.add_argument("--tasks", nargs="+", default=None, help="tasks (default: all)")
    bm.add_argument("--methods", nargs="+", default=None, help="methods (default: all)")
    bm.add_argument("--seeds", type=int, default=3)
    bm.add_argument("--selection", default="dev", help="unsupervised checkpoint scorer: dev, iwcv, snd, entropy")
    bm.add_argument("--epochs", type=int, default=30)
    bm.add_argument("--out", help="output directory (default: runs/benchmark-TIMESTAMP)")
    bm.add_argument("--overwrite", action="store_true")

    ls = sub.add_parser("list", help="list backbones, datasets, strategies, divergences or transferability scores")
    ls.add_argument("kind", choices=["backbones", "datasets", "strategies", "divergences", "transferability",
                                     "da_losses", "shallow_da", "scorers"])

    g = sub.add_parser("groups", help="print a backbone's layer groups")
    g.add_argument("backbone")
    g.add_argument("--no-pretrained", action="store_true")
    return p


def _run(cfg, args) -> int:
    from ..experiment import format_table, gains_over_baseline, run_experiment

    if getattr(args, "seeds", None):
        cfg.seeds = list(range(args.seeds))
    if getattr(args, "no_progress", False):
        cfg.progress = False
    t0 = time.perf_counter()
    res = run_experiment(cfg, args.out, overwrite=args.overwrite)
    print()
    print(format_table(res["summary"]))
    gains = gains_over_baseline(res["summary"])
    if gains:
        print(gains)
    print(f"\nselection: {res['selection']}")
    print(f"results: {os.path.join(res['output_dir'], 'results.json')}   ({time.perf_counter() - t0:.0f}s)")
    return 0


def _cmd_run(args) -> int:
    from ..config import load_config

    return _run(load_config(args.config, overrides=args.set), args)


def _cmd_demo(args) -> int:
    import yaml

    from ..config import config_from_dict

    text = resources.files("transferkit.configs").joinpath("demo.yaml").read_text()
    cfg = config_from_dict(yaml.safe_load(text))
    if args.out is None:
        args.out = f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    print("transferkit demo: does a pretrained EfficientNet-Lite0 help on 10 labels per class of shifted digits?")
    return _run(cfg, args)


def _cmd_assess(args) -> int:
    from ..assess import assess, format_assessment
    from ..train.rundir import prepare_run_dir, write_json, write_text

    out = args.out or f"runs/assess-{time.strftime('%Y%m%d-%H%M%S')}"
    if os.path.isdir(out) and os.listdir(out) and not args.overwrite:
        prepare_run_dir(out, overwrite=False)  # raises the usual message before any work
    res = assess(args.source, args.target, backbones=args.backbone or ["efficientnet_lite0"],
                 image_size=args.image_size, n_permutations=args.permutations, max_samples=args.max_samples,
                 seed=args.seed, progress=True, echo=print)
    d = prepare_run_dir(out, overwrite=args.overwrite)
    text = format_assessment(res)
    write_json(d / "assess.json", res)
    write_text(d / "assess.md", "```\n" + text + "\n```\n")
    print()
    print(text)
    print(f"\nwritten: {os.path.join(str(d), 'assess.json')}   ({res['wall_time']:.0f}s)")
    return 0


def _cmd_benchmark(args) -> int:
    from ..adapt.benchmark import markdown_table, run_benchmark
    from ..train.rundir import prepare_run_dir, write_json, write_text

    out = args.out or f"runs/benchmark-{time.strftime('%Y%m%d-%H%M%S')}"
    if os.path.isdir(out) and os.listdir(out) and not args.overwrite:
        prepare_run_dir(out, overwrite=False)
    res = run_benchmark(args.tasks, args.methods, args.seeds, selection=args.selection, epochs=args.epochs)
    d = prepare_run_dir(out, overwrite=args.overwrite)
    table = markdown_table(res)
    write_json(d / "results.json", res)
    write_text(d / "results.md", table + "\n\n" + res["protocol"] + "\n")
    print()
    print(table)
    print(f"\n{res['protocol']}\nwritten: {d / 'results.json'}")
    return 0


def _cmd_list(args) -> int:
    if args.kind == "backbones":
        from ..backbones import list_backbones

        items = list_backbones()
    elif args.kind == "datasets":
        from ..data.spec import list_datasets

        items = list_datasets()
    else:
        from .._registry import describe

        kinds = {"strategies": "strategy", "divergences": "divergence", "da_losses": "da_loss", "scorers": "scorer"}
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
    args = parser.parse_args(argv)
    if args.version:
        from .. import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return {"run": _cmd_run, "demo": _cmd_demo, "assess": _cmd_assess, "benchmark": _cmd_benchmark,
                "list": _cmd_list,
                "groups": _cmd_groups}[args.command](args)
    except TransferKitError as exc:
        if args.debug:
            raise
        print(f"transferkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
