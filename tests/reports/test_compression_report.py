"""The compress benchmark's report: built from results.json alone, a figure of accuracy against latency per task."""

import json

import pytest

from transferkit import compression as C
from transferkit.cli import main
from transferkit.errors import DataError
from transferkit.reports.compression import accuracy_latency_plot, build_compression_report, write_compression_report


def _results():
    rows = []
    for task in ("fashion", "digits"):
        for i, m in enumerate(C.METHODS):
            for seed in (0, 1):
                rows.append({"task": task, "method": m, "seed": seed, "accuracy": 0.6 + 0.02 * i + 0.01 * seed,
                             "params": 1000 * (i + 1), "file_bytes": 4000 * (i + 1), "macs": 10_000 * (i + 1),
                             "ratio_b1": 1.0 if i == 0 else 0.5, "ratio_b64": 1.0 if i == 0 else 0.05 * i,
                             "latency_b1": 0.01, "latency_b64": 0.1, **({"agreement": 0.97} if "int8" in m else {})})
    res = {"suite": "compress", "arguments": {"parts": ["fashion", "digits"], "seeds": 2, "epochs": 1},
           "protocol": C.PROTOCOL, "cells": rows, "info": []}
    res["summary"] = C.summarize(res)
    return res


def test_the_report_has_a_figure_and_a_table_per_task_and_the_goals(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    rep = build_compression_report(tmp_path)
    assert [s.title for s in rep.sections] == ["Protocol", "fashion: accuracy, size and latency",
                                               "digits: accuracy, size and latency", "Goals"]
    paths = write_compression_report(tmp_path)
    assert set(paths) == {"html", "md"} and paths["html"].is_file()
    figs = sorted(p.name for p in (tmp_path / "report_files").iterdir())
    assert figs == ["accuracy-latency-digits.png", "accuracy-latency-fashion.png"]
    assert all((tmp_path / "report_files" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figs)
    md = paths["md"].read_text()
    # teacher_int8 is method 5: accuracies 0.70 and 0.71, latency ratio 0.25 at batch 64
    row = "| teacher_int8 | 0.705 ± 0.007 | 6,000 | 24,000 | 60,000 | 0.50 ± 0.00 | 0.25 ± 0.00 | 0.970 ± 0.000 |"
    assert row in md
    assert "report_files/accuracy-latency-fashion" in md and "INT8 teacher" in md and "**met**" not in md
    assert main(["report", str(tmp_path), "--format", "md"]) == 0  # the CLI finds the writer by the suite


def test_the_plot_is_a_png_with_one_point_per_method():
    rows = _results()["summary"]["table"][:3]
    png = accuracy_latency_plot(rows, title="x")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_other_results_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="has no results.json"):
        build_compression_report(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"suite": "drift"}))
    with pytest.raises(DataError, match="not the results of 'transferkit benchmark compress'"):
        build_compression_report(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"suite": "compress", "summary": {"table": [{}]}}))
    with pytest.raises(DataError, match=r"unexpected content \(KeyError"):
        build_compression_report(tmp_path)
