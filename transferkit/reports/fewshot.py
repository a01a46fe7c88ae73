"""The report of a few-shot run (``transferkit fewshot``) or of ``transferkit benchmark few-shot``.

Sections: the configuration (data, classes, encoder, protocol), the results table (test accuracy
mean ± 95% interval over the test episodes, meta-val accuracy, meta-training and test time), the
accuracy-vs-shots plot (one line per method, the interval as error bars; one panel per N-way), and
the per-class confusion matrix of the default method (the best meta-val accuracy) for each
setting, summed over its test episodes. A benchmark directory gets one such block per task and the
list of rows that beat SimpleShot with non-overlapping intervals.

Built from ``results.json`` alone, with the writers and figure helpers of the other reports
(:mod:`transferkit.reports.html`, :mod:`~transferkit.reports.markdown`, :mod:`~transferkit.reports.plots`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import plots
from .document import Image, KeyValues, Report, Section, Table, Text

#: ``results.json["kind"]`` of the two directories this module reports on.
KINDS = ("fewshot", "fewshot-benchmark")


def is_fewshot_results(res) -> bool:
    """Whether a parsed ``results.json`` was written by a few-shot run or the few-shot benchmark."""
    return isinstance(res, dict) and res.get("kind") in KINDS


# ---------------------------------------------------------------------------- figures
def accuracy_vs_shots(table: Sequence[dict], title: str = "") -> bytes:
    """Test accuracy against K (shots per class), one line per method with its 95% interval as
    error bars; one panel per N-way. ``table``: rows with ``method``, ``n_way``, ``k_shot``,
    ``accuracy_mean`` and ``ci95``."""
    ways = sorted({int(r["n_way"]) for r in table})
    methods = list(dict.fromkeys(r["method"] for r in table))
    fig = plots._figure(4.6 * len(ways) + 1.6, 3.6)
    axes = fig.subplots(1, len(ways), squeeze=False)[0]
    for ax, n in zip(axes, ways):
        for i, m in enumerate(methods):
            rs = sorted((r for r in table if r["method"] == m and int(r["n_way"]) == n), key=lambda r: r["k_shot"])
            if not rs:
                continue
            x = np.array([r["k_shot"] for r in rs], dtype=float)
            y = np.array([100 * r["accuracy_mean"] for r in rs])
            e = np.array([100 * (r["ci95"] or 0.0) for r in rs])
            ax.errorbar(x, y, yerr=e, fmt="-o", ms=4, capsize=3, lw=1.4, color=f"C{i % 10}", label=m)
        ks = sorted({int(r["k_shot"]) for r in table if int(r["n_way"]) == n})
        if ks and min(ks) > 0 and len(ks) > 1:
            ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.axhline(100.0 / n, color="grey", lw=0.8, ls=":", label=f"chance ({100 / n:.0f}%)")
        ax.set_xlabel("shots per class (K)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{n}-way", fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    if title:
        fig.suptitle(title, fontsize=11)
    return plots._png(fig)


# ---------------------------------------------------------------------------- sections
def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _pm(mean, ci) -> str:
    return "—" if mean is None else (f"{100 * mean:.2f} ± {100 * ci:.2f}" if ci is not None else f"{100 * mean:.2f}")


def _settings(res: dict) -> list[tuple[str, str]]:
    return [(f"{s['n_way']}way{s['k_shot']}shot", f"{s['n_way']}-way {s['k_shot']}-shot") for s in res["settings"]]


def results_table(res: dict, default: str | None) -> Table:
    settings = _settings(res)
    by = {(r["method"], r["setting"]): r for r in res["table"]}
    methods = list(dict.fromkeys(r["method"] for r in res["table"]))
    head = ["method"] + [f"{t} test %" for _, t in settings] + [f"{t} val %" for _, t in settings] + \
        ["meta-train s", "test s"]
    rows = []
    for m in methods:
        rs = [by.get((m, k)) for k, _ in settings]
        present = [r for r in rs if r is not None]
        rows.append([m + (" (default)" if m == default else "")]
                    + [_pm(r["accuracy_mean"], r["ci95"]) if r else "—" for r in rs]
                    + [_pct(r["val_accuracy_mean"]) if r else "—" for r in rs]
                    + [f"{np.mean([r['meta_train_seconds_mean'] for r in present]):.1f}" if present else "—",
                       f"{np.mean([r['test_seconds_mean'] for r in present]):.1f}" if present else "—"])
    return Table(head, rows, caption=f"test accuracy (%) mean ± 95% interval over {res.get('test_episodes')} test "
                                     "episodes per seed (all seeds pooled); val: meta-validation accuracy, which chose "
                                     "the default method; times are means per seed")


def confusion_images(res: dict, prefix: str = "") -> list[Image]:
    out = []
    for c in res.get("confusion") or []:
        title = f"{c['method']}, {c['setting']}"
        out.append(Image(f"{prefix}confusion-{c['method']}-{c['setting']}",
                         plots.confusion_matrix_plot(np.asarray(c["matrix"]), c["class_names"], title=title),
                         caption=f"per-class confusion of the default method {c['method']} over its test episodes "
                                 f"({c['setting']}; rows: true meta-test class, counts summed over episodes)"))
    return out


def run_sections(res: dict, *, title: str | None = None, level: int = 2, prefix: str = "") -> list[Section]:
    """The sections of one few-shot run's results (or one task of the benchmark)."""
    default = (res.get("default_method") or {}).get("label")
    head = Section(title or "Few-shot results", level=level)
    data = res.get("data") or {}
    items = [(k, str(v)) for k, v in data.items()]
    items += [("encoder", str(res.get("encoder"))), ("seeds", ", ".join(map(str, res.get("seeds", [])))),
              ("queries per class", str(res.get("q_query"))), ("test episodes per seed", str(res.get("test_episodes")))]
    for split, names in (res.get("classes") or {}).items():
        shown = ", ".join(map(str, names[:12])) + (f" ... ({len(names)})" if len(names) > 12 else f" ({len(names)})")
        items.append((f"meta-{split} classes", shown))
    head.add(KeyValues(items))
    head.add(results_table(res, default))
    if default is not None:
        d = res["default_method"]
        head.add(Text(f"default method: {default} (meta-val accuracy {100 * d['val_accuracy']:.2f}%): {d['how']}.",
                      emphasis=True))
    else:
        head.add(Text("no default method: " + str((res.get("default_method") or {}).get("how", "no meta-val classes"))))
    head.add(Image(f"{prefix}accuracy-vs-shots", accuracy_vs_shots(res["table"]),
                   caption="test accuracy against shots per class; error bars: 95% interval over the test episodes"))
    secs = [head]
    imgs = confusion_images(res, prefix)
    if imgs:
        secs.append(Section("Confusion of the default method", level=level + 1).add(*imgs))
    if res.get("protocol"):
        head.add(Text("protocol: " + res["protocol"]))
    return secs


