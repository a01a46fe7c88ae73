"""The report of ``transferkit benchmark representation``: its protocols, its tables, and figures
(the frozen features' accuracy per initialisation and target as a heat map, the gap each pretext
closes, Delta-m% per weighting, zero-shot accuracy per text tower against the 10-label probe).
Built from ``results.json`` alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import plots
from .document import Image, Report, Section, Table, Text


def _ms(cell: dict | None, key: str) -> str:
    v = (cell or {}).get(key)
    return "—" if not v else f"{v['mean']:.3f} ± {v['std']:.3f}"


def build_representation_report(run_dir) -> Report:
    from .build import load_suite_results

    return load_suite_results(run_dir, lambda r: isinstance(r, dict) and r.get("suite") == "representation",
                              what="'transferkit benchmark representation' (no suite: representation)",
                              command="'transferkit benchmark representation'", build=_sections)


def _sections(res: dict, d: Path) -> Report:
    s = res["summary"]
    rep = Report(title="transferkit representation benchmark", subtitle=f"benchmark representation · {d.resolve()}")
    intro = Section("Protocol")
    for part, text in (res.get("protocol") or {}).items():
        intro.add(Text(f"{part}: {text}."))
    intro.add(Text(f"Arguments: {res['arguments']}."))
    rep.sections.append(intro)
    if "ssl" in s:
        sec = Section("Self-supervised pretraining")
        rows = s["ssl"]
        metrics = [k for k in rows[0] if k not in ("init", "n_seeds", "train_seconds")]
        M = np.array([[r[m]["mean"] for m in metrics] for r in rows])
        sec.add(Image("ssl-accuracy", plots.heatmap(M, [r["init"] for r in rows], metrics,
                                                    title="frozen features: accuracy (mean over seeds)")))
        sec.add(Table(["init", *metrics, "train s"],
                      [[r["init"], *[_ms(r, m) for m in metrics], f"{r['train_seconds']['mean']:.0f}"] for r in rows]))
        goals = [g for g in s.get("ssl_goals", []) if g["gap_closed_fashion_10"] is not None]
        if goals:
            sec.add(Image("ssl-gap", plots.accuracy_bars([g["pretext"] for g in goals],
                                                         [g["gap_closed_fashion_10"] for g in goals],
                                                         [0.0] * len(goals),
                                                         title="share of the random-to-supervised gap closed "
                                                               "(Fashion-MNIST, 10 labels per class)")))
        rep.sections.append(sec)
    if "mtl" in s:
        sec = Section("Multi-task learning")
        for task in dict.fromkeys(r["task"] for r in s["mtl"]):
            rows = [r for r in s["mtl"] if r["task"] == task and r.get("delta_m")]
            if rows:
                sec.add(Image(f"mtl-{task}", plots.accuracy_bars([r["method"] for r in rows],
                                                                 [r["delta_m"]["mean"] for r in rows],
                                                                 [r["delta_m"]["std"] for r in rows],
                                                                 title=f"{task}: Delta-m% against single-task "
                                                                       "models (higher is better)")))
        keys = sorted({k for r in s["mtl"] for k in r if k not in ("task", "method", "n_seeds")})
        sec.add(Table(["task", "method", *keys], [[r["task"], r["method"], *[_ms(r, k) for k in keys]]
                                                  for r in s["mtl"]]))
        rep.sections.append(sec)
    if "cross_modal" in s:
        sec = Section("Image-text embedding")
        for task in dict.fromkeys(r["task"] for r in s["cross_modal"]):
            rows = [r for r in s["cross_modal"] if r["task"] == task and r.get("unseen_accuracy")]
            sec.add(Image(f"zero-shot-{task}", plots.accuracy_bars(
                [r["method"] for r in rows], [r["unseen_accuracy"]["mean"] for r in rows],
                [r["unseen_accuracy"]["std"] for r in rows],
                title=f"{task}: accuracy on the 5 unseen classes (chance 0.2; probe_10: 10 labels per class)")))
        keys = ["unseen_accuracy", "seen_accuracy", "i2t_recall1", "i2t_recall5", "t2i_recall1", "t2i_recall5"]
        sec.add(Table(["task", "method", *keys], [[r["task"], r["method"], *[_ms(r, k) for k in keys]]
                                                  for r in s["cross_modal"]]))
        rep.sections.append(sec)
    return rep


def write_representation_report(run_dir, formats=("html", "md")) -> dict[str, Path]:
    """``report.html`` / ``report.md`` of a representation benchmark directory."""
    from . import write_document

    return write_document(build_representation_report(run_dir), run_dir, formats)
