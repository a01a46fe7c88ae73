"""The report of ``transferkit benchmark label-spaces``: its protocol, its tables, and figures
(accuracy and H-score bars per task, zero-shot accuracy per method and class-name embedding,
multi-source and domain-generalisation accuracy per target as heat maps, DG as the gain over
pooled ERM). Built from ``results.json`` alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import plots
from .document import Image, Report, Section, Table, Text


def _ms(cell: dict | None, key: str) -> str:
    v = (cell or {}).get(key)
    return "—" if not v else f"{v['mean']:.3f} ± {v['std']:.3f}"


def _bars(rows: list[dict], key: str, title: str) -> bytes:
    rows = [r for r in rows if r.get(key)]
    return plots.accuracy_bars([r["method"] for r in rows], [r[key]["mean"] for r in rows],
                               [r[key]["std"] for r in rows], title=title)


def build_label_spaces_report(run_dir) -> Report:
    from .build import load_suite_results

    return load_suite_results(run_dir, lambda r: isinstance(r, dict) and r.get("suite") == "label-spaces",
                              what="'transferkit benchmark label-spaces' (no suite: label-spaces)",
                              command="'transferkit benchmark label-spaces'", build=_sections)


def _sections(res: dict, d: Path) -> Report:
    s = res["summary"]
    rep = Report(title="transferkit label-spaces benchmark", subtitle=f"benchmark label-spaces · {d.resolve()}")
    intro = Section("Protocol")
    intro.add(Text(res["protocol"]), Text(f"Arguments: {res['arguments']}."))
    rep.sections.append(intro)
    for part, key, label in (("partial", "accuracy", "accuracy on the target's 5 classes"),
                             ("open_set", "h_score", "H-score")):
        if part not in s:
            continue
        sec = Section("Partial adaptation" if part == "partial" else "Open-set and universal adaptation")
        tasks = list(dict.fromkeys(r["task"] for r in s[part]))
        for task in tasks:
            rows = [r for r in s[part] if r["task"] == task]
            sec.add(Image(f"{part}-{task}", _bars(rows, key, f"{task}: {label} (mean ± std over seeds)")))
        cols = ["task", "method", *(["accuracy"] if part == "partial" else ["OS*", "UNK", "H-score"])]
        keys = ["accuracy"] if part == "partial" else ["os_star", "unk", "h_score"]
        sec.add(Table(cols, [[r["task"], r["method"], *[_ms(r, k) for k in keys]] for r in s[part]]))
        rep.sections.append(sec)
    if "zero_shot" in s:
        sec = Section("Zero-shot transfer (5 seen / 5 unseen classes per seed)")
        for task in dict.fromkeys(r["task"] for r in s["zero_shot"]):
            rows = [r for r in s["zero_shot"] if r["task"] == task]
            methods = list(dict.fromkeys(r["method"] for r in rows))
            embs = list(dict.fromkeys(r["embedding"] for r in rows))
            cell = {(r["method"], r["embedding"]): r for r in rows}
            M = np.array([[cell[(m, e)]["unseen_accuracy"]["mean"] if (m, e) in cell else np.nan for e in embs]
                          for m in methods])
            sec.add(Image(f"zero-shot-{task}", plots.heatmap(M, methods, embs,
                                                             title=f"{task}: unseen-class accuracy (chance 0.2)")))
        sec.add(Table(["task", "method", "embedding", "unseen acc", "GZSL H", "calibrated H"],
                      [[r["task"], r["method"], r["embedding"], _ms(r, "unseen_accuracy"), _ms(r, "gzsl_h"),
                        _ms(r, "cs_h")] for r in s["zero_shot"]]))
        rep.sections.append(sec)
    for part, title in (("multi_source", "Multi-source adaptation"), ("dg", "Domain generalisation")):
        if part not in s:
            continue
        sec = Section(title)
        rows = s[part]
        targets = list(dict.fromkeys(f"{r['task']}:{r['target']}" for r in rows))
        methods = list(dict.fromkeys(r["method"] for r in rows))
        cell = {(f"{r['task']}:{r['target']}", r["method"]): r["accuracy"]["mean"] for r in rows}
        M = np.array([[cell.get((t, m), np.nan) for m in methods] for t in targets])
        if part == "dg" and "erm" in methods:  # the gain over pooled ERM, the baseline DomainBed found hard to beat
            base = M[:, methods.index("erm")][:, None]
            others = [m for m in methods if m != "erm"]
            G = (M - base)[:, [methods.index(m) for m in others]]
            sec.add(Image("dg-gain", plots.heatmap(G, targets, others, title="accuracy minus pooled ERM's",
                                                   fmt="{:+.3f}")))
        else:
            sec.add(Image(f"{part}-accuracy", plots.heatmap(M, targets, methods, title="target test accuracy")))
        sec.add(Table(["task", "target", "method", "accuracy"],
                      [[r["task"], r["target"], r["method"], _ms(r, "accuracy")] for r in rows]))
        rep.sections.append(sec)
    return rep


def write_label_spaces_report(run_dir, formats=("html", "md")) -> dict[str, Path]:
    """``report.html`` / ``report.md`` of a label-spaces benchmark directory."""
    from . import write_document

    return write_document(build_label_spaces_report(run_dir), run_dir, formats)
