"""The ``mtl`` and ``cross_modal`` parts of ``transferkit benchmark representation``.

``cross_modal``: the LiT-style image-text embedding (:class:`~transferkit.pretrain.image_text.LiT`,
EfficientNet-Lite0 at 64 px frozen, a frozen text encoder, trained projections) fitted on the
images of 5 classes with template captions (the captions are templates built from the class
names and a small attribute table, not human descriptions), then asked to classify the test
images of the 5 other classes from their class-name prompts (zero-shot; chance 0.2) and to
retrieve (image -> caption and caption -> image, a caption relevant to every image of its
class). The class split is the label-spaces benchmark's (``1000 + seed``), so the tables
compare with its ESZSL / DeViSE / ConSE rows. The reference is a linear probe on the same frozen
features with 10 labels per class of the unseen classes (what a few labels buy instead of the
class names).

``mtl``: see :func:`mtl_cells`.
"""

from __future__ import annotations

import numpy as np

CROSS_MODAL_TASKS = {
    "fashion": {"train": "fashion_mnist:split=train,n=4000", "test": "fashion_mnist:split=test,n=2000"},
    "animal": {"train": "animal_mnist:subset=0/2,n=4000", "test": "animal_mnist:subset=1/2,n=2000"},
}
TEXT_ENCODERS = ("minilm", "glove", "wordllama")
CROSS_MODAL_METHODS = (*(f"lit_{e}" for e in TEXT_ENCODERS), "probe_10")
IMAGE_BACKBONE, IMAGE_SIZE = "efficientnet_lite0", 64

PROTOCOLS = {
    "cross_modal": ("LiT-style embedding: EfficientNet-Lite0 (64 px) image features and a text encoder (minilm, "
                    "GloVe 6B 50-d or WordLlama), both frozen; linear projections to 128-d and a learnable "
                    "temperature trained with the symmetric InfoNCE (rows of one class are positives) on 5 seen "
                    "classes of the training images (the label-spaces benchmark's class split per seed) with "
                    "template captions; zero-shot accuracy (per class) over the 5 unseen classes' test images from "
                    "prompt-ensembled class names (chance 0.2); retrieval recall@k on the unseen test images "
                    "(a caption relevant to every image of its class); reference: a linear probe on the same "
                    "features with 10 labels per unseen class (5 draws); mean ± std over seeds"),
}

_FEATURES: dict = {}


def class_split(seed: int) -> tuple[list[int], list[int]]:
    """The label-spaces benchmark's seen / unseen split of 10 classes (so the tables compare)."""
    rng = np.random.default_rng(1000 + seed)
    perm = rng.permutation(10)
    return sorted(perm[:5].tolist()), sorted(perm[5:].tolist())


def _features(spec: str):
    """The dataset of ``spec`` as a tabular dataset of frozen EfficientNet-Lite0 features (once per process)."""
    if spec not in _FEATURES:
        import torch

        from ..backbones import create_backbone
        from ..data import DomainDataset
        from ..data.spec import load_dataset
        from ..features.extractor import extract_features

        ds = load_dataset(spec)
        if "backbone" not in _FEATURES:
            torch.manual_seed(0)
            _FEATURES["backbone"] = create_backbone(IMAGE_BACKBONE, image_size=IMAGE_SIZE).eval()
        X = extract_features(_FEATURES["backbone"], ds.inputs, batch_size=128)
        _FEATURES[spec] = DomainDataset(X, ds.labels, ds.name, "tabular", classes=ds.classes)
    return _FEATURES[spec]


def _rows(ds, classes):
    return ds.subset(np.flatnonzero(np.isin(ds.labels, classes)))


def cross_modal_cell(task: str, method: str, seed: int) -> dict:
    """One (task, method, seed) of the ``cross_modal`` part."""
    from ..backbones import create_backbone
    from ..metrics.zero_shot import per_class_accuracy
    from .image_text import LiT

    t = CROSS_MODAL_TASKS[task]
    tr, te = _features(t["train"]), _features(t["test"])
    seen, unseen = class_split(seed)
    test_u = _rows(te, unseen)
    if method == "probe_10":
        from .run import linear_probe_accuracy

        rng = np.random.default_rng(seed)
        pool = _rows(tr, unseen)
        accs = []
        for _ in range(5):
            pick = np.concatenate([rng.choice(np.flatnonzero(pool.labels == c), 10, replace=False) for c in unseen])
            accs.append(linear_probe_accuracy(pool.inputs[pick], pool.labels[pick], test_u.inputs, test_u.labels))
        return {"unseen_accuracy": float(np.mean(accs)), "seen": seen, "unseen": unseen}
    enc = method.removeprefix("lit_")
    ident = create_backbone("identity", in_features=int(tr.inputs.shape[1]))
    model = LiT(image_backbone=ident, text_encoder=enc, seed=seed, cache_dir=False).fit(_rows(tr, seen))
    names = [te.classes[c] for c in unseen]
    pred = np.asarray(unseen)[model.zero_shot_predict(test_u, names)]
    test_s = _rows(te, seen)
    pred_s = np.asarray(seen)[model.zero_shot_predict(test_s, [te.classes[c] for c in seen])]
    r = model.retrieval(test_u, relevance="label")
    return {"unseen_accuracy": float(per_class_accuracy(test_u.labels, pred).value),
            "seen_accuracy": float(per_class_accuracy(test_s.labels, pred_s).value),
            **{f"i2t_{k.replace('@', '')}": float(v) for k, v in r["image_to_text"].items()},
            **{f"t2i_{k.replace('@', '')}": float(v) for k, v in r["text_to_image"].items()},
            "temperature": float(model.temperature_), "seen": seen, "unseen": unseen}


