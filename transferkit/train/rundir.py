"""Run directories: resolved config, environment, seeds; never clobber an existing run."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..errors import ConfigError

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
            raise ConfigError(
                f"output directory {str(p)!r} already holds a run; choose another --out or pass --overwrite."
            )
        shutil.rmtree(p)
    p.mkdir(parents=True, exist_ok=True)
    return p


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (temporary file, then rename), so no file is ever half-written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=_jsonable)
            f.write("\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, p)


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
