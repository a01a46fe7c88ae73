"""Named kill points for the crash-and-resume tests (a test hook; inert unless asked for).

``fault_point("name")`` marks a place in a run where a process may die (feature extraction, the
linear-probe initialisation, an epoch, the model write, the report, the final results write).
Two environment variables drive it, both read on every call so tests can set them per process:

``TRANSFERKIT_FAULT_TRACE=PATH``
    append one line per point reached (``name``) to ``PATH``: the list of kill points a run has.
``TRANSFERKIT_FAULT=NAME[@N]``
    kill the process with SIGKILL the ``N``-th time (1-based, default 1) point ``NAME`` is reached:
    nothing after it runs, no ``finally`` block, no atexit handler, as with ``kill -9``.

Neither is set in normal use; then a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_COUNTS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Reach kill point ``name`` (see the module docstring)."""
    trace = os.environ.get("TRANSFERKIT_FAULT_TRACE")
    target = os.environ.get("TRANSFERKIT_FAULT")
    if not trace and not target:
        return
    _COUNTS[name] = _COUNTS.get(name, 0) + 1
    if trace:
        with open(trace, "a") as f:
            f.write(f"{name}\n")
    if target:
        want, _, n = target.partition("@")
        if want == name and _COUNTS[name] == int(n or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def active() -> bool:
    """Whether a test is tracing or injecting faults in this process."""
    return bool(os.environ.get("TRANSFERKIT_FAULT_TRACE") or os.environ.get("TRANSFERKIT_FAULT"))