# ------------------------------------------------------------------ the benchmark's interface
def cells(part: str, seed: int, epochs: int):
    """``(name, definition, compute)`` of every cell of ``part`` for one seed."""
    if part == "cross_modal":
        for task, t in CROSS_MODAL_TASKS.items():
            for m in CROSS_MODAL_METHODS:
                yield (f"cross_modal--{task}--{m}--seed{seed}", {"task": t, "method": m, "split": class_split(seed)},
                       lambda task=task, m=m: cross_modal_cell(task, m, seed))
    elif part == "mtl":
        yield from mtl_cells(seed, epochs)


def _mean_std(v) -> dict:
    from ..metrics._base import mean_std

    m, sd = mean_std(list(v))
    return {"mean": m, "std": sd}


def _group(rows, metrics):
    by: dict = {}
    for r in rows:
        by.setdefault((r["task"], r["method"]), []).append(r)
    return [{"task": t, "method": m, "n_seeds": len(rs),
             **{k: _mean_std(r[k] for r in rs) for k in metrics if all(k in r for r in rs)}}
            for (t, m), rs in by.items()]


CROSS_MODAL_METRICS = ("unseen_accuracy", "seen_accuracy", "i2t_recall1", "i2t_recall5", "i2t_recall10",
                       "t2i_recall1", "t2i_recall5", "t2i_recall10")


def summarize(res: dict) -> dict:
    out: dict = {}
    if res.get("cross_modal"):
        out["cross_modal"] = _group(res["cross_modal"], CROSS_MODAL_METRICS)
    if res.get("mtl"):
        out.update(mtl_summary(res["mtl"]))
    return out


def _fmt(ms) -> str:
    return "—" if not ms else f"{ms['mean']:.3f} ± {ms['std']:.3f}"


def markdown(res: dict, s: dict) -> list[str]:
    """The results.md sections of the two parts."""
    lines: list[str] = []
    if "mtl" in s:
        lines += mtl_markdown(res, s)
    if "cross_modal" in s:
        lines += ["## Image-text embedding (LiT-style): zero-shot on 5 held-out classes and retrieval", "",
                  f"Protocol: {PROTOCOLS['cross_modal']}.", "",
                  "| task | method | unseen zero-shot | seen zero-shot | image->text R@1 / R@5 / R@10 | "
                  "text->image R@1 / R@5 / R@10 |", "|---|---|---|---|---|---|"]
        for r in s["cross_modal"]:
            i2t = " / ".join(f"{r[k]['mean']:.2f}" for k in ("i2t_recall1", "i2t_recall5", "i2t_recall10") if k in r)
            t2i = " / ".join(f"{r[k]['mean']:.2f}" for k in ("t2i_recall1", "t2i_recall5", "t2i_recall10") if k in r)
            lines.append(f"| {r['task']} | {r['method']} | {_fmt(r.get('unseen_accuracy'))} | "
                         f"{_fmt(r.get('seen_accuracy'))} | {i2t or '—'} | {t2i or '—'} |")
        best = max((r for r in s["cross_modal"] if r["method"].startswith("lit_")),
                   key=lambda r: r["unseen_accuracy"]["mean"], default=None)
        if best is not None:
            verdict = "meets" if best["unseen_accuracy"]["mean"] >= 0.4 else "does not meet"
            lines += ["", f"Best zero-shot: {best['method']} on {best['task']}, "
                          f"{_fmt(best['unseen_accuracy'])}: {verdict} the goal of 2x chance (0.40)."]
        lines.append("")
    return lines


# ------------------------------------------------------------------ mtl (filled below)
def mtl_cells(seed: int, epochs: int):
    return iter(())


def mtl_summary(rows) -> dict:
    return {}


def mtl_markdown(res: dict, s: dict) -> list[str]:
    return []
