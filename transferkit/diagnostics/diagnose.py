"""``transferkit diagnose``: did transfer help, by how much, and at what cost?

One call runs, from an experiment config and its optional ``diagnose:`` section
(:class:`transferkit.config.DiagnoseConfig`):

1. the negative-transfer test (:mod:`.negative_transfer`): transfer vs baseline (and the
   ``source_only`` strategy, trained on labeled source only with no target labels or inputs,
   when label spaces match) over the config's seeds, same splits and budget;
2. convergence speed from those runs' histories (:func:`.sample_efficiency.convergence_speed`);
3. sharpness of each solution found (:func:`.sharpness.model_sharpness`);
4. the sample-efficiency curve and labels saved (:func:`.sample_efficiency.run_sample_efficiency`);
5. forgetting of the source task, when enabled (``transferkit.diagnostics.forgetting``).

and writes ``diagnose.json`` and ``diagnose.md`` under the output directory.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..metrics._base import mean_std


#: The config a diagnose directory was started with (``transferkit diagnose --resume`` reads it).
CONFIG_FILE = "diagnose.yaml"

#: Per-run record of the diagnostics (history, sharpness) next to each compared run's result.json.
RECORD_FILE = "diagnostics.json"


def resume_diagnose(out_dir: str | Path, *, echo=print) -> dict:
    """Continue an interrupted :func:`run_diagnose` in ``out_dir`` with the config stored there:
    finished experiments and runs are kept, the interrupted run continues from its checkpoint."""
    from ..config import load_config
    from ..train.rundir import completed, locate_resume

    final = Path(out_dir)
    out = locate_resume(final, CONFIG_FILE, "diagnose", "transferkit diagnose CONFIG --out DIR", echo=echo)
    res = completed(out, "diagnose.json", "negative_transfer") if out == final else None
    if res is not None:
        echo(f"{out} is complete; nothing to resume.")
        return res
    return run_diagnose(load_config(out / CONFIG_FILE), final, resume=True, echo=echo)


def _record(rec: dict) -> dict:
    """A per-run record in plain JSON types (the same values whether fresh or read back)."""
    import json

    from ..train.rundir import _jsonable

    return json.loads(json.dumps(rec, default=_jsonable))


#: Strategies that are baselines of domain adaptation, never its "transfer" side.
DA_BASELINES = ("source_only", "source_only_lr", "source_only_adabn", "target_only")


def default_diagnose(cfg):
    """The ``diagnose:`` section a config without one gets: ``finetune`` against ``scratch``,
    except for a domain-adaptation config (a source, and every strategy trains without target
    labels), where the first adaptation strategy is compared with its source-only baseline
    (``source_only_lr`` when the config has it, else ``source_only``), without the
    sample-efficiency curve (it needs target labels) or the sharpness."""
    from .._registry import get
    from ..config import DiagnoseConfig

    names = {s.key: s.name for s in cfg.strategies}
    if cfg.source is None or any(getattr(get("strategy", n), "needs_target_labels", True) for n in names.values()):
        return DiagnoseConfig()
    base = next((k for k, n in names.items() if n in ("source_only_lr", "source_only")), "source_only")
    transfer = next((k for k, n in names.items() if n not in DA_BASELINES and k != base), "adapt")
    return DiagnoseConfig(transfer=transfer, baseline=base, source_only=False, labels_per_class=[], sharpness=False)


def run_diagnose(cfg, out_dir: str | Path | None = None, *, overwrite: bool = False, echo=print, inputs=(),
                 resume: bool = False) -> dict:
    """Run every enabled diagnostic for ``cfg``; write ``diagnose.json``/``diagnose.md``.

    Every check that can fail (the ``diagnose:`` section, the seeds, the data and splits, the
    backbone, every compared strategy's parameters, the output directory) runs before anything
    is trained or written. The directory obeys :func:`transferkit.train.rundir.open_run_dir`;
    it stores the config (:data:`CONFIG_FILE`), and each experiment behind the diagnostics is
    checkpointed per (strategy, seed) run, so ``resume=True`` (see :func:`resume_diagnose`)
    continues an interrupted diagnose in ``out_dir`` with the same results.

    Returns the dict written to ``diagnose.json``: ``negative_transfer`` (``verdict``,
    ``delta_mean``, ``ci_low``, ``ci_high``, ``n_seeds``, ``p_value``, ``method``, ...),
    ``convergence``, ``sharpness``, ``sample_efficiency``, ``forgetting`` (``None`` when off or
    unavailable, with the reason in ``notes``), ``wall_time``.
    """
    import yaml

    from .._faults import fault_point
    from ..config import DiagnoseConfig
    from ..data.spec import load_dataset
    from ..experiment import validate_run
    from ..train.rundir import mark_complete, mark_incomplete, open_run_dir, write_json, write_text
    from .negative_transfer import check_seeds, negative_transfer_config

    t0 = time.perf_counter()
    dc = cfg.diagnose or default_diagnose(cfg)
    if cfg.diagnose is None and dc.transfer != DiagnoseConfig().transfer:
        echo(f"no diagnose section: comparing {dc.transfer} with {dc.baseline} (domain adaptation from the source; "
             "no target labels to train on, so no sample-efficiency curve)")
    dc.validate([s.key for s in cfg.strategies])
    check_seeds(cfg)
    # bad data, a backbone typo or a bad strategy parameter fails here, before anything is trained or written
    sub, t_cfg, b_cfg, _ = negative_transfer_config(cfg, transfer=dc.transfer, baseline=dc.baseline,
                                                    source_only=dc.source_only)
    for scfg in (t_cfg, b_cfg):  # convergence speed and the rising-loss check read every epoch's validation
        from .._registry import get as _get
        import inspect

        if "val_every" in inspect.signature(_get("strategy", scfg.name).__init__).parameters:
            scfg.params.setdefault("val_every", 1)
    target, *_ = validate_run(sub, load_dataset)
    final = Path(out_dir or cfg.output_dir or f"runs/diagnose-{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    read = {k: v for k, v in cfg.to_dict().items() if k != "output_dir"}  # the paths this diagnose reads
    with open_run_dir(final, overwrite=overwrite, resume=resume, inputs=(read, *inputs), kind="diagnose") as out:
        if resume:
            echo(f"resuming {final}")
        else:
            mark_incomplete(out)
            write_text(out / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        result = _diagnose(cfg, dc, out, final, t_cfg.key, b_cfg.key, target, resume, echo, t0)
        write_json(out / "diagnose.json", result)
        write_text(out / "diagnose.md", format_diagnose(result) + "\n")
        fault_point("diagnose.written")
        mark_complete(out)
    return result


def _diagnose(cfg, dc, out: Path, final: Path, t_key: str, b_key: str, target, resume: bool, echo, t0) -> dict:
    import json

    from ..errors import ConfigError
    from ..train.rundir import is_inside, write_json
    from .negative_transfer import run_negative_transfer
    from .sample_efficiency import convergence_speed, run_sample_efficiency

    notes: list[str] = []
    nt_dir = out / "negative_transfer"

    def run_dir(key, seed) -> Path:
        d = nt_dir / key / f"seed{seed}"
        if not is_inside(d, nt_dir):  # keys are checked names; the last line of defence
            raise ConfigError(f"strategy key {key!r} would put a run outside {str(final)!r}; use a plain name.")
        return d

    def on_run(strat, row, splits):
        if row["strategy"] not in (t_key, b_key):
            return
        rec = {"seed": row["seed"], "history": list(getattr(strat, "history_", []) or []),
               "n_train": int((splits[0].labels >= 0).sum()), "batch_size": getattr(strat, "batch_size", None)}
        model = getattr(strat, "model_", None)
        if dc.sharpness and hasattr(strat, "trainer_") and model is not None:
            from .sharpness import model_sharpness

            rec["sharpness"] = model_sharpness(model, splits[0], max_samples=dc.sharpness_samples, seed=row["seed"])
        # on disk at once, next to the run's result.json: a resumed diagnose reads it back
        write_json(run_dir(row["strategy"], row["seed"]) / RECORD_FILE, _record(rec))

    force = False
    if resume:  # a run finished but killed before its record was written runs again (its record needs the model)
        for key in (t_key, b_key):
            for seed in cfg.seeds:
                d = run_dir(key, seed)
                if (d / "result.json").is_file() and not (d / RECORD_FILE).is_file():
                    (d / "result.json").unlink()
                    force = True
    echo(f"negative transfer: {t_key} vs {b_key} over seeds {cfg.seeds}")
    nt = run_negative_transfer(cfg, nt_dir, transfer=dc.transfer, baseline=dc.baseline,
                               source_only=dc.source_only, method=dc.method, confidence=dc.confidence,
                               n_resamples=dc.n_resamples, echo=echo, on_run=on_run, resume=resume, force=force)
    captured = {key: [json.loads((run_dir(key, s) / RECORD_FILE).read_text()) for s in cfg.seeds]
                for key in (t_key, b_key)}
    experiment = nt.pop("experiment")
    nt.pop("histories")
    nt["summary"] = experiment["summary"]
    if len(cfg.seeds) < 3:
        notes.append(f"only {len(cfg.seeds)} seeds: the negative-transfer interval is wide; use 3 or more.")

    conv = None
    t_runs = [r for r in captured[t_key] if r["history"] and r["batch_size"]]
    b_runs = [r for r in captured[b_key] if r["history"] and r["batch_size"]]
    if t_runs and b_runs:
        conv = convergence_speed(t_runs, b_runs, threshold=dc.convergence_accuracy)
        conv["transfer_strategy"], conv["baseline_strategy"] = t_key, b_key
    else:
        notes.append("convergence speed needs per-epoch validation histories from both strategies (trained with "
                     "the Trainer and a validation split); skipped.")

    sharp = None
    if dc.sharpness:
        sharp = {"quantity": "top Hessian eigenvalue of the mean training cross-entropy over the trainable "
                             "parameters, model in eval mode (power iteration on Hessian-vector products)"}
        for key in (t_key, b_key):
            vals = [r["sharpness"] for r in captured[key] if "sharpness" in r]
            if not vals:
                sharp[key] = None
                notes.append(f"sharpness: strategy {key!r} has no end-to-end model (feature-level head); skipped.")
                continue
            ev = [float(v["eigenvalue"]) for v in vals]
            mean, std = mean_std(ev)
            sharp[key] = {"mean": mean, "std": std, "per_seed": ev, "converged": all(v["converged"] for v in vals),
                          "n_params": vals[0]["n_params"], "n_samples": vals[0]["n_samples"]}

    se = None
    if dc.labels_per_class:
        k0 = cfg.split.labels_per_class if cfg.split.labels_per_class is not None else "all"
        se = run_sample_efficiency(cfg, out / "sample_efficiency", transfer=dc.transfer, baseline=dc.baseline,
                                   labels_per_class=dc.labels_per_class, echo=echo, resume=resume,
                                   precomputed={k0: experiment})  # the config's own split was just run

    forgetting = None
    if dc.forgetting:
        try:
            from .forgetting import run_forgetting
        except ImportError:
            notes.append("forgetting: transferkit.diagnostics.forgetting is not available in this version; skipped.")
        else:
            import inspect

            # run_forgetting trains its own source task (two digit tasks) on the config's backbone
            wanted = {"backbone": cfg.backbone.name, "seeds": list(cfg.seeds), "image_size": cfg.backbone.image_size,
                      "device": cfg.device, "echo": echo}
            accepted = inspect.signature(run_forgetting).parameters
            forgetting = run_forgetting(**{k: v for k, v in wanted.items() if k in accepted and v is not None})
            notes.append("forgetting: measured by transferkit.diagnostics.forgetting.run_forgetting on its own "
                         "two-task digits setup with this backbone, not on the config's source.")

    result = {
        "name": cfg.name,
        "target": target.spec or target.name,
        "source": cfg.source if isinstance(cfg.source, str) or cfg.source is None else str(cfg.source),
        "backbone": cfg.backbone.name,
        "seeds": list(cfg.seeds),
        "transfer": t_key,
        "baseline": b_key,
        "negative_transfer": nt,
        "convergence": conv,
        "sharpness": sharp,
        "sample_efficiency": se,
        "forgetting": forgetting,
        "notes": notes,
        "output_dir": str(final),
        "wall_time": time.perf_counter() - t0,
    }
    return result


def format_diagnose(res: dict) -> str:
    """The Markdown summary of :func:`run_diagnose`'s result."""
    from .sample_efficiency import format_curve

    t, b = res["transfer"], res["baseline"]
    nt = res["negative_transfer"]
    lvl = round(100 * nt["confidence"])
    lines = [f"# transferkit diagnose: {res['name']}", "",
             f"target `{res['target']}`, source `{res['source']}`, backbone `{res['backbone']}`, seeds {res['seeds']}", "",
             "## Negative transfer", "",
             f"**{nt['verdict']}**: {t} - {b} test accuracy = {nt['delta_mean']:+.3f} "
             f"({lvl}% CI [{nt['ci_low']:+.3f}, {nt['ci_high']:+.3f}], {nt['method']}, p = {nt['p_value']:.3g}, "
             f"{nt['n_seeds']} seeds)", "",
             f"- {t}: {nt['transfer_mean']:.3f}; {b}: {nt['baseline_mean']:.3f}"]
    if nt.get("source_only"):
        so = nt["source_only"]
        what = so.get("description", "trained on labeled source only")
        lines.append(f"- {so.get('strategy', 'source_only')} ({what}): {so['accuracy_mean']:.3f} "
                     f"(vs {b}: {so['delta_mean']:+.3f}, {so['verdict']})")
    rv = nt["rising_val_loss"]
    lines.append(f"- validation loss rising from the start: {'YES, seeds ' + str(rv['seeds']) if rv['flagged'] else 'no'}")
    conv = res.get("convergence")
    if conv and conv.get("transfer"):
        def steps(s):
            return "not reached" if s["steps_mean"] is None else f"{s['steps_mean']:.0f} ({s['reached']}/{s['n_seeds']} seeds)"

        lines += ["", "## Convergence", "",
                  f"steps to {conv['threshold']:.3f} validation accuracy ({conv['threshold_rule']}): "
                  f"{t} {steps(conv['transfer'])}, {b} {steps(conv['baseline'])}"
                  + (f"; speed-up {conv['speedup']:.2f}x" if conv.get("speedup") else "")
                  + (f"; speed-up at least {conv['speedup_at_least']:.2f}x ({b} missed it in some seeds)"
                     if conv.get("speedup_at_least") else "")]
    sh = res.get("sharpness")
    if sh:
        lines += ["", "## Sharpness", "", sh["quantity"] + ":", ""]
        for k in (t, b):
            v = sh.get(k)
            lines.append(f"- {k}: " + ("-" if v is None else f"{v['mean']:.4g} ± {v['std']:.2g}"))
    se = res.get("sample_efficiency")
    if se and se["curve"]:
        lines += ["", "## Sample efficiency", "", format_curve(se), "", se["headline"]]
        for s in se["skipped"]:
            lines.append(f"- skipped k={s['label']}: {s['reason']}")
    if res.get("forgetting") is not None:
        lines += ["", "## Forgetting", "", "```", str(res["forgetting"]), "```"]
    if res["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines)
