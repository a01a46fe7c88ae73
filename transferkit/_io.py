"""The one atomic file writer (below every layer: data, features, training and reports use it).

A file is written to a temporary name in its own folder, flushed and fsynced, then renamed
over the target: a process killed at any moment leaves the old file or the new one, never a
half-written one. The file gets the permissions of an ordinary file under the user's umask
(``tempfile.mkstemp`` alone would create it 0600).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
        yield tmp
        # mkstemp makes 0600, and some writers (safetensors) replace the file they are given:
        # set the usual permissions on what was written
        os.chmod(tmp, 0o666 & ~umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_model_file(path, fix: str) -> tuple[dict, dict]:
    """``(tensors, header metadata)`` of a run's ``model.safetensors`` (never a pickle); a file
    that cannot be read is one :class:`~transferkit.errors.DataError` ending in ``fix``."""
    from safetensors import SafetensorError, safe_open

    from .errors import DataError

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{str(path)!r} is not a readable safetensors file ({str(exc).splitlines()[0][:120]}); "
                        f"{fix}") from None
    return state, meta
