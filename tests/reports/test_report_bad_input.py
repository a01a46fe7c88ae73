"""``write_report`` on damaged or hostile run directories: one DataError/ConfigError naming the
file and what to do (never a traceback, never unpickling), warnings shown first, and nothing
written outside the run directory."""

import json
import os
import pickle
import shutil

import numpy as np
import pytest
from conftest import make_experiment_dir

from transferkit.errors import ConfigError, DataError
from transferkit.reports import build_report, write_report
from transferkit.artifacts import load_npz


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.fixture
def run(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    make_experiment_dir(d, seeds=(0,), n_test=20, n_feat=20)
    return d


def _results(d):
    return json.loads((d / "results.json").read_text())


def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_warnings_are_shown_first_in_html_and_markdown(run):
    res = _results(run)
    res["warnings"] = ["seeds [0, 0]: the same run twice", "target has one class: accuracy 1.000 is meaningless"]
    (run / "results.json").write_text(json.dumps(res))
    rep = build_report(run)
    assert rep.sections[0].title == "Warnings"
    paths = write_report(run)
    html, md = paths["html"].read_text(), paths["md"].read_text()
    assert html.index('class="warning"') < html.index('id="results"')
    assert "<strong>warning:</strong> seeds [0, 0]: the same run twice" in html
    assert "> **warning:** target has one class: accuracy 1.000 is meaningless" in md
    assert md.index("## Warnings") < md.index("## Results")


def test_no_warnings_no_section(run):
    assert "Warnings" not in [s.title for s in build_report(run).sections]


@pytest.mark.parametrize("change,match", [
    (lambda r: "not json {", r"results\.json' \(.*\); the run may have been interrupted"),
    (lambda r: [1], r"results\.json: expected a JSON object, got list"),
    (lambda r: {**r, "summary": [1]}, r"'summary' must be a mapping"),
    (lambda r: {**r, "runs": {"a": 1}}, r"'runs' must be a list"),
    (lambda r: {**r, "runs": [{"strategy": "scratch", "seed": "zero"}]}, r"runs\[0\]\['seed'\] must be an integer"),
    (lambda r: {**r, "summary": {"scratch": {**r["summary"]["scratch"], "accuracy_std": None}}},
     r"summary\['scratch'\]\['accuracy_std'\] must be a number, got None"),
    (lambda r: {"summary": r["summary"]}, r"results\.json: has no 'runs'"),
    (lambda r: {"name": "x"}, r"has no 'summary' and 'runs' \(a run's results\) and no 'rows'"),
    (lambda r: {**r, "warnings": "careful"}, r"'warnings' must be a list of strings"),
    (lambda r: {"rows": [1, 2]}, r"'rows' must be a list of mappings"),
    (lambda r: {"rows": [{"task": "a"}]}, r"results\.json: unexpected content \(KeyError"),
])
def test_malformed_results_json(run, change, match):
    new = change(_results(run))
    (run / "results.json").write_text(new if isinstance(new, str) else json.dumps(new))
    before = _snapshot(run)
    with pytest.raises(DataError, match=match) as exc:
        write_report(run)
    assert "\n" not in str(exc.value)
    assert _snapshot(run) == before


@pytest.mark.parametrize("name,data,match", [
    ("diagnose.json", [1], r"diagnose\.json: expected a JSON object"),
    ("assess.json", {"divergences": {"mmd": 3}}, r"assess\.json: unexpected content \(AttributeError"),
    ("diagnose.json", {"negative_transfer": {"verdict": "x"}}, r"diagnose\.json: unexpected content \(KeyError"),
])
def test_malformed_assess_and_diagnose_json(tmp_path, name, data, match):
    (tmp_path / name).write_text(json.dumps(data))
    with pytest.raises(DataError, match=match + r".*re-run the command that wrote it"):
        build_report(tmp_path)


def test_pickled_predictions_are_refused_not_unpickled(run, monkeypatch):
    monkeypatch.chdir(run)
    (run / "scratch" / "seed0" / "predictions.npz").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DataError, match=r"predictions\.npz: is a pickle, not an \.npz archive"):
        build_report(run)
    arr = np.empty(2, dtype=object)
    arr[:] = [Evil(), Evil()]
    np.savez(run / "scratch" / "seed0" / "predictions.npz", y_true=arr, y_pred=np.zeros(2, int), classes=np.array([]))
    with pytest.raises(DataError, match=r"holds pickled objects, which transferkit never loads"):
        build_report(run)
    assert not (run / "pwned.txt").exists()


