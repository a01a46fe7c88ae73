"""Bad input through the CLI, second table: the config file and YAML, config values (seeds,
names that become folders, types, finiteness), backbones and their weights, ``report`` on a
damaged run directory, and ``assess`` arguments.

Each case must exit 2 with one line naming the problem and the fix, and leave every file under
the test's folder byte-identical (see ``_badinput.check_case``).
"""

import json
import pickle

import numpy as np
import pytest
import yaml

from _badinput import BASE, Evil, _cfg, _run, _weights, check_case, existing  # noqa: F401


def _yaml(t, text: str) -> str:
    return _cfg(t, text=text)


def _bomb() -> str:
    """A "billion laughs": 9 levels of 9 aliases each, a few hundred bytes for 9^9 values."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\ntarget: digits\n"


def _strategy(t, **item):
    return _run(t, _cfg(t, strategies=[{"name": "scratch", "epochs": 1, **item}]))


def _backbone(t, **bb):
    return _run(t, _cfg(t, backbone={"name": "tiny_cnn", "image_size": 16, **bb}))


def _file_weights(t, kind: str) -> str:
    """A ``file:`` backbone: ``shape`` (tiny_cnn saved with width 8 but no width in the
    metadata), ``self`` (its metadata names the file itself), ``cycle`` (a -> b -> a)."""
    from safetensors.torch import save_file

    from transferkit.backbones import create_backbone

    state = create_backbone("tiny_cnn", width=8 if kind == "shape" else 16, seed=0).state_dict()
    if kind == "shape":
        p = t / "narrow.safetensors"
        save_file(state, str(p), metadata={"transferkit.backbone": "tiny_cnn"})
    elif kind == "self":
        p = t / "self.safetensors"
        save_file(state, str(p), metadata={"transferkit.backbone": f"file:{p}"})
    else:
        p, q = t / "a.safetensors", t / "b.safetensors"
        save_file(state, str(p), metadata={"transferkit.backbone": f"file:{q}"})
        save_file(state, str(q), metadata={"transferkit.backbone": f"file:{p}"})
    return f"file:{p}"


# ------------------------------------------------------------------------------- report helpers
GOOD_SUMMARY = {"scratch": {"accuracy_mean": 0.5, "accuracy_std": 0.0, "train_time_mean": 1.0,
                            "trainable_params": 10, "n_seeds": 1}}
GOOD_RESULTS = {"name": "bad", "summary": GOOD_SUMMARY, "runs": [{"strategy": "scratch", "seed": 0, "accuracy": 0.5}],
                "seeds": [0]}


def _rundir(t, results=None, *, text: str | None = None, files: dict | None = None) -> list:
    """``report DIR`` on a run directory holding ``results`` (or raw ``text``) and ``files``."""
    d = t / "damaged"
    (d / "scratch" / "seed0").mkdir(parents=True)
    (d / "results.json").write_text(text if text is not None else json.dumps(results))
    for rel, data in (files or {}).items():
        (d / rel).write_bytes(data)
    return ["report", str(d)]


def _npz_bytes(t, **arrays) -> bytes:
    p = t / "tmp.npz"
    np.savez(p, **arrays)
    data = p.read_bytes()
    p.unlink()
    return data


PREDICTIONS = "scratch/seed0/predictions.npz"
FEATURES = "scratch/seed0/features.npz"


def _assess(t, *extra) -> list:
    return ["assess", "--source", "digits:subset=0/2,size=8", "--target", "digits:subset=1/2,size=8",
            "--backbone", "none", "--out", str(t / "assess-out"), "--no-report", *extra]


CASES = {
    # --- YAML: bounded, strict, one line
    "YAML alias bomb": lambda t: (
        _run(t, _yaml(t, _bomb())),
        ["exp.yaml", "expands to more than", "write the values out"]),
    "YAML nested 50,000 deep": lambda t: (
        _run(t, _yaml(t, "target: digits\nsplit: " + "[" * 50_000 + "]" * 50_000 + "\n")),
        ["exp.yaml", "nested deeper than 64 levels", "flatten it"]),
    "YAML mapping nested 50,000 deep": lambda t: (
        _run(t, _yaml(t, "target: digits\nsplit: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n")),
        ["nested deeper than", "flatten it"]),
    "YAML alias inside itself": lambda t: (
        _run(t, _yaml(t, "target: digits\nstrategies: &s [scratch, *s]\n")),
        ["alias *s", "contains itself", "write the values out"]),
    "YAML duplicate key": lambda t: (
        _run(t, _yaml(t, "target: digits\nseeds: [0]\nprogress: false\nseeds: [1]\n")),
        ["duplicate key 'seeds' at line 4", "first at line 2", "keep one of them"]),
    "YAML duplicate nested key": lambda t: (
        _run(t, _yaml(t, "target: digits\nsplit: {labels_per_class: 3, labels_per_class: 5}\n")),
        ["duplicate key 'labels_per_class' at line 2", "keep one of them"]),
    "YAML python tag": lambda t: (
        _run(t, _yaml(t, "target: !!python/object/apply:os.system ['echo pwned > pwned.txt']\n")),
        ["python/object/apply", "only plain YAML data"]),
    "YAML control character": lambda t: (
        _run(t, _yaml(t, "target: digits\x07\n")),
        ["control character #x0007", "remove it"]),
    "config file not UTF-8": lambda t: (
        _run(t, str((t / "exp.yaml").write_bytes("target: digits\nname: caf\xe9\n".encode("latin-1")) and t / "exp.yaml")),
        ["exp.yaml", "is not UTF-8 text", "byte 0xe9", "save it as UTF-8"]),
    "config file is a directory": lambda t: (
        _run(t, str((t / "conf.yaml").mkdir() or t / "conf.yaml")),
        ["conf.yaml' is a directory", "give the path of the YAML file"]),
    "config file too large": lambda t: (
        _run(t, _yaml(t, "target: digits\n" + "#" * (1 << 20) + "\n")),
        ["exp.yaml' is", "bytes", "at most 1,048,576 bytes"]),
    "--set with a YAML syntax error": lambda t: (
        _run(t, _cfg(t), "--set", "strategies=[scratch"),
        ["--set 'strategies=[scratch'", "YAML syntax error", "fix the value after '='"]),
    "--set nested 1000 deep": lambda t: (
        _run(t, _cfg(t), "--set", "name=" + "[" * 1000 + "]" * 1000),
        ["--set 'name=[[[", "nested deeper than", "flatten it"]),
    "--set with an empty key part": lambda t: (
        _run(t, _cfg(t), "--set", "split..labels_per_class=5"),
        ["--set 'split..labels_per_class=5'", "empty part", "split.labels_per_class=5"]),
    "--set through a non-mapping": lambda t: (
        _run(t, _cfg(t), "--set", "seeds.x=1"),
        ["--set 'seeds.x=1'", "'seeds' is not a mapping"]),
    # --- seeds
    "negative seed": lambda t: (
        _run(t, _cfg(t, seeds=[-1])),
        ["seeds[0]=-1 is out of range", "0 <= seed < 2**32"]),
    "duplicate seeds": lambda t: (
        _run(t, _cfg(t, seeds=[0, 0])),
        ["seeds lists seed 0 more than once", "give distinct seeds"]),
    "bool seed": lambda t: (
        _run(t, _cfg(t, seeds=[True])),
        ["seeds[0]=True", "whole number 0 <= seed < 2**32"]),
    "seed too large": lambda t: (
        _run(t, _cfg(t, seeds=[2**32])),
        ["seeds[0]=4294967296 is out of range", "0 <= seed < 2**32"]),
    "a million seeds": lambda t: (
        _run(t, _cfg(t, seeds=10**6)),
        ["seeds must be <= 10000"]),
    "negative strategy seed": lambda t: (
        _strategy(t, seed=-5),
        ["strategies[0].seed must be >= 0, got -5"]),
    # --- names that become folders
    "label ../..": lambda t: (
        _strategy(t, label="../.."),
        ["strategies[0].label='../..'", "not a safe name", "letters, digits"]),
    "absolute label": lambda t: (
        _strategy(t, label=str(t / "elsewhere")),
        ["strategies[0].label=", "contains '/'", "it becomes a folder name"]),
    "label a/b": lambda t: (
        _strategy(t, label="a/b"),
        ["strategies[0].label='a/b'", "contains '/'"]),
    "hidden label": lambda t: (
        _strategy(t, label=".hidden"),
        ["strategies[0].label='.hidden'", "starts with '.'", "not starting with '.' or '-'"]),
    "label ..": lambda t: (
        _strategy(t, label=".."),
        ["strategies[0].label='..'", "not a safe name"]),
    "empty label": lambda t: (
        _strategy(t, label=""),
        ["strategies[0].label is empty", "letters, digits"]),
    "label with a control character": lambda t: (
        _strategy(t, label="a\x1bb"),
        ["strategies[0].label=", "not a safe name", "letters, digits"]),
    "label of 500 characters": lambda t: (
        _strategy(t, label="x" * 500),
        ["is 500 characters long", "1 to 100"]),
    "label that is a number": lambda t: (
        _strategy(t, label=7),
        ["strategies[0].label=7 must be a string"]),
    "experiment name with a path": lambda t: (
        _run(t, _cfg(t, name="../../escape")),
        ["name='../../escape'", "not a safe name"]),
    # --- types, finiteness, ranges of the other fields
    "infinite learning rate": lambda t: (
        _strategy(t, lr=float("inf")),
        ["strategies[0].lr=inf is not a finite number", "finite value"]),
    "NaN deep in a strategy": lambda t: (
        _strategy(t, params={"weight_decay": float("nan")}),
        ["weight_decay=nan is not a finite number"]),
    "lr 1e400 as a YAML string": lambda t: (
        _run(t, _yaml(t, "target: digits\nstrategies: [{name: scratch, lr: 1e400}]\n")),
        ["strategies[0].lr must be a finite number, got inf"]),
    "pretrained not a bool": lambda t: (
        _backbone(t, pretrained="maybe"),
        ["backbone.pretrained='maybe' must be true or false"]),
    "backbone options not a mapping": lambda t: (
        _backbone(t, options=["width", 8]),
        ["backbone.options=", "must be a mapping", "in_features"]),
    "weights not a string": lambda t: (
        _backbone(t, weights=5),
        ["backbone.weights=5 must be a non-empty string"]),
    "device not a string": lambda t: (
        _run(t, _cfg(t, device=0)),
        ["device=0 must be a non-empty string"]),
    "progress not a bool": lambda t: (
        _run(t, _cfg(t, progress=3)),
        ["progress=3 must be true or false"]),
    "output_dir a list": lambda t: (
        _run(t, _cfg(t, output_dir=["a"])),
        ["output_dir=['a'] must be a non-empty string"]),
    "image_size true": lambda t: (
        _backbone(t, image_size=True),
        ["backbone.image_size must be a number, got True"]),
    # --- backbones and weights
    "unknown backbone option": lambda t: (
        _backbone(t, options={"widht": 8}),
        ["unknown option 'widht' for backbone 'tiny_cnn'", "Did you mean 'width'"]),
    "backbone option of the wrong type": lambda t: (
        _backbone(t, options={"width": "wide"}),
        ["backbone option width must be a number, got 'wide'"]),
    "wrong-shape weights for a file: backbone": lambda t: (
        _backbone(t, name=_file_weights(t, "shape")),
        ["narrow.safetensors: does not load into tiny_cnn", "of the wrong shape", "right architecture"]),
    "truncated weights for a file: backbone": lambda t: (
        _backbone(t, name="file:" + _weights(t, "truncated")),
        ["weights.safetensors: not a valid safetensors file", "save_file"]),
    "pickle as a file: backbone": lambda t: (
        _backbone(t, name="file:" + _weights(t, "pickle.safetensors")),
        ["it is a pickle, which transferkit never unpickles", "save_file"]),
    "self-referential file: backbone": lambda t: (
        _backbone(t, name=_file_weights(t, "self")),
        ["self.safetensors", "names itself", "save_backbone", "backbone.arch"]),
    "file: backbones naming each other": lambda t: (
        _backbone(t, name=_file_weights(t, "cycle")),
        ["a.safetensors", "b.safetensors", "names itself (a cycle)"]),
    "weights with NaN": lambda t: (
        _backbone(t, weights=str(_nan_weights(t))),
        ["nan.safetensors: tensor", "NaN or infinite", "use another file"]),
    "weights path is a directory": lambda t: (
        _backbone(t, weights=str((t / "wdir").mkdir() or t / "wdir")),
        ["wdir' is a directory", ".safetensors file"]),
    # --- transferkit report on a damaged run directory
    "report: results.json not JSON": lambda t: (
        _rundir(t, text='{"summary": {'),
        ["results.json", "cannot read", "Re-run the command"]),
    "report: results.json a list": lambda t: (
        _rundir(t, [1, 2]),
        ["results.json: expected a JSON object, got list", "re-run the command that wrote it"]),
    "report: summary of the wrong type": lambda t: (
        _rundir(t, {"summary": [], "runs": []}),
        ["results.json: 'summary' must be a mapping", "re-run the command"]),
    "report: accuracy a string": lambda t: (
        _rundir(t, {**GOOD_RESULTS, "summary": {"scratch": {**GOOD_SUMMARY["scratch"], "accuracy_mean": "high"}}}),
        ["summary['scratch']['accuracy_mean'] must be a number, got 'high'"]),
    "report: results.json without runs": lambda t: (
        ["report", str(t / "existing")],
        ["existing/results.json: has no 'runs'", "re-run the command that wrote it"]),
    "report: warnings not strings": lambda t: (
        _rundir(t, {**GOOD_RESULTS, "warnings": [{"x": 1}]}),
        ["'warnings' must be a list of strings"]),
    "report: pickled predictions.npz": lambda t: (
        _rundir(t, GOOD_RESULTS, files={PREDICTIONS: pickle.dumps(Evil())}),
        ["predictions.npz: is a pickle", "never unpickles", "delete it and re-run"]),
    "report: predictions.npz with object arrays": lambda t: (
        _rundir(t, GOOD_RESULTS, files={PREDICTIONS: _npz_bytes(
            t, y_true=np.array([Evil()], dtype=object), y_pred=np.zeros(1, int), classes=np.array(["a"]))}),
        ["predictions.npz: cannot be read", "pickled objects", "delete it and re-run"]),
    "report: predictions.npz without y_pred": lambda t: (
        _rundir(t, GOOD_RESULTS, files={PREDICTIONS: _npz_bytes(t, y_true=np.zeros(3, int), classes=np.array(["a"]))}),
        ["predictions.npz: has no 'y_pred'"]),
    "report: predictions.npz with a label of 10^9": lambda t: (
        _rundir(t, GOOD_RESULTS, files={PREDICTIONS: _npz_bytes(
            t, y_true=np.array([0, 10**9]), y_pred=np.array([0, 1]), classes=np.array(["a", "b"]))}),
        ["predictions.npz: labels must lie in 0..999"]),
    "report: truncated predictions.npz": lambda t: (
        _rundir(t, GOOD_RESULTS, files={PREDICTIONS: _npz_bytes(
            t, y_true=np.zeros(3, int), y_pred=np.zeros(3, int), classes=np.array(["a"]))[:40]}),
        ["predictions.npz: is damaged or not an .npz archive", "delete it and re-run"]),
    "report: 1-D features.npz": lambda t: (
        _rundir(t, GOOD_RESULTS, files={FEATURES: _npz_bytes(
            t, before_target=np.zeros(5, np.float32), y_target=np.zeros(5, int), classes=np.array(["a"]))}),
        ["features.npz: before_target must be a non-empty 2-D array of finite floats"]),
    "report: NaN features.npz": lambda t: (
        _rundir(t, GOOD_RESULTS, files={FEATURES: _npz_bytes(
            t, before_target=np.full((5, 2), np.nan, np.float32), y_target=np.zeros(5, int))}),
        ["features.npz: before_target must be", "finite floats"]),
    "report: a folder that is not a run directory": lambda t: (
        ["report", str((t / "photos").mkdir() or t / "photos")],
        ["holds nothing transferkit can report on", "output directory of 'transferkit run'"]),
    "report: a file instead of a folder": lambda t: (
        ["report", str(t / "existing" / "config.yaml")],
        ["config.yaml' is a file, not a run directory", "--out directory"]),
    # --- transferkit assess arguments
    "assess --max-samples 0": lambda t: (
        _assess(t, "--max-samples", "0"),
        ["--max-samples", "2", "got 0"]),
    "assess --permutations 0": lambda t: (
        _assess(t, "--permutations", "0"),
        ["--permutations", "1", "got 0"]),
    "assess --permutations 10^9": lambda t: (
        _assess(t, "--permutations", str(10**9)),
        ["--permutations", "100000", "got 1000000000"]),
    "assess --image-size 0": lambda t: (
        _assess(t, "--image-size", "0"),
        ["--image-size", "8", "got 0"]),
    "assess --seed -1": lambda t: (
        _assess(t, "--seed", "-1"),
        ["--seed", "-1", "4294967295"]),
    # --- the same bounds on the command line
    "run --seeds -1": lambda t: (
        _run(t, _cfg(t), "--seeds", "-1"),
        ["--seeds", "got -1"]),
    "run --seeds 0": lambda t: (
        _run(t, _cfg(t), "--seeds", "0"),
        ["--seeds", "got 0"]),
}


def _nan_weights(t):
    import torch
    from safetensors.torch import save_file

    from transferkit.backbones import create_backbone

    state = create_backbone("tiny_cnn", seed=0).state_dict()
    state["stem.0.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(t / "nan.safetensors"))
    assert not torch.isfinite(state["stem.0.weight"]).all()
    return t / "nan.safetensors"


def test_the_table_covers_yaml_seeds_labels_and_reports(tmp_path):
    """The config table reaches the YAML loader, the seeds, the labels, the backbone's weights
    and the report reader, and every case is a distinct input."""
    from _badinput import check_table

    built = check_table(CASES, tmp_path)
    commands = {argv[0] for argv, _, _ in built.values()}
    assert {"run", "report", "assess"} <= commands, commands
    for prefix in ("YAML", "label", "seed", "report:", "weights"):
        assert any(prefix in name for name in CASES), f"no case about {prefix!r}"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config(case, tmp_path, existing, capsys, monkeypatch):
    check_case(CASES, case, tmp_path, capsys, monkeypatch)


def test_a_base_config_is_valid(tmp_path):
    """The table's base config itself loads (so each case fails for its own reason)."""
    from transferkit.config import load_config

    assert load_config(_cfg(tmp_path)).seeds == BASE["seeds"]
    assert yaml.safe_load((tmp_path / "exp.yaml").read_text())["name"] == "bad"