def benchmark_sections(res: dict) -> list[Section]:
    """The few-shot benchmark: one block per task, then the rows that beat SimpleShot."""
    overview = Section("Few-shot benchmark")
    overview.add(KeyValues([("tasks", ", ".join(res["tasks"])), ("methods", ", ".join(res.get("methods", []))),
                            ("test episodes", str(res.get("test_episodes"))),
                            ("total time", f"{res.get('seconds', float('nan')) / 60:.1f} min")]))
    if res.get("anchors"):
        overview.add(Text(res["anchors"]))
    secs = [overview]
    for task, tres in res["tasks"].items():
        secs += run_sections(tres, title=f"Task {task}", level=2, prefix=f"{task}-")
    vs = res.get("versus_simpleshot")
    if vs is not None:
        s = Section("Against SimpleShot")
        s.add(Text("rows whose 95% interval lies entirely above SimpleShot's on the same task and setting "
                   "(non-overlapping intervals):"))
        s.add(Table(["task", "setting", "method", "accuracy %", "SimpleShot %", "verdict"],
                    [[r["task"], r["setting"], r["method"], _pm(r["accuracy"], r["ci95"]),
                      _pm(r["simpleshot"], r["simpleshot_ci95"]), r["verdict"]] for r in vs]))
        secs.append(s)
    return secs


def build_fewshot_report(run_dir) -> Report:
    from .build import load_suite_results

    def build(res, d):
        if res["kind"] == "fewshot":
            rep = Report(title=f"transferkit few-shot report: {res.get('name') or d.name}",
                         subtitle=f"fewshot · {d.resolve()}")
            rep.sections += run_sections(res)
        else:
            rep = Report(title="transferkit few-shot benchmark", subtitle=f"benchmark few-shot · {d.resolve()}")
            rep.sections += benchmark_sections(res)
        warnings = [w for w in res.get("warnings") or [] if isinstance(w, str)]
        if warnings:
            sec = Section("Warnings")
            sec.add(*[Text(w, warning=True) for w in warnings])
            rep.sections.insert(0, sec)
        return rep

    return load_suite_results(run_dir, is_fewshot_results, what="a few-shot run (no kind: fewshot)",
                              command="'transferkit fewshot' or 'transferkit benchmark few-shot'", build=build)


def write_fewshot_report(run_dir, formats=("html", "md")) -> dict[str, Path]:
    """Write ``report.html`` and/or ``report.md`` (figures in ``report_files/``) into a few-shot run
    or benchmark directory, with the same writers (and the same rules: only inside the
    directory, atomic files) as :func:`transferkit.reports.write_report`."""
    from . import FORMATS, write_document

    for f in formats:
        if f not in FORMATS:
            from ..errors import ConfigError

            raise ConfigError(f"report format {f!r} is not one of {', '.join(FORMATS)}.")
    return write_document(build_fewshot_report(Path(run_dir)), run_dir, formats)
