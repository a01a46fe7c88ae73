"""The HTML and Markdown reports: self-contained, complete, and true to the run's numbers."""

import base64
import json
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import BENCHMARK, DIAGNOSE, STRATEGIES, make_experiment_dir

from transferkit.errors import ConfigError, DataError
from transferkit.reports import build_report, write_report
from transferkit.reports.build import confusion_from_runs
from transferkit.reports.document import Table


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (fails on anything that is not a PNG)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def section_titles(rep):
    return [s.title for s in rep.sections]


def test_html_is_self_contained_and_embeds_every_image(experiment_dir):
    html = (experiment_dir / "report.html").read_text()
    rep = build_report(experiment_dir)
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert len(srcs) == len(rep.images()) >= 5  # accuracy, 2 learning curves, 3 confusion, 3 t-SNE
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        w, h = png_size(base64.b64decode(src.split(",", 1)[1]))
        assert w > 50 and h > 50
    # nothing the page would fetch: no scripts, stylesheets, fonts or remote URLs
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)
    assert "http://" not in html and "https://" not in html


def test_tables_hold_the_numbers_of_results_json(experiment_dir):
    res = json.loads((experiment_dir / "results.json").read_text())
    html, md = (experiment_dir / "report.html").read_text(), (experiment_dir / "report.md").read_text()
    for key, s in res["summary"].items():
        cell = f"{s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f}"
        assert re.search(f"<td[^>]*>{key}</td><td[^>]*>{cell}</td>", html)
        assert f"| {key} | {cell} |" in md
    for r in res["runs"]:  # the per-seed table
        assert f"{r['accuracy']:.3f}" in md
    # the mean and std are the run's own (sample std over seeds), not recomputed differently
    fe = res["summary"]["feature_extraction"]
    assert fe["accuracy_mean"] == pytest.approx(STRATEGIES["feature_extraction"][0])
    assert fe["accuracy_std"] == pytest.approx(STRATEGIES["feature_extraction"][1])


