"""How many threads torch should use here, and setting it once at the start of a command.

Why this exists: torch's default is one OpenMP thread per core, each spinning while it waits
for work. Beside other busy processes (a second worker, the test suite, a sibling rank of the
same run) those spinning threads fight for the same cores: on a 2-core machine a demo went
from 2 to 28 minutes. A count that leaves room for what else runs on the machine avoids that.

The rule of :func:`default_threads`, in order:

1. ``OMP_NUM_THREADS`` set to a whole number >= 1: that number (the user's choice wins over
   any default; launchers such as ``torchrun`` and ``--num-processes`` set it per process).
2. Otherwise start from the cores this process may run on (``os.sched_getaffinity(0)``
   where the platform has it, so ``taskset`` and container CPU sets count; else
   ``os.cpu_count()``).
3. Take away the cores the machine is busy with right now: on Linux the busy share of every
   core over 0.2 s (``/proc/stat``, this process's own use left out), elsewhere the 1-minute
   load average (``os.getloadavg()``), rounded to a whole number. At least one core is always
   left. (Not the load average on Linux: it remembers a minute of past work, so a demo started
   just after ``make install`` would run on fewer threads than the same demo a minute later.)
4. Share what is left among the processes of this run on this machine
   (:func:`transferkit._dist.local_world_size`, 1 without a launcher), rounding down.
5. Never below 1.

So an idle 8-core machine gives 8 threads to a single process and 4 to each of two ranks; a
2-core machine with one other busy process gives 1.
"""

from __future__ import annotations

import os
import time

from . import _dist
from .errors import ConfigError

_INTEROP_SET = False  # set_num_interop_threads may be called once, before any parallel work


def _env_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a whole number >= 1, else ``None`` (unset, empty or not a count:
    OpenMP itself accepts lists such as ``4,2``; the first entry is the outer level)."""
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not raw:
        return None
    try:
        n = int(raw.split(",")[0])
    except ValueError:
        return None
    return n if n >= 1 else None


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


#: Where the kernel reports cumulative CPU time per state (Linux).
PROC_STAT = "/proc/stat"

#: Seconds over which :func:`busy_cores` samples the machine.
SAMPLE_SECONDS = 0.2


def _cpu_jiffies() -> tuple[int, int, int]:
    """``(busy, total, cpus)`` from the aggregate ``cpu`` line of :data:`PROC_STAT` (clock
    ticks; busy excludes idle and iowait; guest time is already inside user time)."""
    with open(PROC_STAT) as f:
        lines = f.read().splitlines()
    fields = [int(v) for v in lines[0].split()[1:9]]
    fields += [0] * (8 - len(fields))
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    total = user + nice + system + idle + iowait + irq + softirq + steal
    cpus = sum(1 for line in lines[1:] if line.startswith("cpu") and line[3:4].isdigit())
    return total - idle - iowait, total, max(cpus, 1)


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many cores other processes kept busy over the next ``seconds`` (``/proc/stat``
    sampled twice, this process's own CPU time taken out); ``None`` where there is no
    ``/proc/stat``."""
    try:
        b0, t0, cpus = _cpu_jiffies()
        own0 = sum(os.times()[:2])
        time.sleep(seconds)
        b1, t1, _ = _cpu_jiffies()
        own1 = sum(os.times()[:2])
    except (OSError, ValueError, IndexError):
        return None
    if t1 <= t0:
        return None
    wall = (t1 - t0) / cpus  # the window in clock ticks, per core
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return max(0.0, (b1 - b0) / wall - (own1 - own0) * tick / wall)


def machine_load() -> int:
    """The cores other processes are busy with, rounded: :func:`busy_cores` where the
    platform has ``/proc/stat``, else the 1-minute load average (0 where neither exists)."""
    busy = busy_cores()
    if busy is not None:
        return max(0, round(busy))
    try:
        return max(0, round(os.getloadavg()[0]))
    except (AttributeError, OSError):  # Windows has no getloadavg
        return 0


def default_threads(local_processes: int | None = None) -> int:
    """A sensible torch thread count for this process (see the module docstring for the rule).

    Parameters
    ----------
    local_processes
        How many processes of this run share the machine; ``None`` reads it from the launcher
        (:func:`transferkit._dist.local_world_size`).

    Returns
    -------
    int
        At least 1.
    """
    env = _env_threads()
    if env is not None:
        return env
    procs = _dist.local_world_size() if local_processes is None else max(1, int(local_processes))
    cores = usable_cores()
    free = min(cores, max(1, cores - machine_load()))
    return max(1, free // procs)


def check_threads(threads, param: str = "--threads") -> int | None:
    """``threads`` as an ``int >= 1`` (``None`` stays ``None``), else :class:`ConfigError`."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"{param}={threads!r} must be a whole number >= 1 (torch threads for this process); "
                          f"give e.g. {param} 1, or leave it out for the default.")
    return threads


def configure_threads(threads: int | None = None) -> int:
    """Set torch's thread count for this process and return it.

    Parameters
    ----------
    threads
        A whole number >= 1, or ``None`` for :func:`default_threads` (which honours
        ``OMP_NUM_THREADS``). An explicit value wins over ``OMP_NUM_THREADS``.

    Returns
    -------
    int
        The intra-op thread count now in force (``torch.get_num_threads()``).

    Notes
    -----
    The inter-op pool is sized too, but only the first time and only while torch still allows
    it: ``torch.set_num_interop_threads`` raises once inter-op parallel work has started (or
    after an earlier call), and then the pool is left as it is; it is idle in transferkit's
    code paths, so its size matters little next to the intra-op count.
    """
    global _INTEROP_SET
    n = check_threads(threads)
    if n is None:
        n = default_threads()
    import torch

    torch.set_num_threads(n)
    if not _INTEROP_SET:
        _INTEROP_SET = True
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # parallel work already started, or set before: keep the pool
            pass
    return torch.get_num_threads()
