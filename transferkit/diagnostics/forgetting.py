"""Forgetting: how much source-task accuracy fine-tuning costs, per regularizer.

The two-task setup (a class-incremental split of the built-in ``digits``):

1. **source task**: digits 0-4. A backbone (``tiny_cnn`` by default, random init) and a
   5-way source head are trained on the source train split (best epoch on the source
   validation split). ``source_acc_before`` is the source head's test accuracy.
2. **target task**: digits 5-9 (relabeled 0-4). A copy of the trained backbone gets a new
   5-way head and is fine-tuned end to end on the target train split with the ``finetune``
   strategy and one penalty; the source head is kept (frozen) and the penalties that need it
   (EWC, LwF, replay) use it; EWC and replay also see the source *train* split.
3. ``source_acc_after``: the source head on the fine-tuned backbone, on the source test split;
   ``forgetting = source_acc_before - source_acc_after``; ``target_acc`` on the target test
   split. The same seed gives every penalty the same splits, source model and initial head.

Model selection never sees a test split: the source model's epoch is chosen on the source
validation split, the fine-tuned model's on the target validation split. The validation
accuracies of both tasks after fine-tuning are returned too (``source_val_after``,
``target_val``) so strengths can be tuned without touching test data (see
``benchmarks/forgetting.py``).
"""

from __future__ import annotations

import copy
import time

import numpy as np

from .._validation import check_number
from ..metrics._base import mean_std
from ..errors import ConfigError

#: Penalty strengths used by :func:`run_forgetting` unless ``penalty_options`` overrides them.
#: Chosen on the *validation* splits (seeds 0-2, tiny_cnn, 16 px, 15 epochs) by
#: ``python benchmarks/forgetting.py --tune``: for each penalty, the grid value with the best mean
#: of source and target validation accuracy after fine-tuning (the continual-learning "average
#: accuracy"); a decade-spaced pass, then half-decade grids around its winners (see that script).
#: Other options keep the paper defaults (L2-SP beta 0.01, LwF T = 2, BSS k = 1).
DEFAULT_OPTIONS: dict[str, dict] = {
    "none": {},
    "l2sp": {"alpha": 3.0, "beta": 0.01},
    "ewc": {"lam": 1e4},
    "lwf": {"weight": 3.0, "temperature": 2.0},
    "replay": {"fraction": 0.75, "weight": 1.0},
    "bss": {"eta": 0.01, "k": 1},
}

PENALTIES = ("none", "l2sp", "ewc", "lwf", "replay", "bss")


def two_task_digits(size: int = 32, seed: int = 0, fractions=(0.5, 0.25, 0.25)) -> dict:
    """Source (digits 0-4) and target (digits 5-9, relabeled 0-4) train/val/test splits.

    Returns ``{"source": (train, val, test), "target": (train, val, test)}`` of
    :class:`transferkit.data.DomainDataset`; stratified, seeded.
    """
    from ..data import stratified_split
    from ..data.spec import load_dataset

    d = load_dataset("digits", size=size)
    out = {}
    for task, classes in (("source", range(0, 5)), ("target", range(5, 10))):
        idx = np.flatnonzero(np.isin(d.labels, list(classes)))
        sub = d.subset(idx, name=f"digits[{classes[0]}-{classes[-1]}]")
        sub.labels = sub.labels - classes[0]
        sub.classes = [str(c) for c in classes]
        parts = stratified_split(sub.labels, list(fractions), seed=seed, dataset=sub.name)
        out[task] = tuple(sub.subset(p, name=f"{sub.name}/{n}") for p, n in zip(parts, ("train", "val", "test")))
    return out


def _variant(p) -> tuple[str, str, dict]:
    """``(label, penalty name, options)`` from a name or ``{"label", "penalty", "options"}``."""
    if isinstance(p, str):
        return p, p, dict(DEFAULT_OPTIONS.get(p, {}))
    if isinstance(p, dict) and "penalty" in p:
        name = p["penalty"]
        opts = {**DEFAULT_OPTIONS.get(name, {}), **dict(p.get("options") or {})}
        return str(p.get("label", name)), name, opts
    raise ConfigError(f"penalties entry {p!r} must be a penalty name ('ewc') or "
                      "{'label': ..., 'penalty': 'ewc', 'options': {'lam': 100}}.")


