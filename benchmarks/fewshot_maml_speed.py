"""Meta-training time of maml / fomaml / anil / reptile with conv4 on 28x28 one-channel images.

    OMP_NUM_THREADS=1 python benchmarks/fewshot_maml_speed.py [--steps 20] [--shots 1 5]
        [--methods maml fomaml anil reptile reptile,inner_batch=10 ...] [--inner-steps 5] [--meta-batch 4] [--query 15]
        [--val-episodes 20] [--budget 600] [--eval-every 100] [--val-per-eval 100]

The images are random (timing does not depend on their content): 64 classes x 30 images of
1x28x28, meta-train episodes 5-way K-shot 15-query. The encoder is ``conv4(1, hidden=32)``
(32 features), one torch thread. Each row times ``--steps`` outer steps of ``meta_train`` with no
meta-val classes (so no evaluation inside): seconds per 100 outer steps, wall clock and process
CPU time (``cpu s/100``, the better figure on a machine that other jobs share). Then it times
``predict_episode`` (``inner_steps`` adaptation steps on the support set, the query forward) over
``--val-episodes`` episodes, per 100 episodes (wall clock): the cost of one meta-val evaluation
of 100 episodes.

The last columns turn the CPU times (what wall time is on a core of one's own) into a budget: the largest number of outer steps whose meta-training
run, *including* a meta-val evaluation of ``--val-per-eval`` episodes at step 0, every
``--eval-every`` steps and at the end, fits in ``--budget`` seconds (the issue's 10 minutes with
one thread).
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import time

import numpy as np
import torch

from transferkit._registry import get
from transferkit.fewshot import EpisodeSampler, MetaData, conv4


def make_data(k_shot: int, q_query: int, n_classes: int = 64, per: int = 30, seed: int = 0) -> MetaData:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per)
    x = torch.tensor(rng.random((len(y), 1, 28, 28), dtype=np.float32))
    return MetaData(x, y, train=EpisodeSampler(y, 5, k_shot, q_query, seed=1, where="meta-train"))


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"reptile,inner_batch=10,train_on='support'"`` -> ``("reptile", {...})``."""
    name, *pairs = spec.split(",")
    kw = {}
    for pair in pairs:
        k, v = pair.split("=", 1)
        kw[k] = ast.literal_eval(v)
    return name, kw


def time_method(spec: str, k_shot: int, args) -> dict:
    data = make_data(k_shot, args.query)
    torch.manual_seed(0)
    name, kw = parse_spec(spec)
    kw = {"inner_steps": args.inner_steps, "meta_batch": args.meta_batch, **kw}
    method = get("fewshot", name)(**kw)
    method.setup(conv4(1, hidden=32), feature_dim=32, seed=0)
    method.meta_train(data, steps=1)  # warm-up (allocator, first-call overheads)
    t0, c0 = time.perf_counter(), time.process_time()
    method.meta_train(data, steps=args.steps)
    per100 = (time.perf_counter() - t0) / args.steps * 100
    cpu100 = (time.process_time() - c0) / args.steps * 100
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(args.val_episodes):
        xs, ys, xq, _ = data.rows(data.train.episode(10_000 + i))
        with torch.no_grad():
            method.predict_episode(xs, ys, xq, 5)
    val100 = (time.perf_counter() - t0) / args.val_episodes * 100
    valcpu100 = (time.process_time() - c0) / args.val_episodes * 100
    # budget, on CPU time (= wall time on a core of one's own):
    # steps * t_step + (steps / eval_every + 2) * val_per_eval * t_val <= budget
    t_step, t_val = cpu100 / 100, valcpu100 / 100 * args.val_per_eval / 100
    n = int((args.budget - 2 * t_val) / (t_step + t_val / args.eval_every))
    return {"method": spec, "shots": k_shot, "train_per100": per100, "cpu_per100": cpu100, "val_per100": val100,
            "valcpu_per100": valcpu100,
            "max_steps": max(n, 0), "at_1000": 1000 * t_step + (1000 / args.eval_every + 1) * t_val}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="outer steps timed per row")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    p.add_argument("--methods", nargs="+", default=["maml", "fomaml", "anil", "reptile", "reptile,inner_batch=10"],
                   help="names, optionally with parameters: maml,inner_steps=3 reptile,train_on='support'")
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--meta-batch", type=int, default=4)
    p.add_argument("--query", type=int, default=15)
    p.add_argument("--val-episodes", type=int, default=20, help="prediction episodes timed per row")
    p.add_argument("--budget", type=float, default=600.0, help="seconds one meta-training run may take")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--val-per-eval", type=int, default=100, help="meta-val episodes per evaluation")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads "
          f"{torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}); conv4(hidden=32) on "
          f"1x28x28, 5-way K-shot {args.query}-query, meta_batch {args.meta_batch}, inner_steps {args.inner_steps}")
    print(f"{'method':26s} {'shots':>5s} {'s/100 steps':>12s} {'cpu s/100':>10s} {'s/100 val ep':>13s} {'cpu s/100 val':>13s} "
          f"{'steps in ' + format(args.budget, 'g') + ' s':>14s} {'1000 steps (s)':>15s}")
    for k in args.shots:
        for name in args.methods:
            r = time_method(name, k, args)
            print(f"{r['method']:26s} {r['shots']:5d} {r['train_per100']:12.1f} {r['cpu_per100']:10.1f} "
                  f"{r['val_per100']:13.1f} {r['valcpu_per100']:13.1f} "
                  f"{r['max_steps']:14d} {r['at_1000']:15.0f}", flush=True)


if __name__ == "__main__":
    main()
