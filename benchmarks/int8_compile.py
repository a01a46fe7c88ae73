"""INT8 against FP32 when both are compiled by inductor: the saved teachers of a compress benchmark.

    OMP_NUM_THREADS=1 python benchmarks/int8_compile.py runs/bench-compress [--out results.md]

``transferkit benchmark compress`` times the models *eagerly*: the FP32 teacher as trained
(channels-last, oneDNN's FP32 path) and the INT8 graph lowered to oneDNN int8 kernels, whose
quantize/dequantize steps still run as separate elementwise ops (42% of its time in a profile). The
path PyTorch's x86 PT2E tutorial times is ``torch.compile`` (inductor, with freezing), which fuses
those steps into the int8 kernels. This script loads every ``models/TASK-seedN`` of a finished
benchmark run (``teacher_fp32.safetensors``, ``teacher_int8.pt2``, read weights-only) and times,
round robin in one process with one torch thread, median of repeats:

* FP32 eager (channels-last), FP32 compiled, INT8 lowered eager, INT8 compiled (inductor lowers
  the q/dq graph itself);

and checks that compiled INT8 predicts what eager INT8 predicts (argmax agreement on the cell's
test rows, which it also scores). Ratios are FP32-eager time / other time, and INT8-compiled over
FP32-compiled (compiled against compiled: the fair comparison of the arithmetic).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _compiled(model, examples):
    """``torch.compile(model)`` with inductor's freezing (constant weights folded and prepacked:
    what the quantized patterns need), compiled on each example batch size inside the patch."""
    import torch
    import torch._inductor.config as inductor_config

    c = torch.compile(model, dynamic=False)
    with inductor_config.patch(freezing=True), torch.inference_mode():
        for x in examples:
            c(x)
    return c


def _time(models: dict, inputs: dict, repeats: dict) -> dict:
    import torch

    out = {n: {b: [] for b in repeats} for n in models}
    with torch.inference_mode():
        for b, r in repeats.items():
            for n, f in models.items():
                f(inputs[b])
            for _ in range(r):
                for n, f in models.items():
                    t = time.perf_counter()
                    f(inputs[b])
                    out[n][b].append(time.perf_counter() - t)
    return {n: {b: statistics.median(v) for b, v in d.items()} for n, d in out.items()}


def cell(folder: Path, repeats: dict) -> dict:
    import torch

    from transferkit.backbones import create_backbone
    from transferkit.compress.quantize import load_quantized, lower_to_x86
    from transferkit.compression import TEACHER, _batches, task_data
    from transferkit.nn import TransferModel
    from transferkit.strategies._state import load_module_state

    task, seed = folder.name.rsplit("-seed", 1)
    data = task_data(task, int(seed))
    from safetensors.torch import load_file

    state = load_file(str(folder / "teacher_fp32.safetensors"))
    n_classes = int(state["head.fc.weight"].shape[0])
    bb = create_backbone(TEACHER["name"], pretrained=False, image_size=TEACHER["image_size"])
    fp32 = TransferModel(bb, n_classes)
    load_module_state(fp32, state, str(folder / "teacher_fp32.safetensors"))
    fp32 = fp32.eval().to(memory_format=torch.channels_last)
    test = data["test"]
    xs = torch.cat(list(_batches(fp32, test, 256)))
    x64, x1 = xs[:64].contiguous(), xs[:1].contiguous()
    qdq = load_quantized(folder / "teacher_int8.pt2")
    lowered = lower_to_x86(qdq, x64[:2])
    t0 = time.perf_counter()
    fp32_c = _compiled(fp32, (x1, x64))
    int8_c = _compiled(qdq, (x1, x64))
    compile_s = time.perf_counter() - t0
    models = {"fp32_eager": fp32, "fp32_compiled": fp32_c, "int8_eager": lowered, "int8_compiled": int8_c}
    lat = _time(models, {1: x1, 64: x64}, repeats)
    with torch.inference_mode():
        eager = torch.cat([lowered(xs[s:s + 256]) for s in range(0, len(xs), 256)]).argmax(1).numpy()
        comp = np.concatenate([int8_c(xs[s:s + 64]).argmax(1).numpy() for s in range(0, len(xs) - 63, 64)])
        fp = torch.cat([fp32(xs[s:s + 256]) for s in range(0, len(xs), 256)]).argmax(1).numpy()
    n = len(comp)
    y = test.labels
    return {"task": task, "seed": int(seed), "latency": lat, "compile_seconds": compile_s,
            "accuracy": {"fp32": float((fp == y).mean()), "int8_eager": float((eager == y).mean()),
                         "int8_compiled": float((comp == y[:n]).mean()), "rows_compiled": n},
            "agreement_compiled_vs_eager_int8": float((comp == eager[:n]).mean())}


def markdown(cells: list[dict]) -> str:
    def ms(v):
        return f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}"

    lines = ["| task | batch | FP32 eager ms | speed-up over FP32 eager: FP32 compiled | INT8 eager | INT8 compiled | "
             "INT8 compiled over FP32 compiled | argmax agreement, compiled vs eager INT8 |",
             "|---|---|---|---|---|---|---|---|"]
    for task in sorted({c["task"] for c in cells}):
        cs = [c for c in cells if c["task"] == task]
        for b in (1, 64):
            lat = [c["latency"] for c in cs]
            base = [x["fp32_eager"][b] for x in lat]
            r = {k: [x["fp32_eager"][b] / x[k][b] for x in lat]
                 for k in ("fp32_compiled", "int8_eager", "int8_compiled")}
            rc = [x["fp32_compiled"][b] / x["int8_compiled"][b] for x in lat]
            agree = [c["agreement_compiled_vs_eager_int8"] for c in cs]
            lines.append(f"| {task} | {b} | {np.mean(base) * 1e3:.1f} | {ms(r['fp32_compiled'])}x | "
                         f"{ms(r['int8_eager'])}x | {ms(r['int8_compiled'])}x | {ms(rc)}x | {np.mean(agree):.4f} |")
    return "\n".join(lines) + (f"\n\nSpeed-ups (higher is faster), mean ± std over {len(cells) // 2 or 1} seeds; one "
                               "torch thread; compiled with inductor (freezing), dynamic=False per batch size.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench_dir", help="a finished 'transferkit benchmark compress' output folder")
    p.add_argument("--out", help="also write the table and the cells (JSON beside it) here")
    p.add_argument("--repeats", type=int, default=15, help="timed calls per model and batch size (default 15)")
    p.add_argument("--table-only", action="store_true", help="rewrite the table from --out's JSON (no timing)")
    a = p.parse_args(argv)
    if a.table_only:
        cells = json.loads(Path(a.out).with_suffix(".json").read_text())
        for c in cells:  # JSON keys are strings
            c["latency"] = {k: {int(b): t for b, t in v.items()} for k, v in c["latency"].items()}
        table = markdown(cells)
        Path(a.out).write_text(table + "\n")
        print(table)
        return 0
    import torch

    torch.set_num_threads(1)
    folders = sorted((Path(a.bench_dir) / "models").glob("*-seed*"))
    if not folders:
        print(f"error: {a.bench_dir!r} has no models/TASK-seedN folders; run transferkit benchmark compress first.",
              file=sys.stderr)
        return 2
    cells = []
    for f in folders:
        c = cell(f, {1: 2 * a.repeats, 64: a.repeats})
        cells.append(c)
        lat = c["latency"]
        print(f"{f.name}: " + ", ".join(f"{k} b64 {v[64] * 1e3:.1f} ms" for k, v in lat.items())
              + f"; compile {c['compile_seconds']:.0f} s; agreement {c['agreement_compiled_vs_eager_int8']:.4f}",
              flush=True)
    table = markdown(cells)
    print(table)
    if a.out:
        Path(a.out).write_text(table + "\n")
        Path(a.out).with_suffix(".json").write_text(json.dumps(cells, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