def _acc(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())


def run_forgetting(backbone: str = "tiny_cnn", seeds=3, epochs: int = 15, penalties=PENALTIES,
                   image_size: int = 16, source_epochs: int = 20, lr: float = 1e-3, batch_size: int = 32,
                   penalty_options: dict | None = None, device: str | None = "cpu", threads: int | None = 1,
                   echo=None) -> dict:
    """Source accuracy before and after fine-tuning on a second task, per penalty, over seeds.

    The defaults are the recipe the strengths in :data:`DEFAULT_OPTIONS` were tuned for; with
    them the whole table (6 penalties x 3 seeds) takes about a minute on two CPU cores.

    Parameters
    ----------
    backbone
        Backbone name (created with random weights and trained on the source task), e.g.
        ``"tiny_cnn"`` or ``"efficientnet_lite0"`` (then its ImageNet weights are the start).
    seeds
        Number of seeds (``0..seeds-1``) or a list of seeds. Each seed draws its own splits,
        source model and target head.
    epochs
        Fine-tuning epochs on the target task (AdamW, cosine schedule, every layer trains at
        ``lr``, no augmentation, weight decay 0 so the priors are centred where they say).
    penalties
        Penalty names (``"none"`` = plain fine-tuning), or dicts
        ``{"label": "ewc_1e3", "penalty": "ewc", "options": {"lam": 1000}}`` to compare strengths.
    image_size
        Side of the digit images.
    source_epochs
        Training epochs of the source model.
    lr, batch_size
        Learning rate (backbone and heads alike) and batch size of both stages.
    penalty_options
        ``{name: {option: value}}`` overriding :data:`DEFAULT_OPTIONS`.
    device
        Torch device (``None``: a GPU when there is one).
    threads
        CPU threads for torch during the run (restored afterwards; ``None``: leave as is). A
        tiny CNN gains nothing from more threads, and on a busy 2-core machine two threads
        were 20x slower per step than one (0.96 s vs 0.05 s, batch 32 at 16 px).
    echo
        A ``print``-like callable for progress lines (``None``: quiet).

    Returns
    -------
    dict
        ``{"rows": [...], "runs": [...], "setup": {...}, "wall_time": s}``. Each row (one per
        penalty) has ``penalty``, ``n_seeds`` and, for ``source_acc_before``,
        ``source_acc_after``, ``forgetting``, ``target_acc``, ``source_val_after``,
        ``target_val`` and ``train_time``, the mean under that key and the sample standard
        deviation (``ddof=1``) under ``<key>_std``; ``options`` are the penalty's options.
        ``runs`` holds the per-seed values.
    """
    import torch

    seed_list = list(range(check_number("seeds", seeds, low=1, integer=True))) if isinstance(seeds, (int, float)) \
        else [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("seeds=[] is empty; give a number of seeds or a list of seeds.")
    epochs = check_number("epochs", epochs, low=1, integer=True)
    variants = [_variant(p) for p in penalties]
    for name, opts in (penalty_options or {}).items():
        for i, (label, pname, o) in enumerate(variants):
            if pname == name:
                variants[i] = (label, pname, {**o, **opts})
    from .._registry import get
    from ..finetune import penalties as _pen  # noqa: F401  (registers the penalty kind)

    for _, pname, _ in variants:
        if pname != "none":
            get("penalty", pname)
    say = echo or (lambda *_: None)
    t_start = time.perf_counter()
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(check_number("threads", threads, low=1, integer=True))
    try:
        runs = _run(backbone, seed_list, variants, epochs, image_size, source_epochs, lr, batch_size, device, say)
    finally:
        torch.set_num_threads(old_threads)
    keys = ("source_acc_before", "source_acc_after", "forgetting", "target_acc", "source_val_after", "target_val",
            "train_time")
    rows = []
    for label, pname, opts in variants:
        rs = [r for r in runs if r["penalty"] == label]
        row = {"penalty": label, "method": pname, "options": opts, "n_seeds": len(rs)}
        for k in keys:
            row[k], row[k + "_std"] = mean_std([r[k] for r in rs])
        rows.append(row)
    setup = {"backbone": backbone, "image_size": image_size, "seeds": seed_list, "epochs": epochs,
             "source_epochs": source_epochs, "lr": lr, "batch_size": batch_size,
             "source": "digits 0-4", "target": "digits 5-9 (new head, shared backbone)",
             "selection": "best epoch on each task's validation split; test splits scored once"}
    return {"rows": rows, "runs": runs, "setup": setup, "wall_time": time.perf_counter() - t_start}


def _run(backbone, seed_list, variants, epochs, image_size, source_epochs, lr, batch_size, device, say) -> list:
    import torch

    from ..backbones import create_backbone
    from ..strategies.finetune import FineTune

    runs = []
    pretrained = backbone != "tiny_cnn"
    for seed in seed_list:
        data = two_task_digits(size=image_size, seed=seed)
        s_train, s_val, s_test = data["source"]
        t_train, t_val, t_test = data["target"]
        torch.manual_seed(seed)
        bb = create_backbone(backbone, pretrained=pretrained, image_size=image_size)
        t0 = time.perf_counter()
        src = FineTune(backbone=bb, pretrained=pretrained, lp_init=False, freeze_bn="none", backbone_lr_mult=1.0,
                       lr=lr, epochs=source_epochs, batch_size=batch_size, weight_decay=0.0, augment="none",
                       warmup_epochs=0.0, seed=seed, device=device).fit(s_train, s_val)
        fc = src.model_.head.fc
        head = (fc.weight.detach().cpu().clone(), fc.bias.detach().cpu().clone())
        trained = copy.deepcopy(src.model_.backbone).cpu()
        trained.source_head = head
        acc_before = _acc(src.predict_logits(s_test), s_test.labels)
        say(f"seed {seed}: source model {acc_before:.3f} test accuracy on digits 0-4 "
            f"({time.perf_counter() - t0:.1f}s)")
        for label, pname, opts in variants:
            ft = FineTune(backbone=copy.deepcopy(trained), pretrained=True, lp_init=False, freeze_bn="all",
                          backbone_lr_mult=1.0, lr=lr, epochs=epochs, batch_size=batch_size, weight_decay=0.0,
                          augment="none", warmup_epochs=0.0, seed=seed, device=device,
                          penalty=None if pname == "none" else pname,
                          penalty_options=None if pname == "none" else opts)
            t1 = time.perf_counter()
            ft.fit(t_train, t_val, source=None if pname == "none" else s_train)
            dt = time.perf_counter() - t1
            row = {
                "penalty": label, "seed": seed,
                "source_acc_before": acc_before,
                "source_acc_after": _acc(ft.predict_source_logits(s_test, head=head), s_test.labels),
                "target_acc": _acc(ft.predict_logits(t_test), t_test.labels),
                "source_val_after": _acc(ft.predict_source_logits(s_val, head=head), s_val.labels),
                "target_val": _acc(ft.predict_logits(t_val), t_val.labels),
                "train_time": dt,
            }
            row["forgetting"] = row["source_acc_before"] - row["source_acc_after"]
            runs.append(row)
            say(f"  {label:<10} source {row['source_acc_before']:.3f} -> {row['source_acc_after']:.3f}  "
                f"target {row['target_acc']:.3f}  ({dt:.1f}s)")
    return runs


def format_forgetting_table(res: dict, markdown: bool = True) -> str:
    """The forgetting table: one line per penalty, mean ± std over seeds.

    Columns: source accuracy before and after fine-tuning, forgetting (points lost), target
    accuracy, the target accuracy cost relative to plain fine-tuning (``none``) when present,
    and fine-tuning time.
    """
    rows = res["rows"]
    base = next((r for r in rows if r["penalty"] == "none"), None)

    def pm(r, k, scale=100.0):
        return f"{scale * r[k]:.1f} ± {scale * r[k + '_std']:.1f}"

    head = ["penalty", "source acc before", "source acc after", "forgetting (points)", "target acc",
            "target cost vs none", "FT time (s)", "seeds"]
    body = []
    for r in rows:
        cost = "-" if base is None or r is base else f"{100 * (base['target_acc'] - r['target_acc']):+.1f}"
        body.append([r["penalty"], pm(r, "source_acc_before"), pm(r, "source_acc_after"), pm(r, "forgetting"),
                     pm(r, "target_acc"), cost, f"{r['train_time']:.1f}", str(r["n_seeds"])])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*b) for b in body])
