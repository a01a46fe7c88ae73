"""Bad input through the CLI: one line that names the problem and what to do, exit code 2, no
traceback (unless ``--debug``), and nothing already on disk is changed.

Most cases point ``--out`` at an existing run directory *with* ``--overwrite``: the bad input
must be found before the old run is removed. Every file under the test's folder is compared
byte for byte before and after.
"""

import pickle
import subprocess
import sys

import numpy as np
import pytest

from _badinput import (BASE, ROWS, Evil, _cfg, _csv, _folder, _npz, _run, _tab, _weights, check_case,  # noqa: F401
                       existing)
from transferkit.cli import main
from transferkit.errors import TransferKitError

def _fs(t, **changes):
    """A few-shot experiment on a 12-class table (25 rows per class; 6 / 3 / 3 classes)."""
    import yaml

    rng = np.random.default_rng(0)
    np.savez(t / "fs.npz", x=rng.normal(size=(300, 4)).astype(np.float32), y=np.repeat(np.arange(12), 25),
             classes=np.array([f"c{i}" for i in range(12)]))
    data = {"name": "fs", "data": str(t / "fs.npz"), "classes": {"train": 0.5, "val": 0.25, "test": 0.25},
            "encoder": "mlp", "methods": ["simpleshot"], "settings": [{"n_way": 3, "k_shot": 1}], "q_query": 5,
            "meta_train_steps": 2, **changes}
    (t / "fs.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return str(t / "fs.yaml")


def _fsrun(t, cfg, *extra):
    """``fewshot CFG --out existing --overwrite``: the old run must survive the bad input."""
    return ["fewshot", cfg, "--out", str(t / "existing"), "--overwrite", "--no-report", *extra]


def _pt(t, **changes):
    """A pretrain experiment: rotation on the digits, a tiny CNN."""
    import yaml

    data = {"name": "pt", "data": "digits:size=16,subset=0/8", "pretext": "rotation", "epochs": 1,
            "backbone": {"name": "tiny_cnn", "image_size": 16, "options": {"width": 4}}, **changes}
    (t / "pt.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return str(t / "pt.yaml")


def _ptrun(t, cfg, *extra):
    """``pretrain CFG --out existing --overwrite``: the old run must survive the bad input."""
    return ["pretrain", cfg, "--out", str(t / "existing"), "--overwrite", *extra]


def _other_run(t):
    """A second finished run (its marker is what makes it one)."""
    d = t / "other"
    (d / "scratch" / "seed0").mkdir(parents=True)
    (d / ".transferkit-run").write_text('{"kind": "run"}\n')
    return d


CASES = {
    # --- data files and folders
    "corrupt image in a folder": lambda t: (
        _run(t, _cfg(t, target=_folder(t, corrupt=True), split={"labels_per_class": 2})),
        ["corrupt image", "3.png", "replace or delete"]),
    "empty folder": lambda t: (
        _run(t, _cfg(t, target=str((t / "empty").mkdir() or t / "empty"))),
        ["has no class subfolders", "no images at all", "own subfolder"]),
    "class folder without images": lambda t: (
        _run(t, _cfg(t, target=_folder(t, empty_class=True))),
        ["class folder 'dog' has no images", "notes.txt", "add images"]),
    "float labels in a CSV label column": lambda t: (
        _run(t, _tab(t, _csv(t, "label,a,b,c,d\n" + ROWS))),
        ["label column 'label' holds non-integer numbers", "0.5", "integers or strings"]),
    "float labels in an npz": lambda t: (
        _run(t, _tab(t, _npz(t, y=np.linspace(0, 1, 40)))),
        ["labels 'y' are not whole numbers", "integer class indices"]),
    "NaN features in an npz": lambda t: (
        _run(t, _tab(t, _npz(t, x=np.where(np.eye(40, 4) > 0, np.nan, 1.0).astype(np.float32)))),
        ["NaN/inf value(s)", "fill or drop them"]),
    "NaN features in a CSV": lambda t: (
        _run(t, _tab(t, _csv(t, "a,b,c,d,label\n" + ROWS.replace("\n0.5,", "\n,", 1) + ",1,2,3,1\n"))),
        ["feature column 'a'", "missing or infinite", "fill them"]),
    "label outside the label space": lambda t: (
        _run(t, _tab(t, _npz(t, y=np.arange(40) % 3, classes=np.array(["a", "b"])))),
        ["label 2 is outside 'classes'", "fix the labels or the class names"]),
    "label below -1": lambda t: (
        _run(t, _tab(t, _npz(t, y=np.arange(40) % 2 - 2))),
        ["contain -2", "-1 for unlabeled"]),
    "zero labeled target samples": lambda t: (
        _run(t, _tab(t, _npz(t, y=np.full(40, -1)))),
        ["has no labels", "labels_per_class", "label column"]),
    "source and target feature dimensions differ": lambda t: (
        _run(t, _tab(t, _npz(t), source=_npz(t, name="src.npz", d=5))),
        ["source 'src' has 5 features but target 'data' has 4", "same feature columns"]),
    "backbone input width differs from the data": lambda t: (
        _run(t, _tab(t, _npz(t, d=6))),
        ["the target 'data' has 6 feature columns but backbone 'tiny_mlp' takes in_features=4", "in_features"]),
    "image backbone on tabular data": lambda t: (
        _run(t, _cfg(t, target=_npz(t))),
        ["backbone 'tiny_cnn' takes image inputs but the target 'data' is tabular", "choose a tabular backbone"]),
    "missing data file": lambda t: (
        _run(t, _cfg(t, target="data/missing.csv")),
        ["'data/missing.csv': no such file or folder", "check the path"]),
    "empty CSV": lambda t: (
        _run(t, _tab(t, _csv(t, ""))),
        ["is empty", "write a header row"]),
    "CSV with the wrong delimiter": lambda t: (
        _run(t, _tab(t, _csv(t, "a;b;c;d;label\n" + ROWS.replace(",", ";")))),
        ["separated by ';'", "save it comma-separated"]),
    "npz that is a pickle": lambda t: (
        _run(t, _tab(t, str((t / "x.npz").write_bytes(pickle.dumps(Evil())) and t / "x.npz"))),
        ["is a pickle, not an .npz archive", "np.savez"]),
    "unknown dataset name": lambda t: (
        _run(t, _cfg(t, target="digitz:size=16")),
        ["unknown dataset 'digitz'", "Did you mean 'digits'"]),
    "unknown dataset option": lambda t: (
        _run(t, _cfg(t, target="digits:size=16,rotat=5")),
        ["unknown option 'rotat'", "Did you mean 'rotate'"]),
    "labels_per_class larger than available": lambda t: (
        _run(t, _cfg(t, split={"labels_per_class": 500})),
        ["class 0 has only", "labels_per_class=500"]),
    # --- the config file
    "YAML syntax error": lambda t: (
        _run(t, _cfg(t, "target: digits\nstrategies: [scratch\n")),
        ["YAML syntax error at line 3", "fix the file"]),
    "unknown top-level key": lambda t: (
        _run(t, _cfg(t, splt={"labels_per_class": 3})),
        ["unknown key 'splt'", "Did you mean 'split'"]),
    "unknown backbone": lambda t: (
        _run(t, _cfg(t, backbone={"name": "tiny_cn", "image_size": 16})),
        ["unknown backbone 'tiny_cn'", "Did you mean 'tiny_cnn'"]),
    "unknown strategy": lambda t: (
        _run(t, _cfg(t, strategies=["finetuen"])),
        ["unknown strategy 'finetuen'", "Did you mean 'finetune'"]),
    "unknown strategy parameter": lambda t: (
        _run(t, _cfg(t, strategies=[{"name": "scratch", "epoch": 2}])),
        ["unknown parameter strategies[0].'epoch'", "Did you mean 'epochs'"]),
    "negative epochs": lambda t: (
        _run(t, _cfg(t, strategies=[{"name": "scratch", "epochs": -3}])),
        ["strategies[0].epochs must be >= 1, got -3"]),
    "lr as a string": lambda t: (
        _run(t, _cfg(t, strategies=[{"name": "finetune", "lr": "fast"}])),
        ["strategies[0].lr must be a number, got 'fast'"]),
    "image_size too small": lambda t: (
        _run(t, _cfg(t, backbone={"name": "tiny_cnn", "image_size": 4})),
        ["backbone.image_size must be >= 8, got 4"]),
    "zero seeds": lambda t: (
        _run(t, _cfg(t, seeds=0)),
        ["seeds must be >= 1"]),
    "val_fraction out of range": lambda t: (
        _run(t, _cfg(t, split={"labels_per_class": 3, "val_fraction": 1.5})),
        ["split.val_fraction must be < 1, got 1.5"]),
    "missing config file": lambda t: (
        _run(t, str(t / "nope.yaml")),
        ["nope.yaml' does not exist", "check the path"]),
    # --- weights
    "pickle disguised as .pt weights": lambda t: (
        _run(t, _cfg(t, backbone={"name": "tiny_cnn", "image_size": 16, "weights": _weights(t, "pickle.pt")})),
        ["refused to load", "never unpickles", "safetensors.torch.save_file"]),
    "torch.save of an object as weights": lambda t: (
        _run(t, _cfg(t, backbone={"name": "tiny_cnn", "image_size": 16, "weights": _weights(t, "torch_pickle.pt")})),
        ["refused to load", "never unpickles"]),
    "pickle disguised as .safetensors": lambda t: (
        _run(t, _cfg(t, backbone={"name": "tiny_cnn", "image_size": 16,
                                  "weights": _weights(t, "pickle.safetensors")})),
        ["not a valid safetensors file", "save_file"]),
    "truncated safetensors": lambda t: (
        _run(t, _cfg(t, backbone={"name": "tiny_cnn", "image_size": 16, "weights": _weights(t, "truncated")})),
        ["not a valid safetensors file", "save_file"]),
    "weights of another architecture": lambda t: (
        _run(t, _cfg(t, backbone={"name": "tiny_cnn", "image_size": 16, "weights": _weights(t, "wrong_arch")})),
        ["does not load into tiny_cnn", "right architecture"]),
    "missing weights file": lambda t: (
        _run(t, _cfg(t, backbone={"name": "tiny_cnn", "image_size": 16, "weights": str(t / "w.safetensors")})),
        ["w.safetensors' does not exist", "check the path"]),
    # --- run directories
    "existing run dir without --overwrite": lambda t: (
        ["run", _cfg(t), "--out", str(t / "existing")],
        ["already holds a run", "--overwrite"]),
    "--resume on a folder without a config": lambda t: (
        ["run", "--resume", str((t / "junk").mkdir() or t / "junk")],
        ["has no config.yaml", "not a transferkit run directory"]),
    "--resume on a missing folder": lambda t: (
        ["run", "--resume", str(t / "gone")],
        ["does not exist", "--resume"]),
    "--resume with a config file": lambda t: (
        ["run", _cfg(t), "--resume", str(t / "existing")],
        ["--resume continues a run with the config stored in it", "drop a config file"]),
    "run without a config": lambda t: (
        ["run"],
        ["needs an experiment file", "--resume DIR"]),
    # --- the output directory (boundary rules; tests/cli/test_boundary.py has the rest)
    "empty --out": lambda t: (
        ["run", _cfg(t), "--out", "", "--no-report"],
        ["--out '' is empty", "--out runs/NAME"]),
    "--out is the working directory": lambda t: (
        ["run", _cfg(t), "--out", ".", "--overwrite", "--no-report"],
        ["is the current directory or holds it", "--out runs/NAME"]),
    "--out above the working directory": lambda t: (
        ["run", _cfg(t), "--out", "..", "--no-report"],
        ["is the current directory or holds it"]),
    "--out over the config's folder": lambda t: (
        ["run", _cfg(t), "--out", str(t), "--overwrite", "--no-report"],
        ["current directory or holds it"]),
    "--out is the config file": lambda t: (
        ["run", _cfg(t), "--out", str(t / "exp.yaml"), "--overwrite", "--no-report"],
        ["holds the input", "exp.yaml"]),
    "--out over the data folder": lambda t: (
        _run(t, _cfg(t, target=_folder(t)))[:2] + ["--out", str(t / "imgs"), "--overwrite", "--no-report"],
        ["holds the input", "imgs", "outside it"]),
    "--out inside the image folder": lambda t: (
        _run(t, _cfg(t, target=_folder(t)))[:2] + ["--out", str(t / "imgs" / "run"), "--no-report"],
        ["lies inside the input folder", "imgs"]),
    "--overwrite of an image folder transferkit did not create": lambda t: (
        ["run", _cfg(t), "--out", str(_folder(t)), "--overwrite", "--no-report"],
        ["was not created by transferkit", "empty it yourself"]),
    "--overwrite of a user's folder": lambda t: (
        ["run", _cfg(t), "--out", str((t / "mine").mkdir() or (t / "mine" / "a.txt").write_text("x") and t / "mine"),
         "--overwrite", "--no-report"],
        ["was not created by transferkit", "choose another --out"]),
    "--out is a file": lambda t: (
        ["run", _cfg(t), "--out", str((t / "f.txt").write_text("x") and t / "f.txt"), "--no-report"],
        ["exists and is not a directory", "choose another --out"]),
    "--out is a symbolic link": lambda t: (
        ["run", _cfg(t), "--out", str((t / "ln").symlink_to(t / "existing") or t / "ln"), "--overwrite",
         "--no-report"],
        ["is a symbolic link", "another --out"]),
    # --- red-team findings (classes: cache location, splits, degenerate features, --set)
    "cache_dir inside the input image folder": lambda t: (
        _run(t, _cfg(t, target=_folder(t), cache_dir=str(t / "imgs" / "cache"), split={"labels_per_class": 2})),
        ["cache_dir=", "lies inside the input folder", "imgs", "elsewhere"]),
    "cache_dir inside another run": lambda t: (
        _run(t, _cfg(t, cache_dir=str(_other_run(t) / "scratch" / "seed0"))),
        ["lies inside the transferkit output", "other", "elsewhere"]),
    "--out inside another run": lambda t: (
        ["run", _cfg(t), "--out", str(_other_run(t) / "scratch" / "seed0" / "x"), "--no-report"],
        ["lies inside the transferkit output", "other", "outside it"]),
    "a strategy's cache_dir inside the output": lambda t: (
        _run(t, _cfg(t, strategies=[{"name": "feature_extraction", "cache_dir": str(t / "existing" / "c")}])),
        ["strategies[0].cache_dir=", "inside the output directory"]),
    "a strategy's cache_dir that is a file": lambda t: (
        _run(t, _cfg(t, strategies=[{"name": "feature_extraction",
                                     "cache_dir": str((t / "cf").write_text("x") and t / "cf")}])),
        ["cache_dir", "is not a directory"]),
    "train_fraction that leaves no training labels": lambda t: (
        _run(t, _cfg(t, split={"train_fraction": 0.0001})),
        ["split.train_fraction=0.0001 leaves no labeled training samples", "raise train_fraction"]),
    "split.val is the target itself": lambda t: (
        _run(t, _cfg(t, split={"labels_per_class": 3, "val": BASE["target"]})),
        ["split.val is the target itself", "overlaps the training samples"]),
    "split.val is the test set": lambda t: (
        _run(t, _cfg(t, split={"labels_per_class": 3, "val": "digits:subset=0/2,size=16",
                               "test": "digits:subset=0/2,size=16"})),
        ["split.val and split.test are the same dataset", "selected on the test set"]),
    "weights so large the features overflow": lambda t: (
        _run(t, _cfg(t, backbone={"name": "tiny_cnn", "image_size": 16, "weights": _weights(t, "huge")},
                     strategies=["feature_extraction"])),
        ["produced non-finite features", "check the weights"]),
    "a numeric CSV column with a text cell": lambda t: (
        _run(t, _tab(t, _csv(t, "a,b,c,d,label\n" + ROWS.replace("\n1.0,", "\nabc,", 1)))),
        ["column 'a' holds numbers but 1 cell(s) are not numbers", "'abc'", "fix those cells"]),
    "--set index out of range": lambda t: (
        _run(t, _cfg(t), "--set", "strategies[3].epochs=2"),
        ["--set 'strategies[3].epochs=2'", "index 3 is out of range", "0 to 0"]),
    "--set a key inside a list without an index": lambda t: (
        _run(t, _cfg(t), "--set", "strategies.epochs=2"),
        ["'strategies' is not a mapping", "by index, e.g. strategies[0].lr=0.01"]),
    "--resume on a user's folder with a config.yaml": lambda t: (
        ["run", "--resume", str((t / "u").mkdir() or (t / "u" / "config.yaml").write_text("target: [\n") and t / "u")],
        ["config.yaml", "YAML"]),
    # --- every other subcommand that takes user input
    "benchmark: unknown task": lambda t: (
        ["benchmark", "digits-shift", "--tasks", "rot31", "--out", str(t / "existing"), "--overwrite", "--no-report"],
        ["unknown task 'rot31'", "Did you mean 'rot30'", "Tasks: rot30"]),
    "benchmark: unknown method": lambda t: (
        ["benchmark", "digits-shift", "--methods", "jam", "--out", str(t / "existing"), "--overwrite"],
        ["unknown benchmark method 'jam'", "Did you mean 'jan'"]),
    "benchmark: a method twice": lambda t: (
        ["benchmark", "digits-shift", "--methods", "jan", "jan", "--out", str(t / "existing"), "--overwrite"],
        ["method 'jan' is given twice"]),
    "benchmark: a scorer that reads target labels": lambda t: (
        ["benchmark", "digits-shift", "--selection", "target_val", "--out", str(t / "existing"), "--overwrite"],
        ["selection='target_val'", "no scorer may use target labels"]),
    "benchmark: unknown backbone": lambda t: (
        ["benchmark", "digits-shift", "--backbone", "efficientnet_lite9", "--out", str(t / "existing"), "--overwrite"],
        ["unknown backbone 'efficientnet_lite9'", "Did you mean 'efficientnet_lite0'"]),
    "benchmark: unknown backbone, default --out": lambda t: (
        ["benchmark", "digits-shift", "--backbone", "nope", "--no-report"], ["unknown backbone 'nope'"]),
    "benchmark: a text backbone on the image suite": lambda t: (
        ["benchmark", "digits-shift", "--backbone", "minilm", "--no-report"],
        ["backbone 'minilm' takes text inputs", "choose an image backbone"]),
    "benchmark: --out is the working directory": lambda t: (
        ["benchmark", "digits-shift", "--out", "."], ["output directory '.'", "--out runs/NAME"]),
    "benchmark: --epochs 0": lambda t: (
        ["benchmark", "digits-shift", "--epochs", "0"], ["--epochs", "between 1 and"]),
    "diagnose: one seed": lambda t: (
        ["diagnose", _cfg(t, seeds=[0], strategies=[{"name": "finetune", "epochs": 1}, {"name": "scratch", "epochs": 1}]),
         "--out", str(t / "existing"), "--overwrite"],
        ["needs at least 2 seeds", "seeds: 3"]),
    "diagnose: unknown transfer strategy": lambda t: (
        ["diagnose", _cfg(t, seeds=[0, 1], diagnose={"transfer": "fintune"}), "--out", str(t / "existing"),
         "--overwrite"],
        ["diagnose.transfer='fintune'", "Did you mean 'finetune'"]),
    "diagnose: unknown interval method": lambda t: (
        ["diagnose", _cfg(t, seeds=[0, 1], diagnose={"method": "z"}), "--out", str(t / "existing"), "--overwrite"],
        ["diagnose.method='z'", "'bootstrap'"]),
    "diagnose: --seeds 1": lambda t: (
        ["diagnose", _cfg(t), "--seeds", "1", "--out", str(t / "existing"), "--overwrite"],
        ["--seeds", "between 2 and"]),
    "fewshot: n_way larger than a split's classes": lambda t: (
        _fsrun(t, _fs(t, settings=[{"n_way": 4, "k_shot": 1}])),
        ["settings[0] (4-way 1-shot)", "n_way=4 is larger than the 3 meta-val classes", "classes.val"]),
    "fewshot: k_shot + q_query larger than a class's rows": lambda t: (
        _fsrun(t, _fs(t, settings=[{"n_way": 3, "k_shot": 21}])),
        ["k_shot + q_query = 21 + 5 = 26 is larger than the 25 rows", "lower k_shot or q_query"]),
    "fewshot: overlapping class splits": lambda t: (
        _fsrun(t, _fs(t, classes={"train": ["c0", "c1", "c2", "c3"], "val": ["c3", "c4", "c5"],
                                  "test": ["c6", "c7", "c8"]})),
        ["classes.train and classes.val overlap ('c3')", "must be disjoint"]),
    "fewshot: a meta-training method without meta-train classes": lambda t: (
        _fsrun(t, _fs(t, classes={"val": ["c3", "c4", "c5"], "test": ["c6", "c7", "c8"]},
                      methods=["simpleshot", "protonet"])),
        ["method 'protonet' needs meta-training but classes has no train split", "classes.train"]),
    "fewshot: unknown method": lambda t: (
        _fsrun(t, _fs(t, methods=["protonett"])), ["unknown fewshot 'protonett'", "Did you mean 'protonet'"]),
    "fewshot: unknown key": lambda t: (
        _fsrun(t, _fs(t, setings=[])), ["unknown key 'setings'", "Did you mean 'settings'"]),
    "fewshot: fewer than 600 test episodes": lambda t: (
        _fsrun(t, _fs(t, test_episodes=100)), ["test_episodes must be >= 600, got 100"]),
    "fewshot: conv4 on a table": lambda t: (
        _fsrun(t, _fs(t, encoder="conv4")), ["encoder conv4 takes raw images but the data is tabular"]),
    "fewshot: without a config": lambda t: (["fewshot"], ["needs a few-shot experiment file", "--resume DIR"]),
    "fewshot: --resume with a config": lambda t: (
        ["fewshot", _fs(t), "--resume", str(t / "existing")],
        ["--resume continues a fewshot with the config stored in it", "drop a config file"]),
    "fewshot: --resume on another kind of run": lambda t: (
        ["fewshot", "--resume", str(t / "existing")], ["has no fewshot.yaml", "transferkit fewshot CONFIG"]),
    "fewshot: --out is the working directory": lambda t: (
        ["fewshot", _fs(t), "--out", "."], ["is the current directory or holds it", "--out runs/NAME"]),
    "pretrain: without a config": lambda t: (["pretrain"], ["needs a pretrain file", "--resume DIR"]),
    "pretrain: unknown pretext": lambda t: (
        _ptrun(t, _pt(t, pretext="simclear")), ["unknown pretext 'simclear'", "Did you mean 'simclr'"]),
    "pretrain: unknown key": lambda t: (_ptrun(t, _pt(t, epoch=2)), ["unknown key 'epoch'", "Did you mean 'epochs'"]),
    "pretrain: two views of a table": lambda t: (
        _ptrun(t, _pt(t, data=_npz(t), pretext="simclr", backbone={"name": "tiny_mlp", "options": {"in_features": 4}})),
        ["pretext 'simclr' pretrains image backbones", "tabular"]),
    "pretrain: an image backbone on a table": lambda t: (
        _ptrun(t, _pt(t, data=_npz(t))), ["takes image inputs but the pretrain data", "is tabular"]),
    "pretrain: --resume with a config": lambda t: (
        ["pretrain", _pt(t), "--resume", str(t / "existing")],
        ["--resume continues a pretrain with the config stored in it", "drop a config file"]),
    "pretrain: --resume on another kind of run": lambda t: (
        ["pretrain", "--resume", str(t / "existing")], ["has no pretrain.yaml", "transferkit pretrain CONFIG"]),
    "benchmark few-shot: unknown task": lambda t: (
        ["benchmark", "few-shot", "--tasks", "flavai", "--out", str(t / "existing"), "--overwrite"],
        ["unknown few-shot task 'flavai'", "Did you mean 'flavia'"]),
    "benchmark few-shot: unknown method": lambda t: (
        ["benchmark", "few-shot", "--methods", "protonett", "--out", str(t / "existing"), "--overwrite"],
        ["unknown few-shot method 'protonett'", "Did you mean 'protonet'"]),
    "benchmark few-shot: --epochs": lambda t: (
        ["benchmark", "few-shot", "--epochs", "3", "--out", str(t / "existing"), "--overwrite"],
        ["benchmark few-shot: --epochs is fixed per task", "leave it out"]),
    "benchmark few-shot: --out is the working directory": lambda t: (
        ["benchmark", "few-shot", "--tasks", "flavia", "--out", "."], ["output directory '.'", "--out runs/NAME"]),
    "demo: --seeds 0": lambda t: (["demo", "--seeds", "0", "--out", str(t / "existing")], ["--seeds", "between 1 and"]),
    "demo: --out is the working directory": lambda t: (["demo", "--out", "."], ["output directory '.'"]),
    "groups: unknown backbone": lambda t: (["groups", "tiny_cnm"], ["unknown backbone 'tiny_cnm'", "Did you mean"]),
    "list: unknown kind": lambda t: (["list", "strategy"], ["invalid choice: 'strategy'", "'strategies'"]),
    "predict: not a run directory": lambda t: (["predict", str(t), _npz(t), "--out", str(t / "p.csv")],
                                               ["is not a transferkit run directory", "--out folder"]),
    "export: missing run directory": lambda t: (["export", str(t / "nope"), "--out", str(t / "m.onnx")],
                                                ["does not exist or is not a folder", "'transferkit run'"]),
}


def test_the_tables_reach_every_subcommand(tmp_path):
    """The bad-input tables together (this file's and ``test_bad_input_*.py``'s) send bad input
    through every subcommand the CLI has, with distinct case names and distinct inputs."""
    import importlib

    from _badinput import check_table
    from transferkit.cli.main import _build_parser

    names, commands = list(CASES), set()
    tables = [CASES] + [importlib.import_module(m).CASES
                        for m in ("test_bad_input_params", "test_bad_input_data", "test_bad_input_config",
                                  "test_bad_input_compress", "test_bad_input_rl")]
    for i, table in enumerate(tables):
        (tmp_path / str(i)).mkdir()
        commands |= {argv[0] for argv, _, _ in check_table(table, tmp_path / str(i)).values()}
        names += list(table) if i else []
    assert len(set(names)) == len(names)
    sub = next(a for a in _build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = sorted(set(sub.choices) - commands)
    assert not missing, f"no bad-input case for subcommands {missing}"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line_exit_2_nothing_damaged(case, tmp_path, existing, capsys, monkeypatch):
    check_case(CASES, case, tmp_path, capsys, monkeypatch)


def test_debug_shows_the_traceback(tmp_path, existing, capsys):
    cfg = _cfg(tmp_path, strategies=["finetuen"])
    with pytest.raises(TransferKitError, match="unknown strategy 'finetuen'"):
        main(["--debug", "run", cfg, "--out", str(tmp_path / "o")])
    with pytest.raises(TransferKitError, match="unknown strategy 'finetuen'"):
        main(["run", cfg, "--out", str(tmp_path / "o"), "--debug"])
    assert not (tmp_path / "o").exists()


def test_as_a_process(tmp_path):
    """The real console with --debug: a traceback (without it, ``main``'s return value 2 above is
    the exit status: ``python -m transferkit`` and the console script exit with it)."""
    cfg = _cfg(tmp_path, backbone={"name": "tiny_cn"})
    debug = subprocess.run([sys.executable, "-m", "transferkit", "--debug", "run", cfg, "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr
    assert "Did you mean 'tiny_cnn'" in debug.stderr
    assert not (tmp_path / "o").exists()