def test_markdown_images_are_files_next_to_it(experiment_dir, assess_dir):
    md = (experiment_dir / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == len(build_report(experiment_dir).images())
    assert len(set(links)) == len(links)
    for rel in links:
        assert rel.startswith("report_files/") and rel.endswith(".png")
        w, h = png_size((experiment_dir / rel).read_bytes())
        assert w > 50 and h > 50
    assert "http://" not in md and "https://" not in md
    # regenerating removes figures that are no longer part of the report
    write_report(assess_dir, formats=["md"])
    (assess_dir / "report_files" / "stale.png").write_bytes(b"x")
    write_report(assess_dir, formats=["md"])
    assert not (assess_dir / "report_files" / "stale.png").exists()
    assert (assess_dir / "report_files" / "divergences.png").is_file()


def headings(md_path):
    return [line[3:] for line in md_path.read_text().splitlines() if line.startswith("## ")]


def test_sections_follow_what_the_directory_holds(experiment_dir, full_dir, assess_dir, tmp_path):
    exp = headings(experiment_dir / "report.md")
    assert exp == ["Configuration", "Results", "Learning curves", "Confusion matrices", "Feature space (t-SNE)"]
    full = headings(full_dir / "report.md")
    for t in ("Divergences", "Transferability (no training)", "Verdict", "Negative transfer", "Sample efficiency",
              "Forgetting", "Sharpness"):
        assert t in full
    # assess alone: no experiment sections
    titles = section_titles(build_report(assess_dir))
    assert titles == ["Assessment: source and target", "Divergences", "Transferability (no training)", "Verdict"]
    # diagnose with only the negative-transfer test: no curve
    dg = tmp_path / "diag"
    dg.mkdir()
    (dg / "diagnose.json").write_text(json.dumps({"negative_transfer": DIAGNOSE["negative_transfer"]}))
    titles = section_titles(build_report(dg))
    assert titles == ["Negative transfer"]
    # no predictions, features or histories: results only
    bare = tmp_path / "bare"
    bare.mkdir()
    make_experiment_dir(bare, seeds=(0,))
    for p in bare.rglob("*"):
        if p.name in ("predictions.npz", "features.npz", "metrics.jsonl"):
            p.unlink()
    assert section_titles(build_report(bare)) == ["Configuration", "Results"]


def test_diagnose_and_assess_numbers_reach_the_report(full_dir):
    md = (full_dir / "report.md").read_text()
    nt = DIAGNOSE["negative_transfer"]
    assert "finetune vs scratch: positive transfer (difference +0.393, 95% CI [+0.301, +0.485], 3 seeds)" in md
    assert "| source_only vs scratch | negative transfer | -0.078 |" in md
    assert nt["verdict"] in md
    assert "| 10 | 0.620 ± 0.020 | 0.380 ± 0.030 | 37.2 |" in md  # curve row k=10 (i=3)
    assert DIAGNOSE["sample_efficiency"]["headline"] in md
    assert "| mmd | 0.1643 | 0.005 |" in md
    assert "**forgetting**: 0.2400" in md
    assert "| finetune | 12.5 ± 1 | 11.5, 12.5, 13.5 | true |" in md
    assert "**transfer.steps**: 18, 20, 22" in md and "**speedup**: 3.5000" in md
    assert "| only 3 seeds |" in md


def test_diagnose_directory_includes_its_runs(tmp_path):
    """`transferkit diagnose` writes diagnose.json and keeps the experiment in negative_transfer/."""
    d = tmp_path / "diag"
    (d / "negative_transfer").mkdir(parents=True)
    make_experiment_dir(d / "negative_transfer", seeds=(0, 1))
    for p in d.rglob("features.npz"):
        p.unlink()
    (d / "diagnose.json").write_text(json.dumps({"name": "dg", "negative_transfer": DIAGNOSE["negative_transfer"]}))
    rep = build_report(d)
    assert rep.title == "transferkit report: dg"
    assert [(s.title, s.level) for s in rep.sections] == [
        ("Negative transfer", 2), ("Runs behind the negative-transfer test", 2), ("Configuration", 3),
        ("Results", 3), ("Learning curves", 3), ("Confusion matrices", 3)]


def test_benchmark_report(tmp_path):
    d = tmp_path / "bench"
    d.mkdir()
    (d / "results.json").write_text(json.dumps(BENCHMARK))
    rep = build_report(d)
    assert section_titles(rep) == ["Benchmark results"]
    table = next(b for b in rep.sections[0].blocks if isinstance(b, Table))
    assert table.head == ["method", "rot30", "invert"]
    assert table.rows == [["source_only", "0.441 ± 0.010", "0.789 ± 0.030"],
                          ["dann", "0.521 ± 0.020", "0.870 ± 0.040"]]


def test_confusion_matrix_matches_sklearn(experiment_dir):
    from sklearn.metrics import confusion_matrix

    dirs = sorted((experiment_dir / "finetune").glob("seed*"))
    cm, classes, n = confusion_from_runs(dirs)
    expected = sum(confusion_matrix(z["y_true"], z["y_pred"], labels=range(4))
                   for z in (np.load(p / "predictions.npz") for p in dirs))
    assert n == 3 and classes == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(cm, expected)


def test_shared_before_features_drawn_once(experiment_dir):
    md = (experiment_dir / "report.md").read_text()
    tsne = md[md.index("## Feature space"):]
    caps = re.findall(r"^_((?:before|after) adaptation.*)_$", tsne, flags=re.M)
    # before: shared by feature_extraction and finetune; after: scratch, finetune
    assert caps == ["before adaptation (pretrained backbone features): feature_extraction, finetune",
                    "after adaptation (fine-tuned backbone features): scratch",
                    "after adaptation (fine-tuned backbone features): finetune"]


def test_config_summary(experiment_dir):
    md = (experiment_dir / "report.md").read_text()
    assert "- **split**: 10 labels per class train; validation fraction of the rest 0.5" in md
    assert "- **seeds**: 0, 1, 2" in md and "- **backbone**: tiny_cnn" in md
    assert "- **strategy finetune**: finetune" in md


def test_nothing_reportable_is_a_clear_error(tmp_path, capsys):
    from transferkit.cli import main

    with pytest.raises(ConfigError, match="holds nothing transferkit can report on"):
        write_report(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        write_report(tmp_path / "missing")
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(DataError, match="results.json"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_report_regenerates(assess_dir, capsys):
    from transferkit.cli import main

    assert main(["report", str(assess_dir), "--format", "html"]) == 0
    assert "html: " in capsys.readouterr().out
    assert (assess_dir / "report.html").is_file() and not (assess_dir / "report.md").exists()


def test_plots_leave_matplotlib_state_alone():
    import matplotlib

    backend, rc = matplotlib.get_backend(), dict(matplotlib.rcParams)
    from transferkit.reports import plots

    png = plots.learning_curves([[{"epoch": 0, "train_loss": 1.0, "val_accuracy": 0.5},
                                  {"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.6}]])
    assert png_size(png)[0] > 0
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == rc
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_curve_keys_split_losses_from_accuracies():
    from transferkit.reports.plots import curve_keys

    loss, acc = curve_keys([[{"epoch": 0, "train_loss": 1, "val_loss": 1, "train_accuracy": 0.1, "cls": 2.0,
                              "dann": 0.7, "score": -1.0, "lr": 0.1, "epoch_time": 3.0, "flag": True}]])
    assert loss == ["train_loss", "val_loss", "cls", "dann"]
    assert acc == ["train_accuracy", "score"]


def test_import_transferkit_does_not_import_matplotlib():
    code = ("import sys, transferkit, transferkit.experiment, transferkit.reports, transferkit.cli.main; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_markdown_escapes_html_and_control_characters():
    """Class names, file names and messages come from the user's data: in report.md they are
    inert text (a Markdown viewer renders raw HTML)."""
    from transferkit.reports.document import KeyValues, Report, Section, Table, Text
    from transferkit.reports.markdown import render_markdown

    evil = "<img src=x onerror=alert(1)>\x1b[31m"
    rep = Report(title=evil, sections=[Section(evil).add(Text(evil), Table(head=["class"], rows=[[evil]]),
                                                         KeyValues([(evil, evil)]))])
    md, _ = render_markdown(rep)
    assert "<img" not in md and "\x1b" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md


def test_a_saturated_hscore_is_marked(assess_dir):
    """An H-score computed with no more samples than feature dimensions is K - 1 whatever the
    features; the report marks it instead of ranking backbones by it silently."""
    import json

    from transferkit.reports import write_report

    base = json.loads((assess_dir / "assess.json").read_text())
    for saturated in (True, False):
        res = json.loads(json.dumps(base))
        res["transferability"]["tiny_cnn"]["hscore"]["details"] = {"rank": 99, "saturated": saturated}
        (assess_dir / "assess.json").write_text(json.dumps(res))
        write_report(assess_dir, formats=("md",))
        md = (assess_dir / "report.md").read_text()
        assert ("9.0000*" in md and "* saturated" in md) is saturated, md
