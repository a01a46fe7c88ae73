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
import time
from pathlib import Path

from .._io import atomic_path  # noqa: F401  (re-exported: the one atomic writer)
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


def _resolved(path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _contains(parent: Path, child: Path) -> bool:
    """Whether ``child`` is ``parent`` or lies below it (both resolved)."""
    return child == parent or parent in child.parents


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path``, with every symbolic link resolved, lies inside ``root`` (or is it)."""
    return _contains(Path(os.path.realpath(root)), Path(os.path.realpath(path)))


def input_paths(*values) -> list[Path]:
    """Existing files and folders named by ``values`` (strings, mappings and lists of them, as
    in a config): a path, or the path part of a dataset spec (``data.csv:label=y``) or of a
    ``file:PATH`` backbone. These are what a run reads and must never overwrite."""
    found: list[Path] = []

    def visit(v):
        if isinstance(v, dict):
            for x in v.values():
                visit(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x)
        elif isinstance(v, (str, os.PathLike)):
            s = str(v)
            if not s or len(s) > 4096 or "\x00" in s:
                return
            cands = {s, s.split(":", 1)[0]}
            if ":" in s:
                cands.add(s.split(":", 1)[1].split(",", 1)[0])
            for c in cands:
                try:
                    if c and os.path.exists(c):
                        found.append(Path(os.path.realpath(c)))
                except (OSError, ValueError):
                    pass

    for v in values:
        visit(v)
    return sorted(set(found))


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory that transferkit created (it holds :data:`RUN_MARKER`)."""
    p = Path(path)
    return p.is_dir() and not p.is_symlink() and (p / RUN_MARKER).is_file()


def enclosing_run(path: str | os.PathLike, *, include_self: bool = False, mine_too: bool = False) -> Path | None:
    """The transferkit output directory (marker present) that holds ``path``, links resolved;
    ``None`` when there is none. ``include_self``: ``path`` itself counts too; ``mine_too``: so
    do the directories this process is writing (left out by default: a diagnose writes its
    sub-runs inside its own output)."""
    real = Path(os.path.realpath(os.path.expanduser(str(path))))
    for up in ((real,) if include_self else ()) + tuple(real.parents):
        if is_run_dir(up) and (mine_too or str(_resolved(up)) not in _HELD):
            return up
    return None


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False, inputs=(), resume: bool = False) -> Path:
    """Refuse an output directory that a run must not write into, *before* any work starts.

    The rules (each refusal names the rule and what to do):

    - never the current directory or one of its ancestors (``--out .`` would empty it);
    - never an input (a config, data file or folder, weights, the cache directory) or a
      folder that holds one, and never a folder inside an input folder;
    - an existing non-empty directory only with ``overwrite``, and only when it is a
      transferkit output (it holds :data:`RUN_MARKER`, written when transferkit creates one);
    - never a directory that another process is writing (its :data:`LOCK` names a live pid).

    Returns the path as given (a :class:`~pathlib.Path`).
    """
    p = Path(path)
    if str(path) == "" or any(ord(c) < 32 or ord(c) == 127 for c in str(path)):
        raise ConfigError(f"output directory {str(path)!r} is not a valid path (empty, or it holds control "
                          "characters); choose a folder such as runs/NAME.")
    r = _resolved(p)
    real = Path(os.path.realpath(p))
    cwd = Path(os.path.realpath(os.getcwd()))
    if _contains(real, cwd) or _contains(r, cwd):
        raise ConfigError(
            f"output directory {str(p)!r} is the current directory or holds it; a run would write into (or, with "
            "--overwrite, replace) your working folder. Choose a new folder, e.g. --out runs/NAME.")
    for inp in input_paths(*inputs) if not isinstance(inputs, (str, os.PathLike)) else input_paths(inputs):
        if _contains(real, inp) or _contains(r, inp):
            raise ConfigError(
                f"output directory {str(p)!r} holds the input {str(inp)!r}; a run must never write over what it "
                "reads. Choose a folder outside it, e.g. --out runs/NAME.")
        if inp.is_dir() and (_contains(inp, real) or _contains(inp, r)):
            raise ConfigError(
                f"output directory {str(p)!r} lies inside the input folder {str(inp)!r} (it would become part of "
                "the data); choose a folder outside it, e.g. --out runs/NAME.")
    if p.is_symlink():
        raise ConfigError(f"output {str(p)!r} is a symbolic link; give the real folder (or another --out).")
    if p.exists() and not p.is_dir():
        raise ConfigError(f"output {str(p)!r} exists and is not a directory; choose another --out.")
    up = enclosing_run(p)  # a run nested in another run (other than the one this process writes) is refused
    if up is not None:
        raise ConfigError(
            f"output directory {str(p)!r} lies inside the transferkit output {str(up)!r}; a run never writes "
            "into another run's folder. Choose a folder outside it, e.g. --out runs/NAME.")
    if resume:
        return p
    if p.is_dir() and any(p.iterdir()):
        check_unlocked(p)  # a live writer first: its folder looks like an interrupted run
        if not overwrite:
            if (p / INCOMPLETE).exists():
                raise ConfigError(
                    f"output directory {str(p)!r} holds an interrupted run; continue it with "
                    f"'{_resume_command(p)}', or choose another --out, or pass --overwrite to replace it."
                )
            raise ConfigError(
                f"output directory {str(p)!r} already holds a run; choose another --out or pass --overwrite."
            )
        if not is_run_dir(p):
            raise ConfigError(
                f"output directory {str(p)!r} is not empty and was not created by transferkit (no {RUN_MARKER} "
                "marker), so --overwrite will not delete it; choose another --out, or empty it yourself.")
    return p


