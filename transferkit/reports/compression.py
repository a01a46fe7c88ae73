"""The report of ``transferkit benchmark compress``: its protocol, per task a figure of accuracy
against latency (batch 64, as a ratio to the FP32 teacher) with one point per method, the table,
and the goals' verdicts. Built from ``results.json`` alone."""

from __future__ import annotations

from pathlib import Path

from . import plots
from .document import Image, Report, Section, Table, Text

#: Marker per family, so the students, the pruned teacher and the INT8 models read apart in grey print.
_MARKERS = {"teacher": "s", "student": "o"}


def _ms(cell: dict | None, key: str, digits: int = 3) -> str:
    v = (cell or {}).get(key)
    return "—" if not v else f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}"


def accuracy_latency_plot(rows: list[dict], title: str = "") -> bytes:
    """Test accuracy (mean ± std over seeds) against the batch-64 latency ratio to the FP32
    teacher (mean ± std), log x axis: up and to the left is better; the dashed line is the teacher."""
    fig = plots._figure(7.6, 4.0)
    ax = fig.subplots()
    for i, r in enumerate(rows):
        x, y = r["ratio_b64"], r["accuracy"]
        marker = _MARKERS.get(r["method"].split("_")[0], "D")
        face = "white" if "int8" in r["method"] else f"C{i}"
        ax.errorbar(x["mean"], y["mean"], xerr=x["std"], yerr=y["std"], fmt=marker, ms=7, color=f"C{i}",
                    mfc=face, mew=1.6, capsize=3, label=r["method"])
    teacher = next((r for r in rows if r["method"] == "teacher_fp32"), None)
    if teacher is not None:
        ax.axhline(teacher["accuracy"]["mean"], color="0.5", ls="--", lw=1)
    xs = [r["ratio_b64"]["mean"] for r in rows if r["ratio_b64"]["mean"] > 0]
    if xs and max(xs) / min(xs) > 5:  # students run at a few percent of the teacher's latency
        ax.set_xscale("log")
        ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0) if min(xs) / 2 <= t <= max(xs) * 2]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("latency at batch 64 / FP32 teacher's (lower is faster)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    # outside the axes: INT8 points sit on top of their FP32 originals, and labels there would overlap
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(title, fontsize=10)
    return plots._png(fig)


def build_compression_report(run_dir) -> Report:
    from .build import load_suite_results

    return load_suite_results(run_dir, lambda r: isinstance(r, dict) and r.get("suite") == "compress",
                              what="'transferkit benchmark compress' (no suite: compress)",
                              command="'transferkit benchmark compress'", build=_sections)


def _sections(res: dict, d: Path) -> Report:
    from ..compression import goal_lines

    s = res["summary"]
    rep = Report(title="transferkit compression benchmark", subtitle=f"benchmark compress · {d.resolve()}")
    intro = Section("Protocol")
    intro.add(Text(f"{res['protocol']}."), Text(f"Arguments: {res['arguments']}."))
    rep.sections.append(intro)
    for task in dict.fromkeys(r["task"] for r in s["table"]):
        rows = [r for r in s["table"] if r["task"] == task]
        sec = Section(f"{task}: accuracy, size and latency")
        sec.add(Image(f"accuracy-latency-{task}", accuracy_latency_plot(
            rows, title=f"{task}: accuracy against latency at batch 64 (mean ± std over seeds)")))
        sec.add(Table(["method", "accuracy", "params", "file bytes", "MACs", "latency b1 / teacher",
                       "latency b64 / teacher", "INT8 agreement"],
                      [[r["method"], _ms(r, "accuracy"), f"{r['params']['mean']:,.0f}",
                        f"{r['file_bytes']['mean']:,.0f}", f"{r['macs']['mean']:,.0f}", _ms(r, "ratio_b1", 2),
                        _ms(r, "ratio_b64", 2), _ms(r, "agreement")] for r in rows]))
        teacher = next((r for r in rows if r["method"] == "teacher_fp32" and "latency_b64" in r), None)
        if teacher is not None:
            sec.add(Text(f"FP32 teacher latency: {1e3 * teacher['latency_b1']['mean']:.1f} ms at batch 1, "
                         f"{1e3 * teacher['latency_b64']['mean']:.1f} ms at batch 64 (one torch thread)."))
        rep.sections.append(sec)
    if s.get("goals"):
        sec = Section("Goals")
        for line in goal_lines(s["goals"], res.get("info")):
            sec.add(Text(line.removeprefix("- ").replace("**", ""), emphasis=True))
        rep.sections.append(sec)
    return rep


def write_compression_report(run_dir, formats=("html", "md")) -> dict[str, Path]:
    """``report.html`` / ``report.md`` of a compress benchmark directory."""
    from . import write_document

    return write_document(build_compression_report(run_dir), run_dir, formats)
