"""Where this process stands among several (``torchrun``, ``accelerate launch``, ``--num-processes``).

One small module below every layer, so that whatever writes to disk (run directories,
checkpoints, the feature cache, reports, tracking) can ask "am I the main process?" and wait
for the others without importing the Trainer. Before ``torch.distributed`` is initialised the
answers come from the launcher's environment variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``), so they are right from the first line of a run.
"""

from __future__ import annotations

import contextlib
import os


_LOCAL = [0]  # > 0 inside local_only(): this process acts alone


@contextlib.contextmanager
def local_only():
    """Inside this block the process acts alone: ``world_size()`` is 1 and nothing waits for
    or gathers from the other processes. For work only the main process does (writing a
    run's artifacts and report), which must not enter a collective the others never join."""
    _LOCAL[0] += 1
    try:
        yield
    finally:
        _LOCAL[0] -= 1


def _initialized(start: bool = False):
    """``torch.distributed`` when its process group is up, else ``None``. ``start=True`` brings
    it up first when a launcher started several processes (through accelerate's
    ``PartialState``, the same group the Trainer's ``Accelerator`` then uses)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return None
    if not dist.is_available():
        return None
    if not dist.is_initialized() and start and _env_int("WORLD_SIZE", 1) > 1:
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
    if dist.is_initialized():
        clean_exit()
    return dist if dist.is_initialized() else None


_EXIT_HOOK = [False]


def clean_exit() -> None:
    """Tear the process group down before the interpreter does (registered once, at exit).

    A process that ends with its gloo group still up can die with SIGABRT ("terminate called
    without an active exception"): gloo's worker threads still hold finished work whose tensors
    are freed while the interpreter is already being torn down (pytorch/pytorch#179291). A
    launcher then reports a failed rank for a run that finished. Destroying the group while the
    interpreter is whole avoids it; a group the user destroyed already is left alone. On gloo the
    processes first wait for each other (at most 30 s), so none tears down while another still
    talks to it; a process ending in an uncaught error does not wait."""
    if _EXIT_HOOK[0]:
        return
    import atexit

    _EXIT_HOOK[0] = True
    atexit.register(_destroy_group)
    import sys

    previous = sys.excepthook

    def note_failure(*exc):  # a process dying of an error does not wait for the others at exit
        _FAILED[0] = True
        previous(*exc)

    sys.excepthook = note_failure


_FAILED = [False]


def _destroy_group() -> None:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            if dist.get_world_size() > 1 and dist.get_backend() == "gloo" and not _FAILED[0]:
                import datetime

                # every process reaches its exit before any group is torn down (a bounded wait:
                # a process that died already must not hold the others up)
                try:
                    dist.monitored_barrier(timeout=datetime.timedelta(seconds=30))
                except Exception:  # noqa: BLE001 - a missing peer: tear down this process's group anyway
                    pass
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - exiting anyway; a failed teardown must not mask the exit status
        pass


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def rank() -> int:
    """The global rank of this process (0 without a launcher)."""
    if _LOCAL[0]:
        return 0
    dist = _initialized()
    return dist.get_rank() if dist is not None else _env_int("RANK", 0)


def world_size() -> int:
    """How many processes train together (1 without a launcher)."""
    if _LOCAL[0]:
        return 1
    dist = _initialized()
    return dist.get_world_size() if dist is not None else max(1, _env_int("WORLD_SIZE", 1))


def local_rank() -> int:
    return _env_int("LOCAL_RANK", rank())


def local_world_size() -> int:
    """Processes on this machine (they share its cores)."""
    return max(1, _env_int("LOCAL_WORLD_SIZE", world_size()))


def is_main_process() -> bool:
    """True on the process that writes (rank 0), and always without a launcher."""
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def barrier() -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    dist = None if _LOCAL[0] else _initialized(start=True)
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_process_first():
    """The main process runs the block first (e.g. fills a cache), the others after it."""
    if not is_main_process():
        barrier()
    try:
        yield
    finally:
        if is_main_process():
            barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every process (the object itself in a single process)."""
    dist = None if _LOCAL[0] else _initialized(start=True)
    if dist is None or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
