"""SIGKILL at every kill point of a run, for every strategy; ``--resume`` gives the same results.

The kill points are the ``fault_point(...)`` calls of :mod:`transferkit._faults`: during
feature extraction (per batch), the linear-probe initialisation, every training step and epoch
(before and after its checkpoint), after each model / artifacts / ``result.json`` write, during
the final results write and during the report.

One tiny experiment holds every registered strategy (``adapt`` at both levels) on a randomly
initialised ``tiny_cnn`` (``pretrained: false``: a backbone built before anything seeds torch
changes with whatever ran before it in the process, which a resume changes). Its uninterrupted
run, with ``TRANSFERKIT_FAULT_TRACE`` set, lists the points reached. Then one process after
another is killed with ``TRANSFERKIT_FAULT=name@n`` and the next one resumes the directory
(``transferkit run --resume``), until every chosen point has been killed once: each process
resumes the previous one's work and dies at the next point. Each process's own trace is
predicted from the reference trace (finished runs are kept, the interrupted one starts over or
continues from its last epoch checkpoint) and checked, so a resume that redoes the wrong work
is caught too. Every (strategy, seed) run's ``result.json`` and ``metrics.jsonl``, and the final
``results.json``, must equal the uninterrupted run's exactly.

Speed: ~70 processes, so all but the first of each chain are forked from one warm interpreter
that has imported transferkit and torch (the `zygote`; a real process, killed by a real
SIGKILL); the reference and each chain's first run are plain ``python -m transferkit run``.
Every process gets its own empty feature cache here (a run reuses only features it computed
itself: each strategy has its own ``seed``, hence its own random backbone), so that the
number of feature batches of a run does not depend on what ran before it in the process; the
second test kills a run whose resume reads the features cached by the killed process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

KILL = -signal.SIGKILL
KEYS = ("accuracy", "val_accuracy", "train_accuracy", "best_epoch", "n_train", "trainable_params")
TRAIN = ("train.step", "train.epoch_logged", "train.epoch")
START, DONE = "experiment.run_start", "experiment.run_complete"

# every registered strategy; ``adapt`` at the feature and the backbone level. Each has its own
# seed (so its own random backbone and feature-cache entries), 1-2 epochs, tiny batches.
STRATEGIES = [
    {"name": "scratch", "epochs": 2, "batch_size": 16, "lr": 0.01},
    {"name": "finetune", "epochs": 2, "batch_size": 16, "pretrained": True, "seed": 1},
    {"name": "feature_extraction", "seed": 2},
    {"name": "adapt", "method": "dan", "epochs": 2, "bottleneck": 32, "seed": 3},
    {"name": "adapt", "label": "adapt_backbone", "level": "backbone", "method": "dan", "epochs": 2,
     "batch_size": 32, "seed": 4},
    {"name": "two_stage", "epochs": 2, "stage2_epochs": 2, "bottleneck": 32, "seed": 5},
    {"name": "source_only", "epochs": 2, "bottleneck": 32, "seed": 6},
    {"name": "source_only_adabn", "epochs": 2, "bottleneck": 32, "seed": 7},
    {"name": "target_only", "epochs": 2, "bottleneck": 32, "seed": 8},
    {"name": "source_only_lr", "seed": 9},
    {"name": "self_training", "seed": 10},
    {"name": "fixmatch", "epochs": 2, "batch_size": 32, "seed": 11},
    {"name": "ensemble", "members": ["scratch", "finetune"]},  # resumed: its kept members are read from disk
    {"name": "multi_source", "epochs": 2, "bottleneck": 32, "seed": 12},  # the config's one source: a list of one
    {"name": "domain_generalization", "method": "vrex", "epochs": 2, "bottleneck": 32, "seed": 13},
    {"name": "open_set", "method": "osbp", "epochs": 2, "bottleneck": 32, "seed": 14},
    {"name": "multitask", "epochs": 2, "batch_size": 16, "seed": 15},
    {"name": "distill", "teacher": "scratch", "student": {"name": "tiny_cnn", "image_size": 16, "options": {"width": 4}},
     "epochs": 2, "batch_size": 16, "seed": 16},  # resumed: its kept teacher is read from disk
]


def _config(name: str, strategies: list[dict]) -> str:
    return yaml.safe_dump({
        "name": name, "seeds": [0],
        "source": "digits:subset=0/8,size=16", "target": "digits:subset=1/4,size=16",
        "split": {"labels_per_class": 5, "val_fraction": 0.5},
        "backbone": {"name": "tiny_cnn", "image_size": 16, "pretrained": False},
        "progress": False, "strategies": strategies,
    }, sort_keys=False)


def _keys(strategies) -> list[str]:
    return [s.get("label") or s["name"] for s in strategies]


# ---------------------------------------------------------------------------------- processes
ZYGOTE = r"""
import importlib, json, os, random, sys, traceback
import numpy as np
import torch
torch.set_num_threads(1)
# imported once here, not in every child (torch._dynamo alone, imported by the first optimizer,
# costs seconds); imports only: no torch op runs before the fork
for mod in ("torch._dynamo", "accelerate", "sklearn.linear_model", "sklearn.decomposition", "sklearn.datasets",
            "transferkit.experiment", "transferkit.config", "transferkit.data.spec", "transferkit.backbones",
            "transferkit.strategies", "transferkit.train.trainer", "transferkit.finetune", "transferkit.nn",
            "transferkit.adapt.features", "transferkit.adapt.backbone", "transferkit.metrics.scorers",
            "transferkit.reports", "transferkit.reports.artifacts", "transferkit.reports.build"):
    try:
        importlib.import_module(mod)
    except ImportError:
        pass
