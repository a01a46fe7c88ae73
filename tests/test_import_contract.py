"""The one-way import rule of DESIGN.md ("Layout"), enforced.

The contracts are in ``pyproject.toml`` (``[tool.importlinter]``): a ``layers`` contract over the
top-level subpackages and modules of ``transferkit`` (top imports bottom, never the reverse;
function-local imports count), plus a few narrower ones. This test runs ``lint-imports`` on them
and fails with its report, which names each import that goes the wrong way (module, line) and
the chain it belongs to. To fix one, move the shared piece down (``nn/`` for building blocks,
``_validation`` for input checks) or the caller up; never silence it in ``ignore_imports``
without a comment saying why and until when.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    if importlib.util.find_spec("importlinter") is None:
        pytest.fail("import-linter is not installed; it is part of the dev extra: "
                    "python -m pip install -c constraints.txt -e '.[dev]'", pytrace=False)
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    cmd = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as m; "
           "sys.argv[0] = 'lint-imports'; m()", "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail("import contract broken (pyproject.toml [tool.importlinter]; the rule: DESIGN.md, 'Layout'):\n"
                    + proc.stdout + proc.stderr, pytrace=False)


# names moved down a layer to keep the rule; their old import paths still work
MOVED = [
    ("transferkit.metrics.divergence", "median_heuristic", "transferkit.nn.bandwidth"),
    ("transferkit.metrics._base", "as_2d", "transferkit._validation"),
    ("transferkit.metrics._base", "check_labels", "transferkit._validation"),
    ("transferkit.reports.artifacts", "save_run_artifacts", "transferkit.artifacts"),
    ("transferkit.reports.artifacts", "load_npz", "transferkit.artifacts"),
    ("transferkit.reports.artifacts", "strategy_features", "transferkit.artifacts"),
    ("transferkit.reports.artifacts", "save_domain_features", "transferkit.artifacts"),
    ("transferkit.reports", "save_run_artifacts", "transferkit.artifacts"),
    ("transferkit.nn", "TransferModel", "transferkit.nn.model"),
]


@pytest.mark.parametrize("old, name, new", MOVED, ids=[f"{o}.{n}" for o, n, _ in MOVED])
def test_moved_names_keep_their_old_import_path(old, name, new):
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


def test_nn_bandwidth_does_not_import_torch():
    """The metrics and the shallow adapters take the median heuristic from ``nn/``; ``nn``
    imports its torch modules on first use, so that costs them no torch import."""
    code = "import sys, transferkit.nn.bandwidth; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