@pytest.mark.parametrize("arrays,match", [
    ({"y_true": np.zeros((2, 2), int), "y_pred": np.zeros((2, 2), int), "classes": np.array(["a"])},
     r"must be integer label vectors of one length"),
    ({"y_true": np.zeros(3), "y_pred": np.zeros(3, int), "classes": np.array(["a"])}, r"integer label vectors"),
    ({"y_true": np.array([0, -5]), "y_pred": np.array([0, 0]), "classes": np.array(["a"])}, r"labels must lie in"),
    ({"y_true": np.array([0, 10**9]), "y_pred": np.array([0, 0]), "classes": np.array(["a"])}, r"labels must lie in"),
    ({"y_pred": np.zeros(2, int), "classes": np.array(["a"])}, r"has no 'y_true'"),
])
def test_malformed_predictions(run, arrays, match):
    np.savez(run / "scratch" / "seed0" / "predictions.npz", **arrays)
    with pytest.raises(DataError, match=r"predictions\.npz: .*" + match):
        build_report(run)


@pytest.mark.parametrize("arrays,match", [
    ({"after_target": np.zeros(5, np.float32), "y_target": np.zeros(5, int)}, r"after_target must be a non-empty 2-D"),
    ({"after_target": np.zeros((5, 2), np.float32), "y_target": np.zeros(4, int)}, r"has 5 rows but its labels"),
    ({"after_target": np.full((5, 2), np.inf, np.float32), "y_target": np.zeros(5, int)}, r"finite floats"),
    ({"after_target": np.zeros((5, 2), np.float32), "after_source": np.zeros((5, 3), np.float32),
      "y_target": np.zeros(5, int), "y_source": np.zeros(5, int)}, r"differ in width \(3 vs 2\)"),
    ({"after_target": np.zeros((5, 2), np.float32)}, r"has no 'y_target'"),
])
def test_malformed_features(run, arrays, match):
    np.savez(run / "scratch" / "seed0" / "features.npz", **arrays)
    with pytest.raises(DataError, match=r"features\.npz: .*" + match):
        build_report(run)


def test_damaged_npz_files(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    p.write_bytes(p.read_bytes()[:30])
    with pytest.raises(DataError, match=r"x\.npz: is damaged or not an \.npz archive.*delete it and re-run"):
        load_npz(p)
    np.save(tmp_path / "y.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"is a single \.npy array"):
        load_npz(tmp_path / "y.npy")


def test_the_report_reads_and_writes_only_inside_the_run_dir(run, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.png").write_bytes(b"precious")
    # a results.json naming run folders elsewhere: those are not read
    res = _results(run)
    shutil.rmtree(run / "scratch")
    np.savez(outside / "predictions.npz", y_true=np.zeros((2, 2)))  # would fail if it were read
    res["runs"] = [dict(r, run_dir=str(outside)) if r["strategy"] == "scratch" else r for r in res["runs"]]
    (run / "results.json").write_text(json.dumps(res))
    before = _snapshot(outside)
    write_report(run)
    assert _snapshot(outside) == before
    # report_files as a link to a folder elsewhere: refused before anything is deleted or written
    shutil.rmtree(run / "report_files")
    (run / "report_files").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match=r"report_files is a symbolic link; a report writes only inside its run"):
        write_report(run)
    assert _snapshot(outside) == before
    (run / "report_files").unlink()
    (run / "report.html").unlink()
    (run / "report.html").symlink_to(outside / "keep.png")
    with pytest.raises(ConfigError, match=r"report\.html is a symbolic link"):
        write_report(run, formats=["html"])
    assert _snapshot(outside) == before


def test_a_file_is_not_a_run_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=r"is a file, not a run directory"):
        build_report(tmp_path / "f")


def test_a_damaged_config_yaml_only_skips_the_configuration_details(run):
    (run / "config.yaml").write_text("a: [" * 100 + "\n")
    rep = build_report(run)
    assert rep.sections[0].title == "Configuration"