# ---------------------------------------------------------------------------------- locking
_HELD: set[str] = set()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


def _lock_owner(folder: Path) -> int | None:
    """The pid of a live process holding ``folder``'s lock, else ``None`` (no lock, or stale)."""
    lock = folder / LOCK
    try:
        text = lock.read_text()[:64]
    except OSError:  # no lock (or an unreadable one)
        return None
    try:
        pid = int(text.split()[0])
    except (ValueError, IndexError):
        return None
    if pid == os.getpid():
        return pid if str(_resolved(folder)) in _HELD else None
    return pid if _pid_alive(pid) else None


def check_unlocked(folder: str | os.PathLike) -> None:
    """Raise when another live process is writing ``folder``, or building its replacement
    (an ``--overwrite`` in progress: the hidden sibling ``.NAME.new-PID`` holds a live lock)."""
    f = Path(folder)
    for q in _stale_siblings(f):
        pid = _lock_owner(q) if q.name.startswith(f".{f.name}.new-") else None
        if pid is not None and pid != os.getpid():  # this process's own replacement, being swapped in, is fine
            raise ConfigError(
                f"{str(folder)!r} is being replaced by process {pid} (an --overwrite in progress, building "
                f"{q.name}); wait for it to finish (or stop it), or choose another --out.")
    pid = _lock_owner(f)
    if pid is not None:
        raise ConfigError(
            f"{str(folder)!r} is being written by process {pid}; wait for it to finish (or stop it), or choose "
            f"another --out. If no such run is going on, delete {str(Path(folder) / LOCK)!r}.")


def acquire_lock(folder: str | os.PathLike) -> Path:
    """Take ``folder``'s one-writer lock (a :data:`LOCK` file holding this process's pid);
    a stale lock (its process is gone, e.g. killed) is taken over."""
    f = Path(folder)
    lock = f / LOCK
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            check_unlocked(f)
            lock.unlink(missing_ok=True)  # stale: its writer is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        _HELD.add(str(_resolved(f)))
        return lock
    check_unlocked(f)
    raise ConfigError(f"could not lock {str(f)!r}; another process keeps taking it. Try again.")


def release_lock(folder: str | os.PathLike) -> None:
    f = Path(folder)
    key = str(_resolved(f))
    if key in _HELD:
        _HELD.discard(key)
        try:
            if (f / LOCK).read_text().split()[0] == str(os.getpid()):
                (f / LOCK).unlink()
        except (OSError, IndexError):
            pass


