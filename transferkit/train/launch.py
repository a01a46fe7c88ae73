"""Start a command in several processes on this machine (``transferkit run --num-processes N``).

:func:`relaunch` does what ``torchrun --standalone --nproc_per_node N -m transferkit ...`` does,
through torch's elastic launcher (:func:`torch.distributed.launcher.api.elastic_launch`): a
rendezvous on 127.0.0.1 at a free port, ``N`` copies of ``python -m transferkit ARGS`` with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set,
no restarts. accelerate's ``Accelerator`` (inside the Trainer) reads those variables and joins the
processes into one data-parallel run; on a machine without CUDA the children also get
``ACCELERATE_USE_CPU=true`` (so accelerate picks its multi-CPU mode, gloo) and each gets its share
of the cores through ``OMP_NUM_THREADS``.

Why not ``accelerate launch``: it imports timm (and so torchvision) in the launching process
before transferkit's torchvision cure (:mod:`transferkit._compat`) can run; see the issue notes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import uuid

from .._threads import check_threads, default_threads
from ..errors import ConfigError

#: Options of the parent command that the children must not see again: the children would
#: relaunch themselves (``--num-processes``), or override their share of the cores (``--threads``).
_PARENT_ONLY = ("--num-processes", "--threads")


def check_num_processes(n, param: str = "--num-processes") -> int:
    """``n`` as an ``int >= 1``, else :class:`ConfigError`."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{param}={n!r} must be a whole number >= 1 (processes on this machine); "
                          f"give e.g. {param} 2, or 1 to run in this process.")
    return n


def strip_parent_options(argv: list[str], options=_PARENT_ONLY) -> list[str]:
    """``argv`` without ``--option VALUE`` / ``--option=VALUE`` for each of ``options``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in options:
            skip = True
            continue
        if any(arg.startswith(o + "=") for o in options):
            continue
        out.append(arg)
    return out


def child_threads(num_processes: int, threads: int | None = None) -> int:
    """Each child's torch threads: ``threads`` (the whole command's budget; default: this
    machine's :func:`~transferkit._threads.default_threads` for one process) shared among the
    ``num_processes`` children, at least 1."""
    total = check_threads(threads)
    if total is None:
        total = default_threads(local_processes=1)
    return max(1, total // num_processes)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _environ(**values):
    """``os.environ`` with ``values`` set for the block, restored after (torch's launcher copies
    the launching process's environment into every child)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet_launcher():
    """torch's elastic launcher logs its configuration and, on a failure, a multi-line table
    with tracebacks; the children print their own one-line errors, so keep only its errors
    out of the way and report one line ourselves."""
    loggers = [logging.getLogger(n) for n in ("torch.distributed.elastic", "torch.distributed.launcher",
                                               "torch.distributed.run")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, old):
            lg.setLevel(lv)


_SIGTERM = 128 + 15


def _exit_code(code) -> int:
    """A process's exit status as a shell would report it (a signal ``-N`` becomes ``128 + N``)."""
    try:
        code = int(code)
    except (TypeError, ValueError):
        return 1
    return 128 - code if code < 0 else code


def relaunch(argv: list[str], num_processes: int, threads: int | None = None, *, module: str = "transferkit",
             timeout: float | None = None) -> int:
    """Run ``python -m MODULE ARGV`` in ``num_processes`` processes on this machine; wait for all.

    Parameters
    ----------
    argv
        The command line of the children (e.g. ``["run", "exp.yaml", "--out", "runs/x"]``);
        ``--num-processes`` and ``--threads`` are removed from it (see :data:`_PARENT_ONLY`).
    num_processes
        How many processes (``int >= 1``).
    threads
        The torch threads of all processes together (``None``: this machine's
        :func:`~transferkit._threads.default_threads`); each child gets
        ``max(1, threads // num_processes)`` through ``OMP_NUM_THREADS``.
    module
        The module the children run with ``python -m`` (``transferkit``: its CLI).
    timeout
        Seconds the processes may take to meet at the rendezvous (``None``: torch's default).

    Returns
    -------
    int
        0 when every process exited with 0, else the worst exit status (the highest; a
        process killed by signal ``N`` counts as ``128 + N``). When one process fails, the
        launcher stops the others with SIGTERM; those are named as stopped and do not count,
        so the status is the failed process's own. A failure is also reported as one line on
        stderr naming the failed ranks.
    """
    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    n = check_num_processes(num_processes)
    per_child = child_threads(n, threads)
    child_argv = strip_parent_options(list(argv))
    env = {"OMP_NUM_THREADS": str(per_child)}
    import torch

    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"  # accelerate's flag (accelerate.state, parse_flag_from_env)
    elif n > torch.cuda.device_count():  # accelerate puts local rank i on cuda:i; NCCL refuses a shared GPU
        gpus = torch.cuda.device_count()
        raise ConfigError(f"--num-processes={n} but this machine has {gpus} CUDA GPU(s); give at most {gpus} (one "
                          "process per GPU), or hide the GPUs (CUDA_VISIBLE_DEVICES=) to train on the CPU.")
    rdzv = {} if timeout is None else {"timeout": int(timeout)}
    # the launcher's per-attempt log folders (empty: nothing is redirected) go into a temporary
    # folder removed afterwards, not left behind in the system's temporary directory
    logs = tempfile.TemporaryDirectory(prefix="transferkit-launch-")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=f"transferkit-{uuid.uuid4().hex}",
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port()}", rdzv_configs=rdzv,
                          local_addr="127.0.0.1", max_restarts=0, monitor_interval=0.1,
                          logs_specs=DefaultLogsSpecs(log_dir=logs.name))
    try:
        with logs, _environ(**env), _quiet_launcher():
            elastic_launch(config, entrypoint=sys.executable)("-m", module, *child_argv)
    except ChildFailedError as exc:
        codes = {rank: _exit_code(f.exitcode) for rank, f in sorted(exc.failures.items())}
        # once one process fails the launcher stops the others (SIGTERM): those are not failures of their own
        failed = {r: c for r, c in codes.items() if c != _SIGTERM} or codes
        stopped = sorted(set(codes) - set(failed))
        worst = max(failed.values()) or 1
        what = ", ".join(f"rank {r} exited with {c}" for r, c in failed.items())
        also = f"; the launcher stopped rank{'s' if len(stopped) > 1 else ''} {', '.join(map(str, stopped))}" \
            if stopped else ""
        print(f"transferkit: error: {len(failed)} of {n} processes failed ({what}{also}); the failed process's own "
              "message is above (rerun with --num-processes 1 to see it alone).", file=sys.stderr)
        return worst
    except SignalException as exc:  # Ctrl-C or a kill of this process: the children were stopped
        print(f"transferkit: interrupted ({exc.sigval.name}); the {n} processes were stopped", file=sys.stderr)
        return 128 + int(exc.sigval)
    return 0
