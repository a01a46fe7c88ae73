"""Run directories: resolved config, environment, seeds; never clobber an existing run.

Every file of a run directory is written atomically (a temporary file in the same folder,
flushed and fsynced, then renamed), so a killed process never leaves a half-written file. A
directory whose run is still being written holds an :data:`INCOMPLETE` marker, removed when
the run is complete; ``transferkit run --resume DIR`` continues such a run.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..errors import ConfigError

#: Marker file present while a run (or an experiment) directory is being written.
INCOMPLETE = ".incomplete"

#: Marker file written when transferkit creates an output directory: ``--overwrite`` replaces
#: only a directory that holds it (never a folder of the user's that merely has files in it).
RUN_MARKER = ".transferkit-run"

#: Lock file of a directory being written (holds the writer's pid); one writer at a time.
LOCK = ".lock"

_RESUMING: contextvars.ContextVar[bool] = contextvars.ContextVar("transferkit_resuming", default=False)


@contextlib.contextmanager
def resuming(enabled: bool = True):
    """Inside this block, :meth:`transferkit.train.Trainer.fit` with ``resume=None`` continues
    from ``run_dir/checkpoint.pt`` when there is one (strategies need no resume argument)."""
    token = _RESUMING.set(bool(enabled))
    try:
        yield
    finally:
        _RESUMING.reset(token)


def resume_requested() -> bool:
    """Whether the current code runs inside :func:`resuming`."""
    return _RESUMING.get()


_PACKAGES = ("transferkit", "torch", "torchvision", "timm", "transformers", "accelerate", "numpy", "scipy",
             "scikit-learn", "safetensors", "pandas")


def environment_info(seeds=None) -> dict:
    """Python, platform, package versions and seeds: enough to reproduce a run."""
    from importlib import metadata

    versions = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "seeds": list(seeds) if seeds is not None else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        pass
    return info


def prepare_run_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Create ``path`` for a new run. An existing non-empty directory is refused unless
    ``overwrite``; then its contents are removed only after the check passes."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"output {str(p)!r} exists and is not a directory; choose another --out.")
    if p.is_dir() and any(p.iterdir()):
        if not overwrite:
            if (p / INCOMPLETE).exists():
                raise ConfigError(
                    f"output directory {str(p)!r} holds an interrupted run; continue it with "
                    f"'transferkit run --resume {p}', or choose another --out, or pass --overwrite to replace it."
                )
            raise ConfigError(
                f"output directory {str(p)!r} already holds a run; choose another --out or pass --overwrite."
            )
        shutil.rmtree(p)
    p.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; when the block succeeds, fsync it and rename it
    to ``path`` (atomic on POSIX and Windows); when it fails, delete it.

    For writers that take a file name (``safetensors.torch.save_file``, ``torch.save``)::

        with atomic_path(run_dir / "model.safetensors") as tmp:
            save_file(state, tmp)
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (temporary file, then rename), so no file is ever half-written."""
    write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def mark_incomplete(folder: str | os.PathLike) -> None:
    """Put the :data:`INCOMPLETE` marker in ``folder`` (created if needed)."""
    p = Path(folder)
    p.mkdir(parents=True, exist_ok=True)
    (p / INCOMPLETE).write_text("this run is being written; 'transferkit run --resume' continues it\n")


def mark_complete(folder: str | os.PathLike) -> None:
    """Remove the :data:`INCOMPLETE` marker of ``folder``."""
    (Path(folder) / INCOMPLETE).unlink(missing_ok=True)


def _jsonable(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
