"""The report of ``transferkit benchmark drift``: its tables, and the figures people would rather
look at than read (error against severity per test-time method, the continual stream's error per
pass, the error against the test batch size, and ECE and NLL against severity per uncertainty
method). Built from ``results.json`` alone."""

from __future__ import annotations

from pathlib import Path

from . import plots
from .document import Image, Report, Section, Table, Text


def _f(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def _curves(rows, xs, xname, methods, value="error_mean", std="error_std"):
    cell = {(r["method"], r[xname]): r for r in rows}
    return {m: ([cell[(m, x)][value] for x in xs], [cell[(m, x)].get(std, 0.0) or 0.0 for x in xs])
            for m in methods if all((m, x) in cell for x in xs)}


def build_drift_report(run_dir) -> Report:
    from .build import load_suite_results

    return load_suite_results(run_dir, lambda r: isinstance(r, dict) and r.get("suite") == "drift",
                              what="'transferkit benchmark drift' (no suite: drift)",
                              command="'transferkit benchmark drift'", build=_sections)


def _sections(res: dict, d: Path) -> Report:
    from ..drift import BATCH_METHODS, CONTINUAL_METHODS, SEVERITIES, TTA_ROWS, UNC_ROWS, source_free_table

    s = res["summary"]
    rep = Report(title="transferkit drift benchmark", subtitle=f"benchmark drift · {d.resolve()}")
    intro = Section("Protocol")
    intro.add(Text(res["protocol"]), Text(f"Arguments: {res['arguments']}; source model: {res['source_model']}."))
    rep.sections.append(intro)
    if "source_free" in s:
        sec = Section("Source-free digits")
        tasks, rows = source_free_table(s)
        sec.add(Table(["method", *tasks], rows, "test accuracy, mean ± std over seeds"))
        if s.get("shot_gain"):
            sec.add(Text("SHOT over source-only: " + ", ".join(f"{t} {g:+.3f}" for t, g in s["shot_gain"].items()),
                         emphasis=True))
        rep.sections.append(sec)
    if "corruptions" in s:
        sec = Section("Fashion-MNIST-C: error against severity")
        curves = _curves(s["corruptions"], SEVERITIES, "severity", TTA_ROWS)
        fig = plots.line_plot(SEVERITIES, curves, xlabel="severity", ylabel="mean error (13 corruptions)",
                              title="test-time adaptation, each cell from the source model")
        sec.add(Image("sweep", fig))
        cell = {(r["severity"], r["method"]): r for r in s["corruptions"]}
        sec.add(Table(["method", *[f"sev {v}" for v in SEVERITIES]],
                      [[m, *[f"{cell[(v, m)]['error_mean']:.3f} ± {cell[(v, m)]['error_std']:.3f}"
                             for v in SEVERITIES]] for m in TTA_ROWS if all((v, m) in cell for v in SEVERITIES)]))
        rep.sections.append(sec)
    if "full_stream" in s:
        sec = Section("TENT's protocol: severity 5, the whole test set per corruption")
        sec.add(Table(["method", "mean error"], [[r["method"], f"{r['error_mean']:.3f} ± {r['error_std']:.3f}"]
                                                  for r in s["full_stream"]]))
        if "tent_order_full_stream" in s:
            sec.add(Text(f"Ordered source > bn_adapt > tent: {s['tent_order_full_stream']}", emphasis=True))
        rep.sections.append(sec)
    if "continual" in s:
        sec = Section("Continual stream: error per pass")
        passes = sorted({r["pass"] for r in s["continual"]})
        curves = _curves(s["continual"], passes, "pass", CONTINUAL_METHODS)
        sec.add(Image("continual", plots.line_plot(passes, curves, xlabel="pass over the 13 corruptions (severity 5)",
                                                   ylabel="mean error", title="never reset")))
        rep.sections.append(sec)
    if "batch_size" in s:
        sec = Section("Batch size")
        sizes = sorted({r["batch_size"] for r in s["batch_size"]})
        curves = _curves(s["batch_size"], sizes, "batch_size", BATCH_METHODS)
        fig = plots.line_plot(sizes, curves, xlabel="test batch size", ylabel="mean error (sev 5)",
                              title="batch size", log_x=True)
        sec.add(Image("batch-size", fig))
        rep.sections.append(sec)
    if "uncertainty" in s:
        sec = Section("Uncertainty of the source model under shift")
        levels = (0, *SEVERITIES)
        for metric, label in (("ece", "ECE"), ("nll", "NLL")):
            curves = _curves(s["uncertainty"], levels, "severity", UNC_ROWS, value=metric, std=metric + "_std")
            sec.add(Image(f"uncertainty-{metric}", plots.line_plot(levels, curves, xlabel="severity (0: clean)",
                                                                   ylabel=label, title=f"{label} against severity")))
        cell = {(r["severity"], r["method"]): r for r in s["uncertainty"]}
        sec.add(Table(["method", *[f"{'clean' if v == 0 else f'sev {v}'} ECE / NLL" for v in levels], "OOD AUROC"],
                      [[m, *[f"{cell[(v, m)]['ece']:.3f} / {cell[(v, m)]['nll']:.3f}" for v in levels],
                        _f(cell[(0, m)].get("ood_auroc"))] for m in UNC_ROWS if all((v, m) in cell for v in levels)]))
        rep.sections.append(sec)
    return rep


def write_drift_report(run_dir, formats=("html", "md")) -> dict[str, Path]:
    """``report.html`` / ``report.md`` of a drift benchmark directory (see :func:`build_drift_report`)."""
    from . import write_document

    return write_document(build_drift_report(run_dir), run_dir, formats)