def _write_marker(p: Path, kind: str) -> None:
    (p / RUN_MARKER).write_text(json.dumps({"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                            "pid": os.getpid()}) + "\n")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    rc = fn(AT_FDCWD, os.fsencode(str(a)), AT_FDCWD, os.fsencode(str(b)), RENAME_EXCHANGE)
    return rc == 0


def _remove_own(p: Path) -> None:
    """Delete a directory that transferkit made (marker present, not a link, no live writer)."""
    if is_run_dir(p) and _lock_owner(p) is None:
        shutil.rmtree(p, ignore_errors=True)


def _stale_siblings(p: Path) -> list[Path]:
    parent = p.parent if str(p.parent) else Path(".")
    try:
        return [q for q in parent.iterdir()
                if q.name.startswith((f".{p.name}.new-", f".{p.name}.old-")) and q.is_dir() and not q.is_symlink()]
    except OSError:
        return []


def resume_source(path: str | os.PathLike) -> Path:
    """The directory that ``--resume path`` continues: ``path`` itself, or, when an
    ``--overwrite`` of ``path`` was killed before it completed, the hidden replacement it was
    building (``.NAME.new-PID``: transferkit's, not empty, no live writer; the newest). The
    resumed run finishes there and then replaces ``path``, as the ``--overwrite`` would have.
    Read the stored config from the directory this returns."""
    p = Path(path)
    cands = [q for q in _stale_siblings(p) if q.name.startswith(f".{p.name}.new-") and is_run_dir(q)
             and _lock_owner(q) is None and any(x.name not in (RUN_MARKER, LOCK) for x in q.iterdir())]
    if not cands:
        return p
    return max(cands, key=lambda q: q.stat().st_mtime)


def locate_resume(path: str | os.PathLike, stored: str, what: str, start: str, echo=print) -> Path:
    """The directory ``--resume path`` reads its stored arguments from (see
    :func:`resume_source`), checked to exist and to hold the ``stored`` file (``config.yaml``,
    ``diagnose.yaml``, ``benchmark.json``); ``what`` names the kind of directory in messages
    and ``start`` the command that starts one afresh."""
    final = Path(path)
    src = resume_source(final)
    if src != final:
        echo(f"{final}: continuing the interrupted --overwrite in {src.name}; it replaces {final} when complete")
    if not src.is_dir():
        raise ConfigError(f"{what} directory {str(src)!r} does not exist; check the path given to --resume.")
    if not (src / stored).is_file():
        raise ConfigError(
            f"{str(src)!r} has no {stored}, so it is not a transferkit {what} directory (or it was interrupted "
            f"before its {stored} was written); start again with '{start}'.")
    return src


def stored_arguments(folder: str | os.PathLike, stored: str, keys, *, suite: str | None = None,
                     start: str = "start the benchmark again with --out") -> dict:
    """The arguments a directory was started with (the JSON file ``stored``, e.g. a benchmark's
    ``benchmark.json``): the mapping restricted to ``keys``, all of which it must hold (and
    ``suite: SUITE`` when ``suite`` is given); every failure is one line naming the file and
    what to do (``start``)."""
    p = Path(folder) / stored
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{str(folder)!r} has no {stored}, so it is not a benchmark directory (or it was interrupted "
                          f"before it was written); {start}.") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{str(p)!r} cannot be read ({type(exc).__name__}); {start}.") from None
    keys = tuple(keys)
    if (not isinstance(data, dict) or (suite is not None and data.get("suite") != suite)
            or not all(k in data for k in keys)):
        need = (f"suite: {suite} and " if suite is not None else "") + ", ".join(keys)
        raise ConfigError(f"{str(p)!r} is not a{' ' + suite if suite else ''} benchmark's arguments file (it needs "
                          f"{need}); {start}.")
    return {k: data[k] for k in keys}


def open_benchmark_dir(out: str | os.PathLike, suite: str, args: dict, *, overwrite: bool = False) -> Path:
    """Make ``out`` the directory of the ``suite`` benchmark started with ``args``: an existing one
    with kept cells continues only with the same arguments (others are a one-line error), anything
    else goes through :func:`check_output_dir`; writes ``benchmark.json`` (what ``--resume`` reads)."""
    out = Path(out)
    stored = out / "benchmark.json"
    if (out / "cells").is_dir() and stored.is_file() and not overwrite:
        before = json.loads(stored.read_text())
        if before != {"suite": suite, **args}:
            raise ConfigError(f"{str(out)!r} holds a {suite} benchmark started with other arguments ({before}); "
                              "give another --out, or --overwrite to start again.")
    else:
        check_output_dir(out, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / RUN_MARKER).exists():  # a transferkit output: a later --overwrite may replace it
        _write_marker(out, "benchmark")
    write_json(stored, {"suite": suite, **args})
    return out


def run_suite_dir(out, suite: str, args: dict, run, markdown, *, overwrite: bool = False, echo=print) -> dict:
    """A benchmark of parts into ``out``: :func:`open_benchmark_dir` with the checked ``args``,
    ``run(out_dir=out, echo=echo, **args)``, then ``results.json`` and ``results.md``
    (``markdown(res)``); ``res`` gains ``seconds`` and ``output_dir``. Finished cells are kept:
    a rerun with the same arguments continues, other arguments are refused."""
    out = open_benchmark_dir(out, suite, args, overwrite=overwrite)
    t0 = time.perf_counter()
    res = run(out_dir=out, echo=echo, **args)
    res["seconds"] = time.perf_counter() - t0
    res["output_dir"] = str(out)
    write_json(out / "results.json", res)
    write_text(out / "results.md", markdown(res) + "\n")
    return res


def begin_config_run(d, config_file: str, config: dict, seeds, *, resume: bool) -> None:
    """A new run of one config file (``fewshot``, ``pretrain``, ``rl``) in its directory ``d``:
    marked incomplete, its config written as ``config_file`` (YAML) and ``environment.json``;
    nothing on ``resume`` (the directory holds them already)."""
    if resume:
        return
    import yaml

    mark_incomplete(d)
    write_text(Path(d) / config_file, yaml.safe_dump(config, sort_keys=False))
    write_json(Path(d) / "environment.json", environment_info(seeds))


def config_or_resume(config, out, resume: bool, *, command: str, what: str, stored: str, result: str, key: str,
                     cls: type, from_mapping, from_file, overrides=None, echo=None):
    """The config of a run of one config file (``fewshot``, ``pretrain``): ``(cfg, done, inputs)``.

    With ``resume``, the config ``stored`` in the directory ``out`` (found by :func:`locate_resume`),
    and ``done`` the finished ``result`` file's dict when the run is already complete (holding
    ``key``); otherwise ``config`` as a ``cls`` instance, a mapping (``from_mapping``) or a YAML
    path (``from_file(path, overrides)``; the path is then one of the ``inputs``, which a run
    must never overwrite)."""
    say = echo or (lambda _: None)
    if resume:
        if out is None:
            raise ConfigError(f"resume needs the run directory to continue (transferkit {command} --resume DIR).")
        src = locate_resume(Path(out), stored, what, f"transferkit {command} CONFIG --out DIR", echo=say)
        done = completed(src, result, key) if src == Path(out) else None
        if done is not None:
            say(f"{out} is complete; nothing to resume.")
            return None, done, ()
        return from_file(src / stored), None, ()
    if isinstance(config, cls):
        return config, None, ()
    from collections.abc import Mapping

    if isinstance(config, Mapping):
        return from_mapping(config), None, ()
    if isinstance(config, (str, os.PathLike)):
        return from_file(config, overrides), None, (str(config),)
    raise ConfigError(f"transferkit {command} needs a config (a path, a mapping or a {cls.__name__}), got "
                      f"{type(config).__name__}.")


class RunLog:
    """Progress lines: to ``echo`` (a callable, e.g. printing to stderr; ``None``: none) and
    appended, with a time stamp, to the run's log file ``path`` (``None``: no file)."""

    def __init__(self, path, echo):
        self.path, self.echo = path, echo

    def __call__(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def check_parts_args(parts, known, seeds, epochs) -> dict:
    """The arguments of a benchmark of parts (label-spaces, representation), checked before
    anything runs: ``parts`` a non-empty subset of ``known`` (``None``: all; kept in ``known``'s
    order), ``seeds`` in 1..100 and ``epochs`` in 1..1000."""
    from .._validation import check_number, suggest

    parts = list(known) if parts is None else list(parts)
    if not parts:
        raise ConfigError(f"--parts needs at least one part ({', '.join(known)}).")
    for p in parts:
        if p not in known:
            raise ConfigError(f"unknown part {p!r}." + suggest(str(p), known) + f" Parts: {', '.join(known)}.")
    seeds = int(check_number("seeds", seeds, low=1, high=100, integer=True))
    epochs = int(check_number("epochs", epochs, low=1, high=1000, integer=True))
    return {"parts": [p for p in known if p in parts], "seeds": seeds, "epochs": epochs}


def cached_cell(out: str | os.PathLike | None, name: str, definition: dict, compute, echo=print):
    """A benchmark cell's value: read from ``out/cells/NAME.json`` when it holds this
    ``definition``, else computed and written there (atomically, with its seconds); ``out=None``
    computes without keeping."""
    path = None if out is None else Path(out) / "cells" / f"{name}.json"
    if path is not None and path.is_file():
        try:
            kept = json.loads(path.read_text())
        except (OSError, ValueError):
            kept = None
        if isinstance(kept, dict) and kept.get("definition") == definition and "value" in kept:
            echo(f"  {name}: complete, kept")
            return kept["value"]
    t0 = time.perf_counter()
    value = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"definition": definition, "value": value, "seconds": time.perf_counter() - t0})
    return value


def stored_suite(folder: str | os.PathLike, stored: str = "benchmark.json") -> str | None:
    """The ``suite`` named by a benchmark directory's arguments file (read where ``--resume``
    would read it, :func:`resume_source`), or ``None`` when there is none."""
    try:
        data = json.loads((resume_source(folder) / stored).read_text())
    except (OSError, ValueError):
        return None
    return data.get("suite") if isinstance(data, dict) and isinstance(data.get("suite"), str) else None


def completed(folder: str | os.PathLike, name: str, key: str) -> dict | None:
    """The results file ``name`` of a *complete* output directory (no :data:`INCOMPLETE`
    marker, the file readable JSON holding ``key``), else ``None``."""
    p = Path(folder)
    if (p / INCOMPLETE).exists() or not (p / name).is_file():
        return None
    try:
        res = json.loads((p / name).read_text())
    except (OSError, ValueError):
        return None
    return res if isinstance(res, dict) and key in res else None


def _resume_command(p: Path) -> str:
    """``transferkit run|diagnose|benchmark --resume`` as fits the directory's kind."""
    try:
        kind = json.loads((p / RUN_MARKER).read_text()).get("kind", "run")
    except (OSError, ValueError, AttributeError):
        kind = "run"
    return f"transferkit {kind if kind in ('run', 'diagnose', 'benchmark') else 'run'} --resume {p}"


@contextlib.contextmanager
def open_run_dir(path: str | os.PathLike, *, overwrite: bool = False, inputs=(), resume: bool = False,
                 kind: str = "run"):
    """The output directory of a run, held with its one-writer lock for the ``with`` block.

    - a new (or empty) ``path`` is created with :data:`RUN_MARKER` and written in place (a
      killed run can be continued with ``--resume``);
    - ``resume=True`` reopens an existing transferkit output directory, or continues the hidden
      replacement of an ``--overwrite`` that was killed (see :func:`resume_source`) and swaps
      it in when the block succeeds;
    - an existing run with ``overwrite=True`` is *not* touched while the new run is built: the
      block writes into a hidden sibling ``.NAME.new-PID``, which replaces ``path`` only when
      the block succeeds (an atomic exchange where the system has one); on failure the sibling
      is removed and the old run is left byte-identical.

    Yields the directory to write into. :func:`check_output_dir` runs first.
    """
    p = Path(path)
    check_output_dir(p, overwrite=overwrite, inputs=inputs, resume=resume)
    stage = resume_source(p) if resume else None
    in_place = resume and stage == p
    if in_place and not p.is_dir():
        raise ConfigError(f"run directory {str(p)!r} does not exist; check the path given to --resume.")
    if not in_place and not resume and not (p.is_dir() and any(p.iterdir())):  # a new run, written in place
        p.mkdir(parents=True, exist_ok=True)
        if not (p / RUN_MARKER).exists():
            _write_marker(p, kind)
        in_place = True
    if in_place:
        check_unlocked(p)  # also refuses while another process builds p's replacement
        acquire_lock(p)
        try:
            yield p
        finally:
            release_lock(p)
        return
    # while the replacement is built, its live lock tells every other writer that ``p`` is being
    # replaced (see check_unlocked); the old run itself is not touched
    if stage is None:  # a new replacement (on resume, the interrupted one is continued instead)
        for q in _stale_siblings(p):  # left by a run killed while it replaced this one
            _remove_own(q)
        stage = p.parent / f".{p.name}.new-{os.getpid()}"
        stage.mkdir()
        _write_marker(stage, kind)
    acquire_lock(stage)
    ok = False
    try:
        yield stage
        ok = True
    finally:
        if not ok:
            release_lock(stage)
            if not resume:  # a resumed replacement stays resumable
                shutil.rmtree(stage, ignore_errors=True)
    # the new run is complete: put it in place of the old one
    if not p.exists():
        release_lock(stage)
        os.replace(stage, p)
        return
    try:
        acquire_lock(p)  # no other writer may be inside the old run while it is replaced
    except BaseException:
        release_lock(stage)  # the finished replacement stays beside the old run; --resume swaps it in
        raise
    release_lock(stage)
    try:
        if _exchange(stage, p):
            old = stage
        else:  # non-Linux: two renames (a crash between them leaves the .old/.new siblings, both kept)
            old = p.parent / f".{p.name}.old-{os.getpid()}"
            os.replace(p, old)
            os.replace(stage, p)
    except BaseException:
        release_lock(p)
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _HELD.discard(str(_resolved(p)))
    (old / LOCK).unlink(missing_ok=True)  # our lock went with the old run
    shutil.rmtree(old, ignore_errors=True)


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
    write_text(p / INCOMPLETE, "this run is being written; 'transferkit run --resume' continues it\n")


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
