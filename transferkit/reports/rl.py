"""The report of ``transferkit benchmark rl-transfer`` (and of a ``transferkit rl`` run): the
protocol, the goals' verdicts, and per variant the learning curves of every method (mean ± std
over seeds of the evaluation return against target steps, the zero-shot returns as flat lines,
the threshold dashed), the distillation curves (the student's return against the states it was
trained on) and the table of Taylor & Stone's metrics. Built from ``results.json`` (a benchmark)
or ``result.json`` (a run) alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import plots
from .document import Image, Report, Section, Table, Text


def _ms(v, digits: int = 1) -> str:
    if not v or v.get("mean") is None:
        return "—"
    return f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}"


def _mean_curve(cells: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seeds' curves on the first seed's steps (linear interpolation): ``(steps, mean, std)``."""
    x = np.asarray(cells[0]["curve"]["steps"], dtype=float)
    Y = np.array([np.interp(x, c["curve"]["steps"], c["curve"]["returns"]) for c in cells])
    sd = Y.std(axis=0, ddof=1) if len(Y) > 1 else np.zeros(len(x))
    return x, Y.mean(axis=0), sd


def learning_curve_plot(cells: list[dict], *, budget: float, threshold: float | None, title: str = "",
                        exclude=("distill",)) -> bytes:
    """One line per method (mean ± std band over seeds) of evaluation return against target steps;
    a method evaluated once (zero-shot) is a flat dotted line over the budget."""
    fig = plots._figure(6.6, 3.8)
    ax = fig.subplots()
    methods = list(dict.fromkeys(c["method"] for c in cells if c.get("name", c["method"]) not in exclude))
    for i, m in enumerate(methods):
        mine = sorted((c for c in cells if c["method"] == m), key=lambda c: c["seed"])
        x, mean, sd = _mean_curve(mine)
        if len(x) == 1:
            ax.hlines(mean[0], 0, budget, colors=f"C{i}", linestyles=":", lw=1.6, label=f"{m} (no target step)")
            continue
        ax.plot(x, mean, "-", color=f"C{i}", lw=1.6, label=m)
        if len(mine) > 1:
            ax.fill_between(x, mean - sd, mean + sd, color=f"C{i}", alpha=0.15, lw=0)
    if threshold is not None:
        ax.axhline(threshold, color="0.4", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("target environment steps")
    ax.set_ylabel("evaluation return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(title, fontsize=10)
    return plots._png(fig)


def distill_plot(cells: list[dict], teacher: dict | None, title: str = "") -> bytes:
    """The student's return after each DAgger iteration against the states collected so far
    (mean ± std over seeds), per distillation row; the teacher's return dashed."""
    fig = plots._figure(5.6, 3.4)
    ax = fig.subplots()
    for i, m in enumerate(dict.fromkeys(c["method"] for c in cells)):
        mine = sorted((c for c in cells if c["method"] == m), key=lambda c: c["seed"])
        x, mean, sd = _mean_curve(mine)
        ax.plot(x, mean, "-o", ms=3, color=f"C{i}", label=m)
        if len(mine) > 1:
            ax.fill_between(x, mean - sd, mean + sd, color=f"C{i}", alpha=0.15, lw=0)
    if teacher is not None and teacher.get("mean") is not None:
        ax.axhline(teacher["mean"], color="0.4", ls="--", lw=1, label="teacher (fine-tuned)")
    ax.set_xlabel("states collected (all teachers)")
    ax.set_ylabel("student's evaluation return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    return plots._png(fig)


def _table(summary: list[dict]) -> Table:
    head = ["method", "initial return", "final return", "steps to threshold (reached)", "jumpstart", "area ratio",
            "verdict vs scratch", "retention"]
    rows = []
    for r in summary:
        vs = r.get("vs_scratch") or {}
        tt = r.get("time_to_threshold")
        ttt = "—" if tt is None else f"{tt['mean_censored']:.0f} ({tt['reached']}/{r['n_seeds']})"
        v = vs.get("verdict", {})
        verdict = (f"{v['verdict']} ({v['delta_mean']:+.1f} [{v['ci_low']:+.1f}, {v['ci_high']:+.1f}])"
                   if "ci_low" in v else v.get("verdict", "(baseline)" if r["name"] == "scratch" else "—"))
        kept = "; ".join(f"{t['teacher']}: " + ("—" if t["retention"]["mean"] is None else
                                                f"{100 * t['retention']['mean']:.0f}%")
                         for t in r.get("teachers", [])) or "—"
        rows.append([r["method"], _ms(r["zero_shot"]), _ms(r["final"]), ttt, _ms(vs.get("jumpstart")),
                     _ms(vs.get("transfer_ratio"), 2), verdict, kept])
    return Table(head, rows)


def _variant_section(title: str, part: dict) -> Section:
    sec = Section(title)
    cells, summary = part["cells"], part["summary"]
    sec.add(Text(f"{part['source']} -> {part['target']}; target budget {part['steps']} steps (source "
                 f"{part['source_steps']}); randomised source {part.get('randomized_source')}."))
    sec.add(Image(f"curves-{title}", learning_curve_plot(cells, budget=part["steps"], threshold=part.get("threshold"),
                                                         title=f"{part['target']}: learning curves")))
    dist = [c for c in cells if c.get("name") == "distill"]
    if dist:
        teacher = next((r.get("teacher_return") for r in summary if r["method"] == "distill"), None)
        sec.add(Image(f"distill-{title}", distill_plot(dist, teacher, title=f"{part['target']}: distillation")))
    sec.add(_table(summary))
    return sec


def _goal_texts(goals: dict) -> list[Text]:
    out = []
    f = goals.get("finetune_half_steps")
    if f:
        out.append(Text(f"Fine-tuning reaches the threshold in at most half the steps of scratch on >= 2 CartPole "
                        f"variants: {'met' if f['met'] else 'not met'} ({f['met_on']} of {len(f['variants'])}; "
                        + "; ".join(f"{v['part']}: {v['finetune_steps']:.0f} vs {v['scratch_steps']:.0f} steps, "
                                    f"{v['verdict']}" for v in f["variants"]) + ").", emphasis=True))
    r = goals.get("randomized_zero_shot")
    if r:
        out.append(Text(f"The randomised source's zero-shot return beats the plain source's: "
                        f"{'met' if r['met'] else 'not met'} ({r['met_on']} of {len(r['variants'])}; "
                        + "; ".join(f"{v['part']}: {v['randomized']:.1f} vs {v['plain']:.1f}" for v in r["variants"])
                        + ").", emphasis=True))
    d = goals.get("distill_95")
    if d:
        out.append(Text(f"Distillation into a smaller network keeps >= 95% of the fine-tuned agent's return: "
                        f"{'met' if d['met'] else 'not met'} ("
                        + "; ".join(f"{v['part']} {v['method']}: "
                                    + ("undefined" if v["retention"] is None else f"{100 * v['retention']:.0f}%")
                                    for v in d["variants"]) + ").", emphasis=True))
    return out


def _benchmark_sections(res: dict, d: Path) -> Report:
    rep = Report(title="transferkit rl-transfer benchmark", subtitle=f"benchmark rl-transfer · {d.resolve()}")
    intro = Section("Protocol")
    intro.add(Text(f"{res.get('protocol', '')}."), Text(f"Arguments: {res['arguments']}."))
    timing = res.get("timing") or {}
    if timing:
        intro.add(Table(["variant", "minutes", "of which training sources"],
                        [[p, f"{t['seconds'] / 60:.1f}", f"{t['source_seconds'] / 60:.1f}"]
                         for p, t in timing.items()]))
    rep.sections.append(intro)
    goals = Section("Goals")
    goals.add(*_goal_texts(res.get("goals") or {}))
    rep.sections.append(goals)
    for p, part in res["parts"].items():
        rep.sections.append(_variant_section(p, part))
    return rep


def _run_sections(res: dict, d: Path) -> Report:
    rep = Report(title=f"transferkit rl: {res['name']}", subtitle=f"rl · {d.resolve()}")
    rep.sections.append(Section("Run").add(Text(
        f"{res['algo']} from {res['source']} (randomised: {res.get('randomized_source')}); {len(res['seeds'])} "
        f"seeds; target budget {res['steps']} steps, source {res['source_steps']}; threshold {res['threshold']:g}.")))
    for t in res["targets"]:
        part = {"source": res["source"], "target": t, "steps": res["steps"], "source_steps": res["source_steps"],
                "randomized_source": res.get("randomized_source"), "threshold": res["threshold"],
                "cells": [c for c in res["cells"] if c["target"] == t],
                "summary": [r for r in res["summary"] if r["target"] == t]}
        rep.sections.append(_variant_section(t, part))
    return rep


def build_rl_report(run_dir) -> Report:
    """The report of a benchmark directory (``results.json``, suite ``rl-transfer``) or of a
    ``transferkit rl`` run directory (``result.json``)."""
    from ..errors import DataError
    from .build import load_suite_results

    d = Path(run_dir)
    if not (d / "results.json").is_file() and (d / "result.json").is_file():
        try:
            res = json.loads((d / "result.json").read_text())
            return _run_sections(res, d)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise DataError(f"{d / 'result.json'}: not the result of 'transferkit rl' ({type(exc).__name__}); "
                            "re-run the command that wrote it.") from None
    return load_suite_results(d, lambda r: isinstance(r, dict) and r.get("suite") == "rl-transfer",
                              what="'transferkit benchmark rl-transfer' (no suite: rl-transfer)",
                              command="'transferkit benchmark rl-transfer'", build=_benchmark_sections)


def write_rl_report(out_dir, formats=("html", "md")) -> dict[str, Path]:
    """``report.html`` / ``report.md`` (figures in ``report_files/``) of an rl-transfer benchmark
    or ``transferkit rl`` run directory."""
    from . import write_document

    return write_document(build_rl_report(out_dir), out_dir, formats)


__all__ = ["build_rl_report", "distill_plot", "learning_curve_plot", "write_rl_report"]
