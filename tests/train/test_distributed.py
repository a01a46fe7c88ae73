"""Two processes on the CPU (gloo on a free loopback port, one thread each, a hard time limit).

- the Trainer: after every step both ranks hold identical parameters; the weights equal a
  single-process run with the same global batch within 1e-5; every sample is seen exactly
  once per epoch across the ranks; the metrics are gathered (one ``metrics.jsonl``, written by
  rank 0);
- ``transferkit run --num-processes 2``: exactly one run directory, one ``results.json`` and
  one report; a 2-process run killed with SIGKILL mid-training resumes to the same metrics as
  an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

CHILD = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(1)
    from transferkit.data import DomainDataset
    from transferkit.train import Trainer
    from transferkit.train import trainer as trainer_mod

    out, world_label = sys.argv[1], sys.argv[2]

    from test_trainer_parts import MLP  # no BatchNorm: a sample's gradient does not depend on its batch

    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    train = DomainDataset(X[:64], y[:64], "train", "tabular")
    val = DomainDataset(X[64:], y[64:], "val", "tabular")
    torch.manual_seed(0)
    model = MLP()
    seen, params = [], []
    real_step = trainer_mod.Trainer.training_step

    def spy(self, xb, yb, idx, n_global, epoch, sync=True):
        seen.append([int(epoch), [int(i) for i in idx]])
        out_ = real_step(self, xb, yb, idx, n_global, epoch, sync)
        return out_

    trainer_mod.Trainer.training_step = spy

    class Params:
        def on_epoch_end(self, trainer, epoch, row):
            params.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).tolist())

    t = Trainer(model, [{"params": list(model.parameters()), "lr": 0.05, "weight_decay": 0.01}], epochs=3,
                batch_size=16, warmup_epochs=0.0, device="cpu", progress=False, seed=3, callbacks=[Params()],
                run_dir=os.path.join(out, "run-" + world_label))
    t.fit(train, val)
    rank = int(os.environ.get("RANK", 0))
    with open(os.path.join(out, f"{world_label}-rank{rank}.json"), "w") as f:
        json.dump({"seen": seen, "params": params, "history": t.history, "world": t.world}, f)
''')


def _clean_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                                                            "MASTER_ADDR", "MASTER_PORT", "TRANSFERKIT_FAULT")}
    # PYTHONFAULTHANDLER: a child that aborts prints every thread's Python stack. TMPDIR: the
    # children's temporary files stay beside the test's folder (accelerate's launcher leaves torch's
    # torchelastic_* log folders in the temporary directory; ours does not, tested below), in pytest's
    # temporary area.
    scratch = tmp_path.parent / f"{tmp_path.name}-children-tmp"  # beside the test's folder: tests list that one
    scratch.mkdir(exist_ok=True)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONFAULTHANDLER="1", TMPDIR=str(scratch),
               PYTHONPATH=os.pathsep.join([str(tmp_path / "mods"), str(Path(__file__).parent),
                                           *filter(None, [env.get("PYTHONPATH")])]))
    return env


def _call(cmd, env, timeout=240, cwd=None):
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{cmd[:4]} did not finish within {timeout} s")
    return proc.returncode, out, err


def _relaunch(tmp_path, module: str, argv: list[str], n: int, env: dict, timeout=240):
    code = ("import json, sys; from transferkit.train.launch import relaunch; "
            "sys.exit(relaunch(json.loads(sys.argv[1]), int(sys.argv[2]), 1, module=sys.argv[3]))")
    return _call([sys.executable, "-c", code, json.dumps(argv), str(n), module], env, timeout)


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "tk_ddp_child.py").write_text(CHILD)
    env = _clean_env(tmp_path)
    rc, out, err = _call([sys.executable, "-m", "tk_ddp_child", str(tmp_path), "one"], env, timeout=120)
    assert rc == 0, err[-3000:]
    scratch = tmp_path / "tmpdir"  # the system's temporary directory, as the launcher sees it
    scratch.mkdir()
    rc, out, err = _relaunch(tmp_path, "tk_ddp_child", [str(tmp_path), "two"], 2, {**env, "TMPDIR": str(scratch)})
    assert rc == 0, err[-3000:]
    # (torch's own compile cache, torchinductor_USER, is torch's: it lives there for every torch user)
    left = [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_")]
    assert left == [], f"the launcher left {left} in the temporary directory"
    one = json.loads((tmp_path / "one-rank0.json").read_text())
    r0, r1 = (json.loads((tmp_path / f"two-rank{r}.json").read_text()) for r in (0, 1))
    assert one["world"] == 1 and r0["world"] == r1["world"] == 2
    # identical parameters on both ranks after every epoch, and equal to the one-process run
    np.testing.assert_array_equal(np.array(r0["params"]), np.array(r1["params"]))
    np.testing.assert_allclose(np.array(r0["params"]), np.array(one["params"]), rtol=0, atol=1e-5)
    # every sample exactly once per epoch across the ranks; the ranks' shares are disjoint
    for epoch in range(3):
        a = [i for e, idx in r0["seen"] if e == epoch for i in idx]
        b = [i for e, idx in r1["seen"] if e == epoch for i in idx]
        assert not set(a) & set(b)
        assert sorted(a + b) == list(range(64))
        assert len(a) == len(b) == 32
    # metrics gathered across the ranks: the same rows (train loss over all 64 samples, val accuracy
    # on every validation row) as one process, within float summation order
    for h1, h2 in zip(one["history"], r0["history"]):
        for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert h2[k] == pytest.approx(h1[k], abs=1e-5), k
    assert r0["history"] == r1["history"] or all(
        a[k] == b[k] for a, b in zip(r0["history"], r1["history"]) for k in ("train_loss", "val_accuracy"))
    # one metrics file, written by rank 0 only (3 rows, not 6)
    rows = (tmp_path / "run-two" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3


def test_accelerate_launcher_starts_the_same_two_process_training(tmp_path):
    """`python -m accelerate.commands.launch --multi_gpu --num_processes 2 -m ...` (what works on a
    CPU-only install: the `accelerate launch` script imports torchvision first, and its `--cpu`
    starts one process) gives the same weights as the Trainer's own launcher."""
    from transferkit.train.launch import free_port

    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "tk_ddp_child.py").write_text(CHILD)
    env = _clean_env(tmp_path)
    rc, out, err = _call([sys.executable, "-m", "tk_ddp_child", str(tmp_path), "one"], env, timeout=120)
    assert rc == 0, err[-3000:]
    rc, out, err = _call([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--main_process_port", str(free_port()), "-m", "tk_ddp_child", str(tmp_path), "acc"], env,
                         timeout=240)
    assert rc == 0, err[-3000:]
    one = json.loads((tmp_path / "one-rank0.json").read_text())
    r0, r1 = (json.loads((tmp_path / f"acc-rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    np.testing.assert_array_equal(np.array(r0["params"]), np.array(r1["params"]))
    np.testing.assert_allclose(np.array(r0["params"]), np.array(one["params"]), rtol=0, atol=1e-5)


def _config(tmp_path) -> Path:
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "ddp", "seeds": [0],
        "source": "digits:subset=0/8,size=16", "target": "digits:subset=1/4,size=16",
        "split": {"labels_per_class": 5, "val_fraction": 0.5},
        "backbone": {"name": "tiny_cnn", "image_size": 16, "pretrained": False},
        "progress": False,
        "strategies": [{"name": "scratch", "epochs": 3, "batch_size": 16, "lr": 0.01, "augment": "none"}],
    }, sort_keys=False))
    return exp


def _run_cli(tmp_path, args, env, timeout=300):
    return _call([sys.executable, "-m", "transferkit", *args], env, timeout=timeout, cwd=tmp_path)


def _metrics(run: Path):
    res = json.loads((run / "results.json").read_text())
    rows = [{k: v for k, v in json.loads(x).items() if k != "epoch_time"}
            for x in (run / "scratch" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in ("strategy", "seed", "accuracy", "val_accuracy", "best_epoch")} for r in res["runs"]], rows


def test_two_process_run_writes_one_run_and_resumes_after_sigkill(tmp_path):
    (tmp_path / "mods").mkdir()
    env = _clean_env(tmp_path)
    exp = _config(tmp_path)
    rc, out, err = _run_cli(tmp_path, ["run", str(exp), "--out", "ref", "--num-processes", "2", "--threads", "2"],
                            env)
    assert rc == 0, err[-3000:]
    ref = tmp_path / "ref"
    runs = [p for p in tmp_path.iterdir() if p.is_dir() and p.name not in ("mods",)]
    assert [p.name for p in runs] == ["ref"], runs  # exactly one run directory
    assert len(list(ref.rglob("results.json"))) == 1
    assert len(list(ref.rglob("report.html"))) == 1
    assert out.count("seed 0  scratch") == 1  # one process speaks
    assert err.count("one seed (0)") == 1  # and warns

    # killed with SIGKILL at the second epoch's end (both ranks reach the point), then resumed
    kill = {**env, "TRANSFERKIT_FAULT": "train.epoch@2"}
    rc, out, err = _run_cli(tmp_path, ["run", str(exp), "--out", "killed", "--num-processes", "2", "--threads", "2"],
                            kill)
    assert rc != 0
    assert not (tmp_path / "killed" / "results.json").exists()
    assert (tmp_path / "killed" / "scratch" / "seed0" / "checkpoint.pt").is_file()
    rc, out, err = _run_cli(tmp_path, ["run", "--resume", "killed", "--num-processes", "2", "--threads", "2"], env)
    assert rc == 0, err[-3000:]
    assert _metrics(tmp_path / "killed") == _metrics(ref)


EXIT_CHILD = textwrap.dedent('''
    import atexit, sys
    import torch.distributed as dist
    from transferkit import _dist

    dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)

    def report():  # exit handlers run last-registered first: this one runs after transferkit's
        with open(sys.argv[2], "w") as f:
            f.write(str(dist.is_initialized()))

    atexit.register(report)
    _dist.clean_exit()
    _dist.clean_exit()  # registered once
''')


def test_the_process_group_is_destroyed_before_the_interpreter_exits(tmp_path):
    """A process that exits with its gloo group up can abort (SIGABRT, pytorch/pytorch#179291) and
    fail a finished run; the exit hook tears the group down while the interpreter is whole."""
    script = tmp_path / "child.py"
    script.write_text(EXIT_CHILD)
    flag = tmp_path / "initialized.txt"
    rc, out, err = _call([sys.executable, str(script), str(tmp_path / "store"), str(flag)], _clean_env(tmp_path),
                         timeout=120)
    assert rc == 0, err[-3000:]
    assert flag.read_text() == "False"