from transferkit.cli import main
import gc
gc.freeze()  # children never scan (so never write, so never copy) the objects imported here
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.environ.update(job["env"])
            fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            random.seed()
            np.random.seed()  # unseeded streams differ per process, as in a new interpreter
            code = main(job["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(json.dumps({"rc": rc, "user": usage.ru_utime, "sys": usage.ru_stime}), flush=True)
"""


class Launcher:
    """Start ``transferkit`` processes with their own fault, trace and feature cache."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.n = 0
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFERKIT_FAULT")}
        self.env["OMP_NUM_THREADS"] = "1"
        self.zygote = None

    def _job(self, fault, cache):
        self.n += 1
        trace = self.tmp / f"trace{self.n:03d}"
        log = self.tmp / f"log{self.n:03d}"
        env = {"TRANSFERKIT_FAULT_TRACE": str(trace),
               "TRANSFERKIT_CACHE": str(cache or self.tmp / f"cache{self.n:03d}")}
        if fault:
            env["TRANSFERKIT_FAULT"] = fault
        return env, trace, log

    def real(self, argv, fault=None, cache=None):
        """``python -m transferkit ARGV`` -> (returncode, trace, log text)."""
        env, trace, log = self._job(fault, cache)
        with open(log, "w") as f:
            rc = subprocess.run([sys.executable, "-m", "transferkit", *argv], env={**self.env, **env},
                                stdout=f, stderr=subprocess.STDOUT, timeout=600).returncode
        return rc, _read_trace(trace), log.read_text()

    def fork(self, argv, fault=None, cache=None):
        """The same, forked from the warm zygote interpreter."""
        if self.zygote is None:
            self.zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, env=self.env, text=True)
        env, trace, log = self._job(fault, cache)
        env.setdefault("TRANSFERKIT_FAULT", "")
        self.zygote.stdin.write(json.dumps({"argv": [str(a) for a in argv], "env": env, "log": str(log)}) + "\n")
        self.zygote.stdin.flush()
        line = self.zygote.stdout.readline()
        assert line, f"the zygote died (exit {self.zygote.poll()})"
        return json.loads(line)["rc"], _read_trace(trace), log.read_text() if log.exists() else ""

    def close(self):
        if self.zygote is not None:
            self.zygote.stdin.close()
            self.zygote.wait(timeout=60)


@pytest.fixture
def launcher(tmp_path):
    lau = Launcher(tmp_path / "procs")
    lau.tmp.mkdir()
    yield lau
    lau.close()


def _read_trace(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ---------------------------------------------------------------------------------- the plan
def _split_trace(trace: list[str]):
    """``(head, runs, tail)``: points before the first run, one list per (strategy, seed) run
    (``run_start`` .. ``run_complete``), points after the last run."""
    head, runs, tail, cur = [], [], [], None
    for name in trace:
        if name == START:
            cur = [name]
            runs.append(cur)
        elif cur is not None:
            cur.append(name)
            if name == DONE:
                cur = None
        else:
            (tail if runs else head).append(name)
    return head, runs, tail


def _epoch_of(seg: list[str], i: int) -> int:
    """Epoch (0-based) of the Trainer point ``seg[i]``: the checkpoints written before it."""
    return seg[:i].count("train.epoch")


def _targets(seg: list[str]) -> list[int]:
    """The positions of ``seg`` to kill at: the first occurrence of every point, plus the
    Trainer's interesting ones (mid-epoch before and after the first checkpoint, an epoch
    logged but not checkpointed, the last checkpoint) and the last adaptation epoch."""
    first = {}
    for i, name in enumerate(seg):
        first.setdefault(name, i)
    picks = set(first.values())
    pos = {name: [i for i, n in enumerate(seg) if n == name] for name in set(seg)}
    steps = pos.get("train.step", [])
    for ep in sorted({_epoch_of(seg, i) for i in steps}):
        in_ep = [i for i in steps if _epoch_of(seg, i) == ep]
        picks.add(in_ep[len(in_ep) // 2])
    for name in ("train.epoch_logged", "train.epoch", "adapt.epoch"):
        if pos.get(name):
            picks.add(pos[name][-1])
    return sorted(picks)


def _resumed(seg: list[str], epochs_done: int) -> list[str]:
    """What a resumed process runs of an interrupted run with ``epochs_done`` checkpointed
    epochs: all of it (a run without a checkpoint starts over), less the epochs done."""
    return [n for i, n in enumerate(seg) if not (n in TRAIN and _epoch_of(seg, i) < epochs_done)]


def _epochs_after_kill(seg: list[str], p: int) -> int:
    """Checkpointed epochs left on disk by a kill at ``seg[p]`` (0 once the fit has returned,
    which deletes the checkpoint)."""
    ends = [i for i, n in enumerate(seg) if n == "train.epoch"]
    if not ends or p > ends[-1]:
        return 0
    return seg[: p + 1].count("train.epoch")


# ---------------------------------------------------------------------------------- checks
def _result(run_dir: Path) -> dict | None:
    p = run_dir / "result.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _metrics_rows(run_dir: Path) -> list[dict]:
    p = run_dir / "metrics.jsonl"
    rows = [json.loads(x) for x in p.read_text().splitlines()] if p.is_file() else []
    return [{k: v for k, v in r.items() if k != "epoch_time"} for r in rows]


def _compare_run(ref: Path, got: Path, what: str) -> list[str]:
    a, b = _result(ref), _result(got)
    if b is None:
        return [f"{what}: no result.json"]
    bad = [f"{k} {b.get(k)!r} != {a.get(k)!r}" for k in KEYS if a.get(k) != b.get(k)]
    if _metrics_rows(ref) != _metrics_rows(got):
        bad.append(f"metrics.jsonl differs (epochs {[r['epoch'] for r in _metrics_rows(got)]} vs "
                   f"{[r['epoch'] for r in _metrics_rows(ref)]}, or their values)")
    return [f"{what}: " + "; ".join(bad)] if bad else []


def _compare_results(ref: Path, got: Path) -> list[str]:
    a, b = (json.loads((d / "results.json").read_text()) for d in (ref, got))
    strip = [[{k: r[k] for k in ("strategy", "seed", *KEYS)} for r in x["runs"]] for x in (a, b)]
    out = [] if strip[0] == strip[1] else [f"results.json runs differ:\n  got {strip[1]}\n  ref {strip[0]}"]
    for key, s in a["summary"].items():
        t = b["summary"].get(key, {})
        for k in ("accuracy_mean", "accuracy_std", "n_seeds", "val_accuracy_mean"):
            if s[k] != t.get(k):
                out.append(f"results.json summary[{key}][{k}] {t.get(k)!r} != {s[k]!r}")
    return out


def _leftovers(d: Path) -> list[str]:
    """Markers and temporary files that a complete run directory must not hold."""
    bad = [p for p in d.rglob("*") if p.name == ".incomplete" or p.name.endswith(".tmp")
           or p.name == "checkpoint.pt"]
    hint = (" (a run killed after its result.json but before mark_complete keeps its .incomplete on resume: the "
            "kept-run branch of run_experiment must call mark_complete(run_dir) too)"
            if any(p.name == ".incomplete" for p in bad) else "")
    return [f"left in the finished directory: {', '.join(str(p.relative_to(d)) for p in bad)}{hint}"] if bad else []


# ---------------------------------------------------------------------------------- the tests
def test_every_strategy_survives_sigkill_at_every_kill_point(tmp_path, launcher):
    from transferkit._registry import available

    # source_free needs a trained source model (usps_cnn...), not this run's random tiny_cnn; it keeps no
    # mid-run checkpoint (a resumed run trains it again from the source model)
    missing = set(available("strategy")) - {s["name"] for s in STRATEGIES} - {"source_free"}
    assert not missing, f"add the strategies {sorted(missing)} to STRATEGIES (every one is killed and resumed)"
    assert {s.get("level", "features") for s in STRATEGIES if s["name"] == "adapt"} == {"features", "backbone"}
    keys = _keys(STRATEGIES)
    exp = tmp_path / "exp.yaml"
    exp.write_text(_config("kill_points", STRATEGIES))

    ref = tmp_path / "ref"
    rc, trace, log = launcher.real(["run", exp, "--out", ref, "--no-report"])
    assert rc == 0, log
    head, runs, tail = _split_trace(trace)
    assert head == ["experiment.start"] and len(runs) == len(keys), trace
    assert tail == ["experiment.results_json", "experiment.results_md", "experiment.complete"], tail
    for key, seg in zip(keys, runs):
        assert seg[-1] == DONE, (key, seg)
        assert "experiment.model" in seg and "experiment.artifacts" in seg, (key, seg)
    names = dict(zip(keys, (set(s) for s in runs)))
    # the points the issue names, reached where they should be
    assert {"features.batch", "finetune.probe", "finetune.linear_probe", *TRAIN} <= names["finetune"]
    assert {"features.batch", "feature_extraction.logistic"} <= names["feature_extraction"]
    assert {"features.batch", "adapt.epoch"} <= names["adapt"] & names["two_stage"]
    assert set(TRAIN) <= names["scratch"] & names["adapt_backbone"]

    plan = [(r, p) for r, seg in enumerate(runs) for p in _targets(seg)]
    failures: list[str] = []
    n_kills = chain = 0
    tail_left = list(tail)
    while plan or tail_left:
        # a chain: a fresh run killed at its start, then one resumed process per kill point, each
        # dying at the next one; a point the chain cannot reach any more (a run already kept)
        # waits for the next chain
        chain += 1
        out = tmp_path / f"run{chain}"
        kills_in_run: dict[int, list[str]] = {}
        checked: set[int] = set()

        def check_finished(upto: int) -> None:
            for r in range(upto):
                if r not in checked:
                    checked.add(r)
                    failures.extend(_compare_run(ref / keys[r] / "seed0", out / keys[r] / "seed0",
                                                 f"{keys[r]} after the kills {kills_in_run.get(r, [])}"))

        rc, got, log = launcher.real(["run", exp, "--out", out, "--no-report"], fault="experiment.start")
        n_kills += 1
        assert rc == KILL and got == head, f"rc {rc}, trace {got}\n{log[-2000:]}"
        first, done_epochs = 0, 0  # the first unfinished run and its checkpointed epochs
        later, finished = [], False
        for r, p in plan:
            if r < first:  # the run is kept (its result.json is written): not reachable again here
                later.append((r, p))
                continue
            expected, start = [], 0
            for q in range(first, r + 1):
                if q == r:
                    start = len(expected)
                expected += _resumed(runs[q], done_epochs) if q == first else runs[q]
            idx = start + (_resumed_index(runs[r], done_epochs, p) if r == first else p)
            name = expected[idx]
            fault = f"{name}@{expected[: idx + 1].count(name)}"
            rc, got, log = launcher.fork(["run", "--resume", out, "--no-report"], fault=fault)
            n_kills += 1
            kills_in_run.setdefault(r, []).append(fault)
            if rc != KILL or got != expected[: idx + 1]:
                at = next((i for i, (x, y) in enumerate(zip(got, expected)) if x != y), min(len(got), idx + 1))
                failures.append(
                    f"{keys[r]}: kill at {fault} (position {p} of the run): rc {rc} (want {KILL}); the resumed "
                    f"process ran other points than predicted from its point {at} on: got "
                    f"{got[max(0, at - 2):at + 3]}, predicted {expected[max(0, at - 2):at + 3]}"
                    + (f"\n{log[-800:]}" if rc != KILL else ""))
                # the directory's state is unknown now: finish it, check it; the next chain goes on
                if rc == KILL:
                    rc, _, log = launcher.fork(["run", "--resume", out, "--no-report"])
                    assert rc == 0, log
                first, done_epochs, finished = len(runs), 0, True
                check_finished(first)
                continue
            if name in ("experiment.result", DONE):
                first, done_epochs = r + 1, 0  # result.json is on disk: the run is kept from now on
            else:
                first, done_epochs = r, _epochs_after_kill(runs[r], p)
            check_finished(first)
        plan = later
        if not finished and tail_left:  # the final results write: results.json, results.md, the marker
            for point in tail_left:
                rc, got, log = launcher.fork(["run", "--resume", out, "--no-report"], fault=point)
                n_kills += 1
                if rc != KILL or got[-1:] != [point]:
                    failures.append(f"kill at {point}: rc {rc}, trace ends {got[-3:]}\n{log[-800:]}")
                check_finished(len(runs))
            tail_left = []
            finished = True
        rc, got, log = launcher.fork(["run", "--resume", out, "--no-report"])
        assert rc == 0, log
        check_finished(len(runs))
        if finished:
            assert "nothing to resume" in log, log[-2000:]
        failures += _compare_results(ref, out)
        failures += _leftovers(out)
    assert n_kills >= 60  # every point of every strategy: the plan is not silently empty
    assert not failures, f"{len(failures)} failures in {n_kills} kills:\n" + "\n".join(failures)


def _resumed_index(seg: list[str], epochs_done: int, p: int) -> int:
    """Index of ``seg[p]`` in :func:`_resumed` ``(seg, epochs_done)``."""
    return sum(1 for i in range(p) if not (seg[i] in TRAIN and _epoch_of(seg, i) < epochs_done))


def test_kill_in_cached_feature_extraction_and_in_the_report(tmp_path, launcher):
    """The realistic cache: shared by every process, so the resumed run reads the features the
    killed one cached. Then kills during the report (its build, the figures, after the HTML):
    ``--resume`` of the finished directory writes the whole report."""
    strategies = [{"name": "feature_extraction", "C": 0.5}]  # one strategy: a report of seconds
    exp = tmp_path / "exp.yaml"
    exp.write_text(_config("kill_report", strategies))
    ref = tmp_path / "ref"
    rc, trace, log = launcher.real(["run", exp, "--out", ref, "--no-report"])
    assert rc == 0, log
    _, runs, _ = _split_trace(trace)
    assert runs[0].count("features.batch") >= 3, runs[0]
    # the second batch (the test split's, after the fit): the training features are cached by now,
    # so the resumed run reads them from the cache the killed process wrote
    fault = "features.batch@2"
    cache = tmp_path / "shared_cache"
    out = tmp_path / "run"
    rc, _, log = launcher.real(["run", exp, "--out", out], fault=fault, cache=cache)
    assert rc == KILL, log
    assert any(cache.glob("*.npy")), "the killed run cached nothing: the point is not where it should be"
    assert not (out / "results.json").exists()
    report_points = ["report.sections", "report.figure@2", "report.html"]
    for point in report_points:
        rc, got, log = launcher.fork(["run", "--resume", out], fault=point, cache=cache)
        assert rc == KILL, f"{point}: {log[-2000:]}"
        assert got[-1] == point.split("@")[0]
    rc, got, log = launcher.fork(["run", "--resume", out], cache=cache)
    assert rc == 0, log
    assert "nothing to resume" in log and "report:" in log, log[-2000:]
    assert not _compare_results(ref, out), _compare_results(ref, out)
    for key in _keys(strategies):
        assert not _compare_run(ref / key / "seed0", out / key / "seed0", key)
    html, md = out / "report.html", out / "report.md"
    assert html.stat().st_size > 1000 and md.stat().st_size > 100
    assert html.read_text().rstrip().endswith("</html>")
    import re

    figures = re.findall(r"\]\((report_files/[^)]+\.png)\)", md.read_text())
    assert figures and all((out / f).is_file() for f in figures), figures
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / ".incomplete").exists()
