"""The label-spaces benchmark's report: built from results.json alone, figures per part."""

import json

import pytest

from transferkit import labelspaces as L
from transferkit.cli import main
from transferkit.errors import DataError
from transferkit.reports.labelspaces import build_label_spaces_report


def _results():
    cells = {
        "partial": [{"task": "digits", "method": m, "seed": s, "accuracy": a}
                    for m, accs in (("source_only", (0.5, 0.6)), ("pada", (0.6, 0.7))) for s, a in enumerate(accs)],
        "open_set": [{"task": "fashion", "method": m, "seed": 0, "os": 0.5, "os_star": 0.6, "unk": u, "h_score": h}
                     for m, u, h in (("threshold", 0.2, 0.3), ("osbp", 0.5, 0.55))],
        "zero_shot": [{"task": "fashion", "method": m, "embedding": e, "seed": 0, "unseen_accuracy": 0.3,
                       "gzsl_seen": 0.8, "gzsl_unseen": 0.0, "gzsl_h": 0.0, "cs_seen": 0.5, "cs_unseen": 0.2,
                       "cs_h": 0.28} for m in ("eszsl", "conse") for e in ("glove", "minilm")],
        "multi_source": [{"task": "rot", "target": "rot90", "method": m, "seed": 0, "accuracy": a, "best": 0.7}
                         for m, a in (("pooled", 0.5), ("m3sda", 0.6))],
        "dg": [{"task": "rot", "target": "rot90", "method": m, "seed": 0, "accuracy": a}
               for m, a in (("erm", 0.5), ("irm", 0.52))],
    }
    res = {"suite": "label-spaces", "arguments": {"parts": list(L.PARTS), "seeds": 2, "epochs": 1},
           "protocol": L.PROTOCOL, **cells}
    res["summary"] = L.summarize(res)
    return res


def test_the_report_has_a_section_and_figures_per_part(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_results()))
    rep = build_label_spaces_report(tmp_path)
    titles = [s.title for s in rep.sections]
    assert titles == ["Protocol", "Partial adaptation", "Open-set and universal adaptation",
                      "Zero-shot transfer (5 seen / 5 unseen classes per seed)", "Multi-source adaptation",
                      "Domain generalisation"]
    assert main(["report", str(tmp_path)]) == 0
    figs = sorted(p.name for p in (tmp_path / "report_files").iterdir())
    assert figs == ["dg-gain.png", "multi-source-accuracy.png", "open-set-fashion.png", "partial-digits.png",
                    "zero-shot-fashion.png"]
    md = (tmp_path / "report.md").read_text()
    assert "| digits | pada | 0.650 ± 0.071 |" in md


def test_other_results_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="has no results.json"):
        build_label_spaces_report(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"suite": "drift"}))
    with pytest.raises(DataError, match="not the results of 'transferkit benchmark label-spaces'"):
        build_label_spaces_report(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"suite": "label-spaces", "summary": {"partial": [{}]}}))
    with pytest.raises(DataError, match=r"unexpected content \(KeyError"):
        build_label_spaces_report(tmp_path)
