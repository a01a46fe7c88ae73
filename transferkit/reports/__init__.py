"""Reports: ``report.html`` (self-contained) and ``report.md`` (+ ``report_files/``) for a run
directory of ``transferkit run``/``demo``, ``assess``, ``benchmark`` or ``diagnose``.

>>> from transferkit.reports import write_report
>>> paths = write_report("runs/demo")          # doctest: +SKIP
>>> paths["html"]                              # doctest: +SKIP
PosixPath('runs/demo/report.html')

The report is rebuilt from the files in the directory alone (``results.json``,
``assess.json``, ``diagnose.json``, each run's ``metrics.jsonl``, ``predictions.npz`` and
``features.npz``: see :mod:`transferkit.reports.artifacts`), so ``transferkit report RUN_DIR``
regenerates it without retraining. matplotlib is imported only when a report is drawn.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .artifacts import save_run_artifacts

__all__ = ["build_report", "save_run_artifacts", "write_report"]

FORMATS = ("html", "md")


def build_report(run_dir):
    """The report of ``run_dir`` as a :class:`~transferkit.reports.document.Report`."""
    from .build import build_report as _build

    return _build(run_dir)


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(run_dir, formats=FORMATS) -> dict[str, Path]:
    """Write ``report.html`` and/or ``report.md`` into ``run_dir``; return ``{format: path}``.

    Parameters
    ----------
    run_dir
        Output directory of ``transferkit run``/``demo``/``assess``/``benchmark``/``diagnose``.
        What it holds decides the sections (see :mod:`transferkit.reports.build`); a directory
        with nothing to report raises :class:`~transferkit.errors.ConfigError`.
    formats
        Any of ``"html"`` (one self-contained file: inline CSS, images as base64 ``data:``
        URIs, no script) and ``"md"`` (images as PNG files in ``report_files/``).
    """
    from ..errors import ConfigError
    from .html import render_html
    from .markdown import FILES_DIR, render_markdown

    formats = tuple(formats)
    for f in formats:
        if f not in FORMATS:
            raise ConfigError(f"report format {f!r} is not one of {', '.join(FORMATS)}.")
    d = Path(run_dir)
    report = build_report(d)
    out: dict[str, Path] = {}
    if "html" in formats:
        out["html"] = d / "report.html"
        _write_bytes(out["html"], render_html(report).encode("utf-8"))
    if "md" in formats:
        text, files = render_markdown(report)
        fdir = d / FILES_DIR
        if fdir.is_dir():  # stale figures of an earlier report
            for old in fdir.glob("*.png"):
                old.unlink()
        for rel, png in files.items():
            _write_bytes(d / rel, png)
        out["md"] = d / "report.md"
        _write_bytes(out["md"], text.encode("utf-8"))
    return out
