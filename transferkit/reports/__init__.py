"""Reports: ``report.html`` (self-contained) and ``report.md`` (+ ``report_files/``) for a run
directory of ``transferkit run``/``demo``, ``assess``, ``benchmark`` or ``diagnose``.

>>> from transferkit.reports import write_report
>>> paths = write_report("runs/demo")          # doctest: +SKIP
>>> paths["html"]                              # doctest: +SKIP
PosixPath('runs/demo/report.html')

The report is rebuilt from the files in the directory alone (``results.json``,
``assess.json``, ``diagnose.json``, each run's ``metrics.jsonl``, ``predictions.npz`` and
``features.npz``: see :mod:`transferkit.artifacts`), so ``transferkit report RUN_DIR``
regenerates it without retraining. matplotlib is imported only when a report is drawn.
"""

from __future__ import annotations

from pathlib import Path

from .._faults import fault_point
from ..artifacts import save_run_artifacts

__all__ = ["build_report", "save_run_artifacts", "write_report"]

FORMATS = ("html", "md")


def build_report(run_dir):
    """The report of ``run_dir`` as a :class:`~transferkit.reports.document.Report`."""
    from .build import build_report as _build

    return _build(run_dir)


def _write_bytes(path: Path, data: bytes) -> None:
    from .._io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def _check_targets(d: Path, formats) -> None:
    """A report writes only inside ``d``: a ``report_files`` (or report file) that is a symbolic
    link, possibly to a folder elsewhere, is refused before anything is written or deleted."""
    from ..errors import ConfigError
    from .markdown import FILES_DIR

    names = [f"report.{f}" for f in formats] + ([FILES_DIR] if "md" in formats else [])
    for name in names:
        p = d / name
        if p.is_symlink() or (p.exists() and not p.resolve().is_relative_to(d.resolve())):
            raise ConfigError(f"{p} is a symbolic link; a report writes only inside its run directory: remove the "
                              "link and run 'transferkit report' again.")
    if "md" in formats and (d / FILES_DIR).exists() and not (d / FILES_DIR).is_dir():
        raise ConfigError(f"{d / FILES_DIR} is a file; the Markdown report keeps its figures in that folder: "
                          "move the file away and run 'transferkit report' again.")


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
    _check_targets(d, formats)
    fault_point("report.build")
    out: dict[str, Path] = {}
    if "html" in formats:
        out["html"] = d / "report.html"
        _write_bytes(out["html"], render_html(report).encode("utf-8"))
        fault_point("report.html")
    if "md" in formats:
        text, files = render_markdown(report)
        fdir = d / FILES_DIR
        if fdir.is_dir():  # stale figures of an earlier report
            for old in fdir.glob("*.png"):
                old.unlink()
        for rel, png in files.items():
            _write_bytes(d / rel, png)
            fault_point("report.figure")
        out["md"] = d / "report.md"
        _write_bytes(out["md"], text.encode("utf-8"))
    return out


def write_document(report, run_dir, formats=FORMATS) -> dict[str, Path]:
    """Write a built :class:`~transferkit.reports.document.Report` as ``report.html`` and/or
    ``report.md`` (figures in ``report_files/``) into ``run_dir``, with :func:`write_report`'s
    rules (only inside the directory, atomic files, stale figures removed); the few-shot and
    drift reports use it."""
    from ..errors import ConfigError
    from .html import render_html
    from .markdown import FILES_DIR, render_markdown

    formats = tuple(formats)
    for f in formats:
        if f not in FORMATS:
            raise ConfigError(f"report format {f!r} is not one of {', '.join(FORMATS)}.")
    d = Path(run_dir)
    _check_targets(d, formats)
    out: dict[str, Path] = {}
    if "html" in formats:
        out["html"] = d / "report.html"
        _write_bytes(out["html"], render_html(report).encode("utf-8"))
    if "md" in formats:
        text, files = render_markdown(report)
        fdir = d / FILES_DIR
        if fdir.is_dir():
            for old in fdir.glob("*.png"):
                old.unlink()
        for rel, png in files.items():
            _write_bytes(d / rel, png)
        out["md"] = d / "report.md"
        _write_bytes(out["md"], text.encode("utf-8"))
    return out
