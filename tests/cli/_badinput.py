"""The bad-input harness shared by every table in ``tests/cli/test_bad_input*.py``.

A case is ``name -> lambda tmp_path: (argv, fragments)``: ``main(argv)`` must exit with code 2,
print exactly one line ``transferkit: error: ...`` (no traceback, no ANSI escape codes) that
contains every fragment, and leave every file under ``tmp_path`` (a finished run directory,
the input data, the working directory) byte-identical.
"""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from transferkit.cli import main
from transferkit.train.rundir import RUN_MARKER

BASE = {
    "name": "bad",
    "seeds": [0],
    "target": "digits:subset=1/2,size=16",
    "split": {"labels_per_class": 3, "val_fraction": 0.5},
    "backbone": {"name": "tiny_cnn", "image_size": 16},
    "progress": False,
    "strategies": [{"name": "scratch", "epochs": 1}],
}


class Evil:
    """Unpickling this would run code."""

    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _cfg(tmp: Path, text: str | None = None, **changes) -> str:
    data = {**BASE, **changes}
    p = tmp / "exp.yaml"
    p.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return str(p)


def _run(tmp: Path, cfg: str, *extra) -> list:
    """``run CFG --out existing --overwrite``: the old run must survive the bad input."""
    return ["run", cfg, "--out", str(tmp / "existing"), "--overwrite", "--no-report", *extra]


def _npz(tmp: Path, name="data.npz", n=40, d=4, **arrays) -> str:
    rng = np.random.default_rng(0)
    arrays.setdefault("x", rng.normal(size=(n, d)).astype(np.float32))
    arrays.setdefault("y", np.arange(n) % 2)
    np.savez(tmp / name, **arrays)
    return str(tmp / name)


def _tab(tmp: Path, target: str, **changes) -> str:
    """A tabular experiment on ``target`` with a tiny MLP."""
    return _cfg(tmp, target=target, backbone={"name": "tiny_mlp", "options": {"in_features": 4}},
                split={"labels_per_class": 3, "val_fraction": 0.5}, **changes)


def _folder(tmp: Path, corrupt=False, empty_class=False) -> str:
    from PIL import Image

    root = tmp / "imgs"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        if empty_class and c == "dog":
            (root / c / "notes.txt").write_text("no images here")
            continue
        for i in range(6):
            pixels = (np.random.default_rng(i).random((8, 8, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    if corrupt:
        (root / "dog" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return str(root)


def _weights(tmp: Path, kind: str) -> str:
    import torch
    from safetensors.torch import save_file

    from transferkit.backbones import create_backbone

    if kind == "pickle.pt":
        p = tmp / "weights.pt"
        p.write_bytes(pickle.dumps(Evil()))
    elif kind == "pickle.safetensors":
        p = tmp / "weights.safetensors"
        p.write_bytes(pickle.dumps(Evil()))
    elif kind == "torch_pickle.pt":  # a real torch.save of an object, not of tensors
        p = tmp / "model.pt"
        torch.save({"model": Evil()}, p)
    elif kind == "truncated":
        p = tmp / "weights.safetensors"
        save_file(create_backbone("tiny_cnn", pretrained=False).state_dict(), str(p))
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    elif kind == "huge":  # finite, but the activations overflow float32
        p = tmp / "huge.safetensors"
        state = create_backbone("tiny_cnn", pretrained=False).state_dict()
        save_file({k: torch.full_like(v, 3e38) if v.is_floating_point() else v for k, v in state.items()}, str(p))
    elif kind == "wrong_arch":
        p = tmp / "weights.safetensors"
        save_file({"fc.weight": torch.zeros(2, 2)}, str(p))
    return str(p)


def _csv(tmp: Path, text: str, name="t.csv") -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


ROWS = "".join(f"{i % 3 * 0.5},{i},{(i * 7) % 5},{i % 2},{i % 4}\n" for i in range(40))

def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def existing(tmp_path):
    """A finished run that bad input must leave alone (even with --overwrite)."""
    d = tmp_path / "existing"
    (d / "scratch" / "seed0").mkdir(parents=True)
    (d / RUN_MARKER).write_text('{"kind": "run"}\n')
    (d / "results.json").write_text('{"summary": {}}\n')
    (d / "config.yaml").write_text("target: digits\n")
    (d / "scratch" / "seed0" / "model.safetensors").write_bytes(b"weights")
    return d




def check_case(cases: dict, case: str, tmp_path: Path, capsys, monkeypatch) -> None:
    """Run one case of a bad-input table (see the module docstring)."""
    monkeypatch.chdir(tmp_path)  # a relative path or an unpickled payload would land here
    argv, fragments = cases[case](tmp_path)
    before = _snapshot(tmp_path)
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (case, captured.out[-2000:], err)
    assert len(err.splitlines()) == 1, err
    assert err.startswith("transferkit: error: ") and "Traceback" not in err, err
    assert "\x1b" not in err, repr(err)
    for frag in fragments:
        assert frag in err, (frag, err)
    assert _snapshot(tmp_path) == before  # nothing written, nothing removed, nothing changed
    assert not (tmp_path / "pwned.txt").exists()


def build_table(cases: dict, root: Path) -> dict:
    """Every case's ``(argv, fragments, config, raw)`` built in its own folder under ``root``, nothing run;
    ``config`` is the parsed experiment file the case points at (``None`` when it has none or
    the file is deliberately unreadable), ``files`` a digest of every file the case made."""
    built = {}
    for i, (name, make) in enumerate(cases.items()):
        t = root / f"case{i}"
        t.mkdir()
        argv, fragments = make(t)
        config, raw = None, b""
        for a in argv:
            p = Path(a)
            if p.suffix in (".yaml", ".yml") and p.is_file():
                raw = p.read_bytes()
                try:  # the small, well-formed ones (the bombs and broken files are other cases' point)
                    loaded = yaml.safe_load(raw) if len(raw) < 20_000 and b"&" not in raw else None
                except Exception:  # noqa: BLE001
                    loaded = None
                config = loaded if isinstance(loaded, dict) else None
                break
        import hashlib

        files = hashlib.sha256(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in _snapshot(t).items()))
                               .encode()).hexdigest()
        built[name] = (argv, fragments, config, files)
    return built


def check_table(cases: dict, root: Path) -> dict:
    """What makes a bad-input table worth its size: every case names what its one line must say,
    and no two cases are the same input (the same arguments and the same files)."""
    built = build_table(cases, root)
    seen = {}
    for name, (argv, fragments, _, raw) in built.items():
        assert fragments and all(isinstance(f, str) and f.strip() for f in fragments), (
            f"case {name!r} names no message fragment, so any error would pass it")
        key = repr(([a.replace(str(root), "").split("/", 2)[-1] for a in argv], raw))
        assert key not in seen, f"cases {seen[key]!r} and {name!r} are the same input"
        seen[key] = name
    return {name: b[:3] for name, b in built.items()}


def strategies_of(built: dict) -> set:
    """The strategy names the cases' experiment files use."""
    names = set()
    for _, _, config in built.values():
        for s in (config or {}).get("strategies") or []:
            names.add(s.get("name") if isinstance(s, dict) else s)
    return names
