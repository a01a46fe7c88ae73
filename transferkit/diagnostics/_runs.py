"""The experiments behind the diagnostics, run or continued (``transferkit diagnose --resume``)."""

from __future__ import annotations

import json
from pathlib import Path


def load_complete(out: Path) -> dict | None:
    """The results of a finished experiment directory (``results.json``, no ``.incomplete``)."""
    from ..train.rundir import INCOMPLETE

    if (out / INCOMPLETE).exists() or not (out / "results.json").is_file():
        return None
    try:
        res = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return res if isinstance(res, dict) and "runs" in res and "summary" in res else None


def run_or_resume(cfg, out_dir, *, resume: bool = False, overwrite: bool = False, echo=print, on_run=None,
                  report_features: bool = True, force: bool = False) -> dict:
    """:func:`transferkit.experiment.run_experiment` of ``cfg`` into ``out_dir``; with ``resume``,
    continue it there instead: a finished directory is read back (unless ``force``: some of its
    runs were invalidated and must run again), an interrupted one is resumed (finished runs kept,
    the interrupted one from its checkpoint), one never started is run."""
    from ..experiment import run_experiment

    out = Path(out_dir)
    if resume and (out / "config.yaml").is_file():
        done = None if force else load_complete(out)
        if done is not None:
            echo(f"{out} is complete; kept.")
            return done
        return run_experiment(cfg, out, resume=True, echo=echo, on_run=on_run, report_features=report_features)
    if resume and out.is_dir() and any(out.iterdir()):
        # created by a process killed before it wrote its config: replace it (transferkit's own folder only)
        return run_experiment(cfg, out, overwrite=True, echo=echo, on_run=on_run, report_features=report_features)
    return run_experiment(cfg, out, overwrite=overwrite, echo=echo, on_run=on_run, report_features=report_features)
